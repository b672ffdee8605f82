"""A cluster of real `aether-node` processes, each in its own network namespace (`chaos_net`), for the
nemesis suite: start, kill, pause and restart nodes; find their KV replicas and slice hosts through
/proc; end everything (also what a killed node left behind) when the run ends.

Every node runs a KV replica (3 voters); all listen on their own address with the same ports. The
first node's KV data dir can sit on a small tmpfs (the full-disk nemesis fills it).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import attrs
from chaos_net import Network
from net_namespaces import die_with_parent

import support

INGRESS, PEER, MANAGEMENT, RAFT, KV_CLIENT = 7001, 7002, 7003, 7004, 7005


@attrs.define
class Node:
    node_id: str
    index: int  # position in the network
    address: str
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    stopped: bool = False  # SIGSTOPped by a nemesis

    @property
    def ingress(self) -> str:
        return f"{self.address}:{INGRESS}"

    @property
    def management(self) -> str:
        return f"{self.address}:{MANAGEMENT}"

    @property
    def kv_endpoint(self) -> str:
        return f"{self.address}:{KV_CLIENT}"

    @property
    def raft(self) -> str:
        return f"{self.address}:{RAFT}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.node_id}.log"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def processes_under(directory: Path) -> list[tuple[int, tuple[str, ...]]]:
    """(pid, cmdline) of the processes that run from `directory` or name a path under it."""
    return [(p.pid, p.cmdline) for p in support.processes_under(directory)]


def kill_pid(pid: int, sig: int = signal.SIGKILL) -> bool:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@attrs.define
class NetCluster:
    directory: Path
    network: Network
    index: str  # wheel directory
    nodes: list[Node] = attrs.field(factory=list)
    secret: str = attrs.field(factory=lambda: secrets.token_urlsafe(32))
    tmpfs: Path | None = None  # mounted tmpfs (the full-disk nemesis's)
    tmp_dir: Path | None = None

    @classmethod
    def plan(cls, directory: Path, network: Network, index: str, *, tmpfs_mib: int = 0) -> NetCluster:
        directory.mkdir(parents=True, exist_ok=True)
        cluster = cls(directory=directory, network=network, index=index)
        cluster.secret_file.write_text(cluster.secret + "\n")
        os.chmod(cluster.secret_file, 0o600)
        # The nodes' TMPDIR holds Unix sockets (paths ≤ 108 bytes): short, outside the run's directory.
        cluster.tmp_dir = Path(tempfile.mkdtemp(prefix="ach-"))
        for i, host in enumerate(network.hosts):
            data_dir = directory / f"node-{i + 1}"
            data_dir.mkdir(exist_ok=True)
            cluster.nodes.append(
                Node(node_id=f"node-{i + 1}", index=i, address=host.address, data_dir=data_dir)
            )
        if tmpfs_mib:
            kv_dir = cluster.nodes[0].data_dir / "kv"
            kv_dir.mkdir(exist_ok=True)
            source = f"aether-chaos-{network.run_id}"  # sweep_stale finds it by this name
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={tmpfs_mib}m", source, str(kv_dir)],
                check=True,
                capture_output=True,
            )
            cluster.tmpfs = kv_dir
        return cluster

    @property
    def secret_file(self) -> Path:
        return self.directory / "secret"

    @property
    def kv_endpoints(self) -> list[str]:
        return [n.kv_endpoint for n in self.nodes]

    @property
    def management_urls(self) -> list[str]:
        return [f"http://{n.management}" for n in self.nodes]

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def by_raft(self, raft: str | None) -> Node | None:
        return next((n for n in self.nodes if n.raft == raft), None)

    def command(self, node: Node) -> list[str]:
        host = self.network.host(node.index)
        command = [*self.network.exec_prefix(host), sys.executable, "-m", "aether_node", "run"]
        command += ["--node-id", node.node_id, "--data-dir", str(node.data_dir), "--index", self.index]
        command += ["--ingress", node.ingress, "--peer", f"{node.address}:{PEER}"]
        command += ["--management", node.management, "--secret-file", str(self.secret_file), "--dev-mode"]
        command += ["--kv-raft", node.raft, "--kv-client", node.kv_endpoint]
        for other in self.nodes:
            if other is not node:
                command += ["--kv-peer", other.raft, "--kv-endpoint", other.kv_endpoint]
        return command

    def start(self, node: Node) -> None:
        assert not node.alive(), f"{node.node_id} still runs"
        node.starts += 1
        node.stopped = False
        env = {**os.environ, "TMPDIR": str(self.tmp_dir)}
        with open(node.log_path, "ab") as log:
            log.write(f"\n==== start {node.starts} at {time.time():.3f}\n".encode())
            log.flush()
            node.process = subprocess.Popen(
                self.command(node),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def start_all(self) -> None:
        for node in self.nodes:
            if not node.alive():
                self.start(node)

    def signal(self, node: Node, sig: int) -> None:
        if node.process is not None:
            kill_pid(node.process.pid, sig)
            node.stopped = sig == signal.SIGSTOP or (node.stopped and sig != signal.SIGCONT)

    def kill(self, node: Node) -> None:
        """SIGKILL the node (only the node process: its replica and slice hosts must notice by
        themselves; `orphans_of` says which did not) and reap it."""
        if node.process is not None:
            kill_pid(node.process.pid, signal.SIGKILL)
            node.process.wait()
        node.stopped = False

    def orphans_of(self, node: Node) -> list[tuple[int, tuple[str, ...]]]:
        """Processes of a node that is not running (its data dir), which should have ended with it."""
        return processes_under(node.data_dir)

    def kv_replica_pids(self, node: Node) -> list[int]:
        return [p for p, cmd in processes_under(node.data_dir) if "aether_kv" in cmd and "serve" in cmd]

    def slice_host_pids(self, node: Node | None = None) -> list[int]:
        nodes = [node] if node else self.nodes
        return [p for n in nodes for p, cmd in processes_under(n.data_dir) if "aether_slice.host" in cmd]

    def stop_all(self, timeout: float = 30.0) -> None:
        """SIGTERM every node (SIGCONT first for stopped ones), SIGKILL after `timeout`."""
        for node in self.nodes:
            if node.alive():
                kill_pid(node.process.pid, signal.SIGCONT)  # type: ignore[union-attr]
                kill_pid(node.process.pid, signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout  # one budget for the blocking waits below (no polling)
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()

    def end(self) -> list[tuple[int, tuple[str, ...]]]:
        """SIGKILL every node and every process still running from the cluster's directory; unmount the
        tmpfs. Returns what had to be killed besides the nodes (after a clean stop: orphans)."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.process.pid, signal.SIGKILL)
                node.process.kill()
                node.process.wait()
        leftovers = processes_under(self.directory)

        def kill_the_rest() -> list[tuple[int, tuple[str, ...]]]:
            rest = processes_under(self.directory)
            for pid, _ in rest:
                kill_pid(pid, signal.SIGCONT)
                kill_pid(pid)
            return rest

        # the cleanup goes on whatever is left after 10 s (the namespaces' removal ends the rest)
        with contextlib.suppress(support.TimedOut):
            support.wait_until_sync(
                kill_the_rest, until=lambda rest: not rest, timeout=10, interval=0.05, what="no process left"
            )
        if self.tmpfs is not None:
            subprocess.run(["umount", "-l", str(self.tmpfs)], check=False, capture_output=True)
            self.tmpfs = None
        if self.tmp_dir is not None:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
        return leftovers

    def log_tail(self, node: Node, lines: int = 30) -> str:
        try:
            text = node.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
