"""MemoryStore: the `KV` interface on the state machine alone — no Raft, no threads, no sockets.

For fast, deterministic tests of code that uses a KV. Every operation applies `_state.KVState` (the very
state machine the replicas run: revisions, compare-and-swap, leases, the bounded watch history and its
compaction) at once, after one trio checkpoint. Time comes from an injected clock (lease expiry), and
faults are injected per view: fail the next operations (`UnavailableError`, or `OutcomeUnknownError`
applied or not), delay every operation, lose the leader, expire a lease, compact the history.

Several views (`replica`) share one state, like the replicas of a cluster: each has its own address (its
status says whether it leads) and its own faults. Must not be used in production: nothing is durable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence

import trio

from ._errors import InvalidRequestError, KVError, OutcomeUnknownError, UnavailableError
from ._records import (
    Barrier,
    BarrierResult,
    Command,
    Compare,
    Delete,
    DeletePrefix,
    DeleteResult,
    Event,
    GetResult,
    KeyValue,
    LeaseExpire,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseResult,
    LeaseRevoke,
    Member,
    Put,
    PutResult,
    RangeResult,
    Result,
    RevokeResult,
    Status,
    Txn,
    TxnOp,
    TxnResult,
)
from ._state import DEFAULT_HISTORY_EVENTS, KVState
from ._store import raise_for
from ._validation import check_key, check_limit, check_prefix, check_start_revision

#: The operations a fault can be aimed at (`MemoryStore.fail_next(operations=...)`).
OPERATIONS = frozenset(
    {
        "get",
        "range",
        "put",
        "delete",
        "delete_prefix",
        "txn",
        "lease_grant",
        "lease_keepalive",
        "lease_revoke",
        "barrier",
        "status",
    }
)
_READS = frozenset({"get", "range", "barrier", "status"})


class _Shared:
    """What the views of one memory cluster share: the state, the leader, and the watches waiting for a
    change."""

    def __init__(self, clock: Callable[[], float], history_events: int, leader: str) -> None:
        self.state = KVState(history_events=history_events)
        self.clock = clock
        self.leader: str | None = leader
        self.term = 1
        self.members: list[str] = [leader]
        self.waiting: dict[trio.Event, str] = {}  # a waiting watch's wake-up → its prefix
        self.role_changed = trio.Event()  # set (and replaced) when the leader or the term changes

    def notify_role(self) -> None:
        role_changed, self.role_changed = self.role_changed, trio.Event()
        role_changed.set()

    async def wait_for_change(self, prefix: str) -> None:
        """Wait for a change of a key under `prefix` (or a compaction, or a closed watch)."""
        woken = trio.Event()
        self.waiting[woken] = prefix
        try:
            await woken.wait()
        finally:
            del self.waiting[woken]

    def notify(self, keys: Collection[str] | None = None) -> None:
        """Wake the watches of a prefix of one of `keys` (None: every watch)."""
        for woken, prefix in self.waiting.items():
            if keys is None or any(key.startswith(prefix) for key in keys):
                woken.set()

    def apply(self, command: Command) -> Result:
        revision = self.state.revision
        result = self.state.apply(command)
        if self.state.revision != revision:
            self.notify(self._keys_since(revision))
        return result

    def _keys_since(self, revision: int) -> set[str] | None:
        """The keys of the events after `revision`; None if the history may not hold all of them (it
        was trimmed past `revision`): then every watch must look."""
        keys = set()
        for event in reversed(self.state.history):
            if event.revision <= revision:
                return keys
            keys.add(event.kv.key)
        return keys if self.state.compact_revision <= revision else None

    def expire_due(self) -> int:
        """Expire every lease past its deadline now (what the real leader's expiry loop does)."""
        now = self.clock()
        due = self.state.expired_leases(now)
        for lease_id in due:
            self.apply(LeaseExpire(lease=lease_id, now=now))
        return len(due)


class _Fault:
    def __init__(self, count: int, error: type[KVError], applied: bool, operations: frozenset[str]) -> None:
        self.count = count
        self.error = error
        self.applied = applied
        self.operations = operations


class MemoryStore:
    """An in-memory KV (see the module docstring). Create one with `MemoryStore()`; more views of the same
    state with `replica(address)`."""

    #: the operation names `fail_next` can aim at
    OPERATIONS = OPERATIONS

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        history_events: int = DEFAULT_HISTORY_EVENTS,
        address: str = "memory-1",
        _shared: _Shared | None = None,
    ) -> None:
        self._shared = _shared if _shared is not None else _Shared(clock, history_events, address)
        if address not in self._shared.members:
            self._shared.members.append(address)
        self.address = address
        self.latency = 0.0
        self._faults: list[_Fault] = []

    def replica(self, address: str) -> MemoryStore:
        """Another view of the same state, named `address` (leading only if `set_leader` says so), with
        faults of its own."""
        return MemoryStore(address=address, _shared=self._shared)

    # ------------------------------------------------------------ fault hooks

    def fail_next(
        self,
        count: int = 1,
        *,
        error: type[KVError] = UnavailableError,
        applied: bool = False,
        operations: Collection[str] = OPERATIONS,
    ) -> None:
        """Make the next `count` calls of `operations` on this view raise `error`. With `applied=True`
        (only for `OutcomeUnknownError`) a write is applied before the error is raised, as when a
        leader commits a write but the answer is lost."""
        unknown = set(operations) - OPERATIONS
        if unknown:
            raise InvalidRequestError(
                f"fail_next: no such operation {sorted(unknown)}; known: {sorted(OPERATIONS)}"
            )
        if applied and error is not OutcomeUnknownError:
            raise InvalidRequestError("fail_next: only an OutcomeUnknownError can follow an applied write")
        if count > 0:
            self._faults.append(_Fault(count, error, applied, frozenset(operations)))

    @property
    def pending_faults(self) -> int:
        """How many injected failures this view has still to deliver."""
        return sum(fault.count for fault in self._faults)

    def clear_faults(self) -> None:
        self._faults.clear()
        self.latency = 0.0

    def set_leader(self, address: str | None, *, term: int | None = None) -> None:
        """Who leads now (None: nobody — every write and linearizable read raises UnavailableError)."""
        shared = self._shared
        if address != shared.leader:
            shared.term = term if term is not None else shared.term + 1
            shared.leader = address
            shared.notify_role()

    @property
    def leader(self) -> str | None:
        """The address of the view that leads (None: none does)."""
        return self._shared.leader

    def expire_due_leases(self) -> int:
        """Expire the leases past their deadline by the clock; returns how many. Also done before every
        operation; call it (or run `expire_leases`) when time moves on with nothing else happening."""
        return self._shared.expire_due()

    def expire_lease(self, lease: int) -> RevokeResult:
        """Expire a lease now, whatever its deadline (its keys go, as when a holder stops renewing)."""
        shared = self._shared
        found = shared.state.leases.get(lease)
        now = max(shared.clock(), found.expires_at if found is not None else 0.0)
        result = shared.apply(LeaseExpire(lease=lease, now=now))
        assert isinstance(result, RevokeResult)
        return result

    def compact(self, revision: int | None = None) -> None:
        """Drop the watch history up to `revision` (default: all of it): a watch that has not delivered
        past it raises CompactedError, as after a long disconnection from a real replica."""
        state = self._shared.state
        upto = state.revision if revision is None else revision
        while state.history and state.history[0].revision <= upto:
            state.history.popleft()
        state.compact_revision = max(state.compact_revision, upto)
        self._shared.notify()

    async def expire_leases(self, *, period: float = 0.1) -> None:
        """Expire due leases every `period` seconds (of trio's clock), until cancelled."""
        while True:
            self._shared.expire_due()
            await trio.sleep(period)

    # ------------------------------------------------------------ the interface

    async def _enter(self, operation: str, *, leader: bool, write: bool = False) -> _Fault | None:
        """Delay, expire due leases, take a fault aimed at this call (raised at once unless it is an
        applied write's: returned, to raise after applying), and check for a leader if `leader`."""
        if self.latency > 0:
            await trio.sleep(self.latency)
        else:
            await trio.lowlevel.checkpoint()
        shared = self._shared
        shared.expire_due()
        for fault in self._faults:
            if operation in fault.operations:
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
                if not (fault.applied and write):
                    raise fault.error(f"{operation}: injected fault on {self.address}")
                return fault
        if leader and shared.leader is None:
            raise UnavailableError(f"{operation}: no leader (on {self.address})")
        return None

    async def _write(self, operation: str, command: Command) -> Result:
        fault = await self._enter(operation, leader=True, write=True)
        result = raise_for(self._shared.apply(command))
        if fault is not None:
            raise fault.error(f"{operation}: injected fault on {self.address} (it was applied)")
        return result

    async def _read(self, operation: str, linearizable: bool) -> None:
        await self._enter(operation, leader=linearizable)

    async def get(self, key: str, *, linearizable: bool = False) -> KeyValue | None:
        return (await self.get_with_revision(key, linearizable=linearizable)).kv

    async def get_with_revision(self, key: str, *, linearizable: bool = False) -> GetResult:
        check_key(key)
        await self._read("get", linearizable)
        return self._shared.state.get(key)

    async def range(self, prefix: str, *, limit: int = 0, linearizable: bool = False) -> RangeResult:
        check_prefix(prefix)
        check_limit(limit)
        await self._read("range", linearizable)
        return self._shared.state.range(prefix, limit)

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> PutResult:
        result = await self._write("put", Put(key=key, value=value, lease=lease))
        assert isinstance(result, PutResult)
        return result

    async def delete(self, key: str) -> DeleteResult:
        result = await self._write("delete", Delete(key=key))
        assert isinstance(result, DeleteResult)
        return result

    async def delete_prefix(self, prefix: str) -> DeleteResult:
        result = await self._write("delete_prefix", DeletePrefix(prefix=prefix))
        assert isinstance(result, DeleteResult)
        return result

    async def txn(
        self,
        compares: Sequence[Compare] = (),
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        command = Txn(compares=tuple(compares), success=tuple(success), failure=tuple(failure))
        result = await self._write("txn", command)
        assert isinstance(result, TxnResult)
        return result

    async def lease_grant(self, ttl: float) -> LeaseResult:
        result = await self._write("lease_grant", LeaseGrant(ttl=ttl, now=self._shared.clock()))
        assert isinstance(result, LeaseResult)
        return result

    async def lease_keepalive(self, lease: int) -> LeaseResult:
        """Renew the lease (idempotent). Writes nothing: the revision stays, as on a real leader."""
        result = await self._write("lease_keepalive", LeaseKeepAlive(lease=lease, now=self._shared.clock()))
        assert isinstance(result, LeaseResult)
        return result

    async def lease_revoke(self, lease: int) -> RevokeResult:
        result = await self._write("lease_revoke", LeaseRevoke(lease=lease))
        assert isinstance(result, RevokeResult)
        return result

    async def barrier(self) -> int:
        await self._enter("barrier", leader=True)
        result = self._shared.state.apply(Barrier())
        assert isinstance(result, BarrierResult)
        return result.revision

    async def status(self) -> Status:
        await self._enter("status", leader=False)
        shared = self._shared
        state = shared.state
        return Status(
            self_address=self.address,
            leader=shared.leader,
            is_leader=shared.leader == self.address,
            term=shared.term,
            commit_index=state.revision,
            last_applied=state.revision,
            revision=state.revision,
            compact_revision=state.compact_revision,
            has_quorum=shared.leader is not None,
            members=tuple(Member(raft_address=m, connected=True) for m in shared.members),
            keys=len(state.data),
            leases=len(state.leases),
        )

    async def wait_status_change(self, is_leader: bool, term: int, max_wait: float) -> Status:
        """Like `KVStore.wait_status_change`: woken by `set_leader`, else after `max_wait` (trio's clock)."""
        with trio.move_on_after(max_wait):
            while True:
                role_changed = self._shared.role_changed
                status = await self.status()
                if (status.is_leader, status.term) != (is_leader, term):
                    return status
                await role_changed.wait()
        return await self.status()

    @property
    def revision(self) -> int:
        return self._shared.state.revision

    def watch(self, prefix: str, start_revision: int = 0) -> MemoryWatch:
        """Like `KVStore.watch`: events under `prefix` from `start_revision` (0: the next change)."""
        check_prefix(prefix)
        check_start_revision(start_revision)
        return MemoryWatch(self._shared, prefix, start_revision)


class MemoryWatch:
    """An async iterator of event batches for one prefix, read from the shared history (see `KVWatch`)."""

    def __init__(self, shared: _Shared, prefix: str, start_revision: int) -> None:
        self._shared = shared
        self.prefix = prefix
        self.next_revision = start_revision if start_revision > 0 else shared.state.revision + 1
        self._closed = False

    def __aiter__(self) -> MemoryWatch:
        return self

    async def __anext__(self) -> list[Event]:
        await trio.lowlevel.checkpoint()
        while True:
            if self._closed:
                raise StopAsyncIteration
            shared = self._shared
            events = shared.state.events_since(self.prefix, self.next_revision)
            if events:
                self.next_revision = events[-1].revision + 1
                return events
            self.next_revision = max(self.next_revision, shared.state.revision + 1)
            # (no checkpoint between the read and the wait: no change can come in between)
            await shared.wait_for_change(self.prefix)

    async def aclose(self) -> None:
        self._closed = True
        self._shared.notify()
