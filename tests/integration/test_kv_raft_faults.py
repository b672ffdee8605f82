"""aether-kv's Raft layer under load and attack, with three real replica processes on 127.0.0.1: no
follower throws away applied entries, and a stranger on the Raft port cannot starve a replica."""

from __future__ import annotations

import pytest
import trio

from aether_kv import ConnectionLostError, LocalCluster, OutcomeUnknownError, UnavailableError, open_client

pytestmark = pytest.mark.integration

WRITE_ERRORS = (OutcomeUnknownError, UnavailableError, ConnectionLostError)


def _logs(cluster: LocalCluster) -> dict[str, str]:
    return {
        spec.replica_id: (cluster.directory / f"{spec.replica_id}.log").read_text(errors="replace")
        for spec in cluster.replicas
    }


async def test_followers_keep_their_applied_entries_under_load(kv_cluster: LocalCluster) -> None:
    """Concurrent writers make the leader resend overlapping batches (an acknowledgement that arrives
    after the next batch left moves its next index back); followers must not truncate what matches."""
    async with open_client(kv_cluster.endpoints, kv_cluster.secret, request_timeout=10.0) as client:

        async def writer(number: int) -> None:
            for sequence in range(60):
                await client.put(f"load/{number}/{sequence}", b"v" * 2000)

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for number in range(40):
                    nursery.start_soon(writer, number)
        for number in range(40):
            assert await client.get(f"load/{number}/59", linearizable=True) is not None
    truncations = {
        replica: [line for line in log.splitlines() if "truncating" in line]
        for replica, log in _logs(kv_cluster).items()
    }
    assert not any(truncations.values()), truncations
