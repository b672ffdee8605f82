"""When the events without a time of their own happened: time stamps in the KV, one per revision.

A node's join, a lease expiry (node lost), a deletion: the KV change that is the event carries no time, and
the KV does not record when it committed. So the first one to observe such a change writes the time it saw
it under `cluster/event-times/{revision}` (create-only: the first stamp stays), and every query and stream
reads that stamp: an event has one time, on every node and every query. The leader's `EventClock.run`
observes the history as it is committed (so the stamp is within moments of the change), one watch per
prefix where a change may need a stamp (`_events.timed_prefixes`; not every key: the endpoints, the
stamps themselves and the rest change often and never need one); a query or stream that finds a change
not stamped yet (no leader at the time, a leader change) stamps it itself.

Stamps are pruned once the KV's history no longer holds their revision (nothing can show those events).
Which changes need one is the pure `_events.needs_time`. This module must not change anything but stamps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import attrs
import trio

from aether_kv import (
    KV,
    Compare,
    CompareTarget,
    Delete,
    KVError,
    Put,
)

from ..core._records import RecordError, decode_record, encode_record
from ..observe._events import needs_time, timed_prefixes
from ._cluster_manager import LeadershipMonitor, follow_while_leading

log = logging.getLogger("aether_node.events")

EVENT_TIMES = "cluster/event-times/"
BLOCK = 1000  # stamps are read by key prefix: one range read covers this many revisions
LOOKBACK = 1000  # revisions a new leader looks back for changes still without a stamp
PRUNE_EVERY = 256  # stamps written between two prunings
STAMP_PATIENCE = 2.0  # seconds a query spends stamping what the leader has not stamped yet


@attrs.frozen(kw_only=True)
class EventTime:
    """`cluster/event-times/{revision:020d}`: when the changes of that revision were first observed."""

    at: float
    schema_version: int = 1


def time_key(revision: int) -> str:
    return f"{EVENT_TIMES}{revision:020d}"


def _block_prefix(revision: int) -> str:
    return time_key(revision)[: -len(str(BLOCK - 1))]


def _revision_of(key: str) -> int | None:
    tail = key[len(EVENT_TIMES) :]
    return int(tail) if tail.isdigit() else None


class EventClock:
    """Reads and writes the stamps. Raises KVError (the caller translates it)."""

    def __init__(self, kv: KV, *, clock: Callable[[], float] = time.time) -> None:
        self.kv = kv
        self.clock = clock
        self._stamped = 0  # by the leader's stamper, for pruning

    async def stamp(self, revision: int) -> float:
        """The stamp of `revision`; written now (with the current time) if there is none yet."""
        key = time_key(revision)
        found = await self._stored(key)
        if found is not None:
            return found
        now = self.clock()
        result = await self.kv.txn(
            compares=[Compare(key=key, target=CompareTarget.EXISTS, operand=False)],
            success=[Put(key=key, value=encode_record(EventTime(at=now)))],
        )
        if result.succeeded:
            return now
        found = await self._stored(key)  # another observer was first
        return now if found is None else found

    async def _stored(self, key: str) -> float | None:
        kv = await self.kv.get(key)
        if kv is None:
            return None
        try:
            return decode_record(key, kv.value, EventTime).at
        except RecordError:
            return None

    async def times(self, revisions: Iterable[int], *, patience: float = STAMP_PATIENCE) -> dict[int, float]:
        """The stamps of `revisions`, stamping (now) those that have none yet. A revision that cannot be
        stamped within `patience` seconds in all (no quorum: nothing can be written) is left out: its
        time is unknown for now, rather than made up. Raises KVError if the stamps cannot be read."""
        wanted = sorted(set(revisions))
        found: dict[int, float] = {}
        for prefix in sorted({_block_prefix(r) for r in wanted}):
            for kv in (await self.kv.range(prefix)).kvs:
                revision = _revision_of(kv.key)
                if revision is None:
                    continue
                try:
                    found[revision] = decode_record(kv.key, kv.value, EventTime).at
                except RecordError:
                    continue
        with trio.move_on_after(patience):
            for revision in wanted:
                if revision not in found:
                    try:
                        found[revision] = await self.stamp(revision)
                    except KVError as error:
                        log.info("event times: cannot stamp revision %d now: %s", revision, error.message)
                        break
        return {r: found[r] for r in wanted if r in found}

    # ------------------------------------------------------------ the leader's stamper

    async def run(self, leadership: LeadershipMonitor) -> None:
        """While this node leads, stamp every change that needs one as it is committed. Runs until
        cancelled; a KV error is logged and retried, never raised."""
        await follow_while_leading(leadership, self._follow, "event times")

    async def _follow(self) -> None:
        status = await self.kv.status()
        await self._prune(status.compact_revision)
        start = max(status.compact_revision + 1, status.revision - LOOKBACK + 1, 1)
        self._stamped = 0
        # (one watch failed: a group of its KV error, and `follow_while_leading` starts over)
        async with trio.open_nursery() as nursery:
            for prefix in timed_prefixes():  # not every key: what may need a stamp only
                nursery.start_soon(self._stamp_changes, prefix, start)

    async def _stamp_changes(self, prefix: str, start: int) -> None:
        watch = self.kv.watch(prefix, start)
        try:
            last = 0
            while True:
                batch = await watch.__anext__()
                for raw in batch:
                    if raw.revision != last and needs_time(raw):
                        last = raw.revision
                        await self.stamp(raw.revision)
                        self._stamped += 1
                        if self._stamped % PRUNE_EVERY == 0:
                            await self._prune((await self.kv.status()).compact_revision)
        finally:
            await watch.aclose()

    async def _prune(self, compact_revision: int) -> None:
        """Delete the stamps of revisions the history no longer holds."""
        old = [
            kv.key
            for kv in (await self.kv.range(EVENT_TIMES)).kvs
            if (revision := _revision_of(kv.key)) is not None and revision <= compact_revision
        ]
        for first in range(0, len(old), 100):
            await self.kv.txn(success=[Delete(key=key) for key in old[first : first + 100]])
