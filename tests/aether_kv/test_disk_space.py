"""The pure parts of a replica's disk-space handling (`aether_kv._disk`): what counts as a full disk, how
much journal to reserve, when a leader refuses for want of space, and the disk state logged once per
change."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pysyncobj.serializer
import pytest
from hypothesis import given
from hypothesis import strategies as st

import aether_kv._disk as disk_module
from aether_kv._disk import (
    RECORD_OVERHEAD,
    DiskProblem,
    DiskState,
    allocate,
    can_hand_over,
    durable_replace,
    is_disk_full,
    record_bytes,
    refuse_for_disk,
    reservation_target,
)
from aether_kv._journal import open_journal


def test_only_no_space_and_no_quota_are_a_full_disk() -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EIO, "Input/output error"))
    assert not is_disk_full(ValueError("no space"))


def test_record_bytes_is_what_the_journal_grows_by(tmp_path: Path) -> None:
    journal = open_journal(str(tmp_path / "journal"))
    commands = [b"", b"x", b"y" * 1000, bytes(range(256))]
    before = journal._FileJournal__currentOffset
    for index, command in enumerate(commands, start=1):
        journal.add(command, index, 1)
    assert journal._FileJournal__currentOffset - before == record_bytes(commands)
    assert record_bytes([b"abc"]) == 3 + RECORD_OVERHEAD
    journal._destroy()


@given(
    reserved=st.integers(min_value=0, max_value=1 << 30),
    needed=st.integers(min_value=0, max_value=1 << 30),
    chunk=st.sampled_from([1, 4096, 1 << 20]),
)
def test_the_reservation_covers_the_write_and_grows_by_whole_chunks(
    reserved: int, needed: int, chunk: int
) -> None:
    target = reservation_target(reserved, needed, chunk)
    if needed <= reserved:
        assert target == reserved  # nothing to reserve: no system call
    else:
        assert needed <= target < needed + chunk
        assert target % chunk == 0


@pytest.mark.parametrize(
    ("leader_has_room", "replicas", "without_room", "refused"),
    [
        (True, 1, 0, False),
        (False, 1, 1, True),
        (False, 3, 1, True),  # the leader itself cannot journal it
        (True, 3, 1, False),  # one follower full: the leader and the other follower commit
        (True, 3, 2, True),  # both followers full: it would never commit
        (True, 5, 2, False),
        (True, 5, 3, True),
        (True, 4, 2, True),  # 2 of 4 is no majority
    ],
)
def test_a_leader_refuses_when_it_or_a_majority_has_no_room(
    leader_has_room: bool, replicas: int, without_room: int, refused: bool
) -> None:
    assert (
        refuse_for_disk(leader_has_room=leader_has_room, replicas=replicas, without_room=without_room)
        is refused
    )


@pytest.mark.parametrize(
    ("replicas", "followers_with_room", "hands_over"),
    [(1, 0, False), (3, 2, True), (3, 1, False), (5, 3, True), (5, 2, False), (4, 2, False), (4, 3, True)],
)
def test_a_full_leader_hands_over_only_to_a_majority_of_followers_with_room(
    replicas: int, followers_with_room: int, hands_over: bool
) -> None:
    assert can_hand_over(replicas=replicas, followers_with_room=followers_with_room) is hands_over


def test_a_snapshot_is_on_disk_before_it_replaces_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source: str, target: str) -> None:
        calls.append(("rename", str(target)))
        real_replace(source, target)

    monkeypatch.setattr(disk_module.os, "fsync", fsync)
    monkeypatch.setattr(disk_module.os, "replace", replace)
    (tmp_path / "raft.dump").write_bytes(b"old")
    (tmp_path / "raft.dump.tmp").write_bytes(b"new")
    assert pysyncobj.serializer.atomicReplace is durable_replace  # what pysyncobj's snapshots use
    durable_replace(str(tmp_path / "raft.dump.tmp"), str(tmp_path / "raft.dump"))
    assert calls == [
        ("fsync", str(tmp_path / "raft.dump.tmp")),
        ("rename", str(tmp_path / "raft.dump")),
        ("fsync", str(tmp_path)),
    ]
    assert (tmp_path / "raft.dump").read_bytes() == b"new"


def test_the_problem_names_the_replica_the_disk_and_the_directory() -> None:
    problem = DiskProblem(what="the Raft journal", path="/data/kv1/raft.journal")
    text = problem.describe("127.0.0.1:4001")
    assert text.startswith("KV replica 127.0.0.1:4001: disk full: the Raft journal")
    assert "/data/kv1" in text


def test_the_disk_state_is_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    state = DiskState()
    with caplog.at_level(logging.INFO, logger="aether_kv.raft"):
        for _ in range(3):
            state.full("the Raft journal", "/d/raft.journal")
        state.full("the Raft term and vote", "/d/raft.journal.meta")  # still full: no new line
        assert state.problem == DiskProblem(what="the Raft term and vote", path="/d/raft.journal.meta")
        for _ in range(3):
            state.room_again()
        state.full("the Raft journal", "/d/raft.journal")
    assert state.problem is not None
    lines = [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records]
    assert lines == [
        ("ERROR", "disk full"),
        ("WARNING", "the disk has room again (/d/raft.journal.meta)"),
        ("ERROR", "disk full"),
    ]


@pytest.mark.parametrize("posix_fallocate", [True, False])
def test_allocate_backs_the_range_with_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, posix_fallocate: bool
) -> None:
    """With posix_fallocate (Linux) or without it (zeros written), the range is allocated, not a hole."""
    if not posix_fallocate:
        monkeypatch.delattr(disk_module.os, "posix_fallocate", raising=False)
    path = tmp_path / "file"
    path.write_bytes(b"head")
    fd = os.open(path, os.O_RDWR)
    try:
        allocate(fd, 4096, 3 << 20)
        assert os.fstat(fd).st_size == 4096 + (3 << 20)
        assert os.fstat(fd).st_blocks * 512 >= 3 << 20  # allocated, not sparse
    finally:
        os.close(fd)
    assert path.read_bytes()[:4] == b"head"
