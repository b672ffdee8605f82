"""Network namespaces joined by a Linux bridge, for tests that need nodes on separate hosts with their own
addresses: the nemesis suite (tests/chaos/chaos_net.py adds its network faults) and the TLS tests across
namespaces (tests/integration/test_tls_netns.py).

Everything stays on this machine: the bridge and the namespaces live in the private subnet 10.231.X.0/24
(X chosen per run, under a lock, so parallel runs never share one), the bridge itself holds .254 so the
test process (in the root namespace) reaches every host, and no route leads anywhere else. Names start
with `PREFIX` and a random run id (ip link names ≤ 15 chars). `Network.create` makes the namespaces;
`Network.destroy` removes them (the owner calls it in a `finally`); `sweep_stale` removes what a killed
run left behind (its owner pid is gone). `Network.call_in` runs a function with its sockets inside one
namespace (a thread that entered it), so a test can be a client on another host without a subprocess.

Needs `ip` (iproute2) and root (CAP_NET_ADMIN); `missing_tools` says what is absent, so a caller can skip
with a reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Self, TypeVar

import attrs

PREFIX = "ach"  # every interface and namespace of the suite starts with it (ip link names ≤ 15 chars)
STATE_DIR = Path("/tmp/aether-chaos-nets")  # one file per live run: its owner pid


class NetError(RuntimeError):
    """A network command failed: names the command and quotes its output."""


T = TypeVar("T")
CLONE_NEWNET = 0x40000000  # setns(2): the network namespace


def missing_tools(tools: Iterable[str] = ("ip",)) -> list[str]:
    """Which of `tools` (and root) this machine lacks (empty: namespaces can be made)."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root (namespaces and bridges need CAP_NET_ADMIN)")
    return missing


def run(command: Sequence[str], *, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(list(command), capture_output=True, text=True, input=stdin, check=False)
    if check and result.returncode != 0:
        raise NetError(f"{' '.join(command)}: exit {result.returncode}: {result.stderr.strip()}")
    return result.stdout


@attrs.define
class Host:
    name: str  # namespace name
    address: str  # 10.231.X.i
    host_veth: str  # the bridge port (root namespace)
    ns_veth: str  # inside the namespace


@attrs.define
class Network:
    run_id: str
    subnet: int  # X of 10.231.X.0/24
    hosts: list[Host] = attrs.field(factory=list)
    bridge: str = ""

    @classmethod
    def create(cls, count: int) -> Self:
        """`count` namespaces on one new bridge. On failure, removes what it made and raises NetError."""
        sweep_stale()
        run_id, subnet = _claim()
        network = cls(run_id=run_id, subnet=subnet, bridge=f"{PREFIX}{run_id}br")
        try:
            run(["ip", "link", "add", network.bridge, "type", "bridge"])
            run(["ip", "addr", "add", f"{network.gateway}/24", "dev", network.bridge])
            run(["ip", "link", "set", network.bridge, "up"])
            for i in range(1, count + 1):
                host = Host(
                    name=f"{PREFIX}{run_id}n{i}",
                    address=f"10.231.{subnet}.{i}",
                    host_veth=f"{PREFIX}{run_id}h{i}",
                    ns_veth=f"{PREFIX}{run_id}p{i}",
                )
                network.hosts.append(host)
                run(["ip", "netns", "add", host.name])
                run(["ip", "link", "add", host.host_veth, "type", "veth", "peer", "name", host.ns_veth])
                run(["ip", "link", "set", host.ns_veth, "netns", host.name])
                run(["ip", "link", "set", host.host_veth, "master", network.bridge, "up"])
                run(["ip", "-n", host.name, "addr", "add", f"{host.address}/24", "dev", host.ns_veth])
                run(["ip", "-n", host.name, "link", "set", host.ns_veth, "up"])
                run(["ip", "-n", host.name, "link", "set", "lo", "up"])
        except BaseException:
            network.destroy()
            raise
        return network

    @property
    def gateway(self) -> str:
        """The bridge's own address: the test process talks to the nodes from it."""
        return f"10.231.{self.subnet}.254"

    def host(self, index: int) -> Host:
        return self.hosts[index]

    def exec_prefix(self, host: Host) -> list[str]:
        return ["ip", "netns", "exec", host.name]

    def call_in(self, host: Host, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in a new thread that entered `host`'s network namespace first (a thread's
        namespace is its own: the test process stays in the root one), so every socket it opens is one
        of that host; returns what it returns, raises what it raises (a failed test assertion too)."""
        done: Future[T] = Future()

        def entered() -> None:
            try:
                with open(f"/run/netns/{host.name}") as handle:
                    if ctypes.CDLL(None, use_errno=True).setns(handle.fileno(), CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns into {host.name}")
                done.set_result(function(*args))
            except BaseException as error:  # handed to the caller's thread
                done.set_exception(error)

        thread = threading.Thread(target=entered, name=f"in-{host.name}", daemon=True)
        thread.start()
        thread.join()
        return done.result()

    def destroy(self) -> None:
        """Remove every namespace, veth and the bridge of this run (idempotent; never raises)."""
        for host in self.hosts:
            run(["ip", "netns", "del", host.name], check=False)
            run(["ip", "link", "del", host.host_veth], check=False)
        if self.bridge:
            run(["ip", "link", "del", self.bridge], check=False)
        with contextlib.suppress(OSError):
            (STATE_DIR / self.run_id).unlink()


def die_with_parent() -> None:
    """For `preexec_fn`: the kernel SIGKILLs the child when the test process dies, so no node started in
    a namespace outlives a killed run (the namespaces themselves are swept by the next run)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _claim() -> tuple[str, int]:
    """A run id and a subnet no live run holds, recorded with this process as their owner; under a lock,
    so two runs starting together never pick the same ones."""
    STATE_DIR.mkdir(exist_ok=True)
    with open(STATE_DIR.with_name(STATE_DIR.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        used = set()
        for state in STATE_DIR.glob("*"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                used.add(int(state.read_text().split()[1]))
        subnet = next(x for x in [*range(10 + os.getpid() % 200, 255), *range(10, 255)] if x not in used)
        run_id = secrets.token_hex(2)
        while (STATE_DIR / run_id).exists():
            run_id = secrets.token_hex(2)
        (STATE_DIR / run_id).write_text(f"{os.getpid()} {subnet}\n")
    return run_id, subnet


def sweep_stale() -> list[str]:
    """Remove the namespaces and links of runs whose owner process is gone; returns their run ids."""
    removed = []
    if not STATE_DIR.exists():
        return removed
    for state in STATE_DIR.iterdir():
        try:
            pid = int(state.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = 0
        if pid and Path(f"/proc/{pid}").exists():
            continue
        run_id = state.name
        for name in run(["ip", "netns", "list"], check=False).split("\n"):
            if name.startswith(f"{PREFIX}{run_id}"):
                run(["ip", "netns", "del", name.split()[0]], check=False)
        for line in run(["ip", "-o", "link", "show"], check=False).splitlines():
            parts = line.split(":")
            if len(parts) > 1 and parts[1].strip().split("@")[0].startswith(f"{PREFIX}{run_id}"):
                run(["ip", "link", "del", parts[1].strip().split("@")[0]], check=False)
        with contextlib.suppress(OSError):
            for line in Path("/proc/mounts").read_text().splitlines():
                source, target = line.split()[:2]
                if source == f"aether-chaos-{run_id}":  # the full-disk nemesis's tmpfs
                    run(["umount", "-l", target], check=False)
        with contextlib.suppress(OSError):
            state.unlink()
        removed.append(run_id)
    return removed
