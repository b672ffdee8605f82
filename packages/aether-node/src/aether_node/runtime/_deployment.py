"""NodeDeploymentManager: carries out what the KV says about this node's slice instances.

It watches `slices/{node-id}/` (list, then watch from the listed revision), keeps one worker task per
instance key, and each worker walks the instance through the lifecycle (`_lifecycle.plan`) with the
SliceStore, writing every state back. Writes are compare-and-swap on the key's mod revision, so a newer
command from the leader is never overwritten: the worker re-reads and acts on it instead. Endpoints are
published (bound to the node's lease) in the transaction that records ACTIVE, and withdrawn before
deactivation. A process that dies is restarted with exponential backoff; a crash loop ends in FAILED.
After a node restart, workers start from "nothing runs here" and bring reality back to what the KV
records; a FAILED record left from before the restart is removed (the failure belonged to the previous
run; the leader places the work again). A graceful stop first stops the workers (`stop`: nothing is
restarted or recorded FAILED while the node shuts its processes down), then forgets the node's records
(`forget_all`): a clean stop leaves a clean state.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import trio

from aether_kv import (
    KV,
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    KVError,
    LeaseNotFoundError,
    Put,
    TxnResult,
)

from ..core._coordinates import Coordinates
from ..core._errors import NodeError
from ..core._kv_batch import TxnBatcher
from ..core._policies import RestartPolicy
from ..core._records import (
    COMMAND_STATES,
    WORKING_STATES,
    EndpointRecord,
    RecordError,
    SliceRecord,
    SliceState,
    decode_record,
    encode_record,
)
from ..core._schema import ENDPOINTS, InstanceKey, endpoint_key, node_slices_prefix
from ..observe._metrics import InstanceSample, NodeMetrics
from ._broadcast import Broadcast, wait_any
from ._lifecycle import Phase, Step, StepKind, outcome_to_record, plan, target_phase
from ._slice_store import LocalInstance, SliceStore, describe_failure

log = logging.getLogger("aether_node.deployment")

WITHDRAW_ATTEMPTS = 4  # a withdrawal that still fails is left to the node's lease
# A load the leader just asked for writes LOADING only if it has not finished within this (seconds):
# most finish sooner, and their record goes from the command straight to the outcome.
LOADING_DELAY = 1.0
# Loads of one slice version a node carries out at once; the others wait their turn, their records saying
# the command (asked, not there yet). A blueprint of thousands of instances otherwise had each node start a
# thousand loads together, each taking the time of all of them: most ran past LOADING_DELAY and wrote
# LOADING too. Per version, not per node: a version whose install or import hangs holds back its own
# loads only, never another slice's (a replacement that restores its availability floor among them).
LOADS_AT_ONCE = 64
PUBLISH_ATTEMPTS = 4  # a publication that still fails fails the activation
# The command a working state written over an outcome carries (a restart after the process died, or after
# the node's): what brings the outcome back, so that an interrupted restart resumes toward it.
_RESUMING = {SliceState.ACTIVE: SliceState.ACTIVATE, SliceState.LOADED: SliceState.LOAD}


@attrs.define(eq=False)
class _Slot:
    """What one worker knows of its key."""

    record: SliceRecord | None
    revision: int
    version: int = 0
    changed: Broadcast = attrs.field(factory=Broadcast)
    deaths: collections.deque[float] = attrs.field(factory=collections.deque)
    last_death: str = ""
    last_exit: str = ""  # how the process last ended, alone (the restart's record says it)
    loads: int = 0  # processes started for this record (the first: a new instance on this node)
    stop_failed: str = ""  # why its stop failed on the way out, for the UNLOADING that follows to say

    def update(self, record: SliceRecord | None, revision: int) -> None:
        self.record, self.revision = record, revision
        self.version += 1
        changed, self.changed = self.changed, Broadcast()
        changed.set()


@attrs.define(eq=False)
class _Load:
    """A load under way, which says LOADING if it is still going at `due` (see `_say_loading_when_late`)."""

    key: InstanceKey
    slot: _Slot
    decided: int  # the record's revision when the worker decided to load
    due: float  # trio's clock
    done: bool = False
    saying: trio.Event | None = None  # once LOADING is being written: set when the write has ended


def _start_sent_with_load(step: Step, following: Step) -> bool:
    """Whether `following` is the activation whose START goes with `step`'s LOAD (one exchange with the
    slice process): an activation right after the load, with no working state written in between."""
    return step.kind is StepKind.LOAD and following.kind is StepKind.ACTIVATE and following.working is None


def _loading_deferred(step: Step, record: SliceRecord | None, reason: str) -> bool:
    """Whether the LOADING before `step` may wait for the load to take a while: only where the record
    still says the leader's command (LOAD or ACTIVATE: asked, not there yet, which is true while it
    loads) and there is no reason to show (a restart's). A record that says LOADED or ACTIVE (a restart
    after the process died, or after the node's) would be false during the load: LOADING goes first."""
    return (
        step.kind is StepKind.LOAD
        and record is not None
        and record.state in (SliceState.LOAD, SliceState.ACTIVATE)
        and not reason
    )


def _superseded(slot: _Slot, decided: int) -> bool:
    """Whether the leader wrote a command (or deleted the record) since revision `decided`: only the
    leader writes command states; this node writes the -ING states and the outcomes."""
    record = slot.record
    return slot.revision != decided and (record is None or record.state in COMMAND_STATES)


class NodeDeploymentManager:
    def __init__(
        self,
        kv: KV,
        node_id: str,
        store: SliceStore,
        *,
        lease: int,
        restart_policy: RestartPolicy = RestartPolicy(),  # noqa: B008 (a frozen value)
        clock: Callable[[], float] = time.time,
        metrics: NodeMetrics | None = None,
        loading_delay: float = LOADING_DELAY,
    ) -> None:
        self.kv = kv
        self.node_id = node_id
        self.store = store
        self.metrics = metrics or NodeMetrics(enabled=False)
        self.lease = lease
        self.restart_policy = restart_policy
        self.clock = clock
        self.loading_delay = loading_delay
        self._slots: dict[InstanceKey, _Slot] = {}
        self._nursery: trio.Nursery | None = None
        self._stopped = False  # `stop` was called: `run` then waits for its cancellation, never returns
        self._batch = TxnBatcher(kv)  # the workers' writes, a few transactions per pass, not one each
        # Loads under way, in the order they began (so in the order they fall due: one delay for all),
        # and an event set when one is added: one timer task for the node's loads, not a task per load.
        self._loads: collections.deque[_Load] = collections.deque()
        self._load_added = trio.Event()
        self._turns: dict[Coordinates, trio.CapacityLimiter] = {}  # a version's loads under way: `_turn`

    def instance_samples(self) -> list[InstanceSample]:
        """This node's instances as their records say, with the pid of each running process (metrics)."""
        found = []
        for key, slot in list(self._slots.items()):
            if slot.record is None:
                continue
            local = self.store.get(key)
            pid = local.host.pid if local is not None and local.alive else None
            found.append(
                InstanceSample(
                    coordinates=key.coordinates, instance=key.instance, state=str(slot.record.state), pid=pid
                )
            )
        return found

    # ------------------------------------------------------------ observing the KV

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch and act until cancelled. Reports started once the existing records are taken in. After
        `stop` it acts no more, and waits for its cancellation."""
        prefix = node_slices_prefix(self.node_id)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._batch.run)
            nursery.start_soon(self._say_loading_when_late)
            snapshot = await self.kv.range(prefix, linearizable=True)
            await self._withdraw_stale_endpoints()
            for kv in snapshot.kvs:
                if await self._forget_stale_failure(kv.key, kv.value, kv.mod_revision):
                    continue
                self._observe(kv.key, kv.value, kv.mod_revision)
            task_status.started()
            watch = self.kv.watch(prefix, snapshot.revision + 1)
            try:
                async for events in watch:
                    for event in events:
                        value = event.kv.value if event.kind == "put" else None
                        self._observe(event.kv.key, value, event.kv.mod_revision)
            finally:  # (a manager started again after an error would leave one watch more each time)
                await watch.aclose()
        if self._stopped:
            # `stop` ended the watch: a graceful stop, not a failure. Returning would tell the node's
            # supervisor the manager ended on its own, and it would start it again (and republish the
            # endpoints just withdrawn) in the middle of the stop.
            await trio.sleep_forever()

    async def _txn(self, compares: list[Compare], operations: list[Put | Delete]) -> TxnResult:
        """A transaction, committed with the other workers' (group commit) while the manager runs; alone
        once it has stopped (the graceful stop withdraws endpoints after that: the batcher, cancelled with
        the manager, may not have noticed yet, and would fail what it is handed as never sent)."""
        if self._stopped:
            return await self.kv.txn(compares, list(operations))
        return await self._batch.txn(compares, operations)

    def _observe(self, key: str, value: bytes | None, revision: int) -> None:
        instance_key = InstanceKey.parse(key)
        if instance_key is None or instance_key.node_id != self.node_id:
            log.warning("ignoring %s: not a slices/{node}/{group:artifact:version}/{n} key of this node", key)
            return
        slot = self._slots.get(instance_key)
        if slot is not None and value is not None and revision <= slot.revision:
            return  # known already: this node's own write (taken in when its transaction answered)
        record: SliceRecord | None = None
        if value is not None:
            try:
                record = decode_record(key, value, SliceRecord)
            except RecordError as error:
                log.error("%s", error.message)
                return
        if slot is None:
            if record is None:
                return
            slot = self._slots[instance_key] = _Slot(record=record, revision=revision)
            assert self._nursery is not None
            self._nursery.start_soon(self._worker, instance_key, slot)
        else:
            slot.update(record, revision)

    async def _forget_stale_failure(self, key: str, value: bytes, revision: int) -> bool:
        """At start: delete a FAILED record of this node (from before the restart), if still unchanged."""
        try:
            record = decode_record(key, value, SliceRecord)
        except RecordError:
            return False
        if record.state is not SliceState.FAILED:
            return False
        unchanged = Compare(key=key, target=CompareTarget.MOD_REVISION, op=CompareOp.EQ, operand=revision)
        try:
            result = await self.kv.txn([unchanged], [Delete(key=key)])
        except KVError as error:  # not now: the record stays FAILED, and the leader retries it in time
            log.warning("%s: could not forget a failure from before the restart: %s", key, error.message)
            return False
        if result.succeeded:
            log.info("%s: forgot a failure from before the node restarted (%s)", key, record.reason)
        return result.succeeded

    async def _withdraw_stale_endpoints(self) -> None:
        """Endpoints this node published before a restart point at processes that are gone."""
        listing = await self.kv.range(ENDPOINTS, linearizable=True)
        stale = []
        for kv in listing.kvs:
            try:
                if decode_record(kv.key, kv.value, EndpointRecord).node_id == self.node_id:
                    stale.append(kv.key)
            except RecordError:
                continue
        for key in stale:
            await self.kv.delete(key)

    # ------------------------------------------------------------ one worker per instance

    async def _worker(self, key: InstanceKey, slot: _Slot) -> None:
        try:
            while True:
                seen = slot.version
                try:
                    await self._converge(key, slot)
                except KVError as error:  # the KV is unreachable for now: try again on the next change
                    log.warning("%s: %s; retrying", key.label, error.message)
                    await trio.sleep(0.5)
                    continue
                if slot.record is None and self.store.get(key) is None:
                    return
                await self._wait(key, slot, seen)
        finally:
            if self._slots.get(key) is slot:
                del self._slots[key]

    async def _wait(self, key: InstanceKey, slot: _Slot, seen: int) -> None:
        if slot.version != seen:
            return
        instance = self.store.get(key)
        if instance is None:
            await slot.changed.wait()
        else:
            await wait_any(slot.changed, instance.host.exited)

    def _local_phase(self, key: InstanceKey) -> Phase:
        instance = self.store.get(key)
        if instance is None:
            return Phase.NONE
        return instance.phase

    async def _converge(self, key: InstanceKey, slot: _Slot) -> None:
        instance = self.store.get(key)
        if instance is not None and not instance.alive:
            await self._forget_dead(key, slot, instance)
        record = slot.record
        target = target_phase(record.intent if record else None)
        if target is None:  # FAILED: nothing may run
            if self.store.get(key) is not None:
                await self._withdraw(key, self.store.get(key))  # type: ignore[arg-type]
                await self.store.unload(key)
            return
        reason = ""
        if slot.deaths and target in (Phase.ACTIVE, Phase.LOADED) and self._local_phase(key) is Phase.NONE:
            restart = self._restart_reason(slot)
            if restart is None:
                self.metrics.failure(key.coordinates, "crash_loop")
                await self._write(key, slot, SliceState.FAILED, self._crash_loop_reason(slot))
                return
            reason, delay = restart
            # No process runs: the record must not go on saying ACTIVE (or LOADED) through the backoff
            # (up to seconds), or the leader counts a dead instance as serving and as staying up (its
            # min_ready_s). LOADING with the restart's reason goes now; the load writes no other.
            if not await self._write(key, slot, SliceState.LOADING, reason, restart=slot.last_exit):
                return  # a newer command came: the next pass acts on it
            with trio.move_on_after(delay):
                seen = slot.version
                while slot.version == seen:
                    await slot.changed.wait()
            if target_phase(slot.record.intent if slot.record else None) is not target:
                return  # a new command arrived during the backoff; the next pass acts on it
        # A command that arrives during a step ends this pass before the next write: that write would
        # compare the command's own revision, win, and overwrite it. The next pass acts on the command.
        # A load followed by its activation sends START with LOAD: the activation then always follows
        # (it writes nothing before it), so that the slice a start hook ran in is ACTIVE here and the
        # next pass stops it as any other.
        decided = slot.revision
        steps = plan(target, self._local_phase(key))
        for index, step in enumerate(steps):
            started = index > 0 and _start_sent_with_load(steps[index - 1], step)
            if not started and _superseded(slot, decided):
                return
            following = steps[index + 1] if index + 1 < len(steps) else None
            if not await self._run_step(key, slot, step, reason, following, decided):
                return
            if slot.stop_failed:  # (said by the UNLOADING that follows: the instance's log goes with it)
                reason, slot.stop_failed = slot.stop_failed, ""
        # An activation leaves its endpoints to go with the outcome (`_write`): it is the pass's last step.
        activated = any(step.kind is StepKind.ACTIVATE for step in steps)
        unpublished = self.store.get(key) if activated else None
        outcome = outcome_to_record(target, slot.record.state if slot.record else None)
        if outcome is not None and not _superseded(slot, decided):
            await self._write(key, slot, outcome, "", publish=unpublished)
        else:
            await self._publish_alone(key, slot, unpublished)

    def _restart_reason(self, slot: _Slot) -> tuple[str, float] | None:
        policy = self.restart_policy
        now = self.clock()
        while slot.deaths and now - slot.deaths[0] > policy.window:
            slot.deaths.popleft()
        if len(slot.deaths) >= policy.max_restarts:
            return None
        restarts = len(slot.deaths)
        delay = policy.delay(restarts)
        limit = policy.max_restarts - 1
        return f"restart {restarts} of {limit} after the slice process died ({slot.last_death})", delay

    def _crash_loop_reason(self, slot: _Slot) -> str:
        policy = self.restart_policy
        return (
            f"crash loop: the slice process died {len(slot.deaths)} times within {policy.window:g} s"
            f" (last: {slot.last_death}); not restarting it again"
        )

    async def _forget_dead(self, key: InstanceKey, slot: _Slot, instance: LocalInstance) -> None:
        reason = instance.host.exit_reason
        log.warning("%s: slice process %d died (%s)", key.label, instance.host.pid, reason)
        slot.deaths.append(self.clock())
        self.metrics.process_death(key.coordinates)
        slot.last_death = f"{reason}; log: {instance.host.log_path}"
        slot.last_exit = reason
        await self._withdraw(key, instance)
        await self.store.unload(key)

    async def _run_step(
        self, key: InstanceKey, slot: _Slot, step: Step, reason: str, following: Step | None, decided: int
    ) -> bool:
        # A deleted record (the leader forgot the instance, e.g. of a node whose lease lapsed) has no
        # state to write: the process is stopped without one. A working state written against the
        # deleted key would fail its compare and leave the process running, its endpoints published.
        deferred = _loading_deferred(step, slot.record, reason)
        working = None if slot.record is None or deferred else step.working
        record = slot.record
        if reason and record is not None and (record.state, record.reason) == (working, reason):
            working = None  # a restart's LOADING, written when its process died
        if working is not None and not await self._write(key, slot, working, reason):
            return False
        try:
            match step.kind:
                case StepKind.LOAD:
                    config = dict(slot.record.config) if slot.record else {}
                    start = following is not None and _start_sent_with_load(step, following)
                    first, slot.loads = slot.loads == 0, slot.loads + 1
                    async with self._turn(key.coordinates):
                        if deferred:
                            await self._load_saying_so_if_late(key, slot, decided, config, start, first)
                        else:
                            await self.store.load(key, config, start=start, first=first)
                case StepKind.ACTIVATE:
                    instance = self.store.get(key)
                    assert instance is not None
                    await self.store.activate(instance)  # (its endpoints: with the outcome, `_converge`)
                case StepKind.DEACTIVATE:
                    instance = self.store.get(key)
                    assert instance is not None
                    await self._withdraw(key, instance)
                    await self.store.deactivate(instance)
                case StepKind.UNLOAD:
                    await self.store.unload(key)
                    await self._delete_record(key, slot)
        except Exception as error:  # a slice's failure, or a bug: FAILED with a reason, never a dead node
            unloading = following is not None and following.kind is StepKind.UNLOAD
            if step.kind is StepKind.DEACTIVATE and unloading:
                # On the way out (its process ended meanwhile, or its stop hook failed): nothing is to run
                # here, and the unload that follows sees to it; FAILED would take the place of the
                # command, and the record would stay so.
                what = error.message if isinstance(error, NodeError) else repr(error)
                log.warning("%s: deactivate failed on its way to unload: %s", key.label, what)
                instance = self.store.get(key)
                where = f"; log: {instance.host.log_path}" if instance is not None else ""
                slot.stop_failed = f"its stop failed on the way out: {what}{where}"
                self.metrics.failure(key.coordinates, step.kind.value)
                await self.store.unload(key)  # now: a newer command meanwhile gets a fresh process
                return True
            await self._step_failed(key, slot, step.kind, error)
            return False
        return True

    async def _step_failed(self, key: InstanceKey, slot: _Slot, kind: StepKind, error: Exception) -> None:
        """Step `kind` failed with `error`: the instance is stopped (its endpoints withdrawn first) and
        its record says FAILED, with why."""
        if isinstance(error, NodeError):
            log.warning("%s: %s failed: %s", key.label, kind.value, error.message)
        else:
            log.exception("%s: %s failed unexpectedly", key.label, kind.value)
        instance = self.store.get(key)
        if instance is not None:
            await self._withdraw(key, instance)
            await self.store.unload(key)
        self.metrics.failure(key.coordinates, kind.value)
        await self._write(key, slot, SliceState.FAILED, describe_failure(kind.value, error))

    @contextlib.asynccontextmanager
    async def _turn(self, coordinates: Coordinates) -> AsyncIterator[None]:
        """Wait for one of the LOADS_AT_ONCE turns of `coordinates`' loads and hold it for the body (the
        limiter of a version goes once no load of it holds or waits for a turn)."""
        limiter = self._turns.get(coordinates)
        if limiter is None:
            limiter = self._turns[coordinates] = trio.CapacityLimiter(LOADS_AT_ONCE)
        try:
            async with limiter:
                yield
        finally:
            if not limiter.borrowed_tokens and not limiter.statistics().tasks_waiting:
                self._turns.pop(coordinates, None)

    async def _load_saying_so_if_late(
        self, key: InstanceKey, slot: _Slot, decided: int, config: dict[str, Any], start: bool, first: bool
    ) -> None:
        """Load, and write LOADING only once the load has taken `loading_delay` (unless a newer command
        came: then the record is the leader's). A LOADING write that started is finished before this
        returns or raises (a FAILED after it compares on the revision it wrote), never cancelled by the
        load's end; a hung load is shown LOADING until its deadline fails it. The node's timer task writes
        it (`_say_loading_when_late`); cancelled, the worker waits for no write (the manager stops)."""
        load = _Load(key, slot, decided, due=trio.current_time() + self.loading_delay)
        self._loads.append(load)
        self._load_added.set()
        try:
            await self.store.load(key, config, start=start, first=first)
        finally:  # (raised once the LOADING write, if it started, is done)
            load.done = True
            if load.saying is not None:
                await load.saying.wait()

    async def _say_loading_when_late(self) -> None:
        """The node's timer of loads: each still under way `loading_delay` after it began writes LOADING,
        in a task of its own (a slow load is rare). Runs until the manager is cancelled."""
        assert self._nursery is not None
        while True:
            while self._loads and self._loads[0].done:
                self._loads.popleft()
            if not self._loads:
                self._load_added = trio.Event()
                await self._load_added.wait()
                continue
            load = self._loads[0]
            await trio.sleep_until(load.due)
            self._loads.popleft()
            if not load.done:  # (from here the worker waits for `saying` once its load ends)
                load.saying = trio.Event()
                self._nursery.start_soon(self._say_loading, load)

    async def _say_loading(self, load: _Load) -> None:
        """Write LOADING for `load` unless its load ended or a newer command came (in the manager's
        nursery: what fails here is logged, and the load goes on; its outcome is written as it would be)."""
        assert load.saying is not None
        try:
            # Checked here, in the step that reads the record's revision to compare on (`_write`): a newer
            # command taken in since the timer woke must not be overwritten by LOADING.
            if not load.done and not _superseded(load.slot, load.decided):
                await self._write(load.key, load.slot, SliceState.LOADING, "")
        except KVError as error:
            log.warning("%s: could not record LOADING: %s", load.key.label, error.message)
        except Exception:  # a bug: never the manager's end
            log.exception("%s: recording LOADING failed unexpectedly", load.key.label)
        finally:
            load.saying.set()

    # ------------------------------------------------------------ KV writes

    async def _write(
        self,
        key: InstanceKey,
        slot: _Slot,
        state: SliceState,
        reason: str,
        *,
        publish: LocalInstance | None = None,
        restart: str | None = None,
    ) -> bool:
        """Record `state` unless the key changed since we last saw it (then the newer record wins and this
        returns False). `restart`: how the process ended that this write starts again (one more restart
        counted, and the record says how the last one ended). A write whose outcome is unknown (the
        leader changed) is checked and retried.
        With `publish` (an instance just activated, its state ACTIVE), its endpoints go in the same
        transaction: callers see the instance ACTIVE and routable at once, one commit sooner than
        after a write of their own. Where they cannot go with it (the node's lease lapsed: the record is
        written alone; or the record changed meanwhile) they are published on their own after it
        (`_publish`), as an activation publishes them."""
        current = slot.record
        command = None
        if current is not None and state in WORKING_STATES:
            command = current.state if current.state in COMMAND_STATES else current.command
            if command is None:  # (an outcome's record: a restart works toward the same outcome again)
                command = _RESUMING.get(current.state)
        record = SliceRecord(
            state=state,
            reason=reason,
            timestamp=self.clock(),
            config=current.config if current else {},
            command=command,
            moved_from=current.moved_from if current else "",  # (the leader counts moves in flight)
            restarts=(current.restarts if current else 0) + (restart is not None),
            last_exit=restart if restart is not None else (current.last_exit if current else ""),
        )
        expected = slot.revision
        unchanged = Compare(key=key.key, target=CompareTarget.MOD_REVISION, op=CompareOp.EQ, operand=expected)
        publish_after: LocalInstance | None = None
        if publish is not None:
            publish.withdrawn = False  # (as `_publish`: a withdrawal that starts meanwhile wins)
        backoff = 0.1
        while True:
            put = Put(key=key.key, value=encode_record(record))
            endpoints = self._endpoint_puts(key, publish, self.lease) if publish is not None else []
            try:
                result = await self._txn([unchanged], [put, *endpoints])
                if not result.succeeded:
                    await self._publish_alone(key, slot, publish)
                    return False
                revision = result.revision
                break
            except KVError as error:
                if endpoints and isinstance(error, LeaseNotFoundError):
                    # Nothing of it applied: the record alone again, the endpoints after it.
                    publish_after, publish = publish, None
                    continue
                log.warning("%s: recording %s: %s; checking and retrying", key.label, state, error.message)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                try:
                    stored = await self.kv.get(key.key, linearizable=True)
                except KVError:
                    continue
                if stored is not None and stored.value == encode_record(record):
                    revision = stored.mod_revision  # it did go through
                    break
                if stored is None or stored.mod_revision != expected:
                    await self._publish_alone(key, slot, publish)
                    return False  # someone else wrote since: their record wins
        if slot.revision <= revision:
            slot.record, slot.revision = record, revision
        await self._publish_alone(key, slot, publish_after)
        self.metrics.transition(key.coordinates, str(state))
        # Outcomes at INFO; the working states on the way (two or three per instance) at DEBUG only.
        level = logging.DEBUG if state in WORKING_STATES else logging.INFO
        log.log(level, "%s: %s%s", key.label, state, f" ({reason})" if reason else "")
        return True

    async def _delete_record(self, key: InstanceKey, slot: _Slot) -> None:
        unchanged = Compare(
            key=key.key, target=CompareTarget.MOD_REVISION, op=CompareOp.EQ, operand=slot.revision
        )
        while True:
            try:
                result = await self._txn([unchanged], [Delete(key=key.key)])
                break
            except KVError as error:  # outcome unknown: look, then retry if it is still there
                log.warning("%s: deleting the record: %s; checking and retrying", key.label, error.message)
                await trio.sleep(0.2)
                try:
                    stored = await self.kv.get(key.key, linearizable=True)
                except KVError:
                    continue
                if stored is None or stored.mod_revision != slot.revision:
                    return
        if result.succeeded:
            slot.record = None

    async def _publish_alone(self, key: InstanceKey, slot: _Slot, instance: LocalInstance | None) -> None:
        """Publish the endpoints of `instance` (if any: None, nothing to do) that could not go with its
        ACTIVE record; if that fails, so has the activation (as when an activation publishes them)."""
        if instance is None:
            return
        try:
            await self._publish(key, instance)
        except KVError as error:
            await self._step_failed(key, slot, StepKind.ACTIVATE, error)

    async def _publish(self, key: InstanceKey, instance: LocalInstance) -> None:
        """Put the instance's endpoints on the node's lease. If that lease has lapsed, on the new one if
        the node has registered again meanwhile; else the republish that follows the new registration
        puts them (the instance is ACTIVE in the store by then), and this is not the instance's failure.
        A put that fails otherwise (the KV unavailable for a moment, an outcome unknown: the puts are
        idempotent) is tried again, PUBLISH_ATTEMPTS times in all; then the error is the step's."""
        instance.withdrawn = False
        failures = 0
        while not instance.withdrawn:  # (a withdrawal that started meanwhile wins)
            lease = self.lease
            try:
                await self._put_endpoints(key, instance, lease)
                return
            except LeaseNotFoundError:
                if self.lease == lease:
                    log.warning("%s: the node's lease lapsed; endpoints follow its new lease", key.label)
                    return
            except KVError as error:
                failures += 1
                if failures == PUBLISH_ATTEMPTS:
                    raise
                log.info("%s: publishing endpoints: %s; trying again", key.label, error.message)
                await trio.sleep(0.1 * 2 ** (failures - 1))

    async def _put_endpoints(self, key: InstanceKey, instance: LocalInstance, lease: int) -> None:
        puts = self._endpoint_puts(key, instance, lease)
        if puts:
            await self._txn([], puts)

    def _endpoint_puts(self, key: InstanceKey, instance: LocalInstance, lease: int) -> list[Put]:
        """The instance's endpoint record (one for all its entry points); none if it has no entry point."""
        if not instance.entry_points:
            return []
        entries = tuple(sorted(instance.entry_points))
        record = EndpointRecord(
            node_id=self.node_id,
            instance=key.instance,
            entries=entries,
            idempotent=tuple(entry for entry in entries if instance.entry_points[entry]),
            timestamp=self.clock(),
        )
        return [
            Put(key=endpoint_key(key.coordinates, key.instance), value=encode_record(record), lease=lease)
        ]

    async def _withdraw(self, key: InstanceKey, instance: LocalInstance) -> None:
        instance.withdrawn = True  # first: a republish must not put them back
        if not instance.entry_points:  # (it published no record)
            return
        deletes = [Delete(key=endpoint_key(key.coordinates, key.instance))]
        backoff = 0.1
        for attempt in range(WITHDRAW_ATTEMPTS):
            try:
                await self._txn([], deletes)
                return
            except KVError as error:  # deletes are idempotent: try again (a batch may have timed out)
                if attempt == WITHDRAW_ATTEMPTS - 1:  # the lease takes them with the node if it goes
                    log.warning("%s: withdrawing endpoints failed: %s", key.label, error.message)
                    return
                log.info("%s: withdrawing endpoints: %s; trying again", key.label, error.message)
                await trio.sleep(backoff)
                backoff *= 2

    # ------------------------------------------------------------ shutdown

    async def republish(self, lease: int) -> None:
        """After the node's lease was lost and renewed: endpoints went with the old lease. Raises KVError
        (LeaseNotFoundError too: the caller retries on the newest lease), as itself: an error of one of
        the concurrent puts must not reach the caller wrapped in the nursery's ExceptionGroup, which its
        `except KVError` would not catch (the republishing task then died, and its restart waited for
        the next registration: the endpoints stayed off the latest lease)."""
        self.lease = lease
        failures: list[KVError] = []

        async def one(key: InstanceKey, instance: LocalInstance) -> None:
            try:
                await self._republish_one(key, instance, lease)
            except KVError as error:
                failures.append(error)

        async with trio.open_nursery() as nursery:  # concurrently: they go out together (TxnBatcher)
            for key, instance in list(self.store.instances.items()):
                nursery.start_soon(one, key, instance)
        if failures:
            raise failures[0]

    async def _republish_one(self, key: InstanceKey, instance: LocalInstance, lease: int) -> None:
        # Checked right before the put is queued (no checkpoint between): a withdrawal that started
        # before is never undone by this put, and one that starts after is queued after it.
        if instance.alive and instance.phase is Phase.ACTIVE and not instance.withdrawn:
            await self._put_endpoints(key, instance, lease)

    def stop(self) -> None:
        """Stop watching and end every worker (a graceful stop: the store then shuts the processes down
        without a worker restarting them or recording them FAILED)."""
        self._stopped = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def forget_all(self) -> None:
        """Delete this node's instance records (after `stop` and the store's shutdown): nothing runs here
        any more, and nothing stale is left for the leader or for this node's next start. A KV error is
        tried again (the delete is idempotent) until it goes through or the caller's deadline ends it;
        records left then are cleared by this node's next start or by the leader."""
        pause = 0.1
        while True:
            try:
                await self.kv.delete_prefix(node_slices_prefix(self.node_id))
                return
            except KVError as error:
                log.warning("could not forget this node's instance records (trying again): %s", error.message)
            await trio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def withdraw_all(self) -> None:
        for key, instance in list(self.store.instances.items()):
            await self._withdraw(key, instance)
