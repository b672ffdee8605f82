"""One replica process: the Raft replica plus its client-protocol server, until cancelled or signalled."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
from pathlib import Path

import attrs
import trio

from ._errors import InvalidRequestError
from ._nursery import open_service_nursery
from ._raft import HEARTBEAT_PERIOD, RaftConfig
from ._server import serve_clients
from ._store import open_store
from ._tls import ReloadingTLS

log = logging.getLogger("aether_kv.serve")


@attrs.frozen(kw_only=True)
class ServeConfig:
    """Everything `aether-kv serve` needs, parsed once at the entry point."""

    replica_id: str
    data_dir: Path
    raft_address: str
    client_address: str
    peers: tuple[str, ...]
    secret: str
    append_entries_period: float = HEARTBEAT_PERIOD
    election_min: float = 0.5
    election_max: float = 1.5
    log_compaction_entries: int = RaftConfig.__attrs_attrs__.log_compaction_entries.default  # type: ignore[attr-defined]
    tls_dir: Path | None = None  # clients and Raft peers over mutual TLS: ca.pem and cert.pem here (_tls.py)

    def raft_config(self) -> RaftConfig:
        return RaftConfig(
            raft_address=self.raft_address,
            peers=tuple(dict.fromkeys((self.raft_address, *self.peers))),
            data_dir=self.data_dir,
            secret=self.secret,
            append_entries_period=self.append_entries_period,
            election_min=self.election_min,
            election_max=self.election_max,
            log_compaction_entries=self.log_compaction_entries,
            tls_dir=self.tls_dir,
        )


def exit_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux), so a replica started by a
    node never outlives it, even when the node is SIGKILLed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent is already gone
        os._exit(1)


def split_address(address: str, where: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidRequestError(f"{where}: expected host:port, got {address!r}")
    return host, int(port)


def read_secret(path: Path) -> str:
    try:
        secret = path.read_text().strip()
    except OSError as error:
        raise InvalidRequestError(f"--secret-file {path}: cannot read it ({error.strerror})") from None
    if len(secret) < 16:
        raise InvalidRequestError(
            f"--secret-file {path}: the secret must be at least 16 characters, got {len(secret)}"
        )
    return secret


async def serve_replica(
    config: ServeConfig, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the replica until cancelled; reports the client address once both ports are open."""
    host, port = split_address(config.client_address, "--client")
    tls = ReloadingTLS(config.tls_dir) if config.tls_dir is not None else None
    async with open_store(config.raft_config()) as store, open_service_nursery() as nursery:
        bound = await nursery.start(
            functools.partial(serve_clients, tls=tls), store, config.secret, host, port
        )
        address = f"{bound[0]}:{bound[1]}"
        log.info(
            "replica %s: raft %s, clients %s, data %s",
            config.replica_id,
            config.raft_address,
            address,
            config.data_dir,
        )
        task_status.started(address)


async def serve_until_signalled(config: ServeConfig) -> None:
    """`aether-kv serve`: run until SIGTERM/SIGINT, then close cleanly (data stays on disk)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            address = await nursery.start(serve_replica, config)
            print(f"aether-kv replica {config.replica_id} ready: clients {address}", flush=True)
            async for signum in signals:
                log.info("received %s, stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
