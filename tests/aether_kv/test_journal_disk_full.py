"""The journal, the term and vote and the snapshots of one replica on a small file system that fills up
(`disk_support`: a tmpfs, mounted as root; skipped otherwise). pysyncobj's journal is a memory-mapped
file: a store into a page the file system cannot back is a SIGBUS, so everything that writes to it runs
in a child process here (the control shows upstream's journal dying of it): were the fix to regress, the
child would die, not the test run, which must unmount what it mounted."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from disk_support import fill, small_filesystem

from aether_kv import RaftConfig
from aether_kv._disk import JournalFullError
from aether_kv._journal import DurableJournal, open_journal
from aether_kv._ports import free_port
from aether_kv._raft import RaftReplica
from aether_kv._records import Put
from support import wait_until_sync

APPEND_UNTIL_FULL = """
import os, sys
from pysyncobj.journal import FileJournal
from aether_kv._disk import JournalFullError
from aether_kv._journal import DurableJournal

kind, path, filler = sys.argv[1:]
journal = DurableJournal(path) if kind == "reserving" else FileJournal(path)
journal.add(b"first", 1, 1)
fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(fd, b"\\0" * 4096)
except OSError:
    pass
for index in range(2, 2000):
    try:
        journal.add(os.urandom(4096), index, 1)
    except JournalFullError as error:
        print(f"refused entry {index}: {error}")
        sys.exit(0)
print("never refused")
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_filesystem(tmp_path / "disk", mib=4) as directory:
        yield directory


def _append_until_full(kind: str, disk: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-c",
        APPEND_UNTIL_FULL,
        kind,
        str(disk / "raft.journal"),
        str(disk / "filler"),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_a_journal_on_a_full_disk_refuses_the_append_instead_of_dying(small_disk: Path) -> None:
    done = _append_until_full("reserving", small_disk)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.startswith("refused entry "), done.stdout
    journal = open_journal(str(small_disk / "raft.journal"))  # what it accepted is whole, in order
    try:
        assert [entry[1] for entry in journal] == list(range(1, len(journal) + 1))
    finally:
        journal._destroy()


def test_control_upstreams_journal_dies_of_sigbus_there(small_disk: Path) -> None:
    """The control: the same appends through pysyncobj's own journal end the process by a signal."""
    done = _append_until_full("upstream", small_disk)
    assert done.returncode == -7, f"exit {done.returncode}: {done.stdout} {done.stderr[-500:]}"  # SIGBUS


def in_child(body: Callable[[], None]) -> None:
    """Run `body` in a forked child process; fail with its traceback, or the signal that ended it."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.close(read)
        code = 0
        try:
            body()
        except BaseException:
            os.write(write, traceback.format_exc().encode())
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        output = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        pytest.fail(f"the child died of signal {os.WTERMSIG(status)}\n{output}")
    assert os.WEXITSTATUS(status) == 0, output


def test_appends_and_the_term_resume_once_space_is_freed(small_disk: Path) -> None:
    in_child(lambda: _appends_and_the_term_resume(small_disk))


def _appends_and_the_term_resume(small_disk: Path) -> None:
    path = str(small_disk / "raft.journal")
    journal = DurableJournal(path)
    try:
        journal.add(b"first", 1, 1)
        journal.setCurrentTerm(1, None)
        filler = fill(small_disk)
        with pytest.raises(OSError) as raised:
            journal.setCurrentTerm(2, "someone")
        assert raised.value.errno is not None and os.strerror(raised.value.errno) == "No space left on device"
        assert (journal.getCurrentTerm(), journal.getVotedForNodeId()) == (1, None)  # not half-changed
        index = 2
        with pytest.raises(JournalFullError):
            while True:  # the rest of the reserved chunk, then a refusal
                journal.add(os.urandom(4096), index, 1)
                index += 1
        problem = journal.disk.problem
        assert problem is not None and problem.path.startswith(str(small_disk))
        journal.recheck()
        assert journal.disk.problem is not None  # still full

        filler.unlink()

        def rechecked() -> bool:
            journal.recheck()  # (at most every PROBE_PERIOD)
            return journal.disk.problem is None

        wait_until_sync(rechecked, timeout=10, interval=0.1, what="the journal to find room again")
        journal.add(b"after", index, 2)
        journal.setCurrentTerm(2, "someone")
        journal.sync()
    finally:
        journal._destroy()
    reopened = open_journal(path)
    try:
        assert reopened[len(reopened) - 1] == (b"after", index, 2)
        assert [entry[1] for entry in reopened] == list(range(1, index + 1))
        assert (reopened.getCurrentTerm(), reopened.getVotedForNodeId()) == (2, "someone")
    finally:
        reopened._destroy()


def _put(replica: RaftReplica, key: str, value: bytes) -> object:
    """The put's error (None: applied)."""
    done = threading.Event()
    errors: list[object] = []

    def callback(_result: object, error: object) -> None:
        errors.append(error)
        done.set()

    replica.propose(Put(key=key, value=value), callback)
    assert done.wait(30), f"{key}: no answer"
    return errors[0]


def test_a_compaction_with_no_room_for_a_new_journal_compacts_in_place(small_disk: Path) -> None:
    """A compaction writes the entries it keeps into a new file (`DurableJournal.deleteEntriesTo`); on
    a full disk it rewrites them in place, as upstream did, which needs no new space."""
    in_child(lambda: _compaction_on_a_full_disk(small_disk))


def _compaction_on_a_full_disk(small_disk: Path) -> None:
    path = str(small_disk / "raft.journal")
    entries = [(os.urandom(1000), index, 1) for index in range(1, 200)]
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("aether_kv.journal").addHandler(handler)
    journal = DurableJournal(path)
    try:
        for entry in entries:
            journal.add(*entry)
        journal.sync()
        fill(small_disk)
        inode = os.stat(path).st_ino
        marked: list[bool] = []  # whether the journal is marked as compacted in place while it is
        rewrite = journal._inner.deleteEntriesTo
        journal._inner.deleteEntriesTo = lambda entry_to: (
            marked.append(os.path.exists(path + ".compacting")) or rewrite(entry_to)
        )
        journal.deleteEntriesTo(150)
        assert os.stat(path).st_ino == inode  # in place
        assert marked == [True] and not os.path.exists(path + ".compacting")
        assert not os.path.exists(path + ".compacted")
        assert [journal[i] for i in range(len(journal))] == entries[150:]
        assert any("no room for a compacted Raft journal" in line for line in said), said
        journal.sync()
    finally:
        journal._destroy()
    reopened = open_journal(path)
    try:
        assert [reopened[i] for i in range(len(reopened))] == entries[150:]
    finally:
        reopened._destroy()


def test_a_snapshot_that_does_not_fit_keeps_the_previous_one_and_frees_its_space(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "disk", mib=8) as disk:
        in_child(lambda: _snapshot_on_a_full_disk(disk))


def _snapshot_on_a_full_disk(small_disk: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = RaftConfig(
        raft_address=address,
        peers=(address,),
        data_dir=small_disk,
        secret="a-test-secret-of-16+",
        log_compaction_entries=4,
    )
    replica = RaftReplica(config)
    dump, temporary = small_disk / "raft.dump", small_disk / "raft.dump.tmp"
    try:
        wait_until_sync(lambda: replica.is_leader, timeout=30, interval=0.02, what="the replica to lead")
        for i in range(6):  # > 4 entries: the first snapshot, with 600 KiB of random values (twice:
            assert _put(replica, f"big/{i}", os.urandom(100 << 10)) is None  # the keys and their history)
        wait_until_sync(dump.exists, timeout=30, what="the first snapshot")
        wait_until_sync(lambda: not temporary.exists(), timeout=30, what="the first snapshot to finish")
        first = dump.read_bytes()

        filler = fill(small_disk)
        spare = 256 << 10  # room for the journal's meta file, not for the next snapshot
        with open(filler, "r+b") as file:
            file.truncate(filler.stat().st_size - spare)
        for i in range(5):  # small entries, in the journal's reserve: the next snapshot is due
            # (it may start before the last one, fill the spare room, and a write meanwhile finds the
            # disk full: refused, not applied, and taken once the failed snapshot's file is gone)
            wait_until_sync(
                lambda i=i: _put(replica, f"small/{i}", b"x"),
                until=lambda error: error is None,
                timeout=30,
                what=f"small/{i} to be written",
            )

        def failed_and_cleaned() -> bool:
            return replica._obj._snapshot_retry_at > 0 and not temporary.exists()

        wait_until_sync(failed_and_cleaned, timeout=30, what="the second snapshot to fail and be cleaned up")
        assert dump.read_bytes() == first
        assert replica.read(lambda state: len(state.data)) == 11

        filler.unlink()
        wait_until_sync(lambda: dump.read_bytes() != first, timeout=30, what="a snapshot once there is room")
    finally:
        replica.close()


@pytest.mark.parametrize("posix_fallocate", [True, False])
def test_a_reopened_journal_reserves_without_touching_what_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, posix_fallocate: bool
) -> None:
    """A journal reopened knows nothing of what was reserved before: its first reservation covers the
    entries it holds, and must leave them as they are (without posix_fallocate it writes zeros)."""
    if not posix_fallocate:
        monkeypatch.delattr(os, "posix_fallocate", raising=False)
    path = str(tmp_path / "raft.journal")
    entries = [(os.urandom(3000), index, 1) for index in range(1, 400)]  # > 1 MiB: past the first chunk
    for batch in (entries[:200], entries[200:]):
        journal = DurableJournal(path)
        try:
            for entry in batch:
                journal.add(*entry)
            journal.sync()
        finally:
            journal._destroy()
    reopened = open_journal(path)
    try:
        assert list(reopened) == entries
    finally:
        reopened._destroy()
