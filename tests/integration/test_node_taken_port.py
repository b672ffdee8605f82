"""A node whose port is taken refuses to start before the cluster hears of it (`routing/_listen`).

Before, the node registered in the KV and only then failed to bind: its registration stayed until its
lease lapsed, and starting it again (on a free port) in that window was refused as a twin of itself.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from node_support import KVReplicaProcess, NodeProcess, kv_client, node_cleanup

pytestmark = [pytest.mark.integration]


async def test_a_taken_port_is_refused_naming_it_and_nothing_is_registered(
    sample_index: Path, tmp_path: Path
) -> None:
    replica = KVReplicaProcess(tmp_path / "kv")
    replica.start()
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = NodeProcess(
            tmp_path / "node",
            index=str(sample_index),
            secret=replica.secret,
            kv_endpoints=(replica.endpoint,),
            with_management=True,
            extra_args=("--dev-mode",),
        )
        node.management_port = port
        with node_cleanup(node):
            node.spawn()
            assert await node.wait_exit(timeout=60) == 2
            assert f"management 127.0.0.1:{port}: cannot listen there (Address already in use)" in node.log()
            async with kv_client(node) as client:
                assert not (await client.range("nodes/")).kvs
            # Started again at once on a free port: not refused as a twin of the failed start.
            taken.close()
            node.start()
            async with kv_client(node) as client:
                assert [kv.key for kv in (await client.range("nodes/")).kvs] == ["nodes/n1"]
    finally:
        taken.close()
        replica.stop()
