"""A live node whose registration (`nodes/{id}`) is deleted from under it, on a real cluster: it puts the
registration back within seconds, and the cluster's status names a leader again. Before, the node ran on
unregistered; when it led, the status said that no node led until the node was killed."""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster_support import kv_of, leader_node_id, logs, running_cluster

from aether_kv import KVClient, KVError
from aether_node.client import ApiClient
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def node_key(node_id: str) -> str:
    return f"nodes/{node_id}"  # a node's registration (bound to its lease)


async def registered(kv: KVClient, node_id: str) -> bool | KVError:
    try:
        return await kv.get(node_key(node_id)) is not None
    except KVError as error:
        return error


async def test_a_node_whose_registration_is_deleted_registers_again(
    tmp_path: Path, sample_index: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        api = ApiClient([f"http://{n.management}" for n in cluster.nodes])
        leader = await leader_node_id(cluster, kv)
        follower = next(n.node_id for n in cluster.nodes if n.node_id != leader)
        for node_id in (leader, follower):
            assert (await kv.delete(node_key(node_id))).deleted == 1
            await wait_until(
                lambda node_id=node_id: registered(kv, node_id),
                until=lambda found: found is True,
                timeout=30,
                interval=0.1,
                what=f"{node_id} registered again",
                describe=lambda _: logs(cluster),
            )
        status = api.cluster_status()
        assert status.leader == leader and not status.missing_nodes, status
        assert "registration was deleted" in cluster.log_tail(leader, 200), cluster.log_tail(leader)
