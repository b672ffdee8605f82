"""`aether cluster status` names the KV replica of a stopped node by its node, on a real cluster: node-3
stops (`aether node stop`), it is no longer registered nor expected, but the store keeps its replica as a
member (unreachable now); the reason that the answering replica is not connected to it says which node's
it is (`cluster/replicas/`, put by each node with its registration), not the Raft address alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import run_aether
from cluster_support import running_cluster
from test_cluster_health import status_until

from aether_node.client import ApiClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_cluster_status_names_the_replica_of_a_stopped_node(tmp_path: Path, sample_index: Path) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster:
        stopped = cluster.plan("node-3")
        assert stopped.raft
        api = ApiClient([f"http://{n.management}" for n in cluster.nodes if n.node_id != "node-3"])
        env = {"AETHER_CLUSTER": ",".join(api.urls)}
        run = run_aether("node", "stop", "node-3", cwd=tmp_path, env=env)
        assert run.returncode == 0, run
        named = f"is not connected to {stopped.raft} (node node-3)"
        status = await status_until(
            api,
            lambda s: "node-3" not in s.expected_nodes and any(named in r for r in s.reasons),
            "node-3 gone and its replica named",
            cluster,
        )
        assert stopped.raft in status.disconnected_replicas, status
        run = run_aether("cluster", "status", cwd=tmp_path, env=env)
        assert run.returncode == 4 and named in run.stdout, run  # unhealthy: a replica is down
