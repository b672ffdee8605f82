"""A local, watch-fed copy of some KV prefixes (list, then watch from the listed revision).

Passive: it never writes. Readers get the current dict per prefix and can wait for the next change or
for the copy to have caught up with a revision (e.g. one of their own writes). A reader that keeps
something derived per key (the leader's instance index) asks which keys changed since it last asked
(`touched`) instead of going over every key. It notes when it first saw each key's current value
(`first_seen`, trio's clock): how long a record has stood, by this process's own clock (the router's
readiness window for a rollout's new instances).
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from aether_kv import KV, KeyValue


def _same(old: KeyValue | None, new: KeyValue) -> bool:
    """Whether a key listed again holds the value this copy had (the same write of it)."""
    return old is not None and old.mod_revision == new.mod_revision


class KVCache:
    def __init__(self, kv: KV, prefixes: Sequence[str]) -> None:
        self.kv = kv
        self.prefixes = tuple(prefixes)
        self.data: dict[str, dict[str, KeyValue]] = {p: {} for p in self.prefixes}
        self.seen: dict[str, int] = {p: 0 for p in self.prefixes}
        # Keys put or deleted since `touched` was last asked, per prefix; None: the prefix was listed
        # (again) since, every key may have changed.
        self._touched: dict[str, set[str] | None] = {p: None for p in self.prefixes}
        # When this copy first saw each key's current value (trio.current_time()), per prefix: a key put
        # again is seen again; one listed again unchanged (the same mod revision) keeps its time.
        self.first_seen: dict[str, dict[str, float]] = {p: {} for p in self.prefixes}
        self._changed = trio.Event()

    def _notify(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    @property
    def changed(self) -> trio.Event:
        """An event set at the next change (capture it before reading, then wait on it)."""
        return self._changed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fill the cache, report started, then follow every prefix until cancelled. Cancelled, it ends
        its watches before it returns."""
        async with trio.open_nursery() as nursery:
            for prefix in self.prefixes:
                await nursery.start(self._follow, prefix)
            task_status.started()

    async def _follow(
        self, prefix: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listing = await self.kv.range(prefix, linearizable=True)
        now, before, seen = trio.current_time(), self.data[prefix], self.first_seen[prefix]
        self.first_seen[prefix] = {
            kv.key: seen[kv.key] if _same(before.get(kv.key), kv) and kv.key in seen else now
            for kv in listing.kvs
        }
        self.data[prefix] = {kv.key: kv for kv in listing.kvs}
        self._touched[prefix] = None
        self.seen[prefix] = listing.revision
        self._notify()
        task_status.started()
        watch = self.kv.watch(prefix, listing.revision + 1)
        try:
            async for events in watch:
                entries, seen = self.data[prefix], self.first_seen[prefix]
                touched = self._touched[prefix]
                now = trio.current_time()
                for event in events:
                    if event.kind == "put":
                        entries[event.kv.key] = event.kv
                        seen[event.kv.key] = now
                    else:
                        entries.pop(event.kv.key, None)
                        seen.pop(event.kv.key, None)
                    if touched is not None:
                        touched.add(event.kv.key)
                self.seen[prefix] = max(self.seen[prefix], events[-1].revision)
                self._notify()
        finally:
            # The watch ends with its task: left open, the client would keep receiving its events for
            # nobody (a cluster manager's cache, each time its node stops leading).
            await watch.aclose()

    def touched(self, prefix: str) -> set[str] | None:
        """The keys of `prefix` put or deleted since the last call (look them up in `data`: a key no
        longer there was deleted); None the first time, and after the prefix was listed again: every
        key may have changed. Meant for one reader per cache."""
        touched, self._touched[prefix] = self._touched[prefix], set()
        return touched

    async def caught_up(self, prefix: str, revision: int) -> None:
        """Wait until the copy of `prefix` includes every change up to `revision`."""
        while self.seen[prefix] < revision:
            await self._changed.wait()
