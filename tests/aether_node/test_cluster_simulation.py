"""The deterministic fast layer of the fault suite (issue 11): a hypothesis state machine that runs the real
reconcile planner and allocator (`_reconcile.plan`, `_allocation`) against a simulated cluster, under
random schedules of blueprint changes (apply, scale, upgrade, failing upgrade, delete), operators' node
operations (cordon, uncordon, drain) and faults (node join, loss, graceful stop, restart; instance
crash), with a fake clock.

What is simulated: the KV's `slices/` records (compare-and-swap on a revision, as the leader writes them),
node registrations (`leaving` while a node stops), and each node's side of an instance's lifecycle one
step at a time (a command → its -ING state → the outcome; an install of a broken version ends FAILED; a
graceful stop marks the node leaving, stops its instances and forgets their records; a start forgets the
FAILED records left from before). The node side follows `_deployment`'s rules; it is a model of them, not
the module itself.

Invariants:
- no action set planned in one pass takes a slice's ACTIVE count below min(floor, ACTIVE now): only the
  loss of a node (or a crash) does;
- nothing is placed on a node that is stopping (or gone), cordoned or draining;
- once the faults stop (every node up again, no clock advance), the cluster converges within a bounded
  number of rounds: every wanted slice has the allocation's placement ACTIVE, nothing else runs — except
  the old version of an upgrade that cannot proceed (its new version fails, or the floor holds it), which
  keeps serving, and the blueprint status says why; a draining node ends with nothing on it unless
  the floor holds an instance there (and the status says the drain waits).

On the planner before issue 11's fixes it finds each defect within the default run (checked by
reverting each fix in turn, generation only: 5 of 5 runs for each of the first two, 4 of 5 for the
third): a placement on a stopping node (defect 7); a failed upgrade that removes the old instances
(defect 3: upgrade a serving slice to a version that fails, reconcile); the floor ignored where the
cluster has room for fewer instances than the floor (defect 4).

The default run is short (a few seconds); `AETHER_SIM_EXAMPLES=2000` (for instance) runs many more
schedules.
"""

from __future__ import annotations

import collections
import os

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from aether_node.control._allocation import NodeCapacity, allocate_all
from aether_node.control._reconcile import (
    ActivateInstance,
    CreateInstance,
    DeleteRecord,
    ObservedInstance,
    Plan,
    RemoveInstance,
    plan,
)
from aether_node.core._blueprint import Resources, SliceSpec
from aether_node.core._coordinates import Coordinates
from aether_node.core._records import SliceState

ARTIFACTS = ("org.example:echo", "org.example:greeter")
NODE_IDS = ("n1", "n2", "n3", "n4")
CAPACITIES = ((64.0, 65536), (2.0, 2048), (1.0, 1024))
FAILED_RETRY_AFTER = 60.0
WORK = st.integers(0, 3)  # rounds of work after a change (0: the next change comes at once)
MISSING = "load: install failed: a dependency is missing from the index"
# A step the node takes for a record in each state (ARCHITECTURE.md, "Slice lifecycle"): the -ING state first,
# then the outcome. UNLOADING ends with the record deleted (None).
NEXT = {
    SliceState.LOAD: SliceState.LOADING,
    SliceState.LOADING: SliceState.LOADED,
    SliceState.ACTIVATE: SliceState.ACTIVATING,
    SliceState.ACTIVATING: SliceState.ACTIVE,
    SliceState.DEACTIVATE: SliceState.DEACTIVATING,
    SliceState.DEACTIVATING: SliceState.LOADED,
    SliceState.UNLOAD: SliceState.UNLOADING,
    SliceState.UNLOADING: None,
}


@attrs.define
class SimNode:
    capacity: NodeCapacity
    status: str = "up"  # up | stopping (registration says leaving) | down (no registration)
    # the operator's intent, in the KV (it outlives the registration): "" | cordoned | draining
    operation: str = ""


class ClusterSimulation(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.revision = 0
        self.nodes: dict[str, SimNode] = {}
        self.records: dict[str, ObservedInstance] = {}
        self.specs: dict[str, SliceSpec] = {}
        self.versions: dict[str, int] = {}
        self.broken: set[str] = set()  # coordinates whose install fails everywhere
        self.last_plan: Plan | None = None

    # ------------------------------------------------------------ the views

    def live(self) -> list[NodeCapacity]:
        return [n.capacity for n in self.nodes.values() if n.status != "down"]

    def stopping(self) -> frozenset[str]:
        return frozenset(i for i, n in self.nodes.items() if n.status == "stopping")

    def operated(self, operation: str) -> frozenset[str]:
        return frozenset(i for i, n in self.nodes.items() if n.operation == operation)

    def up(self) -> list[str]:
        return sorted(i for i, n in self.nodes.items() if n.status == "up")

    def plan(self) -> Plan:
        return plan(
            list(self.specs.values()),
            self.live(),
            list(self.records.values()),
            now=self.now,
            failed_retry_after=FAILED_RETRY_AFTER,
            stopping=self.stopping(),
            cordoned=self.operated("cordoned"),
            draining=self.operated("draining"),
        )

    def active(self, artifact_id: str, removed: frozenset[str] = frozenset()) -> int:
        """ACTIVE instances of the artifact on live nodes, any version (they all serve it)."""
        live = {n.node_id for n in self.live()}
        return sum(
            1
            for r in self.records.values()
            if r.coordinates.artifact_id == artifact_id
            and r.state is SliceState.ACTIVE
            and r.node_id in live
            and r.key not in removed
        )

    def _write(self, record: ObservedInstance, **changes: object) -> None:
        self.revision += 1
        self.records[record.key] = attrs.evolve(record, mod_revision=self.revision, **changes)

    # ------------------------------------------------------------ set-up

    @initialize(capacities=st.lists(st.sampled_from(CAPACITIES), min_size=1, max_size=3))
    def start_nodes(self, capacities: list[tuple[float, int]]) -> None:
        for node_id, (cpu, memory) in zip(NODE_IDS, capacities, strict=False):
            self.nodes[node_id] = SimNode(NodeCapacity(node_id=node_id, cpu=cpu, memory_mib=memory))

    @initialize(instances=st.integers(1, 4), floor=st.none() | st.integers(0, 4))
    def start_serving(self, instances: int, floor: int | None) -> None:
        """A blueprint already serving when the schedule begins."""
        self.apply(ARTIFACTS[0], instances, floor, 0, rounds=3)

    # ------------------------------------------------------------ blueprint changes

    @rule(
        artifact=st.sampled_from(ARTIFACTS),
        instances=st.integers(0, 5),
        floor=st.none() | st.integers(0, 5),
        memory=st.sampled_from([0, 512, 1024]),
        rounds=WORK,
    )
    def apply(self, artifact: str, instances: int, floor: int | None, memory: int, rounds: int) -> None:
        version = self.versions.setdefault(artifact, 1)
        self.specs[artifact] = SliceSpec(
            artifact=f"{artifact}:{version}.0",
            instances=instances,
            min_available=None if floor is None else min(floor, instances),
            resources=Resources(memory_mib=memory),
        )
        self.work(rounds)

    @precondition(lambda self: self.specs)
    @rule(data=st.data(), instances=st.integers(0, 5), rounds=WORK)
    def scale(self, data: st.DataObject, instances: int, rounds: int) -> None:
        artifact = data.draw(st.sampled_from(sorted(self.specs)))
        spec = self.specs[artifact]
        floor = None if spec.min_available is None else min(spec.min_available, instances)
        self.specs[artifact] = attrs.evolve(spec, instances=instances, min_available=floor)
        self.work(rounds)

    @precondition(lambda self: self.specs)
    @rule(data=st.data(), failing=st.booleans(), rounds=WORK)
    def upgrade(self, data: st.DataObject, failing: bool, rounds: int) -> None:
        """A new version; a failing one cannot be installed (a dependency missing from the index)."""
        artifact = data.draw(st.sampled_from(sorted(self.specs)))
        self.versions[artifact] += 1
        coordinates = f"{artifact}:{self.versions[artifact]}.0"
        if failing:
            self.broken.add(coordinates)
        self.specs[artifact] = attrs.evolve(self.specs[artifact], artifact=coordinates)
        self.work(rounds)

    @precondition(lambda self: self.specs)
    @rule(data=st.data(), rounds=WORK)
    def delete(self, data: st.DataObject, rounds: int) -> None:
        del self.specs[data.draw(st.sampled_from(sorted(self.specs)))]
        self.work(rounds)

    # ------------------------------------------------------------ faults and node changes

    @precondition(lambda self: self.nodes)
    @rule(data=st.data(), operation=st.sampled_from(["cordoned", "draining", ""]), rounds=WORK)
    def node_operation(self, data: st.DataObject, operation: str, rounds: int) -> None:
        """`aether node cordon`, `drain` or `uncordon` (kept across the node's restarts, as in the KV)."""
        self.nodes[data.draw(st.sampled_from(sorted(self.nodes)))].operation = operation
        self.work(rounds)

    @rule(node_id=st.sampled_from(NODE_IDS), capacity=st.sampled_from(CAPACITIES), rounds=WORK)
    def node_starts(self, node_id: str, capacity: tuple[float, int], rounds: int) -> None:
        """A new node joins, or a stopped or lost one starts again."""
        node = self.nodes.get(node_id)
        if node is not None and node.status != "down":
            return
        operation = node.operation if node is not None else ""
        self.nodes[node_id] = SimNode(
            NodeCapacity(node_id=node_id, cpu=capacity[0], memory_mib=capacity[1]), operation=operation
        )
        for record in [r for r in self.records.values() if r.node_id == node_id]:
            if record.state is SliceState.FAILED:  # a failure from before the restart is forgotten
                del self.records[record.key]
            elif record.state is SliceState.ACTIVE:  # nothing runs yet: the node starts it again
                self._write(record, state=SliceState.ACTIVATING)
            elif record.state is SliceState.LOADED:
                self._write(record, state=SliceState.LOADING)
        self.work(rounds)

    @precondition(lambda self: self.up())
    @rule(data=st.data(), rounds=WORK)
    def node_lost(self, data: st.DataObject, rounds: int) -> None:
        """The node dies (its lease expires): its registration goes, its records stay for the leader."""
        self.nodes[data.draw(st.sampled_from(self.up()))].status = "down"
        self.work(rounds)

    @precondition(lambda self: self.up())
    @rule(data=st.data(), rounds=WORK)
    def node_stopping(self, data: st.DataObject, rounds: int) -> None:
        """A graceful stop begins: the registration says leaving before anything stops."""
        self.nodes[data.draw(st.sampled_from(self.up()))].status = "stopping"
        self.work(rounds)

    @precondition(lambda self: self.stopping())
    @rule(data=st.data(), rounds=WORK)
    def node_stopped(self, data: st.DataObject, rounds: int) -> None:
        """The graceful stop ends: instances stopped, their records forgotten, the lease revoked."""
        node_id = data.draw(st.sampled_from(sorted(self.stopping())))
        for key in [k for k, r in self.records.items() if r.node_id == node_id]:
            del self.records[key]
        self.nodes[node_id].status = "down"
        self.work(rounds)

    @precondition(lambda self: any(r.state is SliceState.ACTIVE for r in self.records.values()))
    @rule(data=st.data(), rounds=WORK)
    def instance_crashes(self, data: st.DataObject, rounds: int) -> None:
        """A slice process dies: the node restarts it (not ACTIVE meanwhile)."""
        key = data.draw(
            st.sampled_from(sorted(k for k, r in self.records.items() if r.state is SliceState.ACTIVE))
        )
        self._write(self.records[key], state=SliceState.ACTIVATING)
        self.work(rounds)

    @rule(seconds=st.sampled_from([1.0, 30.0, FAILED_RETRY_AFTER]), rounds=WORK)
    def time_passes(self, seconds: float, rounds: int) -> None:
        self.now += seconds
        self.work(rounds)

    # ------------------------------------------------------------ the leader and the nodes at work

    @rule()
    def leader_reconciles(self) -> None:
        self.carry_out(self.plan())

    @rule(rounds=st.integers(1, 4))
    def cluster_works(self, rounds: int) -> None:
        self.work(rounds)

    def work(self, rounds: int) -> None:
        """Rounds of: the leader reconciles, then every up node takes one step on each of its records."""
        for _ in range(rounds):
            self.carry_out(self.plan())
            up = set(self.up())
            for key in [k for k, r in self.records.items() if r.node_id in up and r.state in NEXT]:
                self.node_step(key)

    @precondition(lambda self: self.up())
    @rule(data=st.data())
    def node_works(self, data: st.DataObject) -> None:
        node_id = data.draw(st.sampled_from(self.up()))
        mine = sorted(k for k, r in self.records.items() if r.node_id == node_id and r.state in NEXT)
        if mine:
            self.node_step(data.draw(st.sampled_from(mine)))

    def node_step(self, key: str) -> None:
        record = self.records[key]
        after = NEXT[record.state]
        installing = record.state in (SliceState.LOAD, SliceState.ACTIVATE, SliceState.LOADING)
        if after is None:
            del self.records[key]
        elif installing and str(record.coordinates) in self.broken:
            self._write(record, state=SliceState.FAILED, reason=MISSING, timestamp=self.now)
        else:
            self._write(record, state=after)

    def carry_out(self, p: Plan) -> None:
        """Check the plan against the invariants, then write it (compare-and-swap, as the leader does)."""
        self.last_plan = p
        live = {n.node_id for n in self.live()}
        stopping = self.stopping()
        closed = self.operated("cordoned") | self.operated("draining")
        for action in p.actions:
            if isinstance(action, CreateInstance):
                assert action.node_id in live, f"placed on a node that is gone: {action}"
                assert action.node_id not in stopping, f"placed on a node that is stopping: {action}"
                assert action.node_id not in closed, f"placed on a cordoned or draining node: {action}"
        removed = frozenset(a.key for a in p.actions if isinstance(a, (RemoveInstance, DeleteRecord)))
        for artifact, spec in self.specs.items():
            floor = min(spec.floor, spec.instances)
            before, after = self.active(artifact), self.active(artifact, removed)
            assert after >= min(floor, before), (
                f"{artifact}: the plan takes ACTIVE from {before} to {after}, below its floor of {floor}:"
                f" {[a for a in p.actions if getattr(a, 'key', None) in removed]}"
            )
        for action in p.actions:
            self.revision += 1
            match action:
                case CreateInstance():
                    key = f"slices/{action.node_id}/{action.coordinates}/{action.instance}"
                    assert key not in self.records
                    self.records[key] = ObservedInstance(
                        node_id=action.node_id,
                        coordinates=action.coordinates,
                        instance=action.instance,
                        state=SliceState.ACTIVATE,
                        timestamp=self.now,
                        key=key,
                        mod_revision=self.revision,
                    )
                case RemoveInstance() | ActivateInstance():
                    record = self.records[action.key]
                    assert record.mod_revision == action.mod_revision
                    state = SliceState.UNLOAD if isinstance(action, RemoveInstance) else SliceState.ACTIVATE
                    self.records[action.key] = attrs.evolve(record, state=state, mod_revision=self.revision)
                case DeleteRecord():
                    del self.records[action.key]

    # ------------------------------------------------------------ convergence

    @invariant()
    def records_name_known_nodes(self) -> None:
        assert all(r.node_id in self.nodes for r in self.records.values())

    def teardown(self) -> None:
        """The faults stop: every node is up again; leader and nodes work until nothing is left to do."""
        if not self.nodes:
            return
        for node_id, node in self.nodes.items():
            if node.status == "stopping":
                self.node_stopped_now(node_id)
            if self.nodes[node_id].status == "down":
                self.node_starts(node_id, (node.capacity.cpu, node.capacity.memory_mib), 0)
        for _ in range(60):
            p = self.plan()
            busy = [k for k, r in self.records.items() if r.state in NEXT]
            if not p.actions and not busy:
                break
            self.carry_out(p)
            for key in busy:
                if key in self.records and self.records[key].state in NEXT:
                    self.node_step(key)
        else:
            raise AssertionError(f"no convergence in 60 rounds: {self.plan()} {self.records}")
        self.check_converged(self.plan())

    def node_stopped_now(self, node_id: str) -> None:
        for key in [k for k, r in self.records.items() if r.node_id == node_id]:
            del self.records[key]
        self.nodes[node_id].status = "down"

    def check_converged(self, p: Plan) -> None:
        problems = {x.artifact: x.message for x in p.problems}
        by_artifact = collections.defaultdict(list)
        for record in self.records.values():
            by_artifact[record.coordinates.artifact_id].append(record)
        assert set(by_artifact) <= set(self.specs), f"instances of no blueprint: {self.records}"
        draining = self.operated("draining")
        nodes = [n for n in self.live() if n.node_id not in draining]
        wanted = {a: Coordinates.parse(s.artifact) for a, s in self.specs.items()}
        current = {
            s.artifact: dict(
                collections.Counter(r.node_id for r in by_artifact[a] if r.coordinates == wanted[a])
            )
            for a, s in self.specs.items()
            if str(wanted[a]) not in self.broken
        }
        excluded = {
            s.artifact: frozenset(n.node_id for n in nodes)
            for s in self.specs.values()
            if s.artifact in self.broken
        }
        placements = allocate_all(
            list(self.specs.values()), nodes, current, excluded, self.operated("cordoned")
        )
        for artifact, spec in self.specs.items():
            mine = by_artifact[artifact]
            new = [r for r in mine if r.coordinates == wanted[artifact]]
            old = [r for r in mine if r.coordinates != wanted[artifact]]
            assert all(r.state is SliceState.ACTIVE for r in old), old
            if str(wanted[artifact]) in self.broken:
                assert all(r.state is SliceState.FAILED for r in new), new
                if old and new:  # the old version keeps serving; the status says the upgrade is stuck
                    assert "is stuck" in problems.get(artifact, ""), (problems, mine)
                continue
            assert all(r.state is SliceState.ACTIVE for r in new), new
            placement = placements[spec.artifact]
            placed = sum(placement.counts.values())
            assert len(new) >= placed, (spec, mine, placement)
            on_draining = [r for r in mine if r.node_id in draining]
            if old or len(new) > placed or on_draining:  # held by the floor: one fewer would be below it
                assert len(mine) <= min(spec.floor, spec.instances), (spec, mine, placement)
                assert artifact in problems, (spec, mine)
            if on_draining:
                assert "drain of" in problems[artifact], (problems, mine)


examples = int(os.environ.get("AETHER_SIM_EXAMPLES", "100"))
ClusterSimulation.TestCase.settings = settings(
    max_examples=examples,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestClusterSimulation = ClusterSimulation.TestCase
