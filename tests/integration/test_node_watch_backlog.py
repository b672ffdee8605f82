"""A node that loses Raft leadership leaves no watch behind (issue 18, item 1).

The cluster manager follows blueprints/, nodes/ and slices/ while its node leads. Its watches used to
outlive the leadership: the node's KV client kept receiving their events for nobody, and
`aether_kv_watch_backlog_batches` grew with every change of the cluster and never drained. Here the
leader's replica is paused until another replica leads, the cluster then changes many times, and every
node's backlog must come back to about zero.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
from cluster_support import (
    ECHO,
    SliceSpec,
    delete_blueprint,
    kv_of,
    leader_node_id,
    put_blueprint,
    running_cluster,
)
from node_support import kill_pid, kv_replicas
from prometheus_client.parser import text_string_to_metric_families

from aether_kv import KVError, open_client
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.long]


CHANGES = 30
NEAR_ZERO = 2


async def metric(http: httpx.AsyncClient, management: str, name: str) -> float:
    answer = await http.get(f"http://{management}/metrics")
    assert answer.status_code == 200, answer.text
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return sample.value
    raise AssertionError(f"no {name} in the metrics of {management}")


async def test_the_watch_backlog_drains_after_a_leader_loses_the_lead(
    tmp_path: Path, sample_index: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        managements = {n.node_id: n.management for n in cluster.nodes}
        old = await leader_node_id(cluster, kv)
        plan = cluster.plan(old)
        (replica,) = kv_replicas(Path(plan.data_dir))
        others = [n.kv_client for n in cluster.nodes if n.node_id != old and n.kv_client]
        async with open_client(others, cluster.secret, request_timeout=5.0) as rest:

            async def another_leads() -> bool:
                try:
                    status = await rest.status()
                except KVError:
                    return False
                return status.leader is not None and status.leader != plan.raft

            kill_pid(replica.pid, signal.SIGSTOP)
            try:
                await wait_until(another_leads, timeout=60, what="another replica to lead")
            finally:
                kill_pid(replica.pid, signal.SIGCONT)

            async with httpx.AsyncClient(timeout=10) as http:

                async def old_follows() -> bool:
                    return await metric(http, managements[old], "aether_kv_raft_is_leader") == 0

                await wait_until(old_follows, timeout=60, what=f"{old} to know it no longer leads")
                # the cluster changes: each change is one batch for every watch of blueprints/
                last = 0
                for n in range(CHANGES // 2):
                    last = await put_blueprint(rest, f"churn-{n}", SliceSpec(artifact=ECHO, instances=0))
                    await delete_blueprint(rest, f"churn-{n}")
                last = (await rest.barrier()) or last

                async def drained() -> bool:
                    for management in managements.values():
                        if await metric(http, management, "aether_kv_revision") < last:
                            return False  # it has not seen every change yet
                        if await metric(http, management, "aether_kv_watch_backlog_batches") > NEAR_ZERO:
                            return False
                    return True

                await wait_until(drained, timeout=60, what=f"every node's watch backlog ≤ {NEAR_ZERO}")
                backlog = await metric(http, managements[old], "aether_kv_watch_backlog_batches")
                assert backlog <= NEAR_ZERO, backlog
