"""A local cluster of real `aether-node` processes on 127.0.0.1: ports, data and secret in one directory.

The first three nodes (or fewer) run the KV replicas (Raft voters); later nodes are KV clients. Used by
`aether dev up` and by the tests; `plan.json` in the directory keeps the ports, so a cluster restarted
from the same directory finds its data again.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import attrs
import httpx
import trio

from aether_kv import CA_FILE, KVError, ReloadingTLS, client_identity, free_port, open_client

from ..core._schema import NODES

VOTERS = 3


PLAN_FILE = "plan.json"


@attrs.frozen(kw_only=True)
class NodePlan:
    node_id: str
    ingress: str
    peer: str
    management: str
    data_dir: str
    raft: str | None = None
    kv_client: str | None = None


@attrs.define
class LocalNodeCluster:
    directory: Path
    index: str
    nodes: list[NodePlan]
    dev_mode: bool = True
    # Mutual TLS from the cluster CA (the nodes' default without dev mode). Off without dev mode means
    # `--no-tls`, which the nodes are then told by name (the tests of API keys run so).
    tls: bool = False
    node_args: tuple[str, ...] = ()  # more `aether-node run` flags for every node (e.g. --no-metrics)
    processes: dict[str, subprocess.Popen[bytes]] = attrs.field(factory=dict)

    @property
    def secret_file(self) -> Path:
        return self.directory / "secret"

    @property
    def secret(self) -> str:
        return self.secret_file.read_text().strip()

    @property
    def kv_endpoints(self) -> list[str]:
        return [n.kv_client for n in self.nodes if n.kv_client]

    def tls_client(self) -> ReloadingTLS | None:
        """With TLS on, a client certificate of the cluster CA (made from the secret, in `tls-client/`)
        for the tools' KV clients; None without TLS."""
        if not self.tls:
            return None
        return client_identity(self.secret, self.directory / "tls-client")

    @property
    def ca_file(self) -> Path:
        """The cluster CA certificate, as every node writes it (what a CLI context keeps)."""
        return Path(self.nodes[0].data_dir) / "tls" / CA_FILE

    def plan(self, node_id: str) -> NodePlan:
        return next(n for n in self.nodes if n.node_id == node_id)

    def command(self, node: NodePlan) -> list[str]:
        command = [sys.executable, "-m", "aether_node", "run", "--node-id", node.node_id]
        command += ["--data-dir", node.data_dir, "--index", self.index, "--ingress", node.ingress]
        command += [
            "--peer",
            node.peer,
            "--management",
            node.management,
            "--secret-file",
            str(self.secret_file),
        ]
        command += ["--dev-mode"] if self.dev_mode else []
        command += ["--tls"] if self.tls else [] if self.dev_mode else ["--no-tls"]
        if node.raft and node.kv_client:
            command += ["--kv-raft", node.raft, "--kv-client", node.kv_client]
        for other in self.nodes:
            if other.node_id != node.node_id and other.raft and other.kv_client:
                command += ["--kv-peer", other.raft, "--kv-endpoint", other.kv_client]
        return command + list(self.node_args)

    def start(self, node_id: str) -> None:
        node = self.plan(node_id)
        Path(node.data_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(node.data_dir) / "node.log", "ab") as log:
            self.processes[node_id] = subprocess.Popen(
                self.command(node), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def start_all(self) -> None:
        for node in self.nodes:
            if node.node_id not in self.processes:
                self.start(node.node_id)

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(node_id)
        process.send_signal(sig)
        process.wait(timeout=60)

    def stop_all(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(sig)
        for process in self.processes.values():
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def add_node(self) -> NodePlan:
        """Plan one more node (a KV client, not a voter); start it with `start`."""
        number = len(self.nodes) + 1
        node = NodePlan(
            node_id=f"node-{number}",
            ingress=f"127.0.0.1:{free_port()}",
            peer=f"127.0.0.1:{free_port()}",
            management=f"127.0.0.1:{free_port()}",
            data_dir=str(self.directory / f"node-{number}"),
        )
        self.nodes.append(node)
        self.save()
        return node

    def save(self) -> None:
        plan = {"index": self.index, "nodes": [attrs.asdict(n) for n in self.nodes]}
        (self.directory / PLAN_FILE).write_text(json.dumps(plan, indent=2) + "\n")

    def log_tail(self, node_id: str, lines: int = 30) -> str:
        path = Path(self.plan(node_id).data_dir) / "node.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def plan_cluster(directory: Path, nodes: int, index: str) -> LocalNodeCluster:
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    secret_file = directory / "secret"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(32) + "\n")
        os.chmod(secret_file, 0o600)
    saved = directory / PLAN_FILE
    if saved.exists():
        data = json.loads(saved.read_text())
        if len(data["nodes"]) == nodes:
            return LocalNodeCluster(
                directory=directory, index=index, nodes=[NodePlan(**n) for n in data["nodes"]]
            )
    plans = []
    for i in range(1, nodes + 1):
        voter = i <= VOTERS
        plans.append(
            NodePlan(
                node_id=f"node-{i}",
                ingress=f"127.0.0.1:{free_port()}",
                peer=f"127.0.0.1:{free_port()}",
                management=f"127.0.0.1:{free_port()}",
                data_dir=str(directory / f"node-{i}"),
                raft=f"127.0.0.1:{free_port()}" if voter else None,
                kv_client=f"127.0.0.1:{free_port()}" if voter else None,
            )
        )
    cluster = LocalNodeCluster(directory=directory, index=index, nodes=plans)
    cluster.save()
    return cluster


async def wait_until_ready(cluster: LocalNodeCluster, *, timeout: float = 60.0) -> None:
    """Until every started node answers on its ingress, takes connections on its management port (it
    may start listening after the ingress answers) and is registered in the KV."""
    tls = cluster.tls_client()
    with trio.fail_after(timeout):
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                for node_id, process in cluster.processes.items():
                    if process.poll() is not None:
                        raise RuntimeError(
                            f"{node_id} exited with {process.returncode}:\n{cluster.log_tail(node_id)}"
                        )
                try:
                    for node_id in cluster.processes:
                        answer = await http.get(f"http://{cluster.plan(node_id).ingress}/healthz")
                        answer.raise_for_status()
                        host, port = cluster.plan(node_id).management.rsplit(":", 1)
                        await (await trio.open_tcp_stream(host, int(port))).aclose()
                    async with open_client(
                        cluster.kv_endpoints, cluster.secret, request_timeout=2.0, tls=tls
                    ) as kv:
                        registered = await kv.range(NODES, linearizable=True)
                    if len(registered.kvs) >= len(cluster.processes):
                        return
                except (httpx.HTTPError, KVError, OSError):
                    pass
                await trio.sleep(0.2)
