"""The journal hole of pysyncobj (its issue 84) is closed: an acknowledged write has been fsynced by a
majority of replicas before the writer hears back.

A power cut cannot be staged here, so the test watches the system call that decides it: `os.fsync` as the
replica module calls it (wrapped to record which journal file it synced, then called for real).
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
from pysyncobj.journal import ResizableFile

import aether_kv._journal as journal_module
from aether_kv import RaftConfig, open_store, wait_for_leader
from aether_kv._journal import open_journal
from aether_kv._ports import free_port


@pytest.fixture
def fsync_log(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        try:
            calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            calls.append("?")

    monkeypatch.setattr(journal_module.os, "fsync", recording_fsync)
    return calls


async def test_every_acknowledged_write_was_fsynced_by_a_majority(
    tmp_path: Path, fsync_log: list[str]
) -> None:
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    async with AsyncExitStack() as stack:
        stores = [
            await stack.enter_async_context(
                open_store(
                    RaftConfig(
                        raft_address=address,
                        peers=tuple(addresses),
                        data_dir=tmp_path / f"r{i}",
                        secret="a-test-secret-of-some-length",
                    )
                )
            )
            for i, address in enumerate(addresses)
        ]
        with trio.fail_after(20):
            for store in stores:
                await wait_for_leader(store)
        follower = next(store for store in stores if not store.is_leader)
        leader = next(store for store in stores if store.is_leader)
        for writer in (leader, follower):
            for i in range(20):
                fsync_log.clear()
                await writer.put(f"k{i}", b"v")
                journals = Counter(path for path in fsync_log if path.endswith("raft.journal"))
                assert len(journals) >= 2, f"put {i} acknowledged after fsyncs of only {dict(journals)}"


async def test_without_durability_nothing_is_fsynced(tmp_path: Path, fsync_log: list[str]) -> None:
    """The control: the recording sees the difference (a test that could not fail would prove nothing)."""
    address = f"127.0.0.1:{free_port()}"
    config = RaftConfig(
        raft_address=address, peers=(address,), data_dir=tmp_path, secret="a-test-secret", durable=False
    )
    async with open_store(config) as store:
        await wait_for_leader(store)
        fsync_log.clear()
        for i in range(5):
            await store.put(f"k{i}", b"v")
        assert not [path for path in fsync_log if path.endswith("raft.journal")]


@pytest.mark.skipif(sys.platform != "linux", reason="msync is skipped on Linux only")
def test_a_journal_sync_is_one_fsync_of_the_journal_without_msync(
    tmp_path: Path, fsync_log: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Linux the mapped journal is the file's page cache: fsync writes the mapped pages back, and an
    msync before it only added a second device flush to every sync (`_journal.MSYNC_BEFORE_FSYNC`)."""
    msyncs: list[int] = []
    real_flush = ResizableFile.flush

    def recording_flush(self: ResizableFile) -> None:
        msyncs.append(1)
        real_flush(self)

    monkeypatch.setattr(ResizableFile, "flush", recording_flush)
    path = str(tmp_path / "raft.journal")
    journal = journal_module.DurableJournal(path)
    try:
        fsync_log.clear()
        journal.add(b"an entry", 1, 1)
        journal.sync()
        assert [p for p in fsync_log if p.endswith("raft.journal")] == [path]
        assert msyncs == []
        journal.sync()  # nothing new: nothing to sync
        assert len(fsync_log) == 1
    finally:
        journal._destroy()
    reopened = open_journal(path)
    try:
        assert reopened[len(reopened) - 1] == (b"an entry", 1, 1)
    finally:
        reopened._destroy()


def test_the_term_and_vote_file_is_on_disk_before_it_replaces_the_last_one(
    tmp_path: Path, fsync_log: list[str]
) -> None:
    """Upstream renamed its new term-and-vote file over the old one before any fsync: a power cut could
    leave an empty file, and the replica start again at term 0 with no vote. Now the new file is fsynced
    under its temporary name, then the directory after the rename, for the term and vote and for the
    commit index stored with them alike."""
    path = tmp_path / "raft.journal"
    journal = journal_module.DurableJournal(str(path))
    try:
        fsync_log.clear()
        journal.setCurrentTerm(4, "127.0.0.1:9")
        assert fsync_log[-2:] == [f"{path}.meta.tmp", str(tmp_path)], fsync_log
        fsync_log.clear()
        journal.setRaftCommitIndex(7)
        journal.onOneSecondTimer()
        assert fsync_log == [f"{path}.meta.tmp", str(tmp_path)], fsync_log
    finally:
        journal._destroy()
    reopened = open_journal(str(path))
    try:
        assert (reopened.getCurrentTerm(), reopened.getVotedForNodeId(), reopened.getRaftCommitIndex()) == (
            4,
            "127.0.0.1:9",
            7,
        )
    finally:
        reopened._destroy()


def test_an_unreadable_term_and_vote_file_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "raft.journal"
    (tmp_path / "raft.journal.meta").write_bytes(b"\0" * 40)  # what a disk that lied about its flush leaves
    with caplog.at_level(logging.ERROR, logger="aether_kv.journal"):
        journal = journal_module.DurableJournal(str(path))
        journal._destroy()
    assert any("cannot be read: this replica starts at term 0" in r.getMessage() for r in caplog.records)
