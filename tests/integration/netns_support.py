"""Aether nodes in network namespaces with TLS on, for tests/integration/test_tls_netns.py: each node in its
own namespace (tests/net_namespaces.py) with its own address and the same ports, started with
`ip netns exec`; node-1 (and any node marked `voter`) runs the KV replica, the others are its clients;
join tokens made on node-1's host; the CLI and any function run from the client namespace (the last
one); `end` stops every node and whatever still runs from the directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import httpx
from cli_support import aether_command, cli_env, kill_processes_of
from net_namespaces import Host, Network, die_with_parent
from tls_support import client_context, created_token, token_command

from aether_kv import cluster_ca
from support import wait_until_sync

ADMIN = "admin-key-0123456789abcdef"  # every node's bootstrap admin key (AETHER_API_KEYS)
LIFETIME = 15  # seconds a node certificate lives here: every node renews every 10 s, all along
INGRESS, PEER, MANAGEMENT, RAFT, KV_CLIENT = 7001, 7002, 7003, 7004, 7005


@attrs.define
class NsNode:
    node_id: str
    host: Host
    data_dir: Path
    voter: bool = False  # runs the KV replica (node-1; the fresh cluster's node): else a client of node-1's
    process: subprocess.Popen[bytes] | None = None

    def at(self, port: int) -> str:
        return f"{self.host.address}:{port}"

    @property
    def management_url(self) -> str:
        return f"https://{self.at(MANAGEMENT)}"

    @property
    def secret_file(self) -> Path:
        return self.data_dir.parent / f"{self.node_id}.secret"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.node_id}.log"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@attrs.define
class NsCluster:
    directory: Path
    network: Network
    index: Path
    tmp_dir: Path  # the nodes' TMPDIR (Unix socket paths must stay short)
    nodes: list[NsNode] = attrs.field(factory=list)
    fresh: NsNode | None = None  # a one-node cluster of its own secret (the restore's target), once started
    tokens: dict[str, str] = attrs.field(factory=dict)  # node id → the token it joined with

    @property
    def client(self) -> Host:
        return self.network.hosts[-1]

    @property
    def kv_endpoint(self) -> str:
        return self.nodes[0].at(KV_CLIENT)

    @property
    def secret(self) -> str:
        return self.nodes[0].secret_file.read_text().strip()

    @property
    def ca_file(self) -> Path:
        """The cluster CA as the client's operator keeps it: derived from the secret, not read from a node."""
        path = self.directory / "client-ca.pem"
        if not path.exists():
            path.write_bytes(cluster_ca(self.secret).pem)
        return path

    def in_client(self, function: Any, *args: Any) -> Any:
        return self.network.call_in(self.client, function, *args)

    def run_command(self, node: NsNode) -> list[str]:
        command = [*self.network.exec_prefix(node.host), sys.executable, "-m", "aether_node", "run"]
        command += ["--node-id", node.node_id, "--data-dir", str(node.data_dir), "--index", str(self.index)]
        command += [
            "--ingress",
            node.at(INGRESS),
            "--peer",
            node.at(PEER),
            "--management",
            node.at(MANAGEMENT),
        ]
        command += ["--secret-file", str(node.secret_file), "--tls-cert-lifetime", str(LIFETIME)]
        if node.voter:
            return [*command, "--kv-raft", node.at(RAFT), "--kv-client", node.at(KV_CLIENT)]
        return [*command, "--kv-endpoint", self.kv_endpoint]

    def start(self, node: NsNode, *extra: str) -> None:
        env = {**os.environ, "TMPDIR": str(self.tmp_dir), "AETHER_API_KEYS": f"admin:{ADMIN}"}
        with open(node.log_path, "ab") as log:
            node.process = subprocess.Popen(
                [*self.run_command(node), *extra],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def token(self, ttl: float = 600) -> str:
        """A join token, made on node-1's host (which holds the secret) by `aether-node token create`."""
        prefix = self.network.exec_prefix(self.nodes[0].host)
        return created_token([*prefix, *token_command(self.nodes[0].secret_file, [self.kv_endpoint], ttl)])

    def registered(self) -> list[str]:
        """The node ids node-1's management API lists, asked from the client namespace ([] if it cannot)."""

        def ask() -> list[str]:
            try:
                answer = httpx.get(
                    f"{self.nodes[0].management_url}/api/v1/cluster",
                    headers={"Authorization": f"Bearer {ADMIN}"},
                    verify=client_context(self.ca_file, None),
                    timeout=5,
                )
            except httpx.HTTPError:
                return []
            return sorted(n["node_id"] for n in answer.json().get("nodes", [])) if answer.is_success else []

        return self.in_client(ask)

    def wait_registered(self, count: int) -> None:
        for node in self.nodes[:count]:
            assert node.process is not None and node.process.poll() is None, node.log_tail()
        wait_until_sync(
            self.registered,
            until=lambda registered: len(registered) == count,
            timeout=90,
            what=f"{count} nodes registered",
            # the logs as they are when it times out, not as they were when the wait began
            describe=lambda registered: (
                f"{registered}; logs:\n" + "\n".join(n.log_tail(15) for n in self.nodes[:count])
            ),
        )

    def aether(
        self, *args: str, input: str | None = None, ca_file: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The CLI, run in the client namespace with the cluster CA (or `ca_file`) and the admin key."""
        ca = str(ca_file or self.ca_file)
        env = cli_env({"AETHER_CA_FILE": ca, "AETHER_API_KEY": ADMIN}, cwd=self.directory)
        command = [*self.network.exec_prefix(self.client), *aether_command(), *args]
        return subprocess.run(command, env=env, input=input, capture_output=True, text=True, timeout=180)

    def end(self) -> None:
        """SIGTERM every node (SIGKILL after 30 s), then whatever still runs from the directory."""
        every = [*self.nodes, *([self.fresh] if self.fresh else [])]
        running = [n.process for n in every if n.process is not None and n.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        kill_processes_of(self.directory)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


def write_secret(node: NsNode) -> None:
    """What an operator does for the first node of a cluster: a new secret, readable by its owner only."""
    node.secret_file.write_text(os.urandom(24).hex() + "\n")
    node.secret_file.chmod(0o600)
