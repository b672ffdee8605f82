"""TxnBatcher: group commit of independent KV transactions.

Callers submit transactions (compares + operations) as they would to `KV.txn`; while one batch is
being committed, the next ones queue, and the queue goes out as one transaction (its compares, shared
ones once, and every operation), so hundreds of instance writes cost a few Raft commits instead of one
each. Each caller gets the outcome of its own transaction: the combined one reads every compared key on
failure, so if a compare did not hold, its callers are told so and the others go out again in the next
batch. Transactions that touch the same key go in different batches (a compare must see what
the earlier write left). A KV error that is one request's fault (a lapsed lease, a request too big)
sends each request of the batch alone; any other KV error on a batch is every caller's error (each
re-reads, as after its own `txn`). It never writes anything of its own and knows nothing of the records.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import trio

from aether_kv import (
    KV,
    MAX_TXN_OPS,
    Compare,
    Delete,
    Get,
    GetResult,
    InvalidRequestError,
    KeyValue,
    KVError,
    LeaseNotFoundError,
    Put,
    TxnResult,
    UnavailableError,
    compare_holds,
)

Operation = Put | Delete


@attrs.define(eq=False)
class _Request:
    compares: tuple[Compare, ...]
    operations: tuple[Operation, ...]
    done: trio.Event = attrs.field(factory=trio.Event)
    result: TxnResult | None = None
    error: KVError | None = None

    def keys(self) -> tuple[set[str], set[str]]:
        return {c.key for c in self.compares}, {o.key for o in self.operations}


def pack(queue: Sequence[_Request], limit: int = MAX_TXN_OPS) -> list[_Request]:
    """The requests of `queue`, in order, that go into the next batch: as many as fit in `limit` compares
    and operations, with a read of each compared key on failure (a shared compare counted once), none
    touching a key another one writes. Pure. The first request always goes (alone, if it is too big for
    any batch: the KV then says why)."""
    batch: list[_Request] = []
    compares: set[Compare] = set()
    written: set[str] = set()
    compared: set[str] = set()
    size = 0
    for request in queue:
        compare_keys, write_keys = request.keys()
        new_compares = set(request.compares) - compares
        grown = size + 2 * len(new_compares) + len(request.operations)
        if batch and (grown > limit or write_keys & (written | compared) or compare_keys & written):
            if grown > limit:
                break
            continue  # touches a key of this batch: the next one
        batch.append(request)
        compares |= new_compares
        written |= write_keys
        compared |= compare_keys
        size = grown
    return batch


class TxnBatcher:
    def __init__(self, kv: KV, *, limit: int = MAX_TXN_OPS) -> None:
        self.kv = kv
        self.limit = limit
        self._queue: list[_Request] = []
        self._wake = trio.Event()
        self._running = False
        self.batches = 0  # transactions committed (for tests and metrics)

    async def txn(self, compares: Sequence[Compare] = (), success: Sequence[Operation] = ()) -> TxnResult:
        """Like `KV.txn(compares, success)`, committed with whatever else is queued. Raises the
        KVError of the batch it went in. Cancelled, it leaves the batch (if not yet sent) or its outcome
        (if sent) behind. While the batcher does not run (not yet, or stopped), it goes out alone."""
        if not self._running:
            return await self.kv.txn(list(compares), list(success))
        request = _Request(compares=tuple(compares), operations=tuple(success))
        self._queue.append(request)
        self._wake.set()
        try:
            await request.done.wait()
        finally:
            if not request.done.is_set() and request in self._queue:
                self._queue.remove(request)
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit batches until cancelled. Requests queued and not yet sent then fail as never sent
        (UnavailableError: safe to retry), so no caller outside this task's scope waits forever."""
        self._running = True
        task_status.started()
        try:
            while True:
                if not self._queue:
                    self._wake = trio.Event()
                    await self._wake.wait()
                batch = pack(self._queue, self.limit)
                for request in batch:
                    self._queue.remove(request)
                await self._commit(batch)
        finally:
            self._running = False
            for request in self._queue:
                request.error = UnavailableError("not sent: the node's batcher stopped; safe to retry")
                request.done.set()
            self._queue.clear()

    async def _commit(self, batch: list[_Request]) -> None:
        compares = list(dict.fromkeys(c for r in batch for c in r.compares))
        operations = [o for r in batch for o in r.operations]
        compared = list(dict.fromkeys(c.key for c in compares))
        self.batches += 1
        try:
            result = await self.kv.txn(compares, operations, [Get(key=key) for key in compared])
        except (LeaseNotFoundError, InvalidRequestError) as error:
            # One request's fault (a put on a lapsed lease, a request too big), applied to nothing: each
            # goes alone, so only its own caller gets the error.
            if len(batch) == 1:
                batch[0].error = error
                batch[0].done.set()
                return
            async with trio.open_nursery() as nursery:
                for request in batch:
                    nursery.start_soon(self._commit_one, request)
            return
        except KVError as error:  # the KV's state (unreachable, outcome unknown): every caller's
            for request in batch:
                request.error = error
                request.done.set()
            return
        if result.succeeded:
            start = 0
            for request in batch:
                end = start + len(request.operations)
                request.result = TxnResult(
                    succeeded=True, results=result.results[start:end], revision=result.revision
                )
                start = end
                request.done.set()
            return
        # Some compare did not hold: its callers are told; the others go again, first in the queue.
        current = {
            key: read.kv
            for key, read in zip(compared, result.results, strict=True)
            if isinstance(read, GetResult)
        }
        again = []
        for request in batch:
            if all(holds(c, current.get(c.key)) for c in request.compares):
                again.append(request)
            else:
                request.result = TxnResult(succeeded=False, results=(), revision=result.revision)
                request.done.set()
        self._queue[:0] = again

    async def _commit_one(self, request: _Request) -> None:
        self.batches += 1
        try:
            request.result = await self.kv.txn(request.compares, request.operations)
        except KVError as error:
            request.error = error
        request.done.set()


def holds(compare: Compare, kv: KeyValue | None) -> bool:
    """Whether `compare` holds for the key as `kv` shows it (None: absent), as the KV decides."""
    return compare_holds(compare, kv)
