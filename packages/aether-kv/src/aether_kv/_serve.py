"""One replica process: the Raft replica plus its client-protocol server, until cancelled or signalled.

With `parent_silence` (`--parent-silence`), the replica leads only while its parent process (a node)
writes to its stdin: the parent's heartbeat (`ParentHeartbeat`). A parent silent for longer than that
(stopped, hung) makes the replica stand aside (`_pysyncobj_patches`, item 14), so that a replica that
is well does not keep the lead for an owner that does no work.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import time
from collections.abc import Callable
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
    # lead only while the parent writes to stdin at least this often (s); None: lead regardless
    parent_silence: float | None = None

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


class ParentHeartbeat:
    """The parent's heartbeat: any bytes it writes to this replica's stdin (`follow_parent`). Once it
    has been silent for more than `silence` seconds, or has closed its end of the pipe, `why_silent`
    says so, and the replica stands aside until the next beat. The time of the last beat is one float,
    written on the trio thread and read on the tick thread."""

    def __init__(self, silence: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.silence = silence
        self._clock = clock
        self._heard = clock()  # a new replica gives its parent one silence to start beating
        self._closed = False

    def beat(self) -> None:
        self._heard = self._clock()

    def close(self) -> None:
        self._closed = True

    def why_silent(self) -> str | None:
        """Why the replica must not lead now (its parent is silent), or None."""
        if self._closed:
            return "its parent closed the heartbeat pipe"
        quiet = self._clock() - self._heard
        if quiet > self.silence:
            return f"its parent has not written to its stdin for {quiet:.1f} s (limit {self.silence:g} s)"
        return None


async def follow_parent(heartbeat: ParentHeartbeat, stream: trio.abc.ReceiveStream) -> None:
    """Count every read from `stream` (stdin) as a beat, until it ends (then the heartbeat is closed)
    or this is cancelled; closes `stream` either way."""
    async with stream:
        try:
            while await stream.receive_some(4096):
                heartbeat.beat()
        except (trio.BrokenResourceError, OSError) as error:
            log.warning("the parent's heartbeat pipe failed: %s", error)
        heartbeat.close()


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
    heartbeat = ParentHeartbeat(config.parent_silence) if config.parent_silence is not None else None
    stand_aside = heartbeat.why_silent if heartbeat is not None else lambda: None
    async with (
        open_store(config.raft_config(), stand_aside=stand_aside) as store,
        open_service_nursery() as nursery,
    ):
        if heartbeat is not None:
            nursery.start_soon(follow_parent, heartbeat, trio.lowlevel.FdStream(os.dup(0)))
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
