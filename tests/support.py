"""Helpers for every test: waiting on a condition with a deadline (`wait_until` in trio, `wait_until_sync`
in a plain thread), the sample slices as a wheel index (`build_index`; the `sample_index` fixture of
tests/integration/conftest.py), the processes of a directory (`live_processes`, `processes_under`, from
/proc), naming KV replicas and their leader.

Benchmarks that import the integration support modules put this directory on sys.path too."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from aether_kv import LocalCluster, Status, open_client

REPO = Path(__file__).resolve().parents[1]
SAMPLE_SLICES = REPO / "sample-slices"


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout` seconds."""
    with trio.move_on_after(timeout):
        while True:
            if await condition():
                return
            await trio.sleep(interval)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def wait_until_sync(condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `condition()` until it returns something truthy (which is returned); fail after `timeout`
    with the last value it returned. For code outside trio (the CLI tests drive subprocesses)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}")


# ---------------------------------------------------------------- the sample wheel index


def build_index(out: Path) -> Path:
    """The sample slices as a wheel directory (incremental: cheap when up to date)."""
    from aether_node.dev import build_sample_index

    build_sample_index(SAMPLE_SLICES, out)
    return out


# ---------------------------------------------------------------- processes, from /proc


@attrs.frozen
class ProcInfo:
    pid: int
    ppid: int
    cmdline: tuple[str, ...]
    cwd: str
    stderr: str  # where fd 2 points ("" if unreadable): a slice host's log file names its instance


def live_processes() -> Iterator[ProcInfo]:
    """Every live, readable process but this one (zombies are dead: they only wait to be reaped)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if fields[0] in ("Z", "X"):
                continue
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            cwd = os.readlink(entry / "cwd")
            try:
                stderr = os.readlink(entry / "fd" / "2")
            except OSError:
                stderr = ""
        except (OSError, IndexError):  # gone meanwhile, or not ours to read
            continue
        yield ProcInfo(int(entry.name), int(fields[1]), tuple(a for a in cmdline if a), cwd, stderr)


def processes_under(directory: Path) -> list[ProcInfo]:
    """The processes that run from `directory`: working directory or an argument under it (nodes and
    KV replicas name their data dir; slice hosts run from virtualenvs under it)."""
    root = str(directory.resolve())

    def under(text: str) -> bool:
        return text == root or text.startswith(root + "/") or f"={root}/" in text

    return [p for p in live_processes() if under(p.cwd) or any(under(a) for a in p.cmdline)]


# ---------------------------------------------------------------- KV replicas


def replica_of(cluster: LocalCluster, raft_address: str) -> str:
    return next(r.replica_id for r in cluster.replicas if r.raft_address == raft_address)


def leader_id(cluster: LocalCluster, status: Status) -> str:
    assert status.leader is not None, "no leader"
    return replica_of(cluster, status.leader)


async def known_leader(cluster: LocalCluster) -> str:
    """The leader's replica id, once the replica asked knows one."""
    found: list[str] = []

    async def known() -> bool:
        async with open_client(cluster.endpoints, cluster.secret) as client:
            status = await client.status()
        if status.leader is not None:
            found.append(leader_id(cluster, status))
        return bool(found)

    await wait_until(known, timeout=30, what="a known leader")
    return found[0]
