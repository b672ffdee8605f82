"""A second `aether-node` started with the node id of a running node (a configuration copied to another
host, say), on a real one-node cluster: it refuses to start, saying so (exit 2), and the running node keeps
its registration. Before, the twin registered over it, took its instances, and when it stopped it took the
running node's registration (and, that node leading, the cluster's leader) with it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_support import CliCluster, cli_cluster

from aether_kv import free_port

pytestmark = [pytest.mark.integration]


@pytest.fixture
def one_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliCluster]:
    directory = tmp_path_factory.mktemp("twin")
    index = directory / "index"
    index.mkdir()
    with cli_cluster(directory, index, nodes=1, dev_mode=True, node_env={"AETHER_API_KEYS": None}) as running:
        yield running


def test_a_second_node_with_a_running_nodes_id_refuses_to_start(one_node: CliCluster, tmp_path: Path) -> None:
    local = one_node.local
    node = local.nodes[0]
    twin = [sys.executable, "-m", "aether_node", "run", "--node-id", node.node_id, "--dev-mode"]
    twin += [
        "--data-dir",
        str(tmp_path / "twin"),
        "--index",
        local.index,
        "--secret-file",
        str(local.secret_file),
    ]
    twin += ["--ingress", f"127.0.0.1:{free_port()}", "--peer", f"127.0.0.1:{free_port()}"]
    twin += [arg for endpoint in local.kv_endpoints for arg in ("--kv-endpoint", endpoint)]
    run = subprocess.run(twin, capture_output=True, text=True, timeout=90, check=False)
    assert run.returncode == 2, run
    errors = [line for line in run.stderr.splitlines() if line.startswith("aether-node: error: ")]
    assert len(errors) == 1 and errors[0].startswith(
        f"aether-node: error: node id {node.node_id!r} is registered by another running node (ingress"
        f" {node.ingress}, peer {node.peer}, started "
    ), run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    nodes = httpx.get(f"http://{node.management}/api/v1/nodes", timeout=10).json()
    assert [(n["node_id"], n["ingress"]) for n in nodes] == [(node.node_id, node.ingress)]
