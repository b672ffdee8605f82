"""Shared fixtures: real aether-kv replica processes on 127.0.0.1 with ports chosen at run time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aether_kv import LocalCluster, running_local_cluster


@pytest.fixture
async def kv_cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with running_local_cluster(tmp_path / "kv", 3) as cluster:
        yield cluster
