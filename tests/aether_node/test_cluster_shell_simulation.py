"""The deterministic fast layer of the fault suite (issue 11), over the real shell: the real
ClusterDeploymentManager, LeadershipMonitor, NodeDeploymentManagers and the node's `_Registration` (one
per node: its lease, keep-alive, registering again, republishing) run against the memory store, with
simulated slice processes (`FakeSliceStore`) on trio's virtual clock, under schedules hypothesis draws:
blueprint changes (apply, scale, upgrade, failing upgrade, delete), node changes and faults (join,
graceful stop, crash, restart, lease lapse, the lease taken — expired or revoked — while the node
republishes its endpoints, before or after one of its transactions, leader change, slice process crash,
KV faults on a node's view of the store) and time passing.

Unlike test_cluster_simulation.py (the planner with modelled nodes), nothing here is a model of aether's
own code: what is simulated is only what is outside it — the slice processes (a load after the store's
`close_all` fails, and each stop hook takes half a second, as the real store's), Raft's choice of
leader (a stopping node's replica leads while no node is up), and the order of a graceful stop's steps
in `serve_node`.

Invariants, checked at every revision the store commits (a watch on everything, one event at a time):
- a leader's command that takes an ACTIVE instance out of service (UNLOAD, DEACTIVATE) never leaves its
  slice with fewer ACTIVE instances on registered nodes than min(floor, ACTIVE before) — unless an
  instance of it was lost to a fault (crash, node loss or stop) in the last second; and while the
  wanted version fails to install, an ACTIVE instance of the old one goes only as surplus (for a slice
  that needs no resources, which always has room for all its instances);
- nothing is placed on a node that has been marked leaving, or has been gone, for a second or more;
- no service of a node (keep-alive, republish, deployment, leadership, cluster manager) ends, by an
  error or by returning, except the deployment manager in a graceful stop;
- a clean stop leaves none of the records the node had when it began; no FAILED record outlives its
  node's restart;
- no manager writes without end while no time passes (5,000 writes at one virtual instant), no task
  runs without end at one instant (20,000 scheduler passes), no schedule hangs (3,000 virtual s);
and once the faults stop (every node up, no KV faults), the cluster converges: every wanted slice has
the allocation's placement ACTIVE with a live process behind each ACTIVE record, nothing else runs except
the old version of an upgrade that cannot proceed (its new version fails to install, or the floor holds
it), which keeps serving (a slice that takes resources may give its room to another slice down to its
floor, as the per-revision check allows), at its count (what a lost node took of it is replaced with
it; one all of whose instances went with lost nodes is brought back from `cluster/serving/`, the version
recorded as the last that served); every node is registered on its current lease and
every ACTIVE instance's endpoints are published on that lease (the node recovered from every lease it
lost).

Found with each fix undone (the fix reverted in the working tree, the default run of 60 generated
schedules plus the explicit ones, 5 runs with hypothesis seeds 1-5, `AETHER_SHELL_SIM_SHRINK=0`; in
brackets: generated schedules only, `AETHER_SHELL_SIM_GENERATE_ONLY=1`):
- defect 3, a failed upgrade unloads the old version (`_reconcile.plan`: `retain = wanted_count`, the
  room computed without failure exclusions undone): 5 of 5 [4 of 5];
- defect 4, min_available ignored (`_reconcile.plan`: `keep = retain`): 5 of 5 [1 of 5; 0 of 5 before
  slices of 4096 MiB were drawn];
- defect 7, placements on a stopping node (the cluster manager passes no `stopping` to the planner):
  5 of 5 [2 of 5; the default run caught it 2 of 5 before the explicit scale-up during a drain];
- defect 7, FAILED records outliving a restart (`NodeDeploymentManager._forget_stale_failure` undone):
  5 of 5 [3 of 5];
- defect 7, a stop that leaves its records (`NodeDeploymentManager.stop` and `forget_all` undone):
  5 of 5 [5 of 5].
(The generated-only counts of defects 3 and 7 were taken before the 4096 MiB slices and the drain
example were added. Defects 3 and 4 rechecked on 2026-12-04 after the speed-up below, same way: 5 of 5
[4 of 5] and 5 of 5 [1 of 5].)
A finding, now fixed and checked in every run: endpoints stayed published, on the node's current
lease, for instances that no longer ran. Found by generation (lease lapses of two
nodes, KV faults with applied outcomes on a third, then a scale-down): the leader forgot the records
of the lapsed node as a gone node's while it registered again and republished. By the code: a worker
whose record was deleted (target GONE) first writes DEACTIVATING compared against the deleted key's
revision; the compare fails, the pass ends, and the worker waits for a change that never comes, so the
process kept running and its endpoints stayed (`_deployment._converge`, `_run_step`). Now a worker whose
record is gone stops the process without writing a state.

A finding, now fixed: a clean stop left its records when the delete of them met one KV error that came
after the stop began (`NodeDeploymentManager.forget_all` gave up at once; now it tries again until the
stop's deadline). Generation found it: `AETHER_SHELL_SIM_EXAMPLES=2000 AETHER_SHELL_SIM_GENERATE_ONLY=1
--hypothesis-seed=2` fails at schedule 1,613 without the fix and passes with it. (Its shrunk schedule
does not fail on this tree alone, so it is not an explicit example.)

Schedules per minute are printed (`-s` shows them; wall time and CPU time: the first depends on what
else the machine runs), and how often the lease fault went off; `AETHER_SHELL_SIM_EXAMPLES=2000` runs
more; `AETHER_SHELL_SIM_SHRINK=0` reports a failing schedule unshrunk.

Speed (issue 11 asks for thousands of schedules a minute). A schedule's CPU time is mostly the real
managers' work and trio's own (about half of it: task steps, cancel scopes, the exception that ends each
sleep). What it spent for nothing, and no longer does: full garbage collections walking pytest's,
hypothesis' and the imports' objects (a tenth; the schedules now run under the node's own `_tune_gc`),
every memory-store watch woken by every write under any prefix (now only its own), a set of prometheus
metrics built for each manager at each node start (now one disabled set), and the checker parsing every
instance key on every event (the leader's decoding of every instance record on every pass went with
`InstanceDecoder`). Measured on 2026-12-04, 2-core machine shared with other work, CPU time as printed:
`AETHER_SHELL_SIM_EXAMPLES=N AETHER_SHELL_SIM_GENERATE_ONLY=1 AETHER_SHELL_SIM_SHRINK=0 uv run pytest
tests/aether_node/test_cluster_shell_simulation.py -q -s -p no:cacheprovider --hypothesis-seed=S`,
before and after run at the same time (the same load for both), the same seeds:
- against main at 7bd372d (with `InstanceDecoder`), N=300, load average 3-5 besides: seeds 2, 4:
  1,410 → 1,693, 1,413 → 1,761 a CPU-minute (1.20-1.25 times as many);
- against main at d5a76c2 (before it; a memo of decoded records of the leader's in its place), N=500,
  load average 7-11 besides: seeds 2, 3, 4, 5: 1,257 → 1,560, 921 → 1,146, 1,051 → 1,292,
  1,064 → 1,345 (1.23-1.26); run one after the other at load average 7-11 instead, seeds 2, 3, 4:
  2,175 → 2,394, 1,627 → 3,089, 2,319 → 3,116.
CPU time itself grows with the load (the same code: 1,146 to 3,116), so only figures taken together
compare; at a load the machine can carry, it is past 2,000 a CPU-minute; on a saturated one, not.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import os
import time
import types
from collections.abc import Awaitable, Callable, Iterator, Sequence

import attrs
import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import Phase as Stage
from hypothesis import strategies as st
from shell_support import FakeSliceStore
from trio.testing import MockClock

from aether_kv import (
    Compare,
    Delete,
    Event,
    KVError,
    MemoryStore,
    OutcomeUnknownError,
    Put,
    TxnResult,
    UnavailableError,
)
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
from aether_node.core._schema import (
    BLUEPRINTS,
    ENDPOINTS,
    NODES,
    PROBLEMS_PREFIX,
    SLICE_CLAIMS,
    SLICES,
    InstanceKey,
    endpoint_key,
    node_key,
    serving_key,
)
from aether_node.node._cli import _tune_gc
from aether_node.node._node import _Registration
from aether_node.observe._metrics import NodeMetrics
from aether_node.runtime._deployment import NodeDeploymentManager
from aether_node.runtime._lifecycle import Phase

ARTIFACTS = ("org.example:echo", "org.example:greeter")
NODE_IDS = ("n1", "n2", "n3", "n4")
CAPACITIES = ((8.0, 8192), (2.0, 2048), (1.0, 1024))
TTL = 4.0
GRACE = 1.0  # how long the leader may act on a view that has not yet seen a change (virtual seconds)
SETTLE = 400.0  # virtual seconds the cluster gets to converge once the faults stop
STORM = 5000  # writes at one instant of virtual time that can only be a loop
LIMIT = 3000.0  # virtual seconds a schedule may take in all (its steps, the settling): past it, a hang
SPIN = 20_000  # passes of trio's scheduler at one instant of virtual time that can only be a loop
# Paces of what is outside the managers (virtual seconds; not waits for a condition): a service whose
# start failed on a KV error is started again after RESTART_AFTER (as `supervise` would), the operator
# retries a refused apply every OPERATOR_RETRY, and convergence is checked every CHECK_EVERY once the
# faults stop.
RESTART_AFTER = 0.5
SERVE_FIRST = 10.0  # the first blueprint is served this long before the schedule's steps begin
OPERATOR_RETRY = 1.0
CHECK_EVERY = 1.0
POLICY = RestartPolicy(max_restarts=3, window=30.0, initial=0.25, maximum=1.0)
# One disabled set of metrics for every manager, as a node shares its own among its parts (a set for
# each manager, built at each node start, was a twentieth of a schedule's CPU time).
METRICS = NodeMetrics(enabled=False)


# ---------------------------------------------------------------- the simulated cluster


FIRED: collections.Counter[str] = collections.Counter()  # faults that went off, over the run (printed)


class NodeView:
    """A node's view of the store (a `MemoryStore` replica: its faults are its own) with a tripwire for
    the fault "the lease goes during a republish": armed, the `count`-th transaction that puts an
    endpoint on a lease while the node republishes takes that lease away (expired or revoked) — before
    the transaction (it fails: LeaseNotFoundError) or just after it (the endpoints go with the lease)."""

    def __init__(self, store: MemoryStore, observer: MemoryStore) -> None:
        self.store = store
        self.observer = observer
        self.republishing = False
        self.tripwire: tuple[int, bool, bool] | None = None  # (count, after, revoke)

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    async def txn(
        self,
        compares: Sequence[Compare] = (),
        success: Sequence[Put | Delete] = (),
        failure: Sequence[Put | Delete] = (),
    ) -> TxnResult:
        lease = 0
        if self.tripwire is not None and self.republishing:
            lease = next(
                (o.lease for o in success if isinstance(o, Put) and o.lease and o.key.startswith(ENDPOINTS)),
                0,
            )
        if not lease:
            return await self.store.txn(compares, success, failure)
        assert self.tripwire is not None
        count, after, revoke = self.tripwire
        self.tripwire = (count - 1, after, revoke) if count > 1 else None
        if count > 1:
            return await self.store.txn(compares, success, failure)
        if not after:
            await self._take(lease, revoke)
            return await self.store.txn(compares, success, failure)
        result = await self.store.txn(compares, success, failure)
        await self._take(lease, revoke)
        return result

    async def _take(self, lease: int, revoke: bool) -> None:
        FIRED["lease taken during a republish"] += 1
        with contextlib.suppress(KVError):
            if revoke:  # as an operator's `lease revoke` would
                await self.observer.lease_revoke(lease)
            else:
                self.observer.expire_lease(lease)


@attrs.define(eq=False)
class SimNode:
    node_id: str
    capacity: tuple[float, int]
    kv: NodeView
    store: FakeSliceStore
    scope: trio.CancelScope
    registration: _Registration
    manager: NodeDeploymentManager | None = None
    status: str = "up"  # up | stopping | down
    stopped: trio.Event = attrs.field(factory=trio.Event)  # set when a graceful stop is done

    @property
    def lease(self) -> int:
        return self.registration.lease


def _only_kv_errors(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return all(_only_kv_errors(inner) for inner in error.exceptions)
    return isinstance(error, KVError)


def _leaves(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        return ", ".join(_leaves(inner) for inner in error.exceptions)
    return repr(error)


def _registration(kv: NodeView, node_id: str, capacity: tuple[float, int]) -> _Registration:
    """The node's own `_Registration` (lease, keep-alive, registering again, republishing)."""
    cpu, memory = capacity
    record = NodeRecord(
        node_id=node_id, ingress="127.0.0.1:1", capacity=Capacity(cpu=cpu, memory_mib=memory), lease_ttl=TTL
    )
    config = types.SimpleNamespace(node_id=node_id, lease_ttl=TTL)  # what `_Registration` reads of it
    return _Registration(kv, config, record)  # type: ignore[arg-type]


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
        self.unwritten = False  # `specs` changed since the blueprint was last written
        self.writing = False

    # ------------------------------------------------------------ nodes

    def up(self) -> list[str]:
        return sorted(i for i, n in self.nodes.items() if n.status == "up")

    async def start_node(self, node_id: str, capacity: tuple[float, int]) -> None:
        old = self.nodes.get(node_id)
        if old is not None and old.status != "down":
            return
        view = NodeView(self.kv.replica(node_id), self.kv)
        node = SimNode(
            node_id=node_id,
            capacity=capacity,
            kv=view,
            store=FakeSliceStore(broken=self.broken, stop_time=0.5),
            scope=trio.CancelScope(),
            registration=_registration(view, node_id, capacity),
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

    async def _run_node(
        self, node: SimNode, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """`serve_node`'s order: register, then the services (each one's end is a violation)."""
        with node.scope:
            registration = node.registration
            await registration.register_until_done()
            manager = NodeDeploymentManager(
                node.kv,  # type: ignore[arg-type]
                node.node_id,
                node.store,  # type: ignore[arg-type]
                lease=registration.lease,
                restart_policy=POLICY,
                clock=trio.current_time,
                metrics=METRICS,
            )
            node.manager = manager
            registration.on_lease = functools.partial(setattr, manager, "lease")

            async def republish(lease: int) -> None:
                node.kv.republishing = True  # the tripwire's time
                try:
                    await manager.republish(lease)
                finally:
                    node.kv.republishing = False

            leadership = LeadershipMonitor(node.kv, period=1.0)  # type: ignore[arg-type]
            leader = ClusterDeploymentManager(
                node.kv,  # type: ignore[arg-type]
                node.node_id,
                interval=5.0,
                clock=trio.current_time,
                metrics=METRICS,
            )
            async with trio.open_nursery() as nursery:
                for name, service in (
                    ("lease keep-alive", registration.keep_alive),
                    ("republish", functools.partial(registration.follow, republish)),
                    ("deployment", manager.run),
                ):
                    await nursery.start(self._service, node, name, service)
                task_status.started()
                nursery.start_soon(self._service, node, "leadership", leadership.run, False)
                nursery.start_soon(
                    self._service, node, "cluster manager", functools.partial(leader.run, leadership), False
                )
        # cancelled: a crash ends every slice process with the node
        for key in list(node.store.instances):
            node.store.crash(key, "the node died")
        node.store.instances.clear()

    async def _service(
        self,
        node: SimNode,
        name: str,
        service: Callable[..., Awaitable[object]],
        reports: bool = True,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run one of the node's services: a KV error before it reports started is tried again (as the
        node's supervisor would); once started, an end of it — an error or a return — is a violation (no
        error from the KV may end a node's service; `supervise` would hide it)."""
        started = False
        while True:
            try:
                async with trio.open_nursery() as nursery:
                    if reports:
                        await nursery.start(service)
                    else:
                        nursery.start_soon(service)
                    started = True
                    task_status.started()
                ended = "returned"
            except Exception as error:
                if not started and _only_kv_errors(error):
                    await trio.sleep(RESTART_AFTER)
                    continue
                ended = f"ended on {_leaves(error)}"
            if node.status != "up" and ended == "returned":
                return  # a graceful stop ends the deployment manager (`stop`)
            self.violations.append(f"t={trio.current_time():.2f}: {node.node_id}'s {name} {ended}")
            return

    def _elect(self, without: str, *, stopping: bool = False) -> None:
        """Raft's choice when `without`'s replica goes: another up node's, else a stopping node's (its
        replica serves until its node is down); a node that starts a graceful stop (`stopping`) keeps
        leading if no node is up (as when a whole cluster stops: the replicas stop last)."""
        if self.kv.leader != without:
            return
        others = [i for i in self.up() if i != without] or [
            i for i, n in sorted(self.nodes.items()) if n.status == "stopping" and i != without
        ]
        if others:
            self.kv.set_leader(others[0])
        elif not stopping:
            self.kv.set_leader(None)

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
        self._elect(node_id, stopping=True)
        self.nursery.start_soon(self._stop, node, drain)

    async def _stop(self, node: SimNode, drain: float) -> None:
        faults = node.kv.pending_faults
        with trio.move_on_after(2):
            await node.registration.mark_leaving()  # first: no new placement here
        marked = self.kv.revision
        await trio.sleep(drain)
        assert node.manager is not None
        node.manager.stop()
        with trio.move_on_after(3):
            await node.manager.withdraw_all()
        await node.store.close_all()
        with trio.move_on_after(2):
            await node.manager.forget_all()
        with trio.move_on_after(2):
            await node.registration.revoke()
        if not faults and self.kv.leader is not None:
            # a clean stop leaves a clean state (of what was there when it began: a placement in its
            # first GRACE s may come after it)
            listing = (await self.kv.range(f"{SLICES}{node.node_id}/")).kvs
            left = [i for i in listing if i.create_revision <= marked]
            if left:
                self.violations.append(f"a clean stop of {node.node_id} left {[i.key for i in left]}")
        node.scope.cancel()
        node.status = "down"
        self._elect(node.node_id)
        node.stopped.set()

    # ------------------------------------------------------------ blueprints

    async def write_blueprints(self) -> None:
        """The operator's apply: the blueprint as `specs` now says, written by a task of its own that
        tries again every second while no node is up to take it (the next step does not wait for it)."""
        self.unwritten = True
        if not self.writing:
            self.writing = True
            self.nursery.start_soon(self._write_blueprints)
        await trio.lowlevel.checkpoint()

    async def _write_blueprints(self) -> None:
        while self.unwritten:
            self.unwritten = False
            blueprint = Blueprint(name="sim", slices=tuple(self.specs[a] for a in sorted(self.specs)))
            try:
                if blueprint.slices:
                    # (as the API's apply does: every apply moves the claims, in the same transaction)
                    blueprint_put = Put(key=BLUEPRINTS + "sim", value=encode_record(blueprint))
                    await self.kv.txn([], [blueprint_put, Put(key=SLICE_CLAIMS, value=b"sim")])
                else:
                    await self.kv.delete(BLUEPRINTS + "sim")
            except KVError:  # no leader for now (every node down): write it once one is back
                self.unwritten = True
                await trio.sleep(OPERATOR_RETRY)
        self.writing = False

    def wanted(self, artifact: str) -> Coordinates:
        return Coordinates.parse(self.specs[artifact].artifact)


# ---------------------------------------------------------------- the invariants, at every revision


class Checker:
    """Follows every change the store commits, one event at a time, and checks the invariants."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.records: dict[str, tuple[InstanceKey, SliceRecord]] = {}  # key → its parse, its record
        self.registered: dict[str, NodeRecord] = {}
        self.leaving_since: dict[str, float] = {}
        self.gone_since: dict[str, float] = {}
        self.specs: dict[str, SliceSpec] = {}
        self.lost_at: dict[str, float] = {}  # artifact → when an instance of it last fell to a fault

    def active(self, artifact: str) -> int:
        return sum(
            1
            for parsed, record in self.records.values()
            if record.state is SliceState.ACTIVE
            and parsed.coordinates.artifact_id == artifact
            and parsed.node_id in self.registered
        )

    def _artifacts_on(self, node_id: str, *, active: bool = True) -> set[str]:
        """The artifacts with an ACTIVE instance on the node (`active=False`: with any instance)."""
        return {
            parsed.coordinates.artifact_id
            for parsed, record in self.records.values()
            if (record.state is SliceState.ACTIVE or not active) and parsed.node_id == node_id
        }

    def lost(self, artifact: str, now: float) -> None:
        """An ACTIVE instance of `artifact` fell to a fault: its node was lost or is stopping, or its
        process crashed (it is restarted where it was)."""
        self.lost_at[artifact] = now

    def node_lost(self, node_id: str, now: float) -> None:
        """The node was lost or is stopping: its ACTIVE instances fell to a fault, and the old version of
        a failing upgrade may go with it, ACTIVE or on its way back (a process its node was restarting):
        only the leader must not remove it."""
        for artifact in self._artifacts_on(node_id):
            self.lost(artifact, now)
        self.cluster.served_before_failing -= self._artifacts_on(node_id, active=False)

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
                    self.node_lost(node_id, now)
                else:
                    self.leaving_since.pop(node_id, None)
            else:
                self.node_lost(node_id, now)
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
            _, prev = self.records.get(key, (parsed, None))
            if event.kind == "put":
                record = decode_record(key, event.kv.value, SliceRecord)
                self.records[key] = (parsed, record)
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
                self._check_floor(artifact, before, after, now, parsed)
            elif was_active and after < before:  # the node's doing: a crash, a stop
                self.lost(artifact, now)
                if record is None:  # (gone with its node: the old version of a failing upgrade may go too)
                    self.cluster.served_before_failing.discard(artifact)

    def _check_placement(self, parsed: InstanceKey, now: float) -> None:
        node_id = parsed.node_id
        leaving = self.leaving_since.get(node_id)
        if leaving is not None and now - leaving >= GRACE:
            self.fail(f"{parsed.label} placed on {node_id}, marked leaving since t={leaving:.2f}")
        gone = self.gone_since.get(node_id)
        if node_id not in self.registered and gone is not None and now - gone >= GRACE:
            self.fail(f"{parsed.label} placed on {node_id}, gone since t={gone:.2f}")

    def _check_floor(self, artifact: str, before: int, after: int, now: float, key: InstanceKey) -> None:
        """Never below the floor; and while the wanted version fails to install everywhere, an ACTIVE
        instance of the old one goes only as surplus (a slice that takes no resources always has room
        for all its instances: nothing else lets the leader keep fewer)."""
        spec = self.specs.get(artifact)
        if spec is None:
            return  # the slice is no longer wanted: nothing to keep serving
        floor = min(spec.floor, spec.instances)
        keep = min(floor, before)
        stuck = spec.artifact in self.cluster.broken and str(key.coordinates) != spec.artifact
        if stuck and spec.resources == Resources():
            keep = max(keep, min(spec.instances, before))
        if after >= keep:
            return
        if now - self.lost_at.get(artifact, -1e9) < GRACE:
            return  # an instance fell to a fault just now: the leader acted on a view from before it
        what = "the upgrade to a version that fails" if stuck and keep > floor else f"floor {floor}"
        self.fail(f"{key.key} taken out of service: {artifact} ACTIVE {before} → {after}, {what}")


class Spin(trio.abc.Instrument):
    """Tasks that run without end while no virtual time passes (a loop that reads, or waits on nothing
    that takes time): after SPIN scheduler passes at one instant, note which tasks kept running (their
    innermost frame) for a few more passes, then record a violation and cancel the run (else it never
    ends: the mock clock jumps only once every task waits)."""

    def __init__(self, clock: MockClock, cluster: Cluster, scope: trio.CancelScope) -> None:
        self.clock, self.cluster, self.scope = clock, cluster, scope
        self.instant, self.passes = -1.0, 0
        self.steps: collections.Counter[str] = collections.Counter()

    def before_io_wait(self, timeout: float) -> None:
        now = self.clock.current_time()
        if now != self.instant:
            self.instant, self.passes = now, 0
            if self.steps:
                self.steps.clear()
                trio.lowlevel.remove_instrument(_Steps(self))
            return
        self.passes += 1
        if self.passes == SPIN:
            trio.lowlevel.add_instrument(_Steps(self))
        elif self.passes == SPIN + 200:
            top = ", ".join(f"{where} ×{n}" for where, n in self.steps.most_common(3))
            self.cluster.violations.append(
                f"t={now:.2f}: {SPIN} scheduler passes without time passing: {top}"
            )
            self.scope.cancel()


@attrs.frozen
class _Steps(trio.abc.Instrument):
    spin: Spin

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        frame, coro = None, task.coro
        while coro is not None and getattr(coro, "cr_frame", None) is not None:
            frame, coro = coro.cr_frame, coro.cr_await
        where = f"{frame.f_code.co_name}:{frame.f_lineno}" if frame is not None else task.name
        self.spin.steps[where] += 1


async def _watchdog(cluster: Cluster, scope: trio.CancelScope) -> None:
    await trio.sleep(LIMIT)
    cluster.violations.append(f"the schedule took more than {LIMIT:g} virtual s; waiting: {_where()}")
    scope.cancel()


def _where() -> str:
    """Where each task waits (its innermost frame), for a schedule that did not end."""
    found: collections.Counter[str] = collections.Counter()
    tasks = [trio.lowlevel.current_root_task()]
    while tasks:
        task = tasks.pop()
        tasks += [child for nursery in task.child_nurseries for child in nursery.child_tasks]
        frame, coro = None, task.coro
        while coro is not None and getattr(coro, "cr_frame", None) is not None:
            frame, coro = coro.cr_frame, coro.cr_await
        if frame is not None:
            found[f"{frame.f_code.co_name}:{frame.f_lineno}"] += 1
    return ", ".join(f"{where} ×{n}" for where, n in found.most_common())


# ---------------------------------------------------------------- convergence


async def _endpoints_wrong(cluster: Cluster, records: dict[str, SliceRecord]) -> str:
    """'' if every node is registered on its current lease and its ACTIVE instances' endpoints are
    published on that lease, and nothing else is published; else what is wrong."""
    kv = cluster.kv
    registered = {item.key: item for item in (await kv.range(NODES)).kvs}
    for node_id in cluster.up():
        node = cluster.nodes[node_id]
        found = registered.get(node_key(node_id))
        if found is None or found.lease != node.lease:
            return f"{node_id} is not registered on its lease {node.lease}: {found}"
    wanted = {}
    for key, record in records.items():
        parsed = InstanceKey.parse(key)
        assert parsed is not None
        node = cluster.nodes[parsed.node_id]
        if record.state is SliceState.ACTIVE and node.store.entry_points:
            wanted[endpoint_key(parsed.coordinates, parsed.instance)] = node.lease
    listing = (await kv.range(ENDPOINTS)).kvs
    published = {item.key: item.lease for item in listing}
    for key, lease in sorted(wanted.items()):
        if published.get(key) != lease:
            return f"{key}: published on lease {published.get(key)}, not on its node's lease {lease}"
    leases = {n.lease: i for i, n in cluster.nodes.items() if n.status == "up"}
    stale = [f"{i.key} (lease of {leases.get(i.lease, i.lease)})" for i in listing if i.key not in wanted]
    if stale and STALE_ENDPOINTS:
        return f"endpoints of no ACTIVE instance: {', '.join(stale)}"
    return ""


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
    wrong = await _endpoints_wrong(cluster, records)
    if wrong:
        return wrong
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
            # as `_check_floor`: a slice that takes resources may give its room to another slice (its
            # floor still holds); one that takes none always has room, so its old version stays
            needs_room = spec.resources != Resources()
            if (
                artifact in cluster.served_before_failing
                and spec.instances > 0
                and not old
                and not needs_room
            ):
                return f"{artifact}: the failed upgrade took the old version offline"
            serving = await kv.get(serving_key(artifact))
            if serving is not None and not old and not needs_room and spec.instances > 0:
                # lost nodes took every old instance: the version recorded as the last that served
                # (not the broken one: it never served) is brought back
                return f"{artifact}: the version that served, {serving.value.decode()}, is not back"
            if old and not needs_room and len(old) != spec.instances:
                # what a lost node took of it is replaced with the old version: it serves at its count
                return f"{artifact}: {len(old)} instances of the old version serve, not {spec.instances}"
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


def _lease_in_republish(index: int, count: int, after: bool, revoke: bool) -> Callable[[Cluster], object]:
    """The node's lease lapses now (it registers again and republishes its endpoints), and the lease goes
    again during that republish (or a later one): at its `count`-th transaction, before it or after."""

    async def run(cluster: Cluster) -> None:
        node = cluster.nodes.get(NODE_IDS[index])
        if node is None or node.status != "up":
            return
        node.kv.tripwire = (count, after, revoke)
        FIRED["lease fault armed"] += 1
        with contextlib.suppress(KVError):
            cluster.kv.expire_lease(node.lease)

    when = "after" if after else "before"
    run.__qualname__ = (
        f"lease_in_republish({NODE_IDS[index]}, {'revoked' if revoke else 'expired'} {when} txn {count})"
    )
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
        _apply,
        artifacts,
        st.integers(0, 4),
        st.none() | st.integers(0, 4),
        st.sampled_from([0, 512, 1024, 4096]),  # 4096: room for few, so a floor binds (defect 4)
    ),
    st.builds(_upgrade, artifacts, st.booleans()),
    st.builds(_upgrade, artifacts, st.just(True)),  # (a failing upgrade is where defect 3 hides)
    st.builds(_delete, artifacts),
    st.builds(_node_op, st.just("start"), node_index, st.integers(0, len(CAPACITIES) - 1).map(float)),
    st.builds(_node_op, st.just("crash"), node_index),
    st.builds(_node_op, st.just("restart"), node_index),
    st.builds(_node_op, st.just("stop"), node_index, st.sampled_from([0.0, 2.0, 5.0])),
    st.builds(_node_op, st.just("lease_lapses"), node_index),
    st.builds(_node_op, st.just("leads"), node_index),
    st.builds(_node_op, st.just("slice_crash"), node_index, st.integers(0, 7).map(float)),
    # (twice: it goes off only where the node has endpoints to republish)
    st.builds(_lease_in_republish, node_index, st.integers(1, 2), st.booleans(), st.booleans()),
    st.builds(_lease_in_republish, node_index, st.integers(1, 2), st.booleans(), st.booleans()),
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
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, MockClock)
        trio.lowlevel.add_instrument(Spin(clock, cluster, nursery.cancel_scope))
        nursery.start_soon(cluster.checker.run)
        nursery.start_soon(_watchdog, cluster, nursery.cancel_scope)
        await _play(cluster, start, steps)
        nursery.cancel_scope.cancel()
    assert not cluster.violations, cluster.violations


async def _play(
    cluster: Cluster, start: tuple[list[int], int, int | None], steps: list[tuple[Callable, float]]
) -> None:
    """The schedule, then the faults stop and the cluster must converge."""
    capacities, instances, floor = start
    for index, capacity in enumerate(capacities):
        await cluster.start_node(NODE_IDS[index], CAPACITIES[capacity])
    await _apply(ARTIFACTS[0], instances, floor)(cluster)
    await trio.sleep(SERVE_FIRST)
    for op, work in steps:
        await op(cluster)
        await trio.sleep(work)
        assert not cluster.violations, cluster.violations
    # The faults stop: every node up again, no KV faults; the cluster must converge.
    for node in cluster.nodes.values():
        node.kv.clear_faults()
        node.kv.tripwire = None
    with trio.fail_after(30):  # (virtual s) every step of a stop is bounded; 30 s is past their sum
        for node in [n for n in cluster.nodes.values() if n.status == "stopping"]:
            await node.stopped.wait()
    for node_id, node in list(cluster.nodes.items()):
        if node.status == "down":
            await cluster.start_node(node_id, node.capacity)
    if cluster.kv.leader is None:
        cluster.kv.set_leader(cluster.up()[0])
    # (not support.wait_until: its pytest failure would reach hypothesis inside a BaseExceptionGroup,
    # which it does not shrink; an AssertionError does)
    deadline = trio.current_time() + SETTLE
    wrong = await converged(cluster)
    while wrong and trio.current_time() < deadline:
        await trio.sleep(CHECK_EVERY)
        wrong = await converged(cluster)
    assert not cluster.violations, cluster.violations
    assert not wrong, f"no convergence within {SETTLE:g} s: {wrong}"


@pytest.fixture(autouse=True, scope="module")
def _node_gc() -> Iterator[None]:
    """The schedules run under the node's own garbage collection settings (`_tune_gc`: what the imports
    made is frozen out of the collector's way, young collections every 10,000 allocations), restored
    after. With CPython's defaults a tenth of a schedule's CPU time went to full collections walking
    pytest's, hypothesis' and the imports' objects."""
    threshold = gc.get_threshold()
    _tune_gc()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


EXAMPLES = int(os.environ.get("AETHER_SHELL_SIM_EXAMPLES", "60"))
# AETHER_SHELL_SIM_GENERATE_ONLY=1: only generated schedules (no explicit example, no replay of a stored
# failure): how often generation alone finds a defect
GENERATE_ONLY = os.environ.get("AETHER_SHELL_SIM_GENERATE_ONLY", "0") == "1"
# Endpoints left published for instances that no longer run (found by this simulation, fixed in
# `_deployment._run_step`); AETHER_SHELL_SIM_STALE_ENDPOINTS=0 leaves the check out.
STALE_ENDPOINTS = os.environ.get("AETHER_SHELL_SIM_STALE_ENDPOINTS", "1") == "1"
_ran: list[float] = []
_cpu: list[float] = []  # CPU time per schedule (the wall time depends on what else the machine runs)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    # no "explain" phase: it traces every line of a failing schedule, which takes minutes here
    # (`AETHER_SHELL_SIM_SHRINK=0`: report the first failing schedule as found, unshrunk — quick on a
    # loaded machine, e.g. to check that a reverted fix is caught)
    phases=([] if GENERATE_ONLY else [Stage.explicit, Stage.reuse])
    + [Stage.generate, Stage.target]
    + ([Stage.shrink] if os.environ.get("AETHER_SHELL_SIM_SHRINK", "1") != "0" else []),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(start=START, steps=STEPS)
# a graceful stop of a node that serves, with time to drain (with placement on stopping nodes allowed,
# the leader places there without end: defect 7)
@example(start=([0, 0], 2, None), steps=[(_node_op("stop", 0, 5.0), 10.0)])
# a scale-up while a node drains before it stops (nothing may go to the stopping node: defect 7)
@example(
    start=([0, 0], 2, None), steps=[(_node_op("stop", 0, 5.0), 2.0), (_apply(ARTIFACTS[0], 4, None), 10.0)]
)
# a serving slice upgraded to a version that fails to install on every node (the old version must keep
# all its instances: defect 3)
@example(start=([0, 0], 4, None), steps=[(_upgrade(ARTIFACTS[0], True), 10.0)])
# a slice that needs more memory than the cluster has for its floor (the floor holds: defect 4)
@example(start=([2, 2], 4, 3), steps=[(_apply(ARTIFACTS[0], 4, 3, 1024), 10.0)])
# FAILED records of a failing upgrade, and the node restarts (they go with the run they belong to), and
# the whole cluster stopped (a clean stop leaves no record): defect 7
@example(start=([0, 0], 2, None), steps=[(_upgrade(ARTIFACTS[0], True), 5.0), (_node_op("restart", 0), 10.0)])
@example(start=([0, 0], 2, None), steps=[(_node_op("stop", 0, 0.0), 0.0), (_node_op("stop", 1, 0.0), 10.0)])
# the new leader's first pass meets KV errors in its cache's first read: they reach the cluster manager
# inside the pass's nursery as an ExceptionGroup, which `except KVError` let through, and the manager
# ended (found by generation at 150 schedules; fixed with `except*`)
@example(
    start=([0, 0, 0], 2, None),
    steps=[
        (_upgrade(ARTIFACTS[0], True), 0.0),
        (_lease_in_republish(0, 2, True, True), 10.0),
        (_upgrade(ARTIFACTS[1], True), 0.0),
        (_upgrade(ARTIFACTS[0], True), 2.0),
        (_upgrade(ARTIFACTS[0], False), 0.5),
        (_upgrade(ARTIFACTS[0], True), 0.5),
        (_kv_fault(0, 2, "unavailable", frozenset(MemoryStore.OPERATIONS)), 0.5),
        (_upgrade(ARTIFACTS[0], True), 0.0),
        (_upgrade(ARTIFACTS[0], False), 0.5),
        (_node_op("restart", 0), 0.0),
        (_kv_fault(1, 3, "unavailable", frozenset(MemoryStore.OPERATIONS) - {"status", "txn"}), 0.0),
    ],
)
# blueprint changes with no time between them (scaled to 0, upgraded, scaled to 1; or upgraded, deleted,
# applied again): with the leader planning the first change after a quiet spell at once, it took the
# last ACTIVE instance of the old version out of service below the floor of 1 (found by hypothesis
# 2026-12-05; the pacing was reverted)
@example(
    start=([0], 1, None),
    steps=[
        (_apply(ARTIFACTS[0], 0, None, 0), 0.0),
        (_upgrade(ARTIFACTS[0], False), 0.0),
        (_apply(ARTIFACTS[0], 1, None, 0), 0.0),
    ],
)
@example(
    start=([0], 1, None),
    steps=[
        (_upgrade(ARTIFACTS[0], True), 0.0),
        (_delete(ARTIFACTS[0]), 0.0),
        (_apply(ARTIFACTS[0], 1, None, 0), 0.0),
    ],
)
# the old version's only instance crashes as an upgrade that fails to install begins: it was removed as a
# stale instance that was not ACTIVE (its node was restarting it), and nothing served (found by
# hypothesis 2026-12-05; old instances on their way to ACTIVE are held while the ACTIVE count is short)
@example(
    start=([0], 1, None),
    steps=[(_upgrade(ARTIFACTS[0], True), 0.0), (_node_op("slice_crash", 0, 0.0), 0.0)],
)
# the node restarts during an upgrade that fails to install, and its lease lapses while it starts the old
# version's instance again: the leader forgets the records of the (lost) node, and the old version goes
# with it (found by hypothesis 2026-12-06, seed 3: the check of convergence took only a node's ACTIVE
# instances for lost with it); the old version is brought back from `cluster/serving/` once it is up
@example(
    start=([0], 1, None),
    steps=[
        (_upgrade(ARTIFACTS[0], True), 0.0),
        (_node_op("restart", 0), 0.0),
        (_lease_in_republish(0, 1, False, False), 0.0),
    ],
)
# a node lost while an upgrade cannot install anywhere: its instance of the old version is replaced with
# the old version, which serves at its count again (before, the slice stayed one short for good)
@example(start=([0, 0], 2, None), steps=[(_upgrade(ARTIFACTS[0], True), 5.0), (_node_op("crash", 0), 10.0)])
# four upgrades, a delete and an apply at one instant: the leader's removal of the old version, planned
# while the blueprint was deleted, landed after the apply (ACTIVE 2 → 1 under a floor of 2) when this
# simulation's apply did not move `cluster/slice-claims` as the API's does (the fence of a slice in no
# blueprint); found by hypothesis 2026-12-06 with the leader's pacing counted from its last pass again
@example(
    start=([0], 1, None),
    steps=[
        (_upgrade(ARTIFACTS[0], True), 0.0),
        (_upgrade(ARTIFACTS[0], False), 0.0),
        (_upgrade(ARTIFACTS[0], False), 0.0),
        (_upgrade(ARTIFACTS[0], True), 0.0),
        (_delete(ARTIFACTS[0]), 0.0),
        (_apply(ARTIFACTS[0], 2, None, 0), 0.5),
    ],
)
def test_the_real_managers_keep_the_invariants_and_converge(
    start: tuple[list[int], int, int | None], steps: list[tuple[Callable, float]]
) -> None:
    began, cpu = time.perf_counter(), time.process_time()
    trio.run(run_schedule, start, steps, clock=MockClock(autojump_threshold=0))
    _ran.append(time.perf_counter() - began)
    _cpu.append(time.process_time() - cpu)


def teardown_module() -> None:
    if _ran:
        per_minute = len(_ran) / sum(_ran) * 60
        on_cpu = len(_cpu) / sum(_cpu) * 60
        print(
            f"\nshell simulation: {len(_ran)} schedules in {sum(_ran):.1f} s ({per_minute:.0f} a minute;"
            f" {on_cpu:.0f} a minute of CPU time)"
        )
        print(
            "faults that went off:", ", ".join(f"{what} {n}×" for what, n in FIRED.items()) or "none counted"
        )
