"""What a replica's status says of the others (`Status.members`): on the leader, a follower that stopped
answering is not counted as connected although its link stays open (a SIGSTOPped replica's socket is
not closed, and the connection timeout is an hour), so that `aether node stop` does not count it among
the replicas that are up; on the other follower likewise, as the leader reports it (a follower hears
nothing from the other followers to tell). Three real `aether-kv serve` replicas in subprocesses."""

from __future__ import annotations

import signal

import pytest

from aether_kv import LocalCluster, open_client
from support import known_leader, process_stopped, wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("asked", ["leader", "the other follower"])
async def test_a_stopped_follower_counts_as_not_connected_until_it_answers_again(
    kv_cluster: LocalCluster, asked: str
) -> None:
    leader = await known_leader(kv_cluster)
    follower, other = (r.replica_id for r in kv_cluster.replicas if r.replica_id != leader)
    address = kv_cluster.spec(follower).raft_address
    asking = leader if asked == "leader" else other
    async with open_client([kv_cluster.spec(asking).client_address], kv_cluster.secret) as client:

        async def connected() -> dict[str, bool]:
            status = await client.status()
            if status.is_leader != (asking == leader):  # (leadership moved meanwhile: ask again)
                return {}
            return {m.raft_address: m.connected for m in status.members}

        await wait_until(connected, until=lambda found: found and all(found.values()), timeout=30, what="all")
        process = kv_cluster.processes[follower]
        process.send_signal(signal.SIGSTOP)
        try:
            await wait_until(lambda: process_stopped(process.pid), timeout=10, what=f"{follower} stopped")
            await wait_until(
                connected,
                until=lambda found: found.get(address) is False,
                timeout=30,
                what=f"{asked} to count the stopped {follower} as not connected",
            )
        finally:
            process.send_signal(signal.SIGCONT)
        await wait_until(
            connected,
            until=lambda found: found.get(address) is True,
            timeout=30,
            what=f"{asked} to count {follower} as connected again",
        )
