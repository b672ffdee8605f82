"""`aether cluster forget` on a real cluster survives a leader change: a new leader rebuilds the expected
nodes from a window of history, and must not bring a forgotten node back from it. A forgotten node that
registers again by itself is expected again."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import run_aether
from cluster_support import kv_of, leader_node_id, running_cluster, start_node
from test_cluster_health import restart, status_until

from aether_node.client import ApiClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_a_forgotten_node_stays_forgotten_after_a_leader_change(
    tmp_path: Path, sample_index: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        cluster.add_node()  # node-4, a KV client: it registers, then is killed and forgotten
        start_node(cluster, "node-4")
        api = ApiClient([f"http://{n.management}" for n in cluster.nodes[:3]])
        everyone = ("node-1", "node-2", "node-3", "node-4")
        await status_until(api, lambda s: s.expected_nodes == everyone, "node-4 expected", cluster)
        cluster.kill("node-4")
        await status_until(api, lambda s: s.missing_nodes == ("node-4",), "node-4 missing", cluster)
        env = {"AETHER_CLUSTER": ",".join(api.urls)}
        run = run_aether("cluster", "forget", "node-4", cwd=tmp_path, env=env)
        assert run.returncode == 0 and "node node-4 forgotten" in run.stdout, run
        await status_until(api, lambda s: "node-4" not in s.expected_nodes, "node-4 forgotten", cluster)

        # the leader goes: another replica leads and rebuilds the expected nodes from history
        leader = await leader_node_id(cluster, kv)
        cluster.kill(leader)
        others = [n for n in cluster.nodes[:3] if n.node_id != leader]
        api = ApiClient([f"http://{n.management}" for n in others])
        # a node that joins now is expected once the new leader has replayed history up to its joining
        cluster.add_node()  # node-5
        start_node(cluster, "node-5")
        after = await status_until(
            api, lambda s: "node-5" in s.expected_nodes, "node-5 expected by the new leader", cluster
        )
        assert "node-4" not in after.expected_nodes, after

        # node-4 comes back by itself: expected again
        await restart(cluster, "node-4")
        await status_until(api, lambda s: "node-4" in s.expected_nodes, "node-4 expected again", cluster)
