"""KVCache against a real 3-replica KV: a cache whose task ends leaves no watch behind in the client
(issue 18: a cluster manager's cache, dropped each time its node stopped leading, kept receiving events
for nobody, and the node's watch backlog grew without end)."""

from __future__ import annotations

import trio

from aether_kv import KVClient, LocalCluster, open_client
from aether_node.core._kv_cache import KVCache


async def follow_until(client: KVClient, prefix: str, start: int, last_key: str) -> None:
    """Read a watch of `prefix` until it delivered `last_key`: every event before it has been sent."""
    watch = client.watch(prefix, start)
    try:
        with trio.fail_after(30):
            async for batch in watch:
                if any(event.kv.key == last_key for event in batch):
                    return
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await watch.aclose()


async def test_a_cancelled_cache_leaves_no_watch_behind(kv_cluster: LocalCluster) -> None:
    async with open_client(kv_cluster.endpoints, kv_cluster.secret, request_timeout=10.0) as client:
        for attempt in range(3):  # as a node that gains and loses the lead, again and again
            cache = KVCache(client, ["a/", "b/"])
            async with trio.open_nursery() as nursery:
                await nursery.start(cache.run)
                written = (await client.put(f"a/{attempt}", b"x")).revision
                with trio.fail_after(30):
                    await cache.caught_up("a/", written)
                assert f"a/{attempt}" in cache.data["a/"]
                nursery.cancel_scope.cancel()
        start = (await client.range("a/")).revision + 1
        for n in range(20):
            await client.put(f"a/later-{n}", b"x")
            await client.put(f"b/later-{n}", b"x")
        await follow_until(client, "", start, "b/later-19")
        assert client.watch_backlog() == 0
