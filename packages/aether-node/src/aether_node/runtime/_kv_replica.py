"""The node's KV replica: an `aether-kv serve` child process, started, supervised and stopped here.

The replica is its own process so Raft's timing does not depend on the node's workload (docs/ARCHITECTURE.md).
It dies with the node (`--exit-with-parent`), and the node restarts it if it dies alone.

The node's heartbeat: the node writes a byte to the replica's stdin every `BEAT_PERIOD`, from its
event loop, and the replica leads only while it hears them (`--parent-silence`, `parent_silence`: two
node leases). A node whose process is stopped or whose loop hangs would otherwise keep the cluster's
leadership through its healthy replica (the node whose replica leads runs the cluster manager), and
nothing would be reconciled: silent, its replica hands the lead over and does not stand again until the
node beats again (`aether_kv._pysyncobj_patches`, item 14).
"""

from __future__ import annotations

import logging
import subprocess
import sys

import trio

from ..core._config import NodeConfig
from ._processes import spawn

log = logging.getLogger("aether_node.kv_replica")

BEAT_PERIOD = 1.0  # s between two beats of the node's heartbeat on its replica's stdin
MIN_SILENCE = 3 * BEAT_PERIOD  # a replica tolerates at least this much silence, however short the lease


def parent_silence(config: NodeConfig) -> float:
    """How long the replica waits for its node's heartbeat before it stands aside: two leases (a node
    silent that long has lost its lease: the cluster takes it for gone), at least `MIN_SILENCE`."""
    return max(2 * config.lease_ttl, MIN_SILENCE)


def replica_command(config: NodeConfig) -> list[str]:
    kv = config.kv
    assert kv.raft is not None and kv.client is not None
    command = [sys.executable, "-m", "aether_kv", "serve", "--id", config.node_id, "--exit-with-parent"]
    command += ["--parent-silence", f"{parent_silence(config):g}"]
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


async def _beat(stdin: trio.abc.SendStream) -> None:
    """The node's heartbeat to its replica, until the replica's end closes (it exited: the caller
    learns that from its wait) or this is cancelled."""
    while True:
        try:
            await stdin.send_all(b".")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return
        await trio.sleep(BEAT_PERIOD)


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
            process = spawn(
                replica_command(config), stdin=subprocess.PIPE, stdout=log_file, stderr=subprocess.STDOUT
            )
        try:
            async with trio.open_nursery() as nursery:
                assert process.stdin is not None
                nursery.start_soon(_beat, process.stdin)
                if not started:
                    with trio.fail_after(30):
                        while not await _port_open(config.kv.client or ""):
                            if process.returncode is not None:
                                raise RuntimeError(f"the KV replica exited at start; see {log_path}")
                            await trio.sleep(0.05)
                    started = True
                    task_status.started()
                code = await process.wait()
                nursery.cancel_scope.cancel()
            log.error("KV replica exited with %s; restarting in %.1f s (log: %s)", code, backoff, log_path)
        finally:
            await process.stop(10)
        await trio.sleep(backoff)
        backoff = min(backoff * 2, 10.0)
