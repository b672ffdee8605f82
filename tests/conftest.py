"""Shared fixtures: real aether-kv replica processes on 127.0.0.1 with ports chosen at run time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aether_kv import LocalCluster, running_local_cluster
from support import remove_left_memory_cgroups


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The nodes the tests SIGKILL leave their memory cgroups (empty once their instances have died):
    removed once every test has run. Not by an xdist worker as it finishes: the other worker's nodes may
    still run, and an empty cgroup of theirs is one an instance is about to join."""
    if not hasattr(session.config, "workerinput"):
        remove_left_memory_cgroups()


@pytest.fixture
async def kv_cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with running_local_cluster(tmp_path / "kv", 3) as cluster:
        yield cluster
