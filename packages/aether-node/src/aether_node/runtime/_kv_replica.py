"""The node's KV replica: an `aether-kv serve` child process, started, supervised and stopped here.

The replica is its own process so Raft's timing does not depend on the node's workload (docs/ARCHITECTURE.md).
It dies with the node (`--exit-with-parent`), and the node restarts it if it dies alone.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import trio

from ..core._config import NodeConfig
from ._processes import spawn

log = logging.getLogger("aether_node.kv_replica")


def replica_command(config: NodeConfig) -> list[str]:
    kv = config.kv
    assert kv.raft is not None and kv.client is not None
    command = [sys.executable, "-m", "aether_kv", "serve", "--id", config.node_id, "--exit-with-parent"]
    command += ["--data-dir", str(config.data_dir / "kv"), "--raft", kv.raft, "--client", kv.client]
    command += ["--secret-file", str(kv.secret_file)]
    for peer in kv.peers:
        command += ["--peer", peer]
    if config.tls_on:  # the node writes (and renews) the certificate there; the replica re-loads it
        command += ["--tls-dir", str(config.tls_dir)]
    return command


async def _port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        stream = await trio.open_tcp_stream(host, int(port))
    except OSError:
        return False
    await stream.aclose()
    return True


async def run_kv_replica(
    config: NodeConfig, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the replica until cancelled (then SIGTERM it and wait). Reports started once its client port
    accepts connections; restarts it with backoff if it exits on its own."""
    log_path = config.data_dir / "kv.log"
    config.data_dir.mkdir(parents=True, exist_ok=True)
    backoff = 0.5
    started = False
    while True:
        with open(log_path, "ab") as log_file:
            process = spawn(replica_command(config), stdout=log_file, stderr=subprocess.STDOUT)
        try:
            if not started:
                with trio.fail_after(30):
                    while not await _port_open(config.kv.client or ""):
                        if process.returncode is not None:
                            raise RuntimeError(f"the KV replica exited at start; see {log_path}")
                        await trio.sleep(0.05)
                started = True
                task_status.started()
            code = await process.wait()
            log.error("KV replica exited with %s; restarting in %.1f s (log: %s)", code, backoff, log_path)
        finally:
            await process.stop(10)
        await trio.sleep(backoff)
        backoff = min(backoff * 2, 10.0)
