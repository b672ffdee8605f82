"""Helpers for tests that run real Raft replicas in this process: a group on free ports, its leader once
every replica knows it, and a proposal waited for."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aether_kv import RaftConfig
from aether_kv._ports import free_port
from aether_kv._raft import RaftReplica
from support import wait_until_sync

SECRET = "a-test-secret-of-16+"


def raft_group(tmp_path: Path, size: int = 3, **options: Any) -> list[RaftReplica]:
    """`size` replicas on free ports of 127.0.0.1; `options` go to every RaftConfig, or, given as a
    function of the replica's index (`tls_dir=lambda i: ...`), are computed per replica."""
    addresses = tuple(f"127.0.0.1:{free_port()}" for _ in range(size))
    return [
        RaftReplica(
            RaftConfig(
                raft_address=address,
                peers=addresses,
                data_dir=tmp_path / f"replica-{i}",
                secret=SECRET,
                **{k: v(i) if callable(v) else v for k, v in options.items()},
            )
        )
        for i, address in enumerate(addresses)
    ]


@contextmanager
def running_group(tmp_path: Path, size: int = 3, **options: Any) -> Iterator[list[RaftReplica]]:
    """`raft_group(...)`, closed on the way out."""
    built = raft_group(tmp_path, size, **options)
    try:
        yield built
    finally:
        for replica in built:
            replica.close()


def leader_of(replicas: list[RaftReplica]) -> RaftReplica:
    """The leader, once there is one and every replica of `replicas` knows one (30 s at most)."""

    def leader() -> RaftReplica | None:
        leaders = [r for r in replicas if r.is_leader]
        return leaders[0] if leaders and all(r.status().leader is not None for r in replicas) else None

    found = wait_until_sync(leader, timeout=30, interval=0.05, what="a leader every replica knows")
    assert found is not None
    return found


def propose(replica: RaftReplica, command: Any, within: float = 30) -> None:
    """Propose `command` on `replica` and wait until it is committed and applied without an error."""
    done = threading.Event()
    errors: list[object] = []

    def callback(result: object, error: object) -> None:
        errors.append(error)
        done.set()

    replica.propose(command, callback)
    assert done.wait(within), f"{command!r:.80} was not committed within {within:g} s"
    assert errors == [None], errors
