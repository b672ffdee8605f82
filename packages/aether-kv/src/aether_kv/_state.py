"""The replicated state machine. Pure and deterministic: (state, command) → (state', result).

No I/O, no clock, no randomness: time comes in as a command argument, lease ids from a counter. It runs on
pysyncobj's tick thread, so `apply` never raises: a bad command yields an `ErrorResult`.
Readers on other threads must hold the owner's lock (see `_raft.py`).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator

import attrs
from sortedcontainers import SortedDict

from ._errors import CompactedError, InvalidRequestError
from ._records import (
    Barrier,
    BarrierResult,
    Batch,
    BatchResult,
    Command,
    Compare,
    Delete,
    DeletePrefix,
    DeleteResult,
    ErrorResult,
    Event,
    EventKind,
    Get,
    GetResult,
    KeyValue,
    LeaseExpire,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseResult,
    LeaseRevoke,
    Put,
    PutResult,
    Range,
    RangeResult,
    Result,
    RevokeResult,
    Txn,
    TxnOp,
    TxnOpResult,
    TxnResult,
    compare_holds,
)
from ._validation import check_command

DEFAULT_HISTORY_EVENTS = 20_000


@attrs.define
class Lease:
    ttl: float
    expires_at: float
    keys: set[str] = attrs.field(factory=set)


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with `prefix` (None: no bound)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None


class KVState:
    """Keys, leases and a bounded event history. Mutated only through `apply`."""

    def __init__(self, *, history_events: int = DEFAULT_HISTORY_EVENTS) -> None:
        self.revision = 0
        self.compact_revision = 0
        self.next_lease_id = 1
        self.data: SortedDict[str, KeyValue] = SortedDict()
        self.leases: dict[int, Lease] = {}
        self.history: collections.deque[Event] = collections.deque()
        self.history_events = history_events

    # ------------------------------------------------------------------ snapshots

    def __getstate__(self) -> dict[str, object]:
        """Plain tuples instead of record objects: a slow pickle stalled heartbeats (measured: 377 ms →
        elections under load) when snapshots were taken on the tick thread, and still costs CPU in the
        snapshot child. One tuple per KeyValue object, however many times the state holds it (a key's
        current value is also its last event, and an event's `kv` the next event's `prev`): pickle then
        writes it once and `__setstate__` rebuilds one object for it. Without the sharing, a replica
        restored from a snapshot held about twice as many KeyValues as the one that applied the writes
        (the 30-minute soak of 2026-12-04: restarted replicas ~10 MiB larger)."""
        tuples: dict[int, tuple[object, ...]] = {}

        def kv(item: KeyValue | None) -> tuple[object, ...] | None:
            if item is None:
                return None
            found = tuples.get(id(item))  # every KeyValue stays alive while this runs: ids are stable
            if found is None:
                found = (
                    item.key,
                    item.value,
                    item.create_revision,
                    item.mod_revision,
                    item.version,
                    item.lease,
                )
                tuples[id(item)] = found
            return found

        return {
            "revision": self.revision,
            "compact_revision": self.compact_revision,
            "next_lease_id": self.next_lease_id,
            "history_events": self.history_events,
            "data": [kv(item) for item in self.data.values()],
            "leases": [
                (i, lease.ttl, lease.expires_at, sorted(lease.keys)) for i, lease in self.leases.items()
            ],
            "history": [(str(e.kind), kv(e.kv), kv(e.prev), e.revision) for e in self.history],
        }

    def __setstate__(self, state: dict[str, object]) -> None:
        built: dict[int, KeyValue] = {}  # one KeyValue per tuple (shared tuples: see __getstate__)

        def kv(item: tuple | None) -> KeyValue | None:  # type: ignore[type-arg]
            if item is None:
                return None
            found = built.get(id(item))  # every tuple stays alive in `state` while this runs
            if found is None:
                key, value, create, mod, version, lease = item
                found = KeyValue(
                    key=key,
                    value=value,
                    create_revision=create,
                    mod_revision=mod,
                    version=version,
                    lease=lease,
                )
                built[id(item)] = found
            return found

        self.revision = state["revision"]  # type: ignore[assignment]
        self.compact_revision = state["compact_revision"]  # type: ignore[assignment]
        self.next_lease_id = state["next_lease_id"]  # type: ignore[assignment]
        self.history_events = state["history_events"]  # type: ignore[assignment]
        self.data = SortedDict((item[0], kv(item)) for item in state["data"])  # type: ignore[union-attr, index]
        self.leases = {
            i: Lease(ttl=ttl, expires_at=expires, keys=set(keys))
            for i, ttl, expires, keys in state["leases"]  # type: ignore[union-attr]
        }
        self.history = collections.deque(
            Event(kind=EventKind(kind), kv=kv(item), prev=kv(prev), revision=revision)  # type: ignore[arg-type]
            for kind, item, prev, revision in state["history"]  # type: ignore[union-attr]
        )

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> GetResult:
        return GetResult(kv=self.data.get(key), revision=self.revision)

    def range(self, prefix: str, limit: int = 0) -> RangeResult:
        kvs = []
        more = False
        for key in self._keys_with_prefix(prefix):
            if limit and len(kvs) == limit:
                more = True
                break
            kvs.append(self.data[key])
        return RangeResult(kvs=tuple(kvs), revision=self.revision, more=more)

    def events_since(self, prefix: str, start_revision: int) -> list[Event]:
        """Events on keys under `prefix` with revision ≥ `start_revision`, oldest first.

        Raises CompactedError if some of them are no longer kept."""
        if start_revision <= self.compact_revision:
            raise CompactedError(
                f"revision {start_revision} is compacted: the history starts after revision"
                f" {self.compact_revision}; re-read with range and watch from its revision + 1",
                compact_revision=self.compact_revision,
            )
        found: list[Event] = []
        for event in reversed(self.history):
            if event.revision < start_revision:
                break
            if event.kv.key.startswith(prefix):
                found.append(event)
        found.reverse()
        return found

    def expired_leases(self, now: float) -> list[int]:
        return [lease_id for lease_id, lease in self.leases.items() if lease.expires_at <= now]

    def _keys_with_prefix(self, prefix: str) -> Iterator[str]:
        return self.data.irange(prefix, prefix_end(prefix), inclusive=(True, False))

    # ------------------------------------------------------------------ writes

    def apply(self, command: Command | Batch) -> Result:
        try:
            check_command(command)
        except InvalidRequestError as error:
            return ErrorResult(code=error.code, message=error.message)
        match command:
            case Put() | Delete() | DeletePrefix():
                outcome = self._apply_txn(Txn(success=(command,)))
                return outcome if isinstance(outcome, ErrorResult) else outcome.results[0]
            case Txn():
                return self._apply_txn(command)
            case LeaseGrant(ttl=ttl, now=now):
                lease_id = self.next_lease_id
                self.next_lease_id += 1
                self.leases[lease_id] = Lease(ttl=ttl, expires_at=now + ttl)
                return LeaseResult(lease=lease_id, ttl=ttl, expires_at=now + ttl)
            case LeaseKeepAlive(lease=lease_id, now=now):
                lease = self.leases.get(lease_id)
                if lease is None:
                    return _lease_not_found(lease_id)
                lease.expires_at = max(lease.expires_at, now + lease.ttl)
                return LeaseResult(lease=lease_id, ttl=lease.ttl, expires_at=lease.expires_at)
            case LeaseRevoke(lease=lease_id):
                if lease_id not in self.leases:
                    return _lease_not_found(lease_id)
                return self._drop_lease(lease_id)
            case LeaseExpire(lease=lease_id, now=now):
                lease = self.leases.get(lease_id)
                if lease is None or lease.expires_at > now:
                    return RevokeResult(revoked=False, deleted=0, revision=self.revision)
                return self._drop_lease(lease_id)
            case Barrier():
                return BarrierResult(revision=self.revision)
            case Batch(commands=commands):
                return BatchResult(results=tuple(self.apply(item) for item in commands))
        raise AssertionError(f"check_command let {command!r} through")  # pragma: no cover

    def _drop_lease(self, lease_id: int) -> RevokeResult:
        lease = self.leases.pop(lease_id)
        writer = _Writer(self)
        for key in sorted(lease.keys):
            writer.delete(key)
        writer.commit()
        return RevokeResult(revoked=True, deleted=len(lease.keys), revision=self.revision)

    def _apply_txn(self, txn: Txn) -> TxnResult | ErrorResult:
        succeeded = all(self._holds(compare) for compare in txn.compares)
        ops = txn.success if succeeded else txn.failure
        for op in ops:
            if isinstance(op, Put) and op.lease and op.lease not in self.leases:
                return _lease_not_found(op.lease)
        writer = _Writer(self)
        results = tuple(writer.run(op) for op in ops)
        writer.commit()
        return TxnResult(succeeded=succeeded, results=results, revision=self.revision)

    def _holds(self, compare: Compare) -> bool:
        return compare_holds(compare, self.data.get(compare.key))


class _Writer:
    """Stages the changes of one command under one new revision; bumps the revision only if anything
    changed."""

    def __init__(self, state: KVState) -> None:
        self.state = state
        self.new_revision = state.revision + 1
        self.events: list[Event] = []

    def run(self, op: TxnOp) -> TxnOpResult:
        state = self.state
        match op:
            case Get(key=key):
                return state.get(key)
            case Range(prefix=prefix, limit=limit):
                return state.range(prefix, limit)
            case Put(key=key, value=value, lease=lease):
                prev = self.put(key, value, lease)
                return PutResult(revision=self.new_revision, prev=prev)
            case Delete(key=key):
                removed = self.delete(key)
                return self._deleted(() if removed is None else (removed,))
            case DeletePrefix(prefix=prefix):
                keys = list(state._keys_with_prefix(prefix))
                return self._deleted(tuple(self.delete(key) for key in keys))  # type: ignore[misc]
        raise AssertionError(f"unknown txn op {op!r}")  # pragma: no cover

    def _deleted(self, removed: Iterable[KeyValue]) -> DeleteResult:
        removed = tuple(removed)
        revision = self.new_revision if removed else self.state.revision
        return DeleteResult(deleted=len(removed), revision=revision, prev=removed)

    def put(self, key: str, value: bytes, lease: int) -> KeyValue | None:
        state = self.state
        prev = state.data.get(key)
        if prev is not None and prev.lease and prev.lease != lease:
            state.leases[prev.lease].keys.discard(key)
        kv = KeyValue(
            key=key,
            value=value,
            create_revision=prev.create_revision if prev else self.new_revision,
            mod_revision=self.new_revision,
            version=prev.version + 1 if prev else 1,
            lease=lease,
        )
        state.data[key] = kv
        if lease:
            state.leases[lease].keys.add(key)
        self.events.append(Event(kind=EventKind.PUT, kv=kv, prev=prev, revision=self.new_revision))
        return prev

    def delete(self, key: str) -> KeyValue | None:
        state = self.state
        prev = state.data.pop(key, None)
        if prev is None:
            return None
        if prev.lease and prev.lease in state.leases:
            state.leases[prev.lease].keys.discard(key)
        tombstone = KeyValue(key=key, value=b"", create_revision=0, mod_revision=self.new_revision, version=0)
        self.events.append(Event(kind=EventKind.DELETE, kv=tombstone, prev=prev, revision=self.new_revision))
        return prev

    def commit(self) -> None:
        if not self.events:
            return
        state = self.state
        state.revision = self.new_revision
        state.history.extend(self.events)
        while len(state.history) > state.history_events:
            dropped = state.history.popleft()
            state.compact_revision = max(state.compact_revision, dropped.revision)


def _lease_not_found(lease_id: int) -> ErrorResult:
    return ErrorResult(
        code="lease_not_found",
        message=f"lease {lease_id} not found: it expired, was revoked or was never granted",
    )
