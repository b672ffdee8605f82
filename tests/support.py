"""Helpers for tests: waiting on conditions with a deadline, naming replicas."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio

from aether_kv import LocalCluster, Status, open_client


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout` seconds."""
    with trio.move_on_after(timeout):
        while True:
            if await condition():
                return
            await trio.sleep(interval)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def replica_of(cluster: LocalCluster, raft_address: str) -> str:
    return next(r.replica_id for r in cluster.replicas if r.raft_address == raft_address)


def leader_id(cluster: LocalCluster, status: Status) -> str:
    assert status.leader is not None, "no leader"
    return replica_of(cluster, status.leader)


async def known_leader(cluster: LocalCluster) -> str:
    """The leader's replica id, once the replica asked knows one."""
    found: list[str] = []

    async def known() -> bool:
        async with open_client(cluster.endpoints, cluster.secret) as client:
            status = await client.status()
        if status.leader is not None:
            found.append(leader_id(cluster, status))
        return bool(found)

    await wait_until(known, timeout=30, what="a known leader")
    return found[0]
