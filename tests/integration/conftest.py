"""Fixtures every integration module gets without importing them: `sample_index`, the sample slices as a
wheel directory built once per session (per xdist worker), and `kv`, a KV client of the module's own
`node` fixture that leaves that node empty for the next test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from node_support import NodeProcess, kv_client, unload_everything

from aether_kv import KVClient
from support import build_index


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_index(tmp_path_factory.getbasetemp() / "sample-index")


@pytest.fixture
async def kv(node: NodeProcess) -> AsyncIterator[KVClient]:
    async with kv_client(node) as client:
        yield client
        await unload_everything(client, node.node_id)
