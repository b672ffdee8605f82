"""Helpers for tests: waiting on conditions with a deadline, naming replicas."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio

from aether_kv import LocalCluster, Status


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
