"""Lease keep-alives write nothing to the Raft log (the leader keeps renewal deadlines in memory), and
leases still expire when not kept alive, also across a leader change; three real replica processes."""

from __future__ import annotations

import signal

import pytest
import trio

from aether_kv import (
    ConnectionLostError,
    LeaseNotFoundError,
    LocalCluster,
    OutcomeUnknownError,
    Status,
    UnavailableError,
    open_client,
)
from support import known_leader, settled_leader, wait_until

pytestmark = pytest.mark.integration

TRANSIENT = (OutcomeUnknownError, UnavailableError, ConnectionLostError)
# A holder's renewal pace (what a node does: several renewals per TTL of 5 s). RENEWALS of them span
# more than a TTL: a lease that survives them was kept alive by them, not by its own time left.
RENEW_EVERY = 0.5
RENEWALS = 12


async def _leader_status(cluster: LocalCluster) -> Status:
    leader = await known_leader(cluster)
    async with open_client([cluster.spec(leader).client_address], cluster.secret) as client:
        return await client.status()


async def _present_everywhere(cluster: LocalCluster, key: str, present: bool) -> bool:
    for process_id, process in cluster.processes.items():
        if process.poll() is not None:
            continue
        async with open_client([cluster.spec(process_id).client_address], cluster.secret) as one:
            if (await one.get(key) is not None) != present:  # serializable: that replica's own state
                return False
    return True


async def test_keeping_a_lease_alive_writes_nothing_to_the_log(kv_cluster: LocalCluster) -> None:
    clients = [open_client([endpoint], kv_cluster.secret) for endpoint in kv_cluster.endpoints]
    async with clients[0] as one, clients[1] as two, clients[2] as three:
        lease = await one.lease_grant(5.0)
        await one.put("held", b"x", lease=lease.lease)
        await one.lease_keepalive(lease.lease)
        before = await _leader_status(kv_cluster)
        # Renewals through every replica over more than a TTL (followers forward them): the stimulus.
        for round_ in range(RENEWALS):
            renewed = await (one, two, three)[round_ % 3].lease_keepalive(lease.lease)
            assert renewed.lease == lease.lease and renewed.ttl == 5.0
            await trio.sleep(RENEW_EVERY)
        after = await _leader_status(kv_cluster)
    assert await _present_everywhere(kv_cluster, "held", True), "a kept-alive lease lost its key"
    elections = after.term - before.term  # each new leader appends one no-op entry; nothing else may
    assert after.commit_index - before.commit_index <= elections, (before, after)


async def test_a_lease_not_kept_alive_expires(kv_cluster: LocalCluster) -> None:
    async with open_client(kv_cluster.endpoints, kv_cluster.secret) as client:
        lease = await client.lease_grant(1.0)
        await client.put("fleeting", b"x", lease=lease.lease)
        await wait_until(
            lambda: _present_everywhere(kv_cluster, "fleeting", False), timeout=20, what="the lease to expire"
        )
        with pytest.raises(LeaseNotFoundError):
            await client.lease_keepalive(lease.lease)


@pytest.mark.long
async def test_leases_keep_their_meaning_across_a_leader_change(kv_cluster: LocalCluster) -> None:
    async with open_client(kv_cluster.endpoints, kv_cluster.secret) as client:
        kept = await client.lease_grant(5.0)
        dropped = await client.lease_grant(5.0)
        await client.put("kept", b"x", lease=kept.lease)
        await client.put("dropped", b"x", lease=dropped.lease)
        renewals = 0

        async def keep_alive() -> None:
            nonlocal renewals
            while True:
                try:
                    await client.lease_keepalive(kept.lease)
                    renewals += 1
                except TRANSIENT:
                    pass  # the election: the lease has time (a new leader starts it at a full TTL)
                await trio.sleep(RENEW_EVERY)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_alive)
            old_leader = await settled_leader(kv_cluster)
            kv_cluster.kill(old_leader, signal.SIGKILL)
            await wait_until(
                lambda: _present_everywhere(kv_cluster, "dropped", False),
                timeout=40,
                what="the lease nobody kept alive to expire under the new leader",
            )
            assert await _present_everywhere(kv_cluster, "kept", True), "a kept-alive lease expired"
            seen = renewals
            await wait_until(lambda: _at_least(lambda: renewals, seen + 8), timeout=30, what="more renewals")
            assert await _present_everywhere(kv_cluster, "kept", True), "a kept-alive lease expired"
            nursery.cancel_scope.cancel()
        assert await known_leader(kv_cluster) != old_leader
        await wait_until(
            lambda: _present_everywhere(kv_cluster, "kept", False),
            timeout=40,
            what="the kept lease to expire once its keep-alives stopped",
        )


async def _at_least(value, target: int) -> bool:  # type: ignore[no-untyped-def]
    return bool(value() >= target)
