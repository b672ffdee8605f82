"""The ingress address a node tells the others. Only the ingress may bind every interface
(`ingress = "0.0.0.0:8080"`); the node registered that wildcard as its address, which `aether cluster
status`, the dashboard and the agents' tools then showed: an address no client could call. It is now told
at the peer address's host (`NodeConfig.advertised_ingress`), and calls through it are answered."""

from __future__ import annotations

from pathlib import Path

import pytest
from node_support import ECHO, activate, client_node, invoke, kv_client

from aether_node import NodeRecord, decode_record

pytestmark = [pytest.mark.integration]


async def test_an_ingress_on_every_interface_is_registered_at_the_peer_s_host(
    sample_index: Path, tmp_path: Path
) -> None:
    with client_node(tmp_path, sample_index, ingress_host="0.0.0.0") as node:
        async with kv_client(node) as kv:
            found = await kv.get(f"nodes/{node.node_id}")
            assert found is not None
            record = decode_record(found.key, found.value, NodeRecord)
            assert record.ingress == f"127.0.0.1:{node.ingress_port}", record  # (the peer's host)
            assert f"ready: ingress http://127.0.0.1:{node.ingress_port}" in node.log(), node.log_tail()
            await activate(kv, node, ECHO, 0)
            answer = await invoke(record.ingress, "org.aether:echo", "echo", {"via": "the advertised"})
            assert answer.status_code == 200 and answer.json() == {"via": "the advertised"}, answer.text
