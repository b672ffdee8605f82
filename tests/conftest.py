"""Shared fixtures: real aether-kv replica processes on 127.0.0.1 with ports chosen at run time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aether_kv import LocalCluster, running_local_cluster
from support import remove_left_memory_cgroups


@pytest.fixture(scope="session", autouse=True)
def _no_memory_cgroups_left() -> Iterator[None]:
    """The nodes the tests SIGKILL leave their memory cgroups (empty once their instances have died):
    removed at the end of the session."""
    yield
    remove_left_memory_cgroups()


@pytest.fixture
async def kv_cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with running_local_cluster(tmp_path / "kv", 3) as cluster:
        yield cluster
