"""The watch fan-out of one replica's client server: what its watches send, encoded once.

Every watch that sees an event sends the same JSON for it: each event is encoded once (`encode_event`)
however many watches send it, and the messages of a batch (its events cut into chunks, each chunk's
events joined) are built once for all the watches on one prefix that are at the same point. A watch
adds only its own header (`events_message`). Pure bookkeeping over bytes, bounded in events and bytes;
no I/O, no clock. What it keeps only saves work: a batch or event it no longer holds is encoded again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from ._records import Event
from ._wire import encode_event

#: How many events' encodings, and how many bytes of them, the fan-out keeps (the oldest go first). All
#: the watches of a replica take a new batch within moments of each other: a few batches' worth is plenty.
KEEP_EVENTS = 4096
KEEP_BYTES = 16 * 1024 * 1024
#: How many batches' messages it keeps.
KEEP_BATCHES = 256

K = TypeVar("K")
V = TypeVar("V")

WATCH_CHUNK_EVENTS = 256
WATCH_CHUNK_BYTES = 1024 * 1024


def watch_chunks(
    events: Sequence[Event],
    weights: Sequence[int],
    size: int = WATCH_CHUNK_EVENTS,
    max_bytes: int = WATCH_CHUNK_BYTES,
) -> list[slice]:
    """Where to cut a watch batch into messages of about `size` events or `max_bytes` (`weights`: each
    event's encoded length; a long history, or a few large values, would not fit one message), cut
    only between revisions: the changes of one transaction always arrive together, in one message
    however large. Pure."""
    chunks: list[slice] = []
    start = weight = 0
    for index, event in enumerate(events):
        full = index - start >= size or weight >= max_bytes
        if full and events[index - 1].revision != event.revision:
            chunks.append(slice(start, index))
            start, weight = index, 0
        weight += weights[index]
    if start < len(events):
        chunks.append(slice(start, len(events)))
    return chunks


class _Kept(Generic[K, V]):
    """A dict that keeps its newest entries within a count and a total size (the oldest go first)."""

    def __init__(self, count: int, size: int) -> None:
        self._count, self._size = count, size
        self._items: dict[K, tuple[V, int]] = {}
        self._total = 0

    def get(self, key: K) -> V | None:
        found = self._items.get(key)
        return None if found is None else found[0]

    def put(self, key: K, value: V, size: int) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._total -= old[1]
        self._items[key] = (value, size)
        self._total += size
        while len(self._items) > self._count or self._total > self._size:
            self._total -= self._items.pop(next(iter(self._items)))[1]


class WatchFanout:
    """The encoded events and batch messages of one replica's watches, shared by all its connections."""

    def __init__(
        self,
        *,
        keep_events: int = KEEP_EVENTS,
        keep_batches: int = KEEP_BATCHES,
        keep_bytes: int = KEEP_BYTES,
    ) -> None:
        # id(event) -> (the event, its JSON): the event is held, so its id is not reused while kept
        self._events: _Kept[int, tuple[Event, bytes]] = _Kept(keep_events, keep_bytes)
        # (prefix, first revision, last revision) -> (the batch, its messages' bodies)
        self._batches: _Kept[tuple[str, int, int], tuple[Sequence[Event], list[bytes]]] = _Kept(
            keep_batches, keep_bytes
        )

    def encoded(self, event: Event) -> bytes:
        """`encode_event(event)`, encoded only the first time (while kept)."""
        found = self._events.get(id(event))
        if found is not None and found[0] is event:
            return found[1]
        data = encode_event(event)
        self._events.put(id(event), (event, data), len(data))
        return data

    def bodies(self, prefix: str, events: Sequence[Event]) -> list[bytes]:
        """The batch `events` of a watch on `prefix` as the bodies of its messages (each its chunk's
        encoded events joined by commas, for `events_message`), built once for every watch on `prefix`
        that takes the same batch. A batch is all the events on `prefix` from its first revision to its
        last, so those and the prefix name it; its first and last events must be the very ones kept."""
        if not events:
            return []
        key = (prefix, events[0].revision, events[-1].revision)
        found = self._batches.get(key)
        if found is not None:
            kept, bodies = found
            if len(kept) == len(events) and kept[0] is events[0] and kept[-1] is events[-1]:
                return bodies
        encoded = [self.encoded(event) for event in events]
        bodies = [b",".join(encoded[chunk]) for chunk in watch_chunks(events, [len(e) for e in encoded])]
        self._batches.put(key, (events, bodies), sum(map(len, bodies)))
        return bodies
