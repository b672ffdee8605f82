"""The in-process trio API of a replica: KVStore.

This is the one place where pysyncobj's tick thread meets trio: callbacks from `_raft.py` come back
through `TrioToken.run_sync_soon`. Nothing here blocks the tick thread or waits on it synchronously.
It also runs the leader's lease-expiry loop (expiry is decided by the leader from its in-memory deadlines,
which keep-alives move without a log entry, and committed as an entry).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress

import trio

from ._batcher import ProposalBatcher
from ._errors import ERRORS_BY_CODE, KVError, OutcomeUnknownError, UnavailableError
from ._nursery import open_service_nursery
from ._raft import Callback, RaftConfig, RaftReplica
from ._records import (
    Barrier,
    BarrierResult,
    Command,
    Compare,
    Delete,
    DeletePrefix,
    DeleteResult,
    ErrorResult,
    Event,
    GetResult,
    KeyValue,
    LeaseExpire,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseResult,
    LeaseRevoke,
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
from ._state import KVState
from ._validation import check_command, check_key, check_limit, check_prefix, check_start_revision

log = logging.getLogger("aether_kv.store")

DEFAULT_REQUEST_TIMEOUT = 5.0
MAX_SHARED_SCANS = 4096  # watch reads kept between two applied changes (see KVStore._scans)


def raise_for(result: Result) -> Result:
    """Turn an `ErrorResult` from the state machine into its exception."""
    if isinstance(result, ErrorResult):
        raise ERRORS_BY_CODE.get(result.code, KVError)(result.message)
    return result


class KVStore:
    """Trio API of the replica running in this process.

    Writes go through the Raft log (forwarded to the leader when this replica follows; those proposed
    together go as one entry, see `_batcher.py`) and return once applied on this replica. Reads are
    serializable (local) unless `linearizable=True`, which first waits for a ReadIndex confirmation (no
    log entry: the leader confirms it still leads and this replica applies up to the leader's commit
    index; concurrent reads share one confirmation). Every call has a deadline (`request_timeout`); on
    cancellation or timeout after proposing, the write may still be applied (`OutcomeUnknownError`).
    """

    def __init__(
        self,
        replica: RaftReplica,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        lease_grace: float = 1.0,
    ) -> None:
        self._replica = replica
        self._request_timeout = request_timeout
        self._lease_grace = lease_grace
        self._changed = trio.Event()
        self._role = trio.Event()  # set (and replaced) when the lead is gained or lost, or the term moves
        self._leases_moved = trio.Event()  # set (and replaced) on a grant or a role change
        self._batcher = ProposalBatcher(replica.propose)
        # The watches' reads of the history since the last applied change, by (prefix, start revision):
        # watches on one prefix that are at the same point (every node's cache of one prefix) share one
        # read. Valid until the next change is applied: `_notify_applied` clears it as it wakes them.
        self._scans: dict[tuple[str, int], tuple[list[Event], int]] = {}

    # ------------------------------------------------------------ bridge (tick thread → trio)

    def _notify_applied(self) -> None:
        self._scans.clear()
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def _notify_role(self) -> None:
        role, self._role = self._role, trio.Event()
        role.set()
        self._notify_lease_granted()

    def _notify_lease_granted(self) -> None:
        moved, self._leases_moved = self._leases_moved, trio.Event()
        moved.set()

    async def _propose(self, command: Command, timeout: float | None = None) -> Result:
        check_command(command)
        return await self._on_tick_thread(
            lambda callback: self._batcher.submit(command, callback), type(command).__name__, timeout
        )

    async def _on_tick_thread(
        self, start: Callable[[Callback], None], what: str, timeout: float | None = None
    ) -> Result:
        """Start a request whose callback runs on the tick thread; wait for it within the deadline. Refused
        at once (NoQuorumError, nothing started) while this replica has heard from no majority for longer
        than a leader change takes: it would only wait out its deadline."""
        refusal = self._replica.no_quorum()
        if refusal is not None:
            raise refusal
        token = trio.lowlevel.current_trio_token()
        outcome: list[tuple[Result | None, KVError | None]] = []
        done = trio.Event()

        def deliver(result: Result | None, error: KVError | None) -> None:
            outcome.append((result, error))
            done.set()

        def on_tick_thread(result: Result | None, error: KVError | None) -> None:
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(deliver, result, error)

        start(on_tick_thread)
        with trio.move_on_after(self._request_timeout if timeout is None else timeout):
            await done.wait()
        if not outcome:
            raise OutcomeUnknownError(
                f"{what} timed out after"
                f" {self._request_timeout if timeout is None else timeout:g} s: it may or may not"
                " have been applied"
            )
        result, error = outcome[0]
        if error is not None:
            raise error
        assert result is not None
        return raise_for(result)

    # ------------------------------------------------------------ reads

    async def barrier(self) -> int:
        """Wait until everything committed before this call is applied here; return the revision."""
        result = await self._propose(Barrier())
        assert isinstance(result, BarrierResult)
        return result.revision

    async def confirm_read(self) -> int:
        """Wait until a local read is linearizable (ReadIndex, no log entry); return the revision then."""
        result = await self._on_tick_thread(self._replica.confirm_read, "linearizable read")
        assert isinstance(result, BarrierResult)
        return result.revision

    async def get(self, key: str, *, linearizable: bool = False) -> KeyValue | None:
        return (await self.get_with_revision(key, linearizable=linearizable)).kv

    async def get_with_revision(self, key: str, *, linearizable: bool = False) -> GetResult:
        check_key(key)
        if linearizable:
            await self.confirm_read()
        return self._replica.read(lambda state: state.get(key))

    async def range(self, prefix: str, *, limit: int = 0, linearizable: bool = False) -> RangeResult:
        check_prefix(prefix)
        check_limit(limit)
        if linearizable:
            await self.confirm_read()
        return self._replica.read(lambda state: state.range(prefix, limit))

    @property
    def address(self) -> str:
        """This replica's Raft address (its name in the cluster)."""
        return self._replica.config.raft_address

    @property
    def revision(self) -> int:
        return self._replica.read(lambda state: state.revision)

    async def status(self) -> Status:
        return self._replica.status()

    async def wait_status_change(self, is_leader: bool, term: int, max_wait: float) -> Status:
        """The status once this replica's leadership or term differs from `is_leader` and `term`, or
        after `max_wait` seconds as it is then: a watch on leadership without polling (a gain or loss of
        the lead, or a new term under another leader, wakes it at once)."""
        with trio.move_on_after(max_wait):
            while True:
                role = self._role
                status = self._replica.status()
                if (status.is_leader, status.term) != (is_leader, term):
                    return status
                await role.wait()
        return self._replica.status()

    def status_now(self) -> Status:
        """`status`, for callers outside trio (it never waits)."""
        return self._replica.status()

    @property
    def is_leader(self) -> bool:
        return self._replica.is_leader

    # ------------------------------------------------------------ writes

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> PutResult:
        result = await self._propose(Put(key=key, value=value, lease=lease))
        assert isinstance(result, PutResult)
        return result

    async def delete(self, key: str) -> DeleteResult:
        result = await self._propose(Delete(key=key))
        assert isinstance(result, DeleteResult)
        return result

    async def delete_prefix(self, prefix: str) -> DeleteResult:
        result = await self._propose(DeletePrefix(prefix=prefix))
        assert isinstance(result, DeleteResult)
        return result

    async def txn(
        self,
        compares: Sequence[Compare] = (),
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        result = await self._propose(
            Txn(compares=tuple(compares), success=tuple(success), failure=tuple(failure))
        )
        assert isinstance(result, TxnResult)
        return result

    async def lease_grant(self, ttl: float) -> LeaseResult:
        result = await self._propose(LeaseGrant(ttl=ttl, now=time.time()))
        assert isinstance(result, LeaseResult)
        return result

    async def lease_keepalive(self, lease: int) -> LeaseResult:
        """Renew the lease on the leader, in its memory only: nothing is written to the log (see
        `_raft.LeaseClock`). Idempotent."""
        check_command(LeaseKeepAlive(lease=lease, now=time.time()))
        result = await self._on_tick_thread(
            lambda callback: self._replica.renew_lease(lease, callback), "lease_keepalive"
        )
        assert isinstance(result, LeaseResult)
        return result

    async def lease_revoke(self, lease: int) -> RevokeResult:
        result = await self._propose(LeaseRevoke(lease=lease))
        assert isinstance(result, RevokeResult)
        return result

    # ------------------------------------------------------------ membership

    async def add_member(self, raft_address: str) -> None:
        await self._membership(self._replica.add_member, raft_address)

    async def remove_member(self, raft_address: str) -> None:
        await self._membership(self._replica.remove_member, raft_address)

    async def _membership(self, change, raft_address: str) -> None:  # type: ignore[no-untyped-def]
        token = trio.lowlevel.current_trio_token()
        outcome: list[KVError | None] = []
        done = trio.Event()

        def deliver(error: KVError | None) -> None:
            outcome.append(error)
            done.set()

        change(raft_address, lambda error: token.run_sync_soon(deliver, error))
        with trio.move_on_after(max(30.0, self._request_timeout * 2)):  # the newcomer must catch up first
            await done.wait()
        if not outcome:
            raise OutcomeUnknownError(f"membership change for {raft_address} timed out")
        if outcome[0] is not None:
            raise outcome[0]

    # ------------------------------------------------------------ watches

    def watch(self, prefix: str, start_revision: int = 0) -> Watch:
        """Events on keys under `prefix` from `start_revision` on (0: from the next change), each exactly
        once, in revision order, in batches. Raises CompactedError (from iteration) if the history no
        longer reaches back to `start_revision`."""
        check_prefix(prefix)
        check_start_revision(start_revision)
        return Watch(self, prefix, start_revision)

    def _events_since(self, prefix: str, revision: int) -> tuple[list[Event], int]:
        """The events on `prefix` from `revision` on and the revision they reach, read once per applied
        change for all the watches that ask alike (each gets its own list)."""

        def read(state: KVState) -> tuple[list[Event], int]:
            return state.events_since(prefix, revision), state.revision

        found = self._scans.get((prefix, revision))
        if found is None:
            found = self._replica.read(read)
            if len(self._scans) >= MAX_SHARED_SCANS:  # (watches that came and went with no change since)
                self._scans.clear()
            self._scans[(prefix, revision)] = found
        events, reached = found
        return list(events), reached

    # ------------------------------------------------------------ leases (leader only)

    async def _expire_leases(self, *, period: float = 0.1, longest: float = 5.0) -> None:
        """On the leader: commit the expiry of every lease whose deadline passed. It sleeps until the next
        deadline (a grant or a change of role wakes it earlier), at least `period` (a deadline that passed
        while its expiry is in flight, or while the tick thread is stalled, is looked at again then) and at
        most `longest`: nothing wakes an idle leader on a short timer."""
        in_flight: set[int] = set()
        async with trio.open_nursery() as nursery:
            while True:
                role, moved = self._role, self._leases_moved
                if not self._replica.is_leader:  # a follower expires nothing: it waits to lead
                    await role.wait()
                    continue
                replica = self._replica
                delay = self._expiry_delay(period, longest)
                slept_from = time.monotonic()
                with trio.move_on_after(delay):
                    await moved.wait()
                # past the time it meant to wake (whatever woke it): this loop was held up, and so were
                # the keep-alives of this replica's clients: no client is to blame
                late = time.monotonic() - slept_from - delay
                if late > replica.lease_clock.stall:
                    replica.lease_clock.postpone(late)
                if not replica.is_leader:
                    continue
                if time.monotonic() < replica.leader_since + self._lease_grace:
                    continue
                for lease_id in replica.due_leases():
                    if lease_id not in in_flight:
                        in_flight.add(lease_id)
                        nursery.start_soon(self._expire_one, lease_id, in_flight)

    def _expiry_delay(self, period: float, longest: float) -> float:
        """How long the expiry loop may sleep: until the next lease deadline and the end of a new
        leader's grace, within [period, longest]."""
        replica = self._replica
        deadline = replica.next_lease_deadline()
        delay = longest if deadline is None else deadline - time.monotonic()
        delay = max(delay, replica.leader_since + self._lease_grace - time.monotonic())
        return min(max(delay, period), longest)

    async def _expire_one(self, lease_id: int, in_flight: set[int]) -> None:
        # The replicated expiry time is the grant's (keep-alives no longer write it): the leader's
        # deadline decided; `now` is at least the replicated one so the state machine agrees.
        def now_for(state: KVState) -> float:
            lease = state.leases.get(lease_id)
            return max(time.time(), lease.expires_at if lease is not None else 0.0)

        try:
            await self._propose(LeaseExpire(lease=lease_id, now=self._replica.read(now_for)))
        except (UnavailableError, OutcomeUnknownError) as error:
            log.info("lease %d expiry not committed yet (%s); will retry", lease_id, error)
        finally:
            in_flight.discard(lease_id)


class Watch:
    """An async iterator of event batches for one prefix. See `KVStore.watch`."""

    def __init__(self, store: KVStore, prefix: str, start_revision: int) -> None:
        self._store = store
        self.prefix = prefix
        self.next_revision = start_revision if start_revision > 0 else store.revision + 1
        self._closed = False

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> list[Event]:
        store = self._store
        while True:
            if self._closed:  # (closed by another task while this one waited: from the next change)
                raise StopAsyncIteration
            changed = store._changed  # capture before reading so no change is missed
            events, revision = store._events_since(self.prefix, self.next_revision)
            if events:
                self.next_revision = events[-1].revision + 1
                return events
            self.next_revision = max(self.next_revision, revision + 1)
            await changed.wait()

    async def aclose(self) -> None:
        """Nothing more is delivered (nothing to release: a watch here only reads the replica's history)."""
        self._closed = True


@asynccontextmanager
async def open_store(
    config: RaftConfig,
    *,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    lease_grace: float = 1.0,
    stand_aside: Callable[[], str | None] = lambda: None,
) -> AsyncIterator[KVStore]:
    """Start a replica in this process and yield its trio API; on exit, stop the replica (its data stays
    on disk). Cancellation of the body stops the replica too. `stand_aside` (called on the tick thread)
    says why the replica must not lead now, or None (see `RaftReplica`)."""
    token = trio.lowlevel.current_trio_token()
    holder: list[KVStore] = []

    def on_applied() -> None:
        if holder:
            _soon(token, holder[0]._notify_applied)

    def on_leadership(is_leader: bool) -> None:
        if holder:
            _soon(token, holder[0]._notify_role)

    def on_lease_granted() -> None:
        if holder:
            _soon(token, holder[0]._notify_lease_granted)

    replica = await trio.to_thread.run_sync(
        lambda: RaftReplica(
            config,
            on_applied=on_applied,
            on_leadership=on_leadership,
            on_lease_granted=on_lease_granted,
            stand_aside=stand_aside,
        )
    )
    store = KVStore(replica, request_timeout=request_timeout, lease_grace=lease_grace)
    holder.append(store)
    try:
        async with open_service_nursery() as nursery:
            nursery.start_soon(store._expire_leases)
            yield store
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(replica.close)


def _soon(token: trio.lowlevel.TrioToken, fn) -> None:  # type: ignore[no-untyped-def]
    with suppress(trio.RunFinishedError):
        token.run_sync_soon(fn)


async def wait_for_leader(store: KVStore, *, timeout: float = 15.0) -> Status:
    """Wait until this replica knows a leader that has quorum; return the status then."""
    with trio.fail_after(timeout):
        while True:
            status = store.status_now()
            if status.leader is not None and status.has_quorum:
                return status
            await trio.sleep(0.05)
