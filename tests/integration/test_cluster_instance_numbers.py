"""Instance numbers are never given twice, on a real cluster of three nodes: a slice scaled up to 3, down
to 1 (its two newest instances go) and up to 3 again gets new numbers, not those of the instances it
removed; and after the leading node stops, the new leader goes on after the numbers the old one gave
(`cluster/instance-numbers/`, written with the instances). Every creation of an instance record is seen
through a KV watch, so a number given twice, even briefly, fails the test."""

from __future__ import annotations

import collections
import signal
from pathlib import Path

import pytest
import trio
from cluster_support import (
    ECHO,
    ECHO_ID,
    SETTLE,
    SliceSpec,
    background,
    exactly_active,
    kv_of,
    leader_node_id,
    put_blueprint,
    running_cluster,
    wait_for,
)

from aether_kv import KVClient, KVError
from aether_node import InstanceKey
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Creations:
    """The number of every instance record of echo ever created (a key's first version), in order, from
    the listing on. Start it with `background`."""

    def __init__(self, kv: KVClient) -> None:
        self.kv = kv
        self.numbers: list[int] = []

    def _created(self, key: str) -> None:
        parsed = InstanceKey.parse(key)
        if parsed is not None and parsed.coordinates.artifact_id == ECHO_ID:
            self.numbers.append(parsed.instance)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listing = await self.kv.range("slices/", linearizable=True)
        for item in listing.kvs:
            self._created(item.key)
        task_status.started()
        watch = self.kv.watch("slices/", listing.revision + 1)
        try:
            async for events in watch:
                for event in events:
                    if event.kind == "put" and event.kv.version == 1:
                        self._created(event.kv.key)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await watch.aclose()

    def given_twice(self) -> list[int]:
        return sorted(n for n, times in collections.Counter(self.numbers).items() if times > 1)


async def scale(kv: KVClient, count: int, what: str) -> list[int]:
    """Apply echo at `count` instances and wait until exactly those are ACTIVE: their numbers."""
    await put_blueprint(kv, "numbers", SliceSpec(artifact=ECHO, instances=count))
    found = await wait_for(
        kv, exactly_active(count, ECHO), timeout=SETTLE, what=what, artifact_id=ECHO_ID, interval=0.2
    )
    return sorted(i.instance for i in found)


async def test_a_scale_down_then_up_gives_new_numbers_also_after_a_leader_change(
    tmp_path: Path, sample_index: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        creations = Creations(kv)
        async with background(creations):
            assert await scale(kv, 3, "3 ACTIVE") == [1, 2, 3]
            assert await scale(kv, 1, "1 ACTIVE") == [1]  # the newest two went
            assert await scale(kv, 3, "3 ACTIVE again") == [1, 4, 5]  # not 2 and 3 again
            assert await scale(kv, 1, "1 ACTIVE again") == [1]

            # The leading node stops (gracefully: its replica too, two of three stay): the next leader
            # knows the numbers given only from the store.
            old = await leader_node_id(cluster, kv)
            await trio.to_thread.run_sync(cluster.kill, old, signal.SIGTERM)
            raft_to_node = {n.raft: n.node_id for n in cluster.nodes if n.raft}

            async def leader() -> str | None:
                try:
                    return raft_to_node.get((await kv.status()).leader or "")
                except KVError:
                    return None

            await wait_until(
                leader, until=lambda n: n not in (None, old), timeout=30, what="another node to lead"
            )
            numbers = await scale(kv, 3, "3 ACTIVE under the new leader")
            assert min(n for n in numbers if n != 1) > 5, numbers
            assert creations.given_twice() == [], creations.numbers
        assert sorted(set(creations.numbers))[:5] == [1, 2, 3, 4, 5], creations.numbers
