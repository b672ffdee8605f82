"""Log compaction by entry count as well as by time (issue 18: with only the 10-minute rule every entry of
a busy replica stayed in memory until then). A real replica with its journal on disk, in this process."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from aether_kv import RaftConfig, _pysyncobj_patches
from aether_kv._ports import free_port
from aether_kv._raft import RaftReplica
from aether_kv._records import Put
from aether_kv._state import KVState
from support import wait_until_sync

WRITES = 300


def _replica(tmp_path: Path, address: str, entries: int) -> RaftReplica:
    return RaftReplica(
        RaftConfig(
            raft_address=address,
            peers=(address,),
            data_dir=tmp_path,
            secret="a-test-secret-of-16+",
            log_compaction_entries=entries,
        )
    )


def _put_all(replica: RaftReplica, prefix: str = "k", writes: int = WRITES) -> None:
    """`writes` puts, all proposed at once (each its own log entry), then every outcome awaited."""
    wait_until_sync(lambda: replica.is_leader, timeout=30, interval=0.02, what="the single replica to lead")
    outcomes: list[object] = []
    done = threading.Event()

    def callback(_result: object, error: object) -> None:
        outcomes.append(error)
        if len(outcomes) == writes:
            done.set()

    for i in range(writes):
        replica.propose(Put(key=f"{prefix}/{i}", value=b"x" * 100), callback)
    assert done.wait(30), f"{len(outcomes)} of {writes} writes completed"
    assert outcomes == [None] * writes, outcomes


def test_the_log_is_compacted_once_it_holds_more_entries_than_the_limit(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    replica = _replica(tmp_path, address, entries=50)
    try:
        _put_all(replica)
        _log_at_most(replica, 60)  # compaction runs on the tick thread, soon after
        assert (tmp_path / "raft.dump").exists()
    finally:
        replica.close()
    again = _replica(tmp_path, address, entries=50)  # snapshot + the journal after it: nothing lost
    try:
        _keys_at_least(again, WRITES)
        assert again.read(lambda state: state.get(f"k/{WRITES - 1}").kv.value) == b"x" * 100
    finally:
        again.close()


def test_below_the_limit_the_log_is_kept(tmp_path: Path) -> None:
    replica = _replica(tmp_path, f"127.0.0.1:{free_port()}", entries=10_000)
    try:
        _put_all(replica)
        assert replica._obj._getRaftLogSize() > WRITES
        assert not (tmp_path / "raft.dump").exists()
    finally:
        replica.close()


@pytest.mark.parametrize("entries", [0, 1])
def test_a_limit_below_two_entries_is_refused_before_anything_starts(tmp_path: Path, entries: int) -> None:
    with pytest.raises(ValueError, match="log_compaction_entries"):
        _replica(tmp_path, f"127.0.0.1:{free_port()}", entries=entries)
    assert not list(tmp_path.iterdir())


def _pickling_waits_for(gate: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshots pickle the state only once `gate` exists (the wait happens where the pickling runs)."""
    original = KVState.__getstate__

    def waiting(state: KVState) -> dict[str, object]:
        while not gate.exists():  # a gate the test opens, not a wait with a deadline (it runs in the child)
            time.sleep(0.01)
        return original(state)

    monkeypatch.setattr(KVState, "__getstate__", waiting)


def _log_at_most(replica: RaftReplica, entries: int) -> None:
    wait_until_sync(
        replica._obj._getRaftLogSize,
        until=lambda size: size <= entries,
        timeout=30,
        interval=0.05,
        what=f"the log compacted to at most {entries} entries",
    )


def _keys_at_least(replica: RaftReplica, keys: int) -> None:
    wait_until_sync(
        lambda: replica.read(lambda state: len(state.data)),
        until=lambda found: found >= keys,
        timeout=30,
        interval=0.05,
        what=f"{keys} keys back",
    )


def _snapshot_child(replica: RaftReplica) -> int:
    return replica._obj._SyncObj__serializer._Serializer__pid


def test_a_snapshot_is_taken_in_a_child_process_while_writes_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot's pickling waits on a file: the replica's own thread must not (writes complete)."""
    gate = tmp_path / "gate"
    _pickling_waits_for(gate, monkeypatch)
    replica = _replica(tmp_path / "data", f"127.0.0.1:{free_port()}", entries=50)
    try:
        _put_all(replica)  # passes the limit: a snapshot starts, and its pickling is held
        assert _snapshot_child(replica) > 0, "no snapshot child is running"
        _put_all(replica, prefix="more")  # the replica goes on meanwhile
        assert _snapshot_child(replica) > 0 and not (tmp_path / "data" / "raft.dump").exists()
        gate.touch()
        _log_at_most(replica, 2 * WRITES)
        assert (tmp_path / "data" / "raft.dump").exists()
    finally:
        gate.touch()
        replica.close()


def test_a_snapshot_finished_after_its_replica_stopped_loses_no_later_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child writes its snapshot after the replica is gone (as after a SIGKILL): on restart the
    journal's entries after the snapshot are kept, not replaced by the snapshot's two (upstream)."""
    gate = tmp_path / "gate"
    _pickling_waits_for(gate, monkeypatch)
    address = f"127.0.0.1:{free_port()}"
    replica = _replica(tmp_path / "data", address, entries=50)
    try:
        _put_all(replica, prefix="early", writes=40)  # applied, under the limit: the snapshot holds them
        _put_all(replica)
        child = _snapshot_child(replica)
        assert child > 0, "no snapshot child is running"
        _put_all(replica, prefix="more")  # in the journal only: the snapshot was taken before them
    finally:
        replica.close()
    gate.touch()
    os.waitpid(child, 0)  # the orphaned child finishes its snapshot now
    assert (tmp_path / "data" / "raft.dump").exists()
    monkeypatch.undo()
    again = _replica(tmp_path / "data", address, entries=50)
    try:
        _keys_at_least(again, 2 * WRITES + 40)
        assert again.read(lambda state: state.get(f"more/{WRITES - 1}").kv.value) == b"x" * 100
    finally:
        again.close()


def test_a_snapshot_child_that_never_finishes_is_killed_and_the_snapshot_taken_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = tmp_path / "gate"
    _pickling_waits_for(gate, monkeypatch)
    monkeypatch.setattr(_pysyncobj_patches, "SNAPSHOT_DEADLINE", 1.0)
    replica = _replica(tmp_path / "data", f"127.0.0.1:{free_port()}", entries=50)
    try:
        _put_all(replica)
        stuck = _snapshot_child(replica)
        assert stuck > 0, "no snapshot child is running"
        wait_until_sync(  # killed after the deadline, reaped, then another
            lambda: _snapshot_child(replica),
            until=lambda child: child != stuck,
            timeout=30,
            interval=0.05,
            what="the stuck snapshot child to be replaced",
        )
        gate.touch()  # the next one may finish
        _log_at_most(replica, 60)
        assert (tmp_path / "data" / "raft.dump").exists()
    finally:
        gate.touch()
        replica.close()


def test_snapshots_are_compressed_at_the_fast_level(tmp_path: Path) -> None:
    """Upstream writes level 9 (35 times the CPU of level 1 for 1 % less); the header says the level."""
    replica = _replica(tmp_path, f"127.0.0.1:{free_port()}", entries=50)
    try:
        _put_all(replica)
        wait_until_sync((tmp_path / "raft.dump").exists, timeout=30, interval=0.05, what="a snapshot written")
    finally:
        replica.close()
    header = (tmp_path / "raft.dump").read_bytes()[:10]
    assert header[:2] == b"\x1f\x8b" and header[8] == 4  # gzip; XFL 4: the fastest algorithm
