"""Answers larger than one 4 MiB frame, against real replicas: a range over many or large values, and a
watch of a transaction whose changes weigh more than a frame, arrive whole (the scale benchmark found a
range of `slices/` passes a frame past ~14,000 instances; a transaction of large values stalled every
watcher: the server could not send its events and the watch reconnected to the same batch forever)."""

from __future__ import annotations

import pytest
import trio

from aether_kv import MAX_VALUE_BYTES, LocalCluster, open_client
from aether_kv._records import Put
from aether_kv._wire import MAX_FRAME_BYTES

pytestmark = pytest.mark.integration

ONE_MIB = b"\x01" * MAX_VALUE_BYTES  # compressible: cheap on the Raft port; 1.33 MiB as base64 in JSON


async def test_a_range_answer_over_one_frame_arrives_whole_and_the_connection_serves_on(
    kv_cluster: LocalCluster,
) -> None:
    async with open_client(kv_cluster.endpoints, kv_cluster.secret, request_timeout=60) as client:
        for i in range(4):  # 4 x 1.33 MiB: over one frame
            await client.put(f"huge/{i}", bytes([i]) * MAX_VALUE_BYTES)
        for i in range(0, 3000, 100):  # and many small keys, as a large cluster's records
            await client.txn(
                success=[Put(key=f"huge/small/{j:05}", value=b"r" * 300) for j in range(i, i + 100)]
            )
        endpoint = client.endpoint
        with trio.fail_after(30):
            result = await client.range("huge/")
        assert len(result.kvs) == 3004
        assert [kv.value for kv in result.kvs[:4]] == [bytes([i]) * MAX_VALUE_BYTES for i in range(4)]
        assert sum(len(kv.value) for kv in result.kvs) * 4 // 3 > MAX_FRAME_BYTES
        assert await client.get("huge/small/00042") is not None  # the same connection serves on
        assert client.endpoint == endpoint


async def test_a_watch_gets_a_transaction_heavier_than_a_frame_in_one_batch(kv_cluster: LocalCluster) -> None:
    """Overwriting two 1 MiB values in one transaction: its events carry both new and previous values,
    ~5.3 MiB of JSON. The watcher gets them together, then the changes after them."""
    async with open_client(kv_cluster.endpoints, kv_cluster.secret, request_timeout=60) as client:
        for key in ("big/a", "big/b"):
            await client.put(key, ONE_MIB)
        start = (await client.put("big/marker", b"0")).revision + 1
        new = b"\x02" * MAX_VALUE_BYTES
        heavy = await client.txn(success=[Put(key="big/a", value=new), Put(key="big/b", value=new)])
        await client.put("big/after", b"1")
        watch = client.watch("big/", start_revision=start)
        seen: list[list[tuple[str, int]]] = []
        with trio.fail_after(30):
            async for events in watch:
                seen.append([(event.kv.key, event.revision) for event in events])
                for event in events:
                    if event.revision == heavy.revision:
                        assert event.kv.value == new
                        assert event.prev is not None and event.prev.value == ONE_MIB
                if any(key == "big/after" for batch in seen for key, _ in batch):
                    break
        await watch.aclose()
    flat = [change for batch in seen for change in batch]
    assert flat[:2] == [("big/a", heavy.revision), ("big/b", heavy.revision)]
    assert flat[2][0] == "big/after"
    assert any(batch[:2] == flat[:2] for batch in seen)  # the transaction's two changes arrived together
