"""The deterministic fast layer of the fault suite (issue 11), over the real shell: the real
ClusterDeploymentManager, LeadershipMonitor and NodeDeploymentManagers (one per node) run against the
memory store, with simulated slice processes (`FakeSliceStore`) on trio's virtual clock, under schedules
hypothesis draws: blueprint changes (apply, scale, upgrade, failing upgrade, delete), node changes and
faults (join, graceful stop, crash, restart, lease lapse, leader change, slice process crash, KV faults
on a node's view of the store) and time passing.

Unlike test_cluster_simulation.py (the planner with modelled nodes), nothing here is a model of aether's
own code: what is simulated is only what is outside it — the slice processes, Raft's choice of leader,
and what a node's process does around its managers (`_Registration`'s lease: register, keep alive,
re-register after a lapse; a graceful stop's order of steps, as in `serve_node`).

Invariants, checked at every revision the store commits (a watch on everything, one event at a time):
- a leader's command that takes an ACTIVE instance out of service (UNLOAD, DEACTIVATE) never leaves its
  slice with fewer ACTIVE instances on registered nodes than min(floor, ACTIVE before) — unless an
  instance of it was lost to a fault (crash, node loss or stop) in the last second;
- nothing is placed on a node that has been marked leaving, or has been gone, for a second or more;
- no manager writes without end while no time passes (5,000 writes at one virtual instant);
and once the faults stop (every node up, no KV faults), the cluster converges: every wanted slice has
the allocation's placement ACTIVE with a live process behind each ACTIVE record, nothing else runs except
the old version of an upgrade that cannot proceed (its new version fails to install, or the floor holds
it), which keeps serving; no FAILED record outlives its node's restart.

Schedules per minute are printed (`-s` shows them); `AETHER_SHELL_SIM_EXAMPLES=2000` runs more;
`AETHER_SHELL_SIM_SHRINK=0` reports a failing schedule unshrunk.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable

import attrs
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import Phase as Stage
from hypothesis import strategies as st
from shell_support import FakeSliceStore
from trio.testing import MockClock

from aether_kv import Event, KVError, LeaseNotFoundError, MemoryStore, OutcomeUnknownError, UnavailableError
from aether_node.control._allocation import NodeCapacity, allocate_all
from aether_node.control._cluster_manager import ClusterDeploymentManager, LeadershipMonitor
from aether_node.core._blueprint import Blueprint, Resources, SliceSpec
from aether_node.core._coordinates import Coordinates
from aether_node.core._policies import RestartPolicy
from aether_node.core._records import (
    Capacity,
    NodeRecord,
    SliceRecord,
    SliceState,
    decode_record,
    encode_record,
)
from aether_node.core._schema import BLUEPRINTS, NODES, PROBLEMS_PREFIX, SLICES, InstanceKey, node_key
from aether_node.runtime._deployment import NodeDeploymentManager
from aether_node.runtime._lifecycle import Phase

ARTIFACTS = ("org.example:echo", "org.example:greeter")
NODE_IDS = ("n1", "n2", "n3", "n4")
CAPACITIES = ((8.0, 8192), (2.0, 2048), (1.0, 1024))
TTL = 4.0
GRACE = 1.0  # how long the leader may act on a view that has not yet seen a change (virtual seconds)
SETTLE = 400.0  # virtual seconds the cluster gets to converge once the faults stop
STORM = 5000  # writes at one instant of virtual time that can only be a loop
POLICY = RestartPolicy(max_restarts=3, window=30.0, initial=0.25, maximum=1.0)


# ---------------------------------------------------------------- the simulated cluster


@attrs.define(eq=False)
class SimNode:
    node_id: str
    capacity: tuple[float, int]
    kv: MemoryStore  # this node's view of the store (its faults are its own)
    store: FakeSliceStore
    scope: trio.CancelScope
    lease: int = 0
    manager: NodeDeploymentManager | None = None
    status: str = "up"  # up | stopping | down

    def record(self, *, leaving: bool = False) -> bytes:
        cpu, memory = self.capacity
        return encode_record(
            NodeRecord(
                node_id=self.node_id,
                ingress="127.0.0.1:1",
                capacity=Capacity(cpu=cpu, memory_mib=memory),
                lease_ttl=TTL,
                leaving=leaving,
            )
        )


class Violation(AssertionError):
    pass


class Cluster:
    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.kv = MemoryStore(clock=trio.current_time, address="observer")
        self.kv.set_leader(None)
        self.nodes: dict[str, SimNode] = {}
        self.broken: set[str] = set()  # coordinates whose install fails on every node
        self.specs: dict[str, SliceSpec] = {}
        self.versions: dict[str, int] = {}
        self.served_before_failing: set[str] = set()  # artifacts ACTIVE when a failing upgrade came
        self.violations: list[str] = []
        self.checker = Checker(self)

    # ------------------------------------------------------------ nodes

    def up(self) -> list[str]:
        return sorted(i for i, n in self.nodes.items() if n.status == "up")

    async def start_node(self, node_id: str, capacity: tuple[float, int]) -> None:
        old = self.nodes.get(node_id)
        if old is not None and old.status != "down":
            return
        node = SimNode(
            node_id=node_id,
            capacity=capacity,
            kv=self.kv.replica(node_id),
            store=FakeSliceStore(broken=self.broken),
            scope=trio.CancelScope(),
        )
        self.nodes[node_id] = node
        if self.kv.leader is None:
            self.kv.set_leader(node_id)
        before = self.kv.revision
        await self.nursery.start(self._run_node, node)
        if old is not None and not node.kv.pending_faults:
            # started (its records taken in): no FAILED record from before the restart is left
            for item in (await self.kv.range(f"{SLICES}{node_id}/")).kvs:
                record = decode_record(item.key, item.value, SliceRecord)
                if record.state is SliceState.FAILED and item.mod_revision <= before:
                    self.violations.append(f"{item.key}: FAILED from before {node_id} restarted outlived it")

    async def _register(self, node: SimNode) -> None:
        """`_Registration.register_until_done`: a lease, the registration on it; retried with backoff."""
        backoff = 0.1
        while True:
            try:
                lease = (await node.kv.lease_grant(TTL)).lease
                await node.kv.put(node_key(node.node_id), node.record(), lease=lease)
            except KVError:
                await trio.sleep(backoff)
                backoff = min(backoff * 2, TTL / 2)
                continue
            node.lease = lease
            if node.manager is not None:
                node.manager.lease = lease
            return

    async def _keep_alive(self, node: SimNode) -> None:
        """`_Registration.keep_alive` (and `follow`'s republish after a new registration)."""
        while True:
            await trio.sleep(TTL / 4)
            try:
                await node.kv.lease_keepalive(node.lease)
            except LeaseNotFoundError:
                if node.status == "stopping":
                    await trio.sleep_forever()
                await self._register(node)
                assert node.manager is not None
                while True:
                    try:
                        await node.manager.republish(node.lease)
                        break
                    except KVError:
                        await trio.sleep(0.5)
            except KVError:
                pass

    async def _run_node(
        self, node: SimNode, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with node.scope:
            await self._register(node)
            manager = NodeDeploymentManager(
                node.kv,
                node.node_id,
                node.store,
                lease=node.lease,
                restart_policy=POLICY,
                clock=trio.current_time,
            )
            node.manager = manager
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_alive, node)
                while True:
                    try:
                        await nursery.start(manager.run)
                        break
                    except KVError:  # `supervise` restarts the service
                        await trio.sleep(0.5)
                task_status.started()
                leadership = LeadershipMonitor(node.kv, period=0.25)
                leader = ClusterDeploymentManager(
                    node.kv, node.node_id, interval=1.0, clock=trio.current_time
                )
                nursery.start_soon(leadership.run)
                nursery.start_soon(leader.run, leadership)
        # cancelled: a crash ends every slice process with the node
        for key in list(node.store.instances):
            node.store.crash(key, "the node died")
        node.store.instances.clear()

    def _elect(self, without: str) -> None:
        if self.kv.leader == without:
            others = [i for i in self.up() if i != without]
            self.kv.set_leader(others[0] if others else None)

    def crash(self, node_id: str) -> None:
        """The node's process dies: its lease lapses after the TTL; its records stay for the leader."""
        node = self.nodes[node_id]
        node.status = "down"
        node.scope.cancel()
        self._elect(node_id)

    async def stop(self, node_id: str, drain: float) -> None:
        """A graceful stop in `serve_node`'s order; `drain` seconds pass between marking the registration
        leaving and stopping the managers (the leader must place nothing there meanwhile)."""
        node = self.nodes[node_id]
        node.status = "stopping"
        self._elect(node_id)
        self.nursery.start_soon(self._stop, node, drain)

    async def _stop(self, node: SimNode, drain: float) -> None:
        with trio.move_on_after(2):
            try:
                await node.kv.put(node_key(node.node_id), node.record(leaving=True), lease=node.lease)
            except KVError:
                pass
        await trio.sleep(drain)
        assert node.manager is not None
        node.manager.stop()
        with trio.move_on_after(3):
            await node.manager.withdraw_all()
        await node.store.close_all()
        with trio.move_on_after(2):
            await node.manager.forget_all()
        with trio.move_on_after(2):
            try:
                await node.kv.lease_revoke(node.lease)
            except KVError:
                pass
        node.scope.cancel()
        node.status = "down"

    # ------------------------------------------------------------ blueprints

    async def write_blueprints(self) -> None:
        blueprint = Blueprint(name="sim", slices=tuple(self.specs[a] for a in sorted(self.specs)))
        while True:
            try:
                if blueprint.slices:
                    await self.kv.put(BLUEPRINTS + "sim", encode_record(blueprint))
                else:
                    await self.kv.delete(BLUEPRINTS + "sim")
                return
            except KVError:  # no leader for now (every node down): write it once one is back
                await trio.sleep(1)

    def wanted(self, artifact: str) -> Coordinates:
        return Coordinates.parse(self.specs[artifact].artifact)


# ---------------------------------------------------------------- the invariants, at every revision


class Checker:
    """Follows every change the store commits, one event at a time, and checks the invariants."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.records: dict[str, SliceRecord] = {}
        self.registered: dict[str, NodeRecord] = {}
        self.leaving_since: dict[str, float] = {}
        self.gone_since: dict[str, float] = {}
        self.specs: dict[str, SliceSpec] = {}
        self.lost_at: dict[str, float] = {}  # artifact → when an instance of it last fell to a fault

    def active(self, artifact: str) -> int:
        return sum(
            1
            for key, record in self.records.items()
            if record.state is SliceState.ACTIVE
            and (parsed := InstanceKey.parse(key)) is not None
            and parsed.coordinates.artifact_id == artifact
            and parsed.node_id in self.registered
        )

    def _artifacts_on(self, node_id: str) -> set[str]:
        return {
            parsed.coordinates.artifact_id
            for key, record in self.records.items()
            if record.state is SliceState.ACTIVE
            and (parsed := InstanceKey.parse(key)) is not None
            and parsed.node_id == node_id
        }

    def lost(self, artifact: str, now: float, *, node: bool = True) -> None:
        """An instance of `artifact` fell to a fault: its node was lost or is stopping, or (`node=False`)
        its process crashed (it is restarted where it was)."""
        self.lost_at[artifact] = now
        if (
            node
        ):  # the old version of a failing upgrade may go with its node: only the leader must not remove it
            self.cluster.served_before_failing.discard(artifact)

    def fail(self, message: str) -> None:
        self.cluster.violations.append(f"t={trio.current_time():.2f}: {message}")

    async def run(self) -> None:
        instant, writes = -1.0, 0
        async for events in self.cluster.kv.watch("", 1):
            if trio.current_time() != instant:
                instant, writes = trio.current_time(), 0
            writes += len(events)
            if writes > STORM:  # a manager rewriting without end, in no time: say so and stop the run
                raise Violation(f"t={instant:.2f}: {writes} writes without time passing; last {events[-1]}")
            for event in events:
                self.check(event)

    def check(self, event: Event) -> None:
        now = trio.current_time()
        key = event.kv.key
        if key.startswith(NODES):
            node_id = key[len(NODES) :]
            if event.kind == "put":
                record = decode_record(key, event.kv.value, NodeRecord)
                self.registered[node_id] = record
                self.gone_since.pop(node_id, None)
                if record.leaving:
                    self.leaving_since.setdefault(node_id, now)
                    for artifact in self._artifacts_on(node_id):
                        self.lost(artifact, now)
                else:
                    self.leaving_since.pop(node_id, None)
            else:
                for artifact in self._artifacts_on(node_id):
                    self.lost(artifact, now)
                self.registered.pop(node_id, None)
                self.gone_since[node_id] = now
        elif key.startswith(BLUEPRINTS):
            if event.kind == "put":
                blueprint = decode_record(key, event.kv.value, Blueprint)
                self.specs = {s.artifact.rsplit(":", 1)[0]: s for s in blueprint.slices}
            else:
                self.specs = {}
        elif key.startswith(SLICES):
            parsed = InstanceKey.parse(key)
            assert parsed is not None, key
            artifact = parsed.coordinates.artifact_id
            before = self.active(artifact)
            prev = self.records.get(key)
            if event.kind == "put":
                record = decode_record(key, event.kv.value, SliceRecord)
                self.records[key] = record
            else:
                record = None
                self.records.pop(key, None)
            after = self.active(artifact)
            if prev is None and record is not None and record.state is SliceState.ACTIVATE:
                self._check_placement(parsed, now)
            was_active = prev is not None and prev.state is SliceState.ACTIVE
            if (
                was_active
                and record is not None
                and record.state in (SliceState.UNLOAD, SliceState.DEACTIVATE)
            ):
                self._check_floor(artifact, before, after, now, key)
            elif was_active and after < before:  # the node's doing: a crash, a stop
                self.lost(artifact, now, node=record is None)

    def _check_placement(self, parsed: InstanceKey, now: float) -> None:
        node_id = parsed.node_id
        leaving = self.leaving_since.get(node_id)
        if leaving is not None and now - leaving >= GRACE:
            self.fail(f"{parsed.label} placed on {node_id}, marked leaving since t={leaving:.2f}")
        gone = self.gone_since.get(node_id)
        if node_id not in self.registered and gone is not None and now - gone >= GRACE:
            self.fail(f"{parsed.label} placed on {node_id}, gone since t={gone:.2f}")

    def _check_floor(self, artifact: str, before: int, after: int, now: float, key: str) -> None:
        spec = self.specs.get(artifact)
        if spec is None:
            return  # the slice is no longer wanted: nothing to keep serving
        floor = min(spec.floor, spec.instances)
        if after >= min(floor, before):
            return
        if now - self.lost_at.get(artifact, -1e9) < GRACE:
            return  # an instance fell to a fault just now: the leader acted on a view from before it
        self.fail(f"{key} taken out of service: {artifact} ACTIVE {before} → {after}, floor {floor}")


# ---------------------------------------------------------------- convergence


async def converged(cluster: Cluster) -> str:
    """'' if the cluster has converged, else what is still wrong."""
    kv = cluster.kv
    records = {
        item.key: decode_record(item.key, item.value, SliceRecord) for item in (await kv.range(SLICES)).kvs
    }
    problems = {
        item.key[len(PROBLEMS_PREFIX) :]: item.value.decode()
        for item in (await kv.range(PROBLEMS_PREFIX)).kvs
    }
    by_artifact: dict[str, list[tuple[InstanceKey, SliceRecord]]] = collections.defaultdict(list)
    for key, record in records.items():
        parsed = InstanceKey.parse(key)
        assert parsed is not None
        if parsed.node_id not in cluster.up():
            return f"{key} on a node that is not up"
        by_artifact[parsed.coordinates.artifact_id].append((parsed, record))
        local = cluster.nodes[parsed.node_id].store.get(parsed)
        if record.state is SliceState.ACTIVE and (
            local is None or not local.alive or local.phase is not Phase.ACTIVE
        ):
            return f"{key} is ACTIVE but no process serves it"
    if set(by_artifact) - set(cluster.specs):
        return f"instances of no blueprint: {sorted(set(by_artifact) - set(cluster.specs))}"
    nodes = [
        NodeCapacity(node_id=i, cpu=cluster.nodes[i].capacity[0], memory_mib=cluster.nodes[i].capacity[1])
        for i in cluster.up()
    ]
    specs = list(cluster.specs.values())
    current = {
        s.artifact: dict(
            collections.Counter(k.node_id for k, _ in by_artifact[a] if str(k.coordinates) == s.artifact)
        )
        for a, s in cluster.specs.items()
        if s.artifact not in cluster.broken
    }
    excluded = {
        s.artifact: frozenset(n.node_id for n in nodes) for s in specs if s.artifact in cluster.broken
    }
    placements = allocate_all(specs, nodes, current, excluded)
    for artifact, spec in cluster.specs.items():
        mine = by_artifact[artifact]
        new = [(k, r) for k, r in mine if str(k.coordinates) == spec.artifact]
        old = [(k, r) for k, r in mine if str(k.coordinates) != spec.artifact]
        if any(r.state is not SliceState.ACTIVE for _, r in old):
            return f"{artifact}: an old instance is not ACTIVE: {old}"
        if spec.artifact in cluster.broken:
            if any(r.state is SliceState.ACTIVE for _, r in new):
                return f"{artifact}: a broken version is ACTIVE"
            if artifact in cluster.served_before_failing and spec.instances > 0 and not old:
                return f"{artifact}: the failed upgrade took the old version offline"
            continue
        if any(r.state is not SliceState.ACTIVE for _, r in new):
            return f"{artifact}: not every instance of {spec.artifact} is ACTIVE yet"
        placed = sum(placements[spec.artifact].counts.values())
        if len(new) < placed:
            return f"{artifact}: {len(new)} of {placed} placed"
        held = old or len(new) > placed  # held by the floor: one fewer would be below it
        if held and (len(mine) > min(spec.floor, spec.instances) or artifact not in problems):
            return f"{artifact}: extra instances {len(mine)} for {placed} placed, problems {problems}"
    return ""


# ---------------------------------------------------------------- schedules


def _apply(artifact: str, instances: int, floor: int | None, memory: int = 0) -> Callable[[Cluster], object]:
    async def run(cluster: Cluster) -> None:
        version = cluster.versions.setdefault(artifact, 1)
        cluster.specs[artifact] = SliceSpec(
            artifact=f"{artifact}:{version}.0",
            instances=instances,
            min_available=None if floor is None else min(floor, instances),
            resources=Resources(memory_mib=memory),
        )
        await cluster.write_blueprints()

    run.__qualname__ = f"apply({artifact}, {instances}, floor={floor}, memory={memory})"
    return run


def _upgrade(artifact: str, failing: bool) -> Callable[[Cluster], object]:
    async def run(cluster: Cluster) -> None:
        spec = cluster.specs.get(artifact)
        if spec is None:
            return
        cluster.versions[artifact] += 1
        coordinates = f"{artifact}:{cluster.versions[artifact]}.0"
        if failing:
            cluster.broken.add(coordinates)
            if cluster.checker.active(artifact):
                cluster.served_before_failing.add(artifact)
        cluster.specs[artifact] = attrs.evolve(spec, artifact=coordinates)
        await cluster.write_blueprints()

    run.__qualname__ = f"upgrade({artifact}, failing={failing})"
    return run


def _delete(artifact: str) -> Callable[[Cluster], object]:
    async def run(cluster: Cluster) -> None:
        if cluster.specs.pop(artifact, None) is not None:
            cluster.served_before_failing.discard(artifact)
            await cluster.write_blueprints()

    run.__qualname__ = f"delete({artifact})"
    return run


def _node_op(kind: str, index: int, arg: float = 0.0) -> Callable[[Cluster], object]:
    async def run(cluster: Cluster) -> None:
        node_id = NODE_IDS[index]
        node = cluster.nodes.get(node_id)
        if kind == "start":
            await cluster.start_node(node_id, CAPACITIES[int(arg)])
            return
        if node is None or node.status != "up":
            return
        if kind == "crash":
            cluster.crash(node_id)
        elif kind == "restart":  # a crash, and the node back before its lease lapses
            cluster.crash(node_id)
            await cluster.start_node(node_id, node.capacity)
        elif kind == "stop":
            await cluster.stop(node_id, arg)
        elif kind == "lease_lapses":
            try:
                cluster.kv.expire_lease(node.lease)
            except KVError:
                pass
        elif kind == "leads":
            cluster.kv.set_leader(node_id)
        elif kind == "slice_crash":
            keys = sorted(node.store.instances, key=lambda k: k.key)
            if keys:
                node.store.crash(keys[int(arg) % len(keys)])

    run.__qualname__ = f"{kind}({NODE_IDS[index]}, {arg})"
    return run


def _kv_fault(index: int, count: int, error: str, operations: frozenset[str]) -> Callable[[Cluster], object]:
    async def run(cluster: Cluster) -> None:
        node = cluster.nodes.get(NODE_IDS[index])
        if node is None:
            return
        node.kv.fail_next(
            count,
            error=UnavailableError if error == "unavailable" else OutcomeUnknownError,
            applied=error == "applied",
            operations=operations,
        )

    run.__qualname__ = f"kv_fault({NODE_IDS[index]}, {count}x {error} on {sorted(operations)})"
    return run


artifacts = st.sampled_from(ARTIFACTS)
node_index = st.integers(0, len(NODE_IDS) - 1)
OPS = st.one_of(
    st.builds(
        _apply, artifacts, st.integers(0, 4), st.none() | st.integers(0, 4), st.sampled_from([0, 512, 1024])
    ),
    st.builds(_upgrade, artifacts, st.booleans()),
    st.builds(_delete, artifacts),
    st.builds(_node_op, st.just("start"), node_index, st.integers(0, len(CAPACITIES) - 1).map(float)),
    st.builds(_node_op, st.just("crash"), node_index),
    st.builds(_node_op, st.just("restart"), node_index),
    st.builds(_node_op, st.just("stop"), node_index, st.sampled_from([0.0, 2.0, 5.0])),
    st.builds(_node_op, st.just("lease_lapses"), node_index),
    st.builds(_node_op, st.just("leads"), node_index),
    st.builds(_node_op, st.just("slice_crash"), node_index, st.integers(0, 7).map(float)),
    st.builds(
        _kv_fault,
        node_index,
        st.integers(1, 6),
        st.sampled_from(["unavailable", "unknown", "applied"]),
        st.sets(st.sampled_from(sorted(MemoryStore.OPERATIONS)), min_size=1).map(frozenset),
    ),
)
STEPS = st.lists(st.tuples(OPS, st.sampled_from([0.0, 0.5, 2.0, 10.0])), max_size=20)
START = st.tuples(
    st.lists(st.integers(0, len(CAPACITIES) - 1), min_size=1, max_size=3),
    st.integers(1, 4),
    st.none() | st.integers(0, 4),
)


async def run_schedule(start: tuple[list[int], int, int | None], steps: list[tuple[Callable, float]]) -> None:
    capacities, instances, floor = start
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        nursery.start_soon(cluster.checker.run)
        for index, capacity in enumerate(capacities):
            await cluster.start_node(NODE_IDS[index], CAPACITIES[capacity])
        await _apply(ARTIFACTS[0], instances, floor)(cluster)
        await trio.sleep(10)
        for op, work in steps:
            await op(cluster)
            await trio.sleep(work)
            assert not cluster.violations, cluster.violations
        # The faults stop: every node up again, no KV faults; the cluster must converge.
        for node in cluster.nodes.values():
            node.kv.clear_faults()
        with trio.fail_after(30):
            while any(n.status == "stopping" for n in cluster.nodes.values()):
                await trio.sleep(0.5)
        for node_id, node in list(cluster.nodes.items()):
            if node.status == "down":
                await cluster.start_node(node_id, node.capacity)
        if cluster.kv.leader is None:
            cluster.kv.set_leader(cluster.up()[0])
        deadline = trio.current_time() + SETTLE
        wrong = await converged(cluster)
        while wrong and trio.current_time() < deadline:
            await trio.sleep(1.0)
            wrong = await converged(cluster)
        assert not cluster.violations, cluster.violations
        assert not wrong, f"no convergence within {SETTLE:g} s: {wrong}"
        nursery.cancel_scope.cancel()


EXAMPLES = int(os.environ.get("AETHER_SHELL_SIM_EXAMPLES", "60"))
_ran: list[float] = []


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    # no "explain" phase: it traces every line of a failing schedule, which takes minutes here
    # (`AETHER_SHELL_SIM_SHRINK=0`: report the first failing schedule as found, unshrunk — quick on a
    # loaded machine, e.g. to check that a reverted fix is caught)
    phases=[Stage.explicit, Stage.reuse, Stage.generate, Stage.target]
    + ([Stage.shrink] if os.environ.get("AETHER_SHELL_SIM_SHRINK", "1") != "0" else []),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(start=START, steps=STEPS)
# a graceful stop of a node that serves, with time to drain (with placement on stopping nodes allowed,
# the leader places there without end: defect 7)
@example(start=([0, 0], 2, None), steps=[(_node_op("stop", 0, 5.0), 10.0)])
def test_the_real_managers_keep_the_invariants_and_converge(
    start: tuple[list[int], int, int | None], steps: list[tuple[Callable, float]]
) -> None:
    began = time.perf_counter()
    trio.run(run_schedule, start, steps, clock=MockClock(autojump_threshold=0))
    _ran.append(time.perf_counter() - began)


def teardown_module() -> None:
    if _ran:
        per_minute = len(_ran) / sum(_ran) * 60
        print(f"\nshell simulation: {len(_ran)} schedules in {sum(_ran):.1f} s ({per_minute:.0f} a minute)")
