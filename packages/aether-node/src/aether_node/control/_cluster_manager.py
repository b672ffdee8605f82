"""ClusterDeploymentManager: on every node, active only while this node's KV replica is the Raft leader.

While leading it claims `cluster/leader` (a fencing key: every write it makes is a transaction that
compares that claim, so a deposed leader cannot write), reconciles from scratch, then again on every
change under blueprints/, nodes/, slices/, cluster/node-ops/, cluster/rollouts/, cluster/reconcile/,
cluster/paused/ and cluster/instance-numbers/ and on a timer.
Planning is pure (`_strategies.rollouts` advances canary and blue-green rollouts, `_pause` holds a
paused rolling update, `_reconcile.plan` places, with `_rebalance` applying the reconciliation policy);
this module observes (the instance records into an `InstanceIndex`, record by record as the watch
touches them), plans, and carries out the actions. It keeps `cluster/reconcile/lost/` (the nodes
whose instances wait a rebalance delay) before it plans on them. It never plans on a view older than its
own writes. It writes a slice's next instance number (`_instance_numbers.py`) in the transaction that
creates the instances it numbered. For a canary step it reads every node's calls per version
(`read_versions`) at the step's start and after its window, and passes the verdict to the planner.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import trio

from aether_kv import (
    KV,
    CompactedError,
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    KeyValue,
    KVError,
    Put,
)

from ..core._bad_records import log_once
from ..core._blueprint import Blueprint, SliceSpec
from ..core._kv_batch import TxnBatcher
from ..core._kv_cache import KVCache
from ..core._kv_errors import kv_errors_in
from ..core._records import (
    LeaderClaim,
    LostNodeRecord,
    NodeRecord,
    RecordError,
    RolloutPhase,
    RolloutRecord,
    SliceRecord,
    SliceState,
    decode_record,
    encode_record,
)
from ..core._schema import (
    BLUEPRINTS,
    INSTANCE_NUMBERS,
    LEADER_KEY,
    NODE_OPS,
    NODES,
    PAUSED,
    PROBLEMS_PREFIX,
    RECONCILE,
    ROLLOUTS,
    SERVING,
    SLICE_CLAIMS,
    SLICES,
    InstanceKey,
    lost_node_key,
    rollout_key,
)
from ..observe._metrics import NodeMetrics
from ._allocation import NodeCapacity
from ._blueprint_fence import BlueprintFence
from ._canary_verdict import CONFIG_ONLY_VERDICT, Verdict, evaluate, version_windows
from ._instance_index import InstanceIndex
from ._instance_numbers import Numbers, creation_txns, decode_numbers
from ._node_ops import decode_operations, split_operations
from ._pause import decode_paused, merge_problems, pause_specs
from ._rebalance import decode_reconcile, lost_changes, node_delays, policies_of
from ._reconcile import (
    Action,
    ActivateInstance,
    CreateInstance,
    DeleteRecord,
    ObservedInstance,
    Problem,
    RemoveInstance,
    plan,
)
from ._serving import decode_serving, serving_changes
from ._strategies import decode_rollouts, rollouts, update_of

log = logging.getLogger("aether_node.cluster")

PACE = 2.0  # a pass that changed nothing is followed no sooner than this times its planning (≥ 10 ms)

ACTION_NAMES = {
    CreateInstance: "create",
    RemoveInstance: "remove",
    ActivateInstance: "activate",
    DeleteRecord: "delete_record",
}


class InstanceDecoder:
    """The `slices/` records as the planner's `ObservedInstance`s, kept in an `InstanceIndex` (`index`):
    each record decoded once per change of it (its mod revision), not on every pass; and a pass visits
    only the keys the watch touched since the one before (`update`), so that neither decoding nor the
    index costs per instance while thousands of instances converge.

    It also keeps `active_since`: key → when (the `now` of `update`, this leader's clock) it first saw
    the record ACTIVE as it stands. Any write of the record starts it again (a node writes ACTIVE only
    when it has activated the instance: a restart after its process died goes through LOADING; a new
    ACTIVE at another revision is a new activation), and a record that is not ACTIVE has none. A new
    leader's decoder starts every window afresh: it cannot know what its predecessor saw."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[int, ObservedInstance | None]] = {}
        self.index = InstanceIndex()
        self.active_since: dict[str, float] = {}

    def update(
        self, raw: Mapping[str, KeyValue], touched: Iterable[str] | None, *, now: float = 0.0
    ) -> InstanceIndex:
        """Bring the index up to date with `raw` (every record of `slices/`), looking only at the keys in
        `touched` (`KVCache.touched`; None: at every key); a record newly seen ACTIVE is so since `now`."""
        for key in raw.keys() | self._known.keys() if touched is None else touched:
            self._observe(key, raw.get(key), now)
        return self.index

    def instances(self, raw: Mapping[str, KeyValue]) -> list[ObservedInstance]:
        """Every record of `raw`, looking at every key (`update`)."""
        self.update(raw, None)
        return [instance for key in raw if (instance := self._known[key][1]) is not None]

    def _observe(self, key: str, kv: KeyValue | None, now: float) -> None:
        if kv is None:  # deleted
            self.active_since.pop(key, None)
            if self._known.pop(key, None) is not None:
                self.index.remove(key)
            return
        entry = self._known.get(key)
        if entry is not None and entry[0] == kv.mod_revision:
            return
        instance = observed_instance(key, kv)
        self._known[key] = (kv.mod_revision, instance)
        if instance is not None and instance.state is SliceState.ACTIVE:
            self.active_since[key] = now
        else:
            self.active_since.pop(key, None)
        if instance is None:
            self.index.remove(key)
        else:
            self.index.put(instance)


def observe(
    cache: KVCache, decoder: InstanceDecoder, *, now: float = 0.0
) -> tuple[list[Blueprint], list[NodeCapacity], InstanceIndex, frozenset[str]]:
    """The cached KV → the planner's inputs (`observe_data`), the instances as `decoder`'s index, brought
    up to date with the records the watch touched since the last pass (seen at `now`)."""
    blueprints, nodes, stopping = _desired_and_nodes(cache.data)
    instances = decoder.update(cache.data[SLICES], cache.touched(SLICES), now=now)
    return blueprints, nodes, instances, stopping


def observe_data(
    data: Mapping[str, Mapping[str, KeyValue]], decoder: InstanceDecoder | None = None
) -> tuple[list[Blueprint], list[NodeCapacity], list[ObservedInstance], frozenset[str]]:
    """KV records by prefix (blueprints/, nodes/, slices/) → the planner's inputs: blueprints, live
    nodes, instances (decoded by `decoder`, or all of them now), and the live nodes that are stopping
    (their registration says `leaving`). Records that do not decode are skipped (and logged)."""
    blueprints, nodes, stopping = _desired_and_nodes(data)
    if decoder is None:
        instances = [i for key, kv in data[SLICES].items() if (i := observed_instance(key, kv)) is not None]
    else:
        instances = decoder.instances(data[SLICES])
    return blueprints, nodes, instances, stopping


def _desired_and_nodes(
    data: Mapping[str, Mapping[str, KeyValue]],
) -> tuple[list[Blueprint], list[NodeCapacity], frozenset[str]]:
    """The blueprints, the live nodes and those of them that are stopping."""
    blueprints = []
    for key, kv in sorted(data[BLUEPRINTS].items()):
        try:
            blueprints.append(decode_record(key, kv.value, Blueprint))
        except RecordError as error:
            log_once(log, error, key, kv.mod_revision)
    nodes = []
    stopping = set()
    for key, kv in sorted(data[NODES].items()):
        try:
            record = decode_record(key, kv.value, NodeRecord)
        except RecordError as error:
            log_once(log, error, key, kv.mod_revision)
            continue
        if record.leaving:
            stopping.add(record.node_id)
        nodes.append(
            NodeCapacity(
                node_id=record.node_id, cpu=record.capacity.cpu, memory_mib=record.capacity.memory_mib
            )
        )
    return blueprints, nodes, frozenset(stopping)


def observed_instance(key: str, kv: KeyValue) -> ObservedInstance | None:
    """One `slices/` record as the planner sees it; None (logged) if it does not decode."""
    parsed = InstanceKey.parse(key)
    if parsed is None:
        return None
    try:
        record = decode_record(key, kv.value, SliceRecord)
    except RecordError as error:
        log_once(log, error, key, kv.mod_revision)
        return None
    return ObservedInstance(
        node_id=parsed.node_id,
        coordinates=parsed.coordinates,
        instance=parsed.instance,
        state=planned_state(record),
        reason=record.reason,
        timestamp=record.timestamp,
        key=key,
        mod_revision=kv.mod_revision,
        moved_from=record.moved_from,
        config=record.config,
    )


def planned_state(record: SliceRecord) -> SliceState:
    """The state the planner sees: the record's, except that an instance deactivating on its way out (the
    node works on the leader's UNLOAD: DEACTIVATING, then UNLOADING) is already being removed. Seen as
    DEACTIVATING it was a surplus instance not yet removed, and the next pass wrote UNLOAD over the
    node's DEACTIVATING: a write for nothing, and the node's next write failed its compare and waited a
    pass (every instance of a drain went through that)."""
    if record.state is SliceState.DEACTIVATING and record.intent is SliceState.UNLOAD:
        return SliceState.UNLOAD
    return record.state


class ClusterDeploymentManager:
    def __init__(
        self,
        kv: KV,
        node_id: str,
        *,
        interval: float = 1.0,
        max_surge: int = 1,
        clock: Callable[[], float] = time.time,
        metrics: NodeMetrics | None = None,
        read_versions: Callable[[Sequence[NodeRecord]], Awaitable[Mapping[str, Any]]] | None = None,
    ) -> None:
        self.kv = kv
        # Every node's calls per slice version (`ClusterInvoker.version_readings`), for canary verdicts;
        # None: no verdict, a canary waits for an operator after each window.
        self.read_versions = read_versions
        self._baselines: dict[tuple[str, int, float], Mapping[str, Any]] = {}
        self.node_id = node_id
        self.metrics = metrics or NodeMetrics(enabled=False)
        self.interval = interval
        self.max_surge = max_surge
        self.clock = clock
        self.problems: tuple[Problem, ...] = ()
        self._batch = TxnBatcher(kv)  # fenced writes of a pass, many per transaction
        self._held_since: float | None = None  # since when another node's claim kept this one out

    async def run(self, leadership: LeadershipMonitor) -> None:
        """Forever: wait to lead, lead until leadership is lost (then stop at once), repeat."""
        while True:
            await leadership.wait_for(True)
            term = leadership.term
            log.info("node %s leads the cluster: reconciling", self.node_id)
            async with trio.open_nursery() as nursery:

                async def step_down(term: int = term) -> None:
                    # (a new term while leading: another node may have claimed in between; claim again)
                    await leadership.wait_deposed(term)
                    log.info(
                        "node %s is no longer the leader of term %d: stopping reconciliation",
                        self.node_id,
                        term,
                    )
                    nursery.cancel_scope.cancel()

                nursery.start_soon(step_down)
                fence = await self._claimed(term)
                if fence is not None:
                    try:
                        await self._lead(fence)
                    except* KVError as errors:  # a group: from the pass's nursery (its cache or batcher) too
                        log.warning("reconciliation interrupted: %s", "; ".join(map(str, errors.exceptions)))
                nursery.cancel_scope.cancel()

    async def _claimed(self, term: int) -> int | None:
        """`_claim(term)`, or None (said why) if it failed: another node holds the claim (then after
        CLAIM_RETRY s, for the monitor to hear of the newer term), or the KV failed."""
        try:
            fence = await self._claim(term)
            self._held_since = None
            return fence
        except ClaimHeld as held:
            now = trio.current_time()
            if self._held_since is None:
                self._held_since = now
            if now - self._held_since >= CLAIM_HELD_WARNING:  # (its replica goes on saying it leads)
                log.warning(
                    "node %s has led by its replica's word for %.0f s, but %s: if no node leads in that term,"
                    " the claim is not true (copied from another cluster?): delete the key %s",
                    self.node_id,
                    now - self._held_since,
                    held,
                    LEADER_KEY,
                )
                self._held_since = now
            else:
                log.info("node %s does not lead the cluster: %s", self.node_id, held)
            await trio.sleep(CLAIM_RETRY)
        except KVError as error:
            log.warning("reconciliation interrupted: %s", error)
        return None

    async def _claim(self, term: int) -> int:
        """Write this node's claim to lead in `term`, over a claim of an older term (or its own) only, and
        return its revision (the fence of every write of the leader's pass). Raises ClaimHeld if another
        node holds the claim for `term` or a newer one: this node's replica said it leads in an old term
        (a replica paused past an election says so until it hears of the next term), and an unconditional
        claim would take the fence from the real leader, whose writes would then all fail."""
        claim = encode_record(LeaderClaim(node_id=self.node_id, since=self.clock(), term=term))
        while True:
            found = await self.kv.get(LEADER_KEY, linearizable=True)
            if found is not None:
                try:
                    held = decode_record(LEADER_KEY, found.value, LeaderClaim)
                except RecordError:
                    held = None  # (unreadable: any leader may replace it)
                if held is not None and (
                    held.term > term or (held.term == term and held.node_id != self.node_id)
                ):
                    raise ClaimHeld(
                        f"node {held.node_id} holds the claim for term {held.term} (this replica's: {term})"
                    )
            unchanged = _unchanged(LEADER_KEY, found.mod_revision if found is not None else 0)
            result = await self.kv.txn([unchanged], [Put(key=LEADER_KEY, value=claim)])
            if result.succeeded:
                return result.revision

    async def _lead(self, fence: int) -> None:
        stale = await self.kv.range(PROBLEMS_PREFIX)  # the previous leader's view; recomputed below
        self.problems = tuple(
            Problem(artifact=kv.key[len(PROBLEMS_PREFIX) :], message=kv.value.decode()) for kv in stale.kvs
        )
        cache = KVCache(
            self.kv,
            [
                *(BLUEPRINTS, NODES, SLICES, NODE_OPS, ROLLOUTS, RECONCILE, PAUSED),
                *(INSTANCE_NUMBERS, SERVING, SLICE_CLAIMS),
            ],
        )
        decoder = InstanceDecoder()
        self._batch = TxnBatcher(self.kv)
        async with trio.open_nursery() as nursery:
            await nursery.start(self._batch.run)
            await nursery.start(cache.run)
            written = numbered = 0  # the last revisions this leader wrote under slices/, and a number at
            while True:
                await cache.caught_up(SLICES, written)
                await cache.caught_up(INSTANCE_NUMBERS, numbered)
                changed = cache.changed
                started = time.perf_counter()
                now = self.clock()
                blueprints, nodes, instances, stopping = observe(cache, decoder, now=now)
                # (read with them: the removals of this pass go only if these blueprints are unchanged)
                claims = cache.data[SLICE_CLAIMS].get(SLICE_CLAIMS)
                blueprint_fence = BlueprintFence.of(blueprints, cache.data[BLUEPRINTS], claims)
                specs = [spec for blueprint in blueprints for spec in blueprint.slices]
                cordoned, draining = split_operations(decode_operations(cache.data[NODE_OPS]))
                records, revisions = decode_rollouts(cache.data[ROLLOUTS])
                verdicts = await self._verdicts(specs, records, cache, now)
                steered = rollouts(
                    specs, instances, records, now=now, verdicts=verdicts, active_since=decoder.active_since
                )
                if steered.changes:
                    revision = await self._write_rollouts(steered.changes, revisions, fence)
                    await cache.caught_up(ROLLOUTS, revision)
                    continue  # plan on the records as written (or as another writer left them)
                reconcile = decode_reconcile(cache.data[RECONCILE])
                policies = policies_of(blueprints, reconcile.policy)
                live = {n.node_id for n in nodes}
                holders, delays = node_delays(instances, live, policies)
                lost = lost_changes(reconcile.lost, live, holders, delays, now=now)
                if lost:
                    revision = await self._write_lost(lost, reconcile.lost_revisions, fence)
                    await cache.caught_up(RECONCILE, revision)
                    continue  # plan with the lost nodes as recorded
                paused = pause_specs(steered.specs, instances, decode_paused(cache.data[PAUSED]))
                numbers = decode_numbers(cache.data[INSTANCE_NUMBERS])
                served = decode_serving(cache.data[SERVING])
                result = plan(
                    steered.specs,
                    nodes,
                    instances,
                    now=now,
                    max_surge=self.max_surge,
                    stopping=stopping,
                    cordoned=cordoned,
                    draining=draining,
                    held=steered.held | paused.held,
                    lost=reconcile.awaited(),
                    retried=reconcile.retried,
                    policies=policies,
                    frozen=paused.held,
                    stable=steered.stable,
                    active_since=decoder.active_since,  # (a window's end needs no wake-up: `interval`)
                    numbers=numbers.next,
                    served=served,
                )
                result = attrs.evolve(result, problems=merge_problems(result.problems, paused.problems))
                planning = time.perf_counter() - started
                if result.problems != self.problems:
                    await self._record_problems(result.problems, fence)
                present = [key[len(SERVING) :] for key in cache.data[SERVING]]
                serving = serving_changes(specs, instances, live, served, present)
                if serving:
                    await cache.caught_up(SERVING, await self._fenced_writes(serving, fence, "serving"))
                if result.actions:
                    done, done_numbers = await self._execute(
                        result.actions, fence, cache, numbers, result.numbers, blueprint_fence
                    )
                    written, numbered = max(written, done), max(numbered, done_numbers)
                self.metrics.reconciled(time.perf_counter() - started)
                if result.actions:
                    continue
                passed = trio.current_time()
                with trio.move_on_after(self.interval):
                    await changed.wait()
                    # Let a burst of changes land before planning again, and plan at most a third of
                    # the time (a pass costs per node and action, `InstanceIndex`, but its fixed part,
                    # the allocation and the other prefixes' records, is paid once per burst); counted
                    # from the last pass, so that the first change after a quiet spell (a blueprint
                    # applied, a node lost) is planned at once.
                    await trio.sleep_until(passed + max(0.01, PACE * planning))

    async def _verdicts(
        self, specs: Sequence[SliceSpec], records: Mapping[str, RolloutRecord], cache: KVCache, now: float
    ) -> dict[str, Verdict]:
        """Judge the canary steps whose window is over: the nodes' calls per version since the step began
        (a reading taken on the first pass that saw it; a new leader takes its own, so its window starts
        later) against now. Reads the nodes only while a canary step runs."""
        observing = {a: r for a, r in records.items() if r.phase is RolloutPhase.OBSERVING}
        running = {(a, r.step, r.since) for a, r in observing.items()}
        for key in [k for k in self._baselines if k not in running]:
            del self._baselines[key]
        if self.read_versions is None or not observing:
            return {}
        updates = {spec.artifact.rsplit(":", 1)[0]: update_of(spec) for spec in specs}
        reading: Mapping[str, Any] | None = None
        verdicts = {}
        for artifact_id, record in sorted(observing.items()):
            update = updates.get(artifact_id)
            if update is None:
                continue
            if record.stable == record.candidate:  # a config change alone: one version's figures
                verdicts[artifact_id] = CONFIG_ONLY_VERDICT
                continue
            key = (artifact_id, record.step, record.since)
            due = key in self._baselines and now - record.since >= update.step_window_s
            if key in self._baselines and not due:
                continue
            if reading is None:
                reading = await self.read_versions(_node_records(cache))
            if key not in self._baselines:
                self._baselines[key] = reading
                continue
            windows = version_windows(self._baselines[key], reading, artifact_id)
            verdicts[artifact_id] = evaluate(
                update, windows.get(record.stable), windows.get(record.candidate)
            )
        return verdicts

    async def _write_rollouts(
        self, changes: Mapping[str, RolloutRecord | None], revisions: Mapping[str, int], fence: int
    ) -> int:
        """Write the rollout records a pass changed, each only if it is still as observed (an operator's
        promote or abort may have come first: the next pass reads it). Returns the highest revision seen."""
        fenced = Compare(key=LEADER_KEY, target=CompareTarget.MOD_REVISION, op=CompareOp.EQ, operand=fence)
        highest = 0
        for artifact_id, record in sorted(changes.items()):
            key = rollout_key(artifact_id)
            unchanged = Compare(
                key=key,
                target=CompareTarget.MOD_REVISION,
                op=CompareOp.EQ,
                operand=revisions.get(artifact_id, 0),
            )
            operation = Delete(key=key) if record is None else Put(key=key, value=encode_record(record))
            result = await self.kv.txn([fenced, unchanged], [operation])
            if result.succeeded:
                highest = max(highest, result.revision)
                log.info(
                    "rollout of %s: %s",
                    artifact_id,
                    "done" if record is None else f"{record.phase.value} ({record.reason})",
                )
        if highest == 0:
            await trio.sleep(0.1)  # every write lost a race: the cache brings the winner's record
        return highest

    async def _write_lost(
        self, changes: Mapping[str, LostNodeRecord | None], revisions: Mapping[str, int], fence: int
    ) -> int:
        """Record a newly lost node (created only if absent, so the first `since` stays) or forget one
        that is back or holds nothing any more (only if unchanged). Returns the highest revision
        written."""
        fenced = Compare(key=LEADER_KEY, target=CompareTarget.MOD_REVISION, op=CompareOp.EQ, operand=fence)
        highest = 0
        for node_id, record in sorted(changes.items()):
            key = lost_node_key(node_id)
            unchanged = _unchanged(key, revisions.get(node_id, 0))
            operation = Delete(key=key) if record is None else Put(key=key, value=encode_record(record))
            result = await self.kv.txn([fenced, unchanged], [operation])
            if result.succeeded:
                highest = max(highest, result.revision)
                if record is None:
                    log.info("node %s: no longer awaited (back, or its instances are replaced)", node_id)
                else:
                    log.info(
                        "node %s lost: its %d instance records wait up to %g s for it (rebalance delay)",
                        node_id,
                        record.instances,
                        record.delay_s,
                    )
        if highest == 0:
            await trio.sleep(0.1)  # every write lost a race: the cache brings the winner's record
        return highest

    async def _fenced_writes(self, ops: list[Put | Delete], fence: int, what: str) -> int:
        """Write `ops` in one transaction fenced on this leader's claim: the revision written, 0 if it did
        not go through (said; the next pass tries again)."""
        fenced = Compare(key=LEADER_KEY, target=CompareTarget.MOD_REVISION, op=CompareOp.EQ, operand=fence)
        try:
            result = await self.kv.txn([fenced], ops)
        except KVError as error:
            log.warning("writing the %s records failed: %s", what, error.message)
            return 0
        return result.revision if result.succeeded else 0

    async def _record_problems(self, problems: tuple[Problem, ...], fence: int) -> None:
        """`cluster/problems/{artifact}`: why an artifact cannot be placed, or why a change of it waits (a
        stuck upgrade, the floor), for status and operators."""
        fenced = Compare(key=LEADER_KEY, target=CompareTarget.MOD_REVISION, op=CompareOp.EQ, operand=fence)
        current = {p.artifact: p.message for p in problems}
        before = {p.artifact: p.message for p in self.problems}
        ops: list[Put | Delete] = [Delete(key=PROBLEMS_PREFIX + a) for a in before if a not in current]
        ops += [
            Put(key=PROBLEMS_PREFIX + a, value=m.encode()) for a, m in current.items() if before.get(a) != m
        ]
        for problem in problems:
            if before.get(problem.artifact) != problem.message:
                log.warning("%s: %s", problem.artifact, problem.message)  # unplaced, stuck or held
        result = await self.kv.txn([fenced], ops)
        if result.succeeded:
            self.problems = problems

    async def _execute(
        self,
        actions: tuple[Action, ...],
        fence: int,
        cache: KVCache,
        numbers: Numbers,
        next_numbers: Mapping[str, int],
        blueprint_fence: BlueprintFence,
    ) -> tuple[int, int]:
        """Carry out the actions concurrently (their writes go out together, `TxnBatcher`): each slice's
        creations in one transaction (per `CHUNK`) with its next instance number (`next_numbers`, written
        over the record as read in `numbers`), a command on an instance record from `cache`'s copy of it
        (the one the plan saw: no read per instance). Returns the highest revision written, and that of
        the last number written (0: none). A removal also compares `blueprint_fence`'s: the blueprint it
        was planned from is unchanged."""
        fenced = Compare(key=LEADER_KEY, target=CompareTarget.MOD_REVISION, op=CompareOp.EQ, operand=fence)
        highest = numbered = 0
        limiter = trio.CapacityLimiter(512)
        placed: list[CreateInstance] = []
        creations: dict[str, list[CreateInstance]] = {}
        removed: list[RemoveInstance] = []

        async def one(action: Action) -> None:
            nonlocal highest
            name = ACTION_NAMES[type(action)]
            async with limiter:
                try:
                    revision = await self._apply(action, fenced, cache.data[SLICES], blueprint_fence)
                except KVError as error:
                    log.warning("%s failed: %s", action, error.message)
                    self.metrics.reconcile_action(name, "failed")
                    return
                self.metrics.reconcile_action(name, "done" if revision else "lost_race")
                highest = max(highest, revision)
                if revision and isinstance(action, RemoveInstance):
                    removed.append(action)

        async def create(artifact_id: str, made: list[CreateInstance]) -> None:
            nonlocal highest, numbered
            next_number = next_numbers.get(artifact_id, max(a.instance for a in made) + 1)
            records = [self._new_record(action) for action in made]
            revision = numbers.revisions.get(artifact_id, 0)
            first, *rest = creation_txns(artifact_id, records, next_number, revision, fenced)
            revision = await one_chunk(made[: len(first[1]) - 1], first)
            numbered = max(numbered, revision)
            if not revision:  # lost a race (or failed): the next pass numbers them afresh
                return
            async with trio.open_nursery() as chunks:
                offset = len(first[1]) - 1
                for compares, puts in rest:
                    chunks.start_soon(one_chunk, made[offset : offset + len(puts)], (compares, puts))
                    offset += len(puts)

        async def one_chunk(made: list[CreateInstance], txn: tuple[list[Compare], list[Put]]) -> int:
            nonlocal highest
            revision = await self._create(made, txn)
            highest = max(highest, revision)
            if revision:
                placed.extend(a for a in made if not a.moved_from)
                for action in made:
                    if action.moved_from:
                        log.info("placed %s on %s", action.coordinates, action.node_id)
            return revision

        async with trio.open_nursery() as nursery:
            for action in actions:
                if isinstance(action, CreateInstance):
                    creations.setdefault(action.coordinates.artifact_id, []).append(action)
                else:
                    nursery.start_soon(one, action)
            for artifact_id, made in creations.items():
                nursery.start_soon(create, artifact_id, made)
        if placed:  # one line for a pass's new instances, not one per instance
            log.info("placed %s", placements(placed))
        for line in removals(removed):  # and one per reason for those it removes
            log.info("%s", line)
        if highest == 0:
            await trio.sleep(0.1)  # nothing went through (lost races): do not spin
        return highest, numbered

    def _new_record(self, action: CreateInstance) -> tuple[str, bytes]:
        """The key and the first record of a new instance (ACTIVATE)."""
        key = InstanceKey(action.node_id, action.coordinates, action.instance).key
        record = SliceRecord(
            state=SliceState.ACTIVATE,
            timestamp=self.clock(),
            config=dict(action.config),
            reason=f"rebalance: moving an instance from {action.moved_from}"
            if action.moved_from
            else action.why,
            moved_from=action.moved_from,
        )
        return key, encode_record(record)

    async def _create(self, made: list[CreateInstance], txn: tuple[list[Compare], list[Put]]) -> int:
        """Create the instances `made` with the transaction `txn`: the revision written, or 0 if it lost
        a race or failed (said, and counted per instance)."""
        compares, puts = txn
        try:
            result = await self._batch.txn(compares, puts)
        except KVError as error:
            log.warning("creating %s failed: %s", placements(made), error.message)
            for _ in made:
                self.metrics.reconcile_action("create", "failed")
            return 0
        for _ in made:
            self.metrics.reconcile_action("create", "done" if result.succeeded else "lost_race")
        return result.revision if result.succeeded else 0

    async def _apply(
        self,
        action: Action,
        fenced: Compare,
        records: Mapping[str, KeyValue],
        blueprint_fence: BlueprintFence,
    ) -> int:
        """Carry out one action as a fenced transaction; the revision written, or 0 if it lost a race
        (`records`: the instance records as the plan saw them, or newer; a removal also compares that
        the blueprint it was planned from is unchanged, `blueprint_fence`)."""
        match action:
            case CreateInstance():  # (`_execute` creates a slice's instances together, with its number)
                raise AssertionError(f"a creation is not carried out alone: {action}")
            case RemoveInstance():
                revision = await self._command(
                    records.get(action.key),
                    action.mod_revision,
                    (fenced, blueprint_fence.removal(action.key)),
                    SliceState.UNLOAD,
                    action.why,
                )
                message = ""  # (a pass's removals are logged together, by `_execute`)
            case ActivateInstance():
                revision = await self._command(
                    records.get(action.key), action.mod_revision, (fenced,), SliceState.ACTIVATE, ""
                )
                message = f"re-activating {action.key}"
            case DeleteRecord():
                revision = await self._commit(
                    [fenced, _unchanged(action.key, action.mod_revision)], Delete(key=action.key)
                )
                message = f"forgot {action.key} (its node is gone)"
        if revision and message:
            log.info("%s", message)
        return revision

    async def _command(
        self,
        current: KeyValue | None,
        mod_revision: int,
        fences: Sequence[Compare],
        state: SliceState,
        reason: str,
    ) -> int:
        """Write a command state on an instance record (`current`: as the leader's copy holds it now), if
        it is still as observed (at `mod_revision`: the copy is never behind what the plan saw, and the
        transaction compares with the store's own), and `fences` hold."""
        if current is None or current.mod_revision != mod_revision:
            return 0
        key = current.key
        old = decode_record(key, current.value, SliceRecord)
        record = attrs.evolve(old, state=state, reason=reason, timestamp=self.clock(), command=None)
        return await self._commit(
            [*fences, _unchanged(key, mod_revision)], Put(key=key, value=encode_record(record))
        )

    async def _commit(self, compares: list[Compare], operation: Put | Delete) -> int:
        result = await self._batch.txn(compares, [operation])
        return result.revision if result.succeeded else 0


def placements(placed: Sequence[CreateInstance]) -> str:
    """New instances in words, per slice version and node: "3 instances of org.example:echo:1.0 (n1 2,
    n2 1)"."""
    by_slice: dict[str, Counter[str]] = {}
    for action in placed:
        by_slice.setdefault(str(action.coordinates), Counter())[action.node_id] += 1
    return _per_slice_and_node(by_slice)


def _per_slice_and_node(by_slice: Mapping[str, Counter[str]]) -> str:
    return "; ".join(
        f"{sum(nodes.values())} instance{'s' if sum(nodes.values()) != 1 else ''} of {coordinates} ("
        + ", ".join(f"{node} {count}" for node, count in sorted(nodes.items()))
        + ")"
        for coordinates, nodes in sorted(by_slice.items())
    )


def removals(removed: Sequence[RemoveInstance]) -> list[str]:
    """A pass's removed instances in words, a line per reason: "removing 3 instances of
    org.example:echo:1.0 (n1 2, n2 1): not in any blueprint"; an unparsable key by itself."""
    by_why: dict[str, dict[str, Counter[str]]] = {}
    odd: list[str] = []
    for action in removed:
        parsed = InstanceKey.parse(action.key)
        if parsed is None:
            odd.append(f"removing {action.key} ({action.why})")
            continue
        nodes = by_why.setdefault(action.why, {}).setdefault(str(parsed.coordinates), Counter())
        nodes[parsed.node_id] += 1
    lines = [f"removing {_per_slice_and_node(by_slice)}: {why}" for why, by_slice in sorted(by_why.items())]
    return lines + odd


def _node_records(cache: KVCache) -> list[NodeRecord]:
    found = []
    for key, kv in sorted(cache.data[NODES].items()):
        try:
            found.append(decode_record(key, kv.value, NodeRecord))
        except RecordError:
            continue
    return found


def _unchanged(key: str, mod_revision: int) -> Compare:
    return Compare(key=key, target=CompareTarget.MOD_REVISION, op=CompareOp.EQ, operand=mod_revision)


CLAIM_RETRY = 0.5  # s before a node whose replica says it leads tries again to claim a claim held by another
CLAIM_HELD_WARNING = 30.0  # s of that before it warns: its replica is sure, and the claim may be false


class ClaimHeld(Exception):
    """Another node holds the leader's claim for this node's term or a newer one."""


class LeadershipMonitor:
    """Whether this node's own KV replica is the Raft leader. It asks the replica to answer when its
    leadership or term changes (`KV.wait_status_change`, at most `max_wait` later when nothing does), so
    an idle node sends one request per `max_wait` instead of polling; after an error, or an answer that
    changed nothing, it waits `period` before it asks again. A replica that stops answering (paused,
    hung) counts as not leading once `max_wait` and the client's request timeout have passed; one that
    dies closes the connection, which counts at once."""

    def __init__(self, own_replica: KV, *, period: float = 0.1, max_wait: float = 5.0) -> None:
        self.own_replica = own_replica
        self.period = period
        self.max_wait = max_wait
        self.is_leader = False
        self.term = 0
        self._changed = trio.Event()

    async def run(self) -> None:
        while True:
            try:
                status = await self.own_replica.wait_status_change(self.is_leader, self.term, self.max_wait)
                leading, term = status.is_leader, status.term
            except KVError:
                leading, term = False, self.term
            moved = (leading, term) != (self.is_leader, self.term)
            self.term, self.is_leader = term, leading
            if moved:
                changed, self._changed = self._changed, trio.Event()
                changed.set()
            if not moved:
                await trio.sleep(self.period)

    async def wait_for(self, leading: bool) -> None:
        while self.is_leader != leading:
            await self._changed.wait()

    async def wait_deposed(self, term: int) -> None:
        """Until this replica no longer leads in `term`: it follows, or it leads in another term (it was
        deposed and elected again between two answers, and another node may have led in between)."""
        while self.is_leader and self.term == term:
            await self._changed.wait()


async def follow_while_leading(
    leadership: LeadershipMonitor, follow: Callable[[], Awaitable[None]], what: str
) -> None:
    """Run `follow()` whenever this node leads, cancelled when it stops leading. A KV error or a bug in
    `follow` is logged (a compaction quietly) and `follow` starts over after a backoff: never raised.
    Runs until cancelled."""
    while True:
        await leadership.wait_for(True)
        async with trio.open_nursery() as nursery:

            async def deposed() -> None:
                await leadership.wait_for(False)
                nursery.cancel_scope.cancel()

            nursery.start_soon(deposed)
            backoff = 0.2
            while True:
                try:
                    await follow()
                except Exception as error:
                    # (a KV error of a task in `follow`'s nursery comes in a group: the same KV error)
                    kv_errors = kv_errors_in(error)
                    if kv_errors is None:  # a bug here must not end the node: say it, and start over
                        log.exception("%s: unexpected error; starting over", what)
                    elif said := [e for e in kv_errors if not isinstance(e, CompactedError)]:
                        log.warning("%s: %s; trying again", what, said[0].message)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
