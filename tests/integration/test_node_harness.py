"""The node harnesses themselves (`node_support.NodeProcess`, `cluster_support.running_cluster`):
ports are chosen free a moment before the nodes bind them, so another test's process can take one in
between; a first start that finds a port taken starts afresh on new ports instead of failing the test
(the race, not the node, was at fault)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from cluster_support import running_cluster
from node_support import NodeProcess, client_node, free_ports

from aether_node.dev import plan_cluster

pytestmark = [pytest.mark.integration]


def test_a_first_start_on_a_taken_port_starts_again_on_new_ones(sample_index: Path, tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    with taken:
        port = taken.getsockname()[1]
        ingress, peer, raft, client = free_ports(4)
        with client_node(
            tmp_path,
            sample_index,
            extra_args=("--dev-mode",),
            with_management=True,
            management_port=port,
            ingress_port=ingress,
            peer_port=peer,
            raft_port=raft,
            client_port=client,
        ) as node:
            assert isinstance(node, NodeProcess)
            assert node.starts >= 2 and node.management_port != port
            assert "Address already in use" in (node.root / "node-1.log").read_text()


async def test_a_cluster_whose_planned_port_is_taken_starts_again_on_new_ports(
    sample_index: Path, tmp_path: Path
) -> None:
    """The same race for `cluster_support.running_cluster`: its plan's peer port of node-1 is taken
    before the nodes start; the cluster starts again from nothing on new ports."""
    directory = tmp_path / "cluster"
    planned = plan_cluster(directory, 3, str(sample_index))
    host, port = planned.nodes[0].peer.rsplit(":", 1)
    with socket.socket() as taken:
        taken.bind((host, int(port)))
        taken.listen()
        async with running_cluster(directory, sample_index, 3) as cluster:
            assert cluster.nodes[0].peer != planned.nodes[0].peer
