"""The leader's stamper (`EventClock.run`) on an in-memory KV: it stamps the changes that need a time (a
slice record or a node deleted) and watches only the prefixes where such a change can happen, not every
key (every endpoint and every state write of every instance came with its previous value, to be decoded
and dropped)."""

from __future__ import annotations

import trio
from hypothesis import given
from hypothesis import strategies as st

from aether_kv import Event, KeyValue, KVWatch, MemoryStore
from aether_node.control._cluster_manager import LeadershipMonitor
from aether_node.control._event_clock import EventClock, time_key
from aether_node.core._schema import ENDPOINTS, NODES, SLICES
from aether_node.observe._events import needs_time, timed_prefixes


class WatchedPrefixes(MemoryStore):
    """A MemoryStore that notes the prefix of every watch opened on it."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: list[str] = []

    def watch(self, prefix: str, start_revision: int = 0) -> KVWatch:
        self.watched.append(prefix)
        return super().watch(prefix, start_revision)


async def test_the_leader_stamps_deletions_and_watches_only_the_prefixes_that_may_need_a_stamp() -> None:
    kv = WatchedPrefixes()
    leadership = LeadershipMonitor(kv)
    stamper = EventClock(kv, clock=lambda: 1234.0)
    await kv.put(f"{SLICES}n1/org.example:echo:1.0/1", b"{}")
    await kv.put(f"{ENDPOINTS}org.example:echo/run/n1/1", b"{}")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(leadership.run)
        nursery.start_soon(stamper.run, leadership)
        gone = (await kv.delete(f"{SLICES}n1/org.example:echo:1.0/1")).revision
        withdrawn = (await kv.delete(f"{ENDPOINTS}org.example:echo/run/n1/1")).revision
        with trio.fail_after(10):
            while await kv.get(time_key(gone)) is None:
                await trio.sleep(0.01)
        assert await kv.get(time_key(withdrawn)) is None
        assert sorted(kv.watched) == sorted(timed_prefixes()) and ENDPOINTS not in kv.watched
        nursery.cancel_scope.cancel()


@given(
    prefix=st.sampled_from(
        ["", ENDPOINTS, NODES, SLICES, "cluster/", "blueprint", "x/", "cluster/event-times/"]
    ),
    rest=st.text(min_size=0, max_size=20),
    deleted=st.booleans(),
)
def test_a_change_outside_the_watched_prefixes_never_needs_a_stamp(
    prefix: str, rest: str, deleted: bool
) -> None:
    key = prefix + rest
    kv = KeyValue(
        key=key, value=b"" if deleted else b"{}", create_revision=1, mod_revision=2, version=1, lease=0
    )
    event = Event(kind="delete" if deleted else "put", kv=kv, prev=None, revision=2)
    if needs_time(event):
        assert any(key.startswith(p) for p in timed_prefixes())
