"""A replica's members come from its data once it has a snapshot (pysyncobj with dynamic membership), not
from the configured peers: an operator who edited the peer list of a replica with data saw nothing happen,
and nothing said why. Now the replica says so at start. A real replica in this process, restarted on its
data directory."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from raft_support import SECRET, propose

from aether_kv import RaftConfig
from aether_kv._ports import free_port
from aether_kv._raft import RaftReplica
from aether_kv._records import Put
from support import wait_until_sync

DIFFER = "are not the members this replica's data holds"


def _replica(data_dir: Path, address: str, peers: tuple[str, ...]) -> RaftReplica:
    config = RaftConfig(
        raft_address=address, peers=peers, data_dir=data_dir, secret=SECRET, log_compaction_entries=2
    )
    return RaftReplica(config)


@pytest.fixture
def snapshotted(tmp_path: Path) -> tuple[Path, str]:
    """The data directory and address of a one-replica group that took a snapshot, stopped."""
    address = f"127.0.0.1:{free_port()}"
    replica = _replica(tmp_path, address, (address,))
    try:
        wait_until_sync(lambda: replica.is_leader, timeout=30, interval=0.02, what="the replica to lead")
        for i in range(5):
            propose(replica, Put(key=f"k{i}", value=b"x"))
        wait_until_sync((tmp_path / "raft.dump").exists, timeout=30, interval=0.05, what="a snapshot")
    finally:
        replica.close()
    return tmp_path, address


def test_a_replica_whose_configured_peers_differ_from_its_stored_members_says_so(
    snapshotted: tuple[Path, str], caplog: pytest.LogCaptureFixture
) -> None:
    data_dir, address = snapshotted
    added = f"127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="aether_kv.raft"):
        replica = _replica(data_dir, address, (address, added))
        try:  # (the snapshot is read on the replica's first tick)
            said = wait_until_sync(
                lambda: [r.getMessage() for r in caplog.records if DIFFER in r.getMessage()],
                timeout=10,
                what="the replica to say its members differ",
            )
            # it runs with the stored members: alone, it leads (with the peer list, it would need a vote)
            wait_until_sync(lambda: replica.is_leader, timeout=30, interval=0.02, what="the replica to lead")
        finally:
            replica.close()
    assert len(said) == 1, caplog.text
    assert f"configured peers ({', '.join(sorted((address, added)))})" in said[0], said
    assert f"data holds ({address})" in said[0] and "aether-kv member add|remove" in said[0], said


def test_a_replica_started_with_its_stored_members_says_nothing_of_them(
    snapshotted: tuple[Path, str], caplog: pytest.LogCaptureFixture
) -> None:
    data_dir, address = snapshotted
    with caplog.at_level(logging.WARNING, logger="aether_kv.raft"):
        replica = _replica(data_dir, address, (address,))
        try:  # (it leads once it has read its snapshot, on its first tick)
            wait_until_sync(lambda: replica.is_leader, timeout=30, interval=0.02, what="the replica to lead")
        finally:
            replica.close()
    assert DIFFER not in caplog.text, caplog.text
