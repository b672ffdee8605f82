"""A local cluster for trying aether-kv: N replica processes on 127.0.0.1, data and secret in one
directory, a `cluster.json` there that the client subcommands pick up. Used by `aether-kv local` and by
the tests; stops every replica it started on exit."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from ._client import open_client
from ._errors import KVError
from ._ports import free_port

CLUSTER_FILE = "cluster.json"


@attrs.frozen(kw_only=True)
class ReplicaSpec:
    replica_id: str
    raft_address: str
    client_address: str
    data_dir: Path

    def command(self, peers: tuple[str, ...], secret_file: Path) -> list[str]:
        command = [sys.executable, "-m", "aether_kv", "serve", "--id", self.replica_id]
        command += ["--data-dir", str(self.data_dir), "--raft", self.raft_address]
        command += ["--client", self.client_address, "--secret-file", str(secret_file)]
        for peer in peers:
            if peer != self.raft_address:
                command += ["--peer", peer]
        return command


@attrs.define
class LocalCluster:
    """Replica processes of a local cluster; restartable one by one (the tests kill and restart them)."""

    directory: Path
    secret_file: Path
    replicas: list[ReplicaSpec]
    processes: dict[str, subprocess.Popen[bytes]] = attrs.field(factory=dict)

    @property
    def secret(self) -> str:
        return self.secret_file.read_text().strip()

    @property
    def endpoints(self) -> list[str]:
        return [r.client_address for r in self.replicas]

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(r.raft_address for r in self.replicas)

    def start(self, replica_id: str) -> None:
        spec = self.spec(replica_id)
        log = open(self.directory / f"{replica_id}.log", "ab")  # noqa: SIM115 (owned by the child)
        self.processes[replica_id] = subprocess.Popen(
            spec.command(self.peers, self.secret_file), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def kill(self, replica_id: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(replica_id)
        process.send_signal(sig)
        process.wait(timeout=30)

    def spec(self, replica_id: str) -> ReplicaSpec:
        return next(r for r in self.replicas if r.replica_id == replica_id)

    def stop_all(self, sig: int = signal.SIGTERM) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(sig)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def write_cluster_file(self) -> None:
        info = {"endpoints": self.endpoints, "secret_file": str(self.secret_file)}
        (self.directory / CLUSTER_FILE).write_text(json.dumps(info, indent=2) + "\n")


def plan_local_cluster(directory: Path, replicas: int) -> LocalCluster:
    """Choose ports and paths for `replicas` replicas under `directory`; create the secret once."""
    directory.mkdir(parents=True, exist_ok=True)
    secret_file = directory / "secret"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(32) + "\n")
        os.chmod(secret_file, 0o600)
    plan_file = directory / "plan.json"
    if plan_file.exists():
        saved = json.loads(plan_file.read_text())
        if len(saved) == replicas:  # same cluster again: same ports, so the Raft journals stay valid
            specs = [ReplicaSpec(**{**item, "data_dir": Path(item["data_dir"])}) for item in saved]
            return LocalCluster(directory=directory, secret_file=secret_file, replicas=specs)
    specs = [
        ReplicaSpec(
            replica_id=f"kv{i + 1}",
            raft_address=f"127.0.0.1:{free_port()}",
            client_address=f"127.0.0.1:{free_port()}",
            data_dir=directory / f"kv{i + 1}",
        )
        for i in range(replicas)
    ]
    plan_file.write_text(json.dumps([attrs.asdict(spec, value_serializer=_path_to_str) for spec in specs]))
    return LocalCluster(directory=directory, secret_file=secret_file, replicas=specs)


async def wait_until_ready(
    cluster: LocalCluster,
    *,
    timeout: float = 30.0,
    progress: Callable[[str], None] = lambda message: None,
) -> str:
    """Wait until the cluster serves a linearizable read; return the leader's raft address.

    A ReadIndex read succeeds once a leader has committed an entry of its own term and a majority
    confirms it still leads: the cluster takes writes then. A read writes nothing, so an attempt that
    times out on a busy machine leaves no entry behind to commit later (a barrier did, and tests that
    count log entries saw it)."""
    with trio.fail_after(timeout):
        while True:
            for replica_id, process in cluster.processes.items():
                if process.poll() is not None:
                    log = (cluster.directory / f"{replica_id}.log").read_text()[-2000:]
                    raise RuntimeError(f"replica {replica_id} exited ({process.returncode}):\n{log}")
            try:
                async with open_client(cluster.endpoints, cluster.secret, request_timeout=2.0) as client:
                    await client.range("", limit=1, linearizable=True)
                    status = await client.status()
                    if status.leader:
                        return status.leader
            except KVError as error:
                progress(f"waiting for a leader ({error.message})")
            await trio.sleep(0.1)


@asynccontextmanager
async def running_local_cluster(
    directory: Path, replicas: int = 3, *, progress: Callable[[str], None] = lambda message: None
) -> AsyncIterator[LocalCluster]:
    cluster = plan_local_cluster(directory, replicas)
    try:
        for spec in cluster.replicas:
            cluster.start(spec.replica_id)
            progress(f"started {spec.replica_id}: raft {spec.raft_address}, clients {spec.client_address}")
        await wait_until_ready(cluster, progress=progress)
        cluster.write_cluster_file()
        yield cluster
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(cluster.stop_all)
            (directory / CLUSTER_FILE).unlink(missing_ok=True)


def _path_to_str(_instance: object, _field: object, value: object) -> object:
    return str(value) if isinstance(value, Path) else value
