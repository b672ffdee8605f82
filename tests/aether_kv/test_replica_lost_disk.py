"""A replica that lost its disk (a machine rebuilt, a disk replaced) and starts again with the same
address (`_pysyncobj_patches`, item 16). Real replicas of one group, in this process.

The schedule: an entry E is committed by the leader and replica C while replica B is down; C loses its
data directory; the leader dies; B and C start again. B lacks E, C holds nothing. Upstream, C voted for
B (any log is at least as up to date as an empty one), B led, and E, acknowledged to its writer, was gone.
Now C neither votes nor stands until it has caught up: B and C elect no one, the old leader comes back,
E is on every replica, and C votes again. The same holds when C restarts before it caught up, and when it
had caught up with part of the log only. With two disks of three lost, the one replica left with its log
is elected (nothing better is left), as in a new cluster, whose replicas all start empty. A replica whose
journal lost entries it may have acknowledged (a record in the middle not whole: `_journal_format`) is
one that lost its disk from that entry on."""

from __future__ import annotations

import shutil
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.journal import FIRST_RECORD_OFFSET, LAST_RECORD_OFFSET_OFFSET
from raft_support import leader_of, propose, raft_group

from aether_kv._raft import CATCHING_UP_MARKER, RaftReplica
from aether_kv._records import Put
from support import wait_until_sync

NO_LEADER_FOR = 4.0  # s: more than two of the longest election timeouts (1.5 s) and a pre-vote round


def _value(replica: RaftReplica, key: str) -> bytes | None:
    found = replica.read(lambda state: state.get(key))
    return found.kv.value if found is not None and found.kv is not None else None


def _no_leader_among(replicas: list[RaftReplica]) -> None:
    """A safety property, checked over a bounded window: none of `replicas` leads."""
    until = time.monotonic() + NO_LEADER_FOR
    while time.monotonic() < until:
        assert not any(r.is_leader for r in replicas), "a replica led without E"
        time.sleep(0.05)


def _everywhere(replicas: list[RaftReplica], key: str, value: bytes) -> None:
    for replica in replicas:
        wait_until_sync(
            lambda r=replica: _value(r, key),
            until=lambda found: found == value,
            timeout=30,
            what=f"{key} on every replica",
        )


def _lose_the_disk(data_dir: Path, _index: int) -> None:
    shutil.rmtree(data_dir)


def _tear_the_entry(data_dir: Path, index: int) -> None:
    """Entry `index`'s record in the journal no longer whole (a byte of its command changed), the records
    after it whole."""
    path = data_dir / "raft.journal"
    data = bytearray(path.read_bytes())
    (end,) = struct.unpack_from("<I", data, LAST_RECORD_OFFSET_OFFSET)
    offset = FIRST_RECORD_OFFSET
    while offset < end:
        (size,) = struct.unpack_from("<I", data, offset)
        if struct.unpack_from("<Q", data, offset + 4)[0] == index:
            assert offset + size + 8 < end, "no record follows it"
            data[offset + 4 + 16] ^= 0xFF
            path.write_bytes(bytes(data))
            return
        offset += size + 8
    raise AssertionError(f"entry {index} is not in {path}")


def _e_by_the_leader_and_c(
    replicas: list[RaftReplica], lose: Callable[[Path, int], None] = _lose_the_disk
) -> tuple[RaftReplica, RaftReplica, RaftReplica, int]:
    """k/0..k/4 on every replica of `replicas`, then, B stopped, E (and F after it) committed by the
    leader and C; C stopped and what it held from E on `lose`t (by default its data directory). Returns
    the leader (running), B, C (closed) and E's index."""
    leader = leader_of(replicas)
    b, c = (r for r in replicas if r is not leader)
    for i in range(5):
        propose(leader, Put(key=f"k/{i}", value=b"v"))
    wait_until_sync(lambda: _value(b, "k/4") == b"v", timeout=30, what="B to hold k/4")
    b.close()
    propose(leader, Put(key="E", value=b"acknowledged"))  # committed by the leader and C
    index = leader._obj._SyncObj__getCurrentLogIndex()
    propose(leader, Put(key="F", value=b"acknowledged"))
    wait_until_sync(lambda: _value(c, "F") == b"acknowledged", timeout=30, what="C to apply E and F")
    c.close()
    lose(c.config.data_dir, index)
    return leader, b, c, index


@contextmanager
def _e_on_the_leader_and_c_alone(
    tmp_path: Path, lose: Callable[[Path, int], None] = _lose_the_disk
) -> Iterator[tuple[list[RaftReplica], list[RaftReplica], int]]:
    """A group whose leader and C committed E while B was down; every replica closed after, C's data
    directory gone (or what `lose` does). Yields (leader, B, C) as they were (closed), the replicas the
    test starts (closed on the way out) and E's log index."""
    replicas = raft_group(tmp_path, 3)
    started: list[RaftReplica] = []
    try:
        leader, b, c, index = _e_by_the_leader_and_c(replicas, lose)
        leader.close()
        yield [leader, b, c], started, index
    finally:
        for replica in [*replicas, *started]:
            replica.close()


def _leader_comes_back(old: list[RaftReplica], started: list[RaftReplica], c_again: RaftReplica) -> None:
    """The old leader (holding E) starts again: elected or not, E is everywhere and C catches up; then
    C votes again: with the leader stopped once more, the other two elect one, E still there."""
    started.append(RaftReplica(old[0].config))
    elected = leader_of(started)
    _everywhere(started, "E", b"acknowledged")
    wait_until_sync(lambda: not c_again._obj.catching_up, timeout=30, what="C to catch up")
    assert not (c_again.config.data_dir / CATCHING_UP_MARKER).exists()
    elected.close()
    successor = leader_of([r for r in started if r is not elected])
    propose(successor, Put(key="after", value=b"v"))  # (a new leader applies what it holds first)
    assert _value(successor, "E") == b"acknowledged"


@pytest.mark.parametrize(
    "lose", [_lose_the_disk, _tear_the_entry], ids=["its disk", "an entry in its journal"]
)
def test_a_replica_that_lost_its_disk_does_not_elect_a_leader_without_what_it_acknowledged(
    tmp_path: Path, lose: Callable[[Path, int], None]
) -> None:
    with _e_on_the_leader_and_c_alone(tmp_path, lose) as (old, started, _):
        b_again, c_again = RaftReplica(old[1].config), RaftReplica(old[2].config)
        started += [b_again, c_again]
        assert c_again._obj.catching_up and not b_again._obj.catching_up
        _no_leader_among([b_again, c_again])
        _leader_comes_back(old, started, c_again)


def test_restarted_before_it_caught_up_it_still_withholds_its_vote(tmp_path: Path) -> None:
    with _e_on_the_leader_and_c_alone(tmp_path) as (old, started, _):
        c_again = RaftReplica(old[2].config)
        c_again.close()  # (its journal now exists: only the marker says it has not caught up)
        assert (old[2].config.data_dir / CATCHING_UP_MARKER).exists()
        b_again, c_again = RaftReplica(old[1].config), RaftReplica(old[2].config)
        started += [b_again, c_again]
        assert c_again._obj.catching_up
        _no_leader_among([b_again, c_again])
        _leader_comes_back(old, started, c_again)


def test_caught_up_with_part_of_the_log_it_does_not_stand(tmp_path: Path) -> None:
    """C lost its disk and has taken in the leader's log up to just before E when the leader dies: its
    log is as complete as B's, so B would vote for it; it must not stand (nor vote) until it holds a
    leader's log."""
    replicas = raft_group(tmp_path, 3)
    started: list[RaftReplica] = []
    try:
        leader, b, c, e_index = _e_by_the_leader_and_c(replicas)
        c_again = RaftReplica(c.config)
        started.append(c_again)
        taken_in = c_again._obj._room_for_entries

        def up_to_before_e(node: Any, message: dict[str, Any]) -> bool:
            message["entries"] = [e for e in message.get("entries") or [] if e[1] < e_index]
            return taken_in(node, message)

        c_again._obj._room_for_entries = up_to_before_e  # its catch-up under way when the leader dies
        wait_until_sync(
            lambda: c_again._obj._SyncObj__getCurrentLogIndex() == e_index - 1, timeout=30, what="C's part"
        )
        leader.close()
        c_again._obj._room_for_entries = taken_in
        assert c_again._obj.catching_up
        b_again = RaftReplica(b.config)
        started.append(b_again)
        _no_leader_among([b_again, c_again])
        _leader_comes_back([leader, b, c], started, c_again)
    finally:
        for replica in [*replicas, *started]:
            replica.close()


@pytest.mark.parametrize("round_", range(2))
def test_with_two_disks_of_three_lost_the_replica_with_its_log_is_elected(
    tmp_path: Path, round_: int
) -> None:
    replicas = raft_group(tmp_path, 3)
    started: list[RaftReplica] = []
    try:
        leader = leader_of(replicas)
        for i in range(5):
            propose(leader, Put(key=f"k/{i}", value=b"v"))
        _everywhere(replicas, "k/4", b"v")
        for replica in replicas:
            replica.close()
        lost = replicas[1:]
        for replica in lost:
            shutil.rmtree(replica.config.data_dir)
        started += [RaftReplica(r.config) for r in replicas]
        assert [r._obj.catching_up for r in started] == [False, True, True]
        elected = leader_of(started)
        assert elected is started[0]  # the only log left, not an empty one
        _everywhere(started, "k/4", b"v")
    finally:
        for replica in [*replicas, *started]:
            replica.close()


def test_a_new_group_of_empty_replicas_elects_a_leader_and_each_catches_up(tmp_path: Path) -> None:
    replicas = raft_group(tmp_path, 3)
    try:
        assert all(r._obj.catching_up for r in replicas)
        leader = leader_of(replicas)
        propose(leader, Put(key="k", value=b"v"))
        wait_until_sync(
            lambda: not any(r._obj.catching_up for r in replicas), timeout=30, what="every replica caught up"
        )
        assert not any((r.config.data_dir / CATCHING_UP_MARKER).exists() for r in replicas)
    finally:
        for replica in replicas:
            replica.close()
