"""Fixtures every integration module gets without importing them: `sample_index`, the sample slices as a
wheel directory built once per session (per xdist worker); `broken_index`, a copy of it plus a version of
echo whose install fails (`cluster_support.BROKEN`); and `kv`, a KV client of the module's own `node`
fixture that leaves that node empty for the next test; for the dashboard's browser tests, `secured`, 3 nodes
that need the API keys of `dashboard_support.KEYS`, and `browser`, Debian's chromium under playwright."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_support import CliCluster, cli_cluster
from cluster_support import ECHO_ID, MISSING
from dashboard_support import CHROMIUM, CHROMIUM_ARGS, KEYS
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


@pytest.fixture
def secured(tmp_path: Path, sample_index: Path) -> Iterator[CliCluster]:
    """3 nodes that need API keys: a viewer's and an operator's (KEYS)."""
    keys = ",".join(f"{role}:{key}" for role, key in KEYS.items())
    with cli_cluster(tmp_path, sample_index, dev_mode=False, node_env={"AETHER_API_KEYS": keys}) as cluster:
        yield cluster


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
