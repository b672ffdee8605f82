"""The journal hole of pysyncobj (its issue 84) is closed: an acknowledged write has been fsynced by a
majority of replicas before the writer hears back.

A power cut cannot be staged here, so the test watches the system call that decides it: `os.fsync` as the
replica module calls it (wrapped to record which journal file it synced, then called for real).
"""

from __future__ import annotations

import os
import sys
import threading
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
from pysyncobj.journal import FileJournal, ResizableFile
from raft_support import leader_of, propose, raft_group

import aether_kv._raft as raft_module
from aether_kv import RaftConfig, open_store, wait_for_leader
from aether_kv._local import free_port
from aether_kv._records import Put
from support import wait_until_sync


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

    monkeypatch.setattr(raft_module.os, "fsync", recording_fsync)
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
    msync before it only added a second device flush to every sync (`_raft.MSYNC_BEFORE_FSYNC`)."""
    msyncs: list[int] = []
    real_flush = ResizableFile.flush

    def recording_flush(self: ResizableFile) -> None:
        msyncs.append(1)
        real_flush(self)

    monkeypatch.setattr(ResizableFile, "flush", recording_flush)
    path = str(tmp_path / "raft.journal")
    journal = raft_module._DurableJournal(path)
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
    reopened = FileJournal(path)
    try:
        assert reopened[len(reopened) - 1] == (b"an entry", 1, 1)
    finally:
        reopened._destroy()


def test_a_leader_counts_its_own_entry_toward_a_commit_only_once_it_is_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader syncs its journal on a thread of its own (`_raft._DurableJournal.sync_soon`) while it
    goes on reading acknowledgements. With one follower down, the other's acknowledgement and the
    leader's own copy make the majority: while the leader's sync is held up, the entry must not commit."""
    replicas = raft_group(tmp_path)
    release, held = threading.Event(), threading.Event()
    try:
        leader = leader_of(replicas)
        propose(leader, Put(key="warm", value=b"x"))
        down = next(r for r in replicas if r is not leader)
        down.close()
        replicas.remove(down)
        follower = next(r for r in replicas if r is not leader)
        follower_node = next(n for n in leader._obj.otherNodes if n.address == follower.config.raft_address)

        real_fsync = os.fsync

        def held_fsync(fd: int) -> None:
            if threading.current_thread().name == "aether-kv journal sync" and not release.is_set():
                held.set()
                release.wait(60)
            real_fsync(fd)

        monkeypatch.setattr(raft_module.os, "fsync", held_fsync)
        ticks: list[tuple[int, int]] = []  # (the follower's match index, the commit index) per leader tick
        leader._obj.addOnTickCallback(
            lambda: ticks.append(
                (leader._obj._SyncObj__raftMatchIndex.get(follower_node, 0), leader.status().commit_index)
            )
        )
        done = threading.Event()
        leader.propose(Put(key="x", value=b"y"), lambda result, error: done.set())
        wait_until_sync(held.is_set, timeout=30, what="the leader's sync of the entry to start")
        index = leader._obj._SyncObj__raftLog[-1][1]
        acknowledged = wait_until_sync(
            lambda: next(((m, c) for m, c in list(ticks) if m >= index), None),
            timeout=30,
            what="a leader tick after the follower acknowledged the entry",
        )
        assert acknowledged[1] < index, "committed on the follower's copy and the leader's unsynced one"
        assert not done.is_set()
        release.set()
        assert done.wait(30), "the entry did not commit once the leader's copy was synced"
    finally:
        release.set()
        for replica in replicas:
            replica.close()
