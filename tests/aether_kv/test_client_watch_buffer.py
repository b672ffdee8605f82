"""The client's watch buffer is bounded: a watch whose consumer stops reading holds at most
WATCH_BUFFER messages, is then detached, and when read again resubscribes from its last revision, so
it still delivers every event once, in order."""

from __future__ import annotations

import pytest
import trio

import aether_kv._client
from aether_kv import LocalCluster, open_client


async def test_a_watch_that_is_not_read_holds_a_bounded_backlog_and_loses_nothing(
    kv_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aether_kv._client, "WATCH_BUFFER", 8)
    async with open_client(kv_cluster.endpoints, kv_cluster.secret, request_timeout=10.0) as client:
        start = (await client.put("w/000", b"x")).revision
        slow = client.watch("w/", start)
        with trio.fail_after(30):
            first = await slow.__anext__()
        assert [e.kv.key for e in first] == ["w/000"]
        keys = [f"w/{n:03}" for n in range(1, 60)]
        for key in keys:
            await client.put(key, b"x")
        # a second watch on the same connection sees the last write: the slow one was sent all of it
        fast = client.watch("w/", start)
        seen: list[str] = []
        with trio.fail_after(30):
            async for batch in fast:
                seen += [e.kv.key for e in batch]
                if seen[-1] == keys[-1]:
                    break
        await fast.aclose()
        assert client.watch_backlog() <= 8
        delivered: list[str] = []
        with trio.fail_after(30):
            async for batch in slow:
                delivered += [e.kv.key for e in batch]
                if delivered[-1] == keys[-1]:
                    break
        await slow.aclose()
        assert delivered == keys
        assert slow.reconnects >= 1, "the slow watch was never detached"
