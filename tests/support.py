"""Helpers for every test: waiting on a condition with a deadline (`wait_until` in trio, `wait_until_sync`
in a plain thread), the sample slices as a wheel index (`build_index`; the `sample_index` fixture of
tests/integration/conftest.py), the processes of a directory (`live_processes`, `processes_under`, from
/proc; `kill_processes_under` ends them), naming KV replicas and their leader, an operator's certificate
for HTTPS on the ingress (`operator_certificate`), this process's memory cgroup (`own_memory_cgroup`,
`memory_cgroups_here`, `remove_left_memory_cgroups`).

A test never sleeps in the hope that something has happened: it waits on the condition with
`wait_until`, which also returns what it found and names the last value seen when it times out. A sleep
is right only where time itself is the subject: pacing a load, or a window in which nothing may happen.

Benchmarks that import the integration support modules put this directory on sys.path too."""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
import trio
import uv

from aether_kv import LocalCluster, Status, cluster_ca, issue, open_client

REPO = Path(__file__).resolve().parents[1]
SAMPLE_SLICES = REPO / "sample-slices"


T = TypeVar("T")
_NOTHING: Any = object()  # no answer yet: the deadline passed during the first probe

TimedOut = pytest.fail.Exception
"""What `wait_until` and `wait_until_sync` raise when the deadline passes (pytest's `Failed`, a
BaseException). Code that records a timeout as a finding instead of failing (the chaos harness, whose
violations are data) catches it; its message names what was awaited and the last value seen."""


async def wait_until(
    probe: Callable[[], Awaitable[T] | T],
    *,
    timeout: float,
    what: str,
    until: Callable[[T], object] = bool,
    interval: float = 0.05,
    describe: Callable[[T], object] = repr,
) -> T:
    """Call `probe()` (awaiting what it returns, if awaitable) every `interval` s until `until(value)`
    holds (by default: the value is truthy) and return that value; after `timeout` s fail naming `what`
    and the last value, shown by `describe` (add a cluster's log tails there). A probe may itself fail at
    once (an unexpected state), or catch the errors it expects and return them, so that they show as the
    last value."""
    last: Any = _NOTHING
    with trio.move_on_after(timeout):
        while True:
            value = probe()
            last = await value if inspect.isawaitable(value) else value
            if until(last):
                return last
            await trio.sleep(interval)
    pytest.fail(_timed_out(timeout, what, last, describe))


def wait_until_sync(
    probe: Callable[[], T],
    *,
    timeout: float,
    what: str,
    until: Callable[[T], object] = bool,
    interval: float = 0.2,
    describe: Callable[[T], object] = repr,
) -> T:
    """`wait_until` for code outside trio (a plain thread; the CLI tests import it from cli_support as
    `wait_until`). Its default interval is longer: a probe here often runs a command."""
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if until(last):
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    pytest.fail(_timed_out(timeout, what, last, describe))


def _timed_out(timeout: float, what: str, last: Any, describe: Callable[[Any], object]) -> str:
    seen = "no answer yet" if last is _NOTHING else f"last seen: {describe(last)}"
    return f"timed out after {timeout:g} s waiting for {what}; {seen}"


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
    stderr: str  # where fd 2 points ("" if unreadable): a slice template's log file names its version
    name: str = ""  # the process name (/proc/PID/comm): a slice instance's is `{artifact}#{instance}`


def live_processes() -> Iterator[ProcInfo]:
    """Every live, readable process but this one (zombies are dead: they only wait to be reaped)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            name = stat[stat.find("(") + 1 : stat.rfind(")")]
            fields = stat.rpartition(")")[2].split()
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
        yield ProcInfo(int(entry.name), int(fields[1]), tuple(a for a in cmdline if a), cwd, stderr, name)


def process_ended(pid: int) -> bool:
    """Whether process `pid` has ended: no such process, or a zombie only waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def wake_ups(pid: int) -> int:
    """How many times process `pid`'s threads have gone to sleep and been woken since it started (their
    voluntary context switches): an idle slice instance wakes once for each message its node sends it, so
    this counts the health checks it answered."""
    total = 0
    for thread in Path(f"/proc/{pid}/task").iterdir():
        for line in (thread / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


async def woken(pid: int, times: int, *, timeout: float, what: str) -> None:
    """Wait until process `pid` has been woken `times` times more than now (`wake_ups`): for a test whose
    subject is that nothing happens while the node checks an idle instance, the checks themselves are the
    clock, not a sleep."""
    start = wake_ups(pid)

    def woken_enough() -> bool:
        try:
            return wake_ups(pid) >= start + times
        except FileNotFoundError:  # (what the test waits out must not end it: say so, not a missing file)
            raise AssertionError(f"process {pid} ended while waiting for {what}") from None

    await wait_until(woken_enough, timeout=timeout, what=what)


def process_stopped(pid: int) -> bool:
    """Whether every thread of process `pid` is stopped (state T) already: a SIGSTOP is delivered
    asynchronously, and a thread running on another CPU may go on for a moment after `kill` returns."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        states = [(task / "stat").read_text().rpartition(")")[2].split()[0] for task in tasks]
    except FileNotFoundError:
        return False
    return bool(states) and all(state in ("T", "t") for state in states)


def processes_under(directory: Path) -> list[ProcInfo]:
    """The processes that run from `directory`: working directory or an argument under it (nodes and
    KV replicas name their data dir; slice hosts run from virtualenvs under it)."""
    root = str(directory.resolve())

    def under(text: str) -> bool:
        return text == root or text.startswith(root + "/") or f"={root}/" in text

    return [p for p in live_processes() if under(p.cwd) or any(under(a) for a in p.cmdline)]


def kill_processes_under(directory: Path, *, timeout: float = 10.0) -> None:
    """SIGKILL every process of `directory` (`processes_under`) until none is left (replicas die with
    their node, slice hosts with their socket, but not necessarily at once)."""

    def kill_the_rest() -> list[ProcInfo]:
        left = processes_under(directory)
        for process in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(process.pid, signal.SIGKILL)
        return left

    wait_until_sync(
        kill_the_rest,
        until=lambda left: not left,
        timeout=timeout,
        interval=0.05,
        what=f"no process of {directory}",
    )


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


async def settled_leader(cluster: LocalCluster) -> str:
    """The leader's replica id, once every replica names it and holds its commit index. A new cluster's
    replicas start "catching up" (`_pysyncobj_patches`, item 16: one that started empty votes only once
    it holds a leader's log): a leader stopped before a replica has linked to it and caught up leaves the
    others unable to elect one until it is back, so tests that stop the leader wait for this first."""
    found: list[str] = []

    async def settled() -> bool:
        statuses = []
        for replica in cluster.replicas:
            async with open_client(
                [cluster.spec(replica.replica_id).client_address], cluster.secret
            ) as client:
                statuses.append(await client.status())
        ours = [s for s in statuses if s.is_leader]
        if len(ours) == 1 and all(
            s.leader == ours[0].self_address and s.commit_index >= ours[0].commit_index for s in statuses
        ):
            found.append(leader_id(cluster, ours[0]))
        return bool(found)

    await wait_until(settled, timeout=30, what="every replica following the leader, caught up")
    return found[0]


def operator_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """An operator's certificate for 127.0.0.1 from a CA of its own (not a cluster's), as PEM files in
    `directory`: (the CA's certificate, to verify the server against; the certificate; its key)."""
    ca = cluster_ca(f"the operator's own CA in {directory}")
    now = datetime.datetime.now(datetime.UTC)
    pem = issue(ca, name="ingress", hosts=("127.0.0.1",), now=now, lifetime=datetime.timedelta(days=1))
    end = pem.index(b"-----END CERTIFICATE-----\n") + len(b"-----END CERTIFICATE-----\n")
    files = directory / "operator-ca.pem", directory / "ingress.pem", directory / "ingress.key"
    for path, content in zip(files, (ca.pem, pem[:end], pem[end:]), strict=True):
        path.write_bytes(content)
    return files


def slice_venv(directory: Path, samples: Sequence[str], extra: Sequence[str] = ()) -> str:
    """The python of a new virtualenv in `directory` holding aether-slice, the sample slices `samples`
    and the packages `extra` (the sample slices are workspace members that `uv sync` does not install
    in the dev environment)."""
    venv = directory / "venv"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    uv_bin = uv.find_uv_bin()
    python = venv / "bin" / "python"
    for command in (
        [uv_bin, "venv", "--quiet", "--python", sys.executable, str(venv)],
        [uv_bin, "pip", "install", "--quiet", "--python", str(python)]
        + [str(REPO / "packages" / "aether-slice")]
        + [str(REPO / "sample-slices" / name) for name in samples]
        + list(extra),
    ):
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return str(python)


def own_memory_cgroup() -> Path | None:
    """This process's cgroup of the v1 memory controller, in cgroupfs (None: none here, cgroup v2 alone)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    own = next((line.split(":", 2)[2] for line in lines if line.split(":")[1:2] == ["memory"]), None)
    return Path("/sys/fs/cgroup/memory", own.lstrip("/")) if own is not None else None


def memory_cgroups_here() -> bool:
    """Whether this process may make a memory cgroup under its own (what a node started here can)."""
    own = own_memory_cgroup()
    if own is None:
        return False
    probe = own / f"aether-test-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError:
        return False
    return True


def remove_left_memory_cgroups() -> None:
    """Remove the memory cgroups nodes of the tests left behind (`aether-{node_id}-…` under this process's
    own cgroup, and theirs inside: a SIGKILLed node cannot remove them); those still in use stay (a
    cgroup with a process in it, or with cgroups in it, cannot be removed)."""
    base = own_memory_cgroup()
    if base is None or not base.is_dir():
        return
    for node in base.glob("aether-*"):
        for leaf in [*node.iterdir(), node]:
            if leaf.is_dir():
                with contextlib.suppress(OSError):
                    leaf.rmdir()


class Unanswering:
    """A listener on 127.0.0.1 that accepts connections and reads what is sent, never answering: a node
    that got the request and hung (a SIGSTOPped process's kernel accepts the same way). `conns`: the
    connections it accepted; `received`: the first bytes read from each."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.url = f"http://{self.address}"
        self.received: list[bytes] = []
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.received.append(conn.recv(65536))

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()
