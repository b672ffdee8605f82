"""The leader's liveness watch (`control/_liveness.py`) with real `aether-node` processes. The nodes run
with a 30 s lease, so within the deadlines below only the watch can declare a node lost: a SIGKILLed
node is declared lost from its dropped connection (and its instances replaced on the others), and a
SIGSTOPped one, whose kernel still holds its connections, is not."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from cluster_support import (
    ECHO,
    SliceSpec,
    exactly_active,
    kv_of,
    leader_node_id,
    logs,
    put_blueprint,
    running_cluster,
    wait_for,
)

from aether_node import InstanceKey
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


LONG_LEASE = ("--lease-ttl", "30")
DETECTED = 15.0  # half the lease: what is declared lost by then was declared by the watch
# how long a new leader must have seen a registration to probe it at once (control/_liveness.py)
SETTLED_AFTER = 10.0


async def _node_keys(kv) -> set[str]:  # type: ignore[no-untyped-def]
    return {kv_.key for kv_ in (await kv.range("nodes/")).kvs}


@contextlib.asynccontextmanager
async def six_echo(sample_index: Path, tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    """3 nodes with the long lease, 6 echo instances ACTIVE on them; (cluster, its KV client)."""
    async with (
        running_cluster(tmp_path / "cluster", sample_index, 3, node_args=LONG_LEASE) as cluster,
        kv_of(cluster) as kv,
    ):
        await put_blueprint(kv, "echo", SliceSpec(artifact=ECHO, instances=6))
        await wait_for(kv, exactly_active(6, ECHO), timeout=60, what="6 echo ACTIVE")
        yield cluster, kv


async def _killed_and_replaced(cluster: Any, kv: Any, victim: str) -> None:
    """SIGKILL node `victim`; it must be unregistered and its instances replaced on the others within
    DETECTED (half the lease: only the watch can have found it), the watch saying so in a survivor's log."""
    cluster.kill(victim, signal.SIGKILL)

    async def gone() -> bool:
        return f"nodes/{victim}" not in await _node_keys(kv)

    await wait_until(gone, timeout=DETECTED, what=f"{victim} unregistered", describe=lambda _: logs(cluster))

    def replaced(found: list) -> bool:  # type: ignore[type-arg]
        return exactly_active(6, ECHO)(found) and all(i.node_id != victim for i in found)

    await wait_for(kv, replaced, timeout=DETECTED, what=f"6 echo ACTIVE without {victim}")
    survivors = "".join(cluster.log_tail(n.node_id, 400) for n in cluster.nodes if n.node_id != victim)
    assert f"node {victim} is gone: its connection dropped" in survivors, survivors


async def test_a_killed_node_is_declared_lost_from_its_dropped_connection(
    sample_index: Path, tmp_path: Path
) -> None:
    async with six_echo(sample_index, tmp_path) as (cluster, kv):
        leader = await leader_node_id(cluster, kv)
        victim = next(n.node_id for n in cluster.nodes if n.node_id != leader)
        # (a node killed before the watch first held its connection is the lease's to find: by design, a
        # node still starting is never probed; on a busy machine the handshake can take a second)
        await wait_until(
            lambda: f"node {victim}: watching its connection" in cluster.log_tail(leader, 400),
            timeout=30,
            what=f"the leader's watch on {victim}",
        )
        await _killed_and_replaced(cluster, kv, victim)


async def test_a_killed_leaders_node_is_declared_lost_by_the_next_leader(
    sample_index: Path, tmp_path: Path
) -> None:
    """The leader watched every node but its own: killed, its node was found by nobody until its lease
    lapsed (renewed for the takeover: 4.5 s with the default lease), or its restart took over its dead
    instances silently, the slice below its floor meanwhile. The next leader probes the registrations it
    finds at once, of the nodes that had been running a while: a refused port is a node gone."""
    async with six_echo(sample_index, tmp_path) as (cluster, kv):
        ready = time.monotonic()  # every node registered and sighting the others since before this
        victim = await leader_node_id(cluster, kv)
        # (a registration seen for less than SETTLED_AFTER is not probed: its node may not listen yet)
        await wait_until(
            lambda: time.monotonic() - ready > SETTLED_AFTER,
            timeout=SETTLED_AFTER + 5,
            what=f"the others seeing {victim} registered for {SETTLED_AFTER:g} s",
        )
        await _killed_and_replaced(cluster, kv, victim)


@pytest.mark.long
async def test_a_paused_node_is_not_declared_lost(sample_index: Path, tmp_path: Path) -> None:
    async with (
        running_cluster(tmp_path / "cluster", sample_index, 3, node_args=LONG_LEASE) as cluster,
        kv_of(cluster) as kv,
    ):
        await put_blueprint(kv, "echo", SliceSpec(artifact=ECHO, instances=3))
        await wait_for(kv, exactly_active(3, ECHO), timeout=60, what="3 echo ACTIVE")
        leader = await leader_node_id(cluster, kv)
        victim = next(n.node_id for n in cluster.nodes if n.node_id != leader)
        before = {k for k in (await kv.range("slices/")).kvs if InstanceKey.parse(k.key)}
        pid = cluster.processes[victim].pid
        os.kill(pid, signal.SIGSTOP)
        try:
            deadline = trio.current_time() + 3.0  # several probes' worth; far below the 30 s lease
            while trio.current_time() < deadline:
                assert f"nodes/{victim}" in await _node_keys(kv), "a paused node was declared lost"
                await trio.sleep(0.1)
        finally:
            os.kill(pid, signal.SIGCONT)
        after = {k.key for k in (await kv.range("slices/")).kvs}
        assert {k.key for k in before} <= after, "instances of the paused node were moved"
        assert "is gone: its connection dropped" not in cluster.log_tail(leader, 400)
