"""A hung leader: the `aether-node` process whose KV replica leads Raft is stopped (SIGSTOP), its replica
process runs on. With real processes (3 nodes, the default 1.5 s lease): the replica of a silent node
hands over its leadership (`aether_kv._pysyncobj_patches`, item 14: the node's heartbeat on the replica's
stdin, `runtime/_kv_replica.py`), another node claims `cluster/leader` and replaces the stopped node's
instances; resumed, the old leader's writes are fenced out and it neither claims nor leads again.

Before, the replica kept leading Raft for as long as its node was stopped: nothing was reconciled, no
node claimed, and `cluster status` said "a leader is being elected" until the node resumed."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import attrs
import pytest
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

from aether_kv import KeyValue, KVClient, KVError
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LEADER_KEY = "cluster/leader"
SETTLE = 90.0  # first installs included, on a busy machine
TAKEOVER = 30.0  # budget: the replica's silence limit (2 leases: 3 s), an election, a claim, placements


@attrs.frozen
class Claim:
    """`cluster/leader` (the node's `LeaderClaim`, as JSON): who claimed, in which Raft term."""

    node_id: str
    term: int


async def _claim(kv: KVClient) -> tuple[Claim, KeyValue] | None:
    try:
        found = await kv.get(LEADER_KEY, linearizable=True)
    except KVError:
        return None  # mid-election: asked again
    if found is None:
        return None
    record = json.loads(found.value)
    return Claim(node_id=record["node_id"], term=record["term"]), found


async def test_a_stopped_leader_node_loses_the_leadership_and_its_instances_are_replaced(
    sample_index: Path, tmp_path: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        await put_blueprint(kv, "echo", SliceSpec(artifact=ECHO, instances=3))
        placed = await wait_for(kv, exactly_active(3, ECHO), timeout=SETTLE, what="3 echo ACTIVE")
        leader = await leader_node_id(cluster, kv)
        claimed = await wait_until(
            lambda: _claim(kv),
            until=lambda seen: seen is not None and seen[0].node_id == leader,
            timeout=30,
            what=f"{leader}'s claim",
        )
        assert claimed is not None
        old_claim = claimed[0]
        assert any(i.node_id == leader for i in placed), placed

        pid = cluster.processes[leader].pid
        os.kill(pid, signal.SIGSTOP)  # the node only: its KV replica, a child process, runs on
        try:
            taken = await wait_until(
                lambda: _claim(kv),
                until=lambda seen: seen is not None and seen[0].node_id != leader,
                timeout=TAKEOVER,
                what=f"another node than the stopped {leader} to claim the leadership",
                describe=lambda seen: f"{seen}\n{logs(cluster)}",
            )
            assert taken is not None
            new_claim, new_claim_kv = taken
            assert new_claim.term > old_claim.term
            assert await leader_node_id(cluster, kv) == new_claim.node_id

            def replaced(found: list) -> bool:  # type: ignore[type-arg]
                return exactly_active(3, ECHO)(found) and all(i.node_id != leader for i in found)

            await wait_for(
                kv, replaced, timeout=TAKEOVER, what=f"3 echo ACTIVE without {leader}", cluster=cluster
            )
        finally:
            os.kill(pid, signal.SIGCONT)

        # Resumed: the node registers again, learns that it no longer leads and leaves the claim alone.
        async def registered() -> bool:
            return await kv.get(f"nodes/{leader}", linearizable=True) is not None

        await wait_until(
            registered,
            timeout=TAKEOVER,
            what=f"{leader} registered again",
            describe=lambda _: logs(cluster),
        )
        await wait_until(
            lambda: "is no longer the leader of term" in cluster.log_tail(leader, 400),
            timeout=TAKEOVER,
            what=f"{leader} to stop reconciling",
            describe=lambda _: cluster.log_tail(leader, 60),
        )
        after = await _claim(kv)
        assert after is not None
        assert after[0] == new_claim, "the resumed node took the claim back"
        assert after[1].mod_revision == new_claim_kv.mod_revision
        assert await leader_node_id(cluster, kv) == new_claim.node_id
        await wait_for(kv, exactly_active(3, ECHO), timeout=TAKEOVER, what="3 echo ACTIVE", cluster=cluster)
