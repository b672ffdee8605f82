"""A replica left without a majority says so: two of three replicas stopped (SIGSTOP: their links stay
open, as a hung machine's do), the third's status says "no quorum" and names them as not connected (it
said "quorum: yes" for as long as they stayed stopped), and a write or a linearizable read through a
client that knows all three endpoints fails with NoQuorumError naming them once the client has asked
every endpoint it can reach, long before its request deadline; nothing is written. Once the replicas
are back, the status and the writes are as before. Three real `aether-kv serve` replicas."""

from __future__ import annotations

import signal

import pytest
import trio

from aether_kv import KVError, LocalCluster, NoQuorumError, open_client
from support import known_leader, process_stopped, wait_until

pytestmark = pytest.mark.integration

REQUEST_TIMEOUT = 120.0  # the client's deadline: far beyond the fail-fast answer the test waits for


@pytest.mark.parametrize(
    "survivor", ["leader", pytest.param("follower", marks=pytest.mark.long)]
)  # (the follower in `nox -s long`)
async def test_a_replica_without_a_majority_says_so_and_refuses_at_once(
    kv_cluster: LocalCluster, survivor: str
) -> None:
    leader = await known_leader(kv_cluster)
    ids = [r.replica_id for r in kv_cluster.replicas]
    kept = leader if survivor == "leader" else next(i for i in ids if i != leader)
    stopped = [i for i in ids if i != kept]
    silent = sorted(kv_cluster.spec(i).raft_address for i in stopped)
    endpoints = [kv_cluster.spec(kept).client_address] + [kv_cluster.spec(i).client_address for i in stopped]
    async with (
        open_client(endpoints[:1], kv_cluster.secret) as asking,
        open_client(endpoints, kv_cluster.secret, request_timeout=REQUEST_TIMEOUT) as client,
    ):
        await client.put("before", b"1")
        assert (await asking.status()).has_quorum
        processes = [kv_cluster.processes[i] for i in stopped]
        for process in processes:
            process.send_signal(signal.SIGSTOP)
        try:
            for process in processes:
                await wait_until(lambda p=process: process_stopped(p.pid), timeout=10, what="stopped")
            status = await wait_until(
                asking.status,
                until=lambda s: not s.has_quorum,
                timeout=30,
                what="no quorum",
            )
            assert sorted(m.raft_address for m in status.members if not m.connected) == silent

            with trio.fail_after(REQUEST_TIMEOUT / 4):  # (the client gives up on its own, not by deadline)
                with pytest.raises(NoQuorumError) as refused:
                    await client.put("during", b"2")
            assert sorted(refused.value.replicas) == silent
            assert "no quorum" in refused.value.message and all(a in refused.value.message for a in silent)
            with trio.fail_after(REQUEST_TIMEOUT / 4), pytest.raises(NoQuorumError):
                await client.get("before", linearizable=True)
        finally:
            for process in processes:
                process.send_signal(signal.SIGCONT)
        await wait_until(asking.status, until=lambda s: s.has_quorum and s.leader, timeout=30, what="quorum")

        async def write_after() -> object:
            try:
                return await client.put("after", b"3")
            except KVError as error:  # (the store between leaders for a moment: tried again)
                return error

        await wait_until(write_after, until=lambda r: not isinstance(r, KVError), timeout=30, what="a write")
        assert await client.get("during", linearizable=True) is None  # refused: never written
        found = await client.get("after", linearizable=True)
        assert found is not None and found.value == b"3"
