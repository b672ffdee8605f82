"""Fixtures every integration module gets without importing them: `sample_index`, the sample slices as a
wheel directory built once per session (per xdist worker); `broken_index`, a copy of it plus a version of
echo whose install fails (`cluster_support.BROKEN`); and `kv`, a KV client of the module's own `node`
fixture that leaves that node empty for the next test."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cluster_support import ECHO_ID, MISSING
from node_support import NodeProcess, build_wheel, kv_client, unload_everything

from aether_kv import KVClient
from support import build_index


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_index(tmp_path_factory.getbasetemp() / "sample-index")


@pytest.fixture
def broken_index(sample_index: Path, tmp_path: Path) -> Path:
    index = tmp_path / "index"
    shutil.copytree(sample_index, index)
    build_wheel(
        tmp_path / "broken-echo",
        index,
        name="org.aether.echo",
        version="9.9.9",
        dependencies=(f"{MISSING}>=1",),
        entry_point=ECHO_ID,
    )
    return index


@pytest.fixture
async def kv(node: NodeProcess) -> AsyncIterator[KVClient]:
    async with kv_client(node) as client:
        yield client
        await unload_everything(client, node.node_id)
