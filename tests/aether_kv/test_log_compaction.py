"""Log compaction by entry count as well as by time (issue 18: with only the 10-minute rule every entry of
a busy replica stayed in memory until then). A real replica with its journal on disk, in this process."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from aether_kv import RaftConfig
from aether_kv._local import free_port
from aether_kv._raft import RaftReplica
from aether_kv._records import Put

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


def _put_all(replica: RaftReplica) -> None:
    deadline = time.monotonic() + 30
    while not replica.is_leader:
        assert time.monotonic() < deadline, "the single replica did not become leader"
        time.sleep(0.02)
    for i in range(WRITES):
        done = threading.Event()
        outcome: list[object] = []

        def callback(_result: object, error: object, done: threading.Event = done, outcome=outcome) -> None:  # type: ignore[no-untyped-def]
            outcome.append(error)
            done.set()

        replica.propose(Put(key=f"k/{i}", value=b"x" * 100), callback)
        assert done.wait(10), f"write {i} did not complete"
        assert outcome == [None], outcome


def test_the_log_is_compacted_once_it_holds_more_entries_than_the_limit(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    replica = _replica(tmp_path, address, entries=50)
    try:
        _put_all(replica)
        deadline = time.monotonic() + 30
        while replica._obj._getRaftLogSize() > 60:  # compaction runs on the tick thread, soon after
            assert time.monotonic() < deadline, f"log still {replica._obj._getRaftLogSize()} entries"
            time.sleep(0.05)
        assert (tmp_path / "raft.dump").exists()
    finally:
        replica.close()
    again = _replica(tmp_path, address, entries=50)  # snapshot + the journal after it: nothing lost
    try:
        deadline = time.monotonic() + 30
        while again.read(lambda state: len(state.data)) < WRITES:
            assert time.monotonic() < deadline, again.read(lambda state: len(state.data))
            time.sleep(0.05)
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
