"""The async KV interface: what every user of a store may call, whichever store it is.

Three implementations satisfy it: `KVStore` (a Raft replica in this process), `KVClient` (replicas over
the network) and `MemoryStore` (no Raft, no threads, no sockets: for fast deterministic tests). Code that
takes a KV declares `KV` and works with each of them. Typing only: nothing here runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ._records import (
    Compare,
    DeleteResult,
    Event,
    GetResult,
    KeyValue,
    LeaseResult,
    PutResult,
    RangeResult,
    RevokeResult,
    Status,
    TxnOp,
    TxnResult,
)


@runtime_checkable
class KVWatch(Protocol):
    """Event batches on one prefix, each event exactly once, in revision order. Iteration raises
    `CompactedError` if the history no longer reaches back to the next revision to deliver."""

    prefix: str
    next_revision: int

    def __aiter__(self) -> KVWatch: ...

    async def __anext__(self) -> list[Event]: ...

    async def aclose(self) -> None:
        """Stop watching (nothing more is delivered). Idempotent. It waits for nothing and is not
        cancelled: the `finally` of a cancelled task calls it as it is, with no shield."""


@runtime_checkable
class KV(Protocol):
    """Keys with revisions, compare-and-swap transactions, leases and prefix watches.

    Every call raises a `KVError` subclass on failure: `UnavailableError` (not applied), and for writes
    `OutcomeUnknownError` (it may or may not have been applied)."""

    async def get(self, key: str, *, linearizable: bool = False) -> KeyValue | None: ...

    async def get_with_revision(self, key: str, *, linearizable: bool = False) -> GetResult: ...

    async def range(self, prefix: str, *, limit: int = 0, linearizable: bool = False) -> RangeResult: ...

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> PutResult: ...

    async def delete(self, key: str) -> DeleteResult: ...

    async def delete_prefix(self, prefix: str) -> DeleteResult: ...

    async def txn(
        self,
        compares: Sequence[Compare] = (),
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult: ...

    async def lease_grant(self, ttl: float) -> LeaseResult: ...

    async def lease_keepalive(self, lease: int) -> LeaseResult: ...

    async def lease_revoke(self, lease: int) -> RevokeResult: ...

    async def barrier(self) -> int: ...

    async def status(self) -> Status: ...

    async def wait_status_change(self, is_leader: bool, term: int, max_wait: float) -> Status:
        """The status once leadership or term differs from the given, or after about `max_wait` s."""
        ...

    def watch(self, prefix: str, start_revision: int = 0) -> KVWatch: ...
