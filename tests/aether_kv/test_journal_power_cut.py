"""The Raft journal after a power cut (`_journal_format.py`, `_journal.py`).

A power cut cannot be staged here, so the tests write the files a power cut leaves: the journal is written
through a mapping and fsynced once per batch, and until that fsync returns the kernel may have written
any of its dirty pages and not the others (the header's end offset and not the last records, or part of a
record). Upstream then raised reading the journal (`struct.error`): the replica could never start again.
Now what follows the last whole record (never fsynced, so never acknowledged) is dropped, said, and the
replica starts; a real group takes such a replica back and it catches up.

A compaction wrote the entries it keeps over the journal's start in place: torn, the entries kept
(acknowledged ones) were half overwritten. It now writes a new file and renames it over the journal.
"""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pysyncobj.journal import FIRST_RECORD_OFFSET, LAST_RECORD_OFFSET_OFFSET, FileJournal
from raft_support import leader_of, propose, raft_group

from aether_kv._journal import DurableJournal
from aether_kv._journal_format import header, journal_bytes, whole_records
from aether_kv._raft import RaftReplica
from aether_kv._records import Put
from support import wait_until_sync

ENTRIES = [(f"command {index}".encode() * index, index, 1 + index // 3) for index in range(1, 8)]


def _record_size(entry: tuple[bytes, int, int]) -> int:
    return len(entry[0]) + 16 + 8


def _claimed(data: bytes | bytearray) -> int:
    return int(struct.unpack_from("<I", data, LAST_RECORD_OFFSET_OFFSET)[0])


def _torn(data: bytes, zeros_from: int, zeros_to: int) -> bytes:
    """`data` with the bytes in [zeros_from, zeros_to) never written (zeros, as the reserved blocks are)."""
    return data[:zeros_from] + b"\0" * (zeros_to - zeros_from) + data[zeros_to:]


def test_a_whole_journal_is_read_to_its_end() -> None:
    data = journal_bytes(ENTRIES)
    found = whole_records(data)
    assert (found.end, found.count, found.torn) == (len(data), len(ENTRIES), None)
    assert found.end == _claimed(data)
    assert whole_records(journal_bytes([])).torn is None


@pytest.mark.parametrize(
    "tear",
    [
        "record never written",  # the header's page went to disk, the last record's did not
        "record's end never written",  # its first page did, its last (the second length) did not
        "length cut off",  # the header claims 2 bytes past the last record
        "an older record after the new ones",  # a compaction rewriting in place, cut off
    ],
)
def test_a_torn_tail_ends_at_the_last_whole_record(tear: str) -> None:
    data = journal_bytes(ENTRIES)
    whole_end, whole_count = len(data) - _record_size(ENTRIES[-1]), len(ENTRIES) - 1
    if tear == "record never written":
        torn = _torn(data, whole_end, len(data))
    elif tear == "record's end never written":
        torn = _torn(data, len(data) - 4, len(data))
    elif tear == "length cut off":  # every record is whole; two bytes of a next length are not
        cut = bytearray(data + b"\0" * 8)
        struct.pack_into("<I", cut, LAST_RECORD_OFFSET_OFFSET, len(data) + 2)
        torn, whole_end, whole_count = bytes(cut), len(data), len(ENTRIES)
    else:
        older = journal_bytes([ENTRIES[0]])[FIRST_RECORD_OFFSET:]  # entry 1 where entry 7 should be
        torn = data[:whole_end] + older + b"\0" * (len(data) - whole_end - len(older))
    found = whole_records(torn)
    assert (found.end, found.count) == (whole_end, whole_count), found
    assert found.torn is not None and f"byte {whole_end}" in found.torn, found
    assert found.claimed == _claimed(torn)


def test_a_journal_whose_header_was_never_written_holds_nothing() -> None:
    assert whole_records(b"").torn == "the file is shorter than its header"
    zeros = b"\0" * 4096
    found = whole_records(zeros)
    assert (found.end, found.count, found.torn) == (FIRST_RECORD_OFFSET, 0, "its header's end offset is 0")


def test_the_journal_written_whole_is_the_one_upstream_reads(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    path.write_bytes(journal_bytes(ENTRIES))
    read = FileJournal(str(path))
    try:
        assert [read[i] for i in range(len(read))] == ENTRIES
    finally:
        read._destroy()
    assert header(FIRST_RECORD_OFFSET) == journal_bytes([])


def _durable(path: Path, entries: list[tuple[bytes, int, int]]) -> None:
    journal = DurableJournal(str(path))
    try:
        for entry in entries:
            journal.add(*entry)
        journal.sync()
    finally:
        journal._destroy()


def _entries(path: Path) -> list[tuple[bytes, int, int]]:
    journal = DurableJournal(str(path))
    try:
        return [journal[i] for i in range(len(journal))]
    finally:
        journal._destroy()


def test_a_torn_journal_opens_with_its_whole_records_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "raft.journal"
    _durable(path, ENTRIES)
    data = path.read_bytes()
    end = _claimed(data)
    path.write_bytes(_torn(data, end - _record_size(ENTRIES[-1]), end))
    with pytest.raises(struct.error):  # upstream: the replica could never start again
        FileJournal(str(path))
    with caplog.at_level(logging.WARNING, logger="aether_kv.journal"):
        assert _entries(path) == ENTRIES[:-1]
    said = [r.getMessage() for r in caplog.records if "not wholly written" in r.getMessage()]
    assert len(said) == 1 and f"{len(ENTRIES) - 1} entries kept" in said[0], said
    upstream = FileJournal(str(path))  # mended on disk, durably: upstream reads it as it is
    try:
        assert len(upstream) == len(ENTRIES) - 1
    finally:
        upstream._destroy()
    _durable(path, [ENTRIES[-1]])  # appended where the torn record was
    assert _entries(path) == ENTRIES


def test_what_a_torn_journal_drops_is_zeroed(tmp_path: Path) -> None:
    """The bytes after the last whole record (a record whose end never reached the disk) are zeroed as
    they are dropped: after a later power cut, a record written over them in part cannot be read as a
    whole one with their help."""
    path = tmp_path / "raft.journal"
    _durable(path, ENTRIES)
    data = path.read_bytes()
    end = _claimed(data)
    whole_end = end - _record_size(ENTRIES[-1])
    path.write_bytes(_torn(data, end - 4, end))  # only its second length missing
    assert _entries(path) == ENTRIES[:-1]
    mended = path.read_bytes()
    assert _claimed(mended) == whole_end and mended[whole_end:end] == bytes(end - whole_end)


def test_an_empty_journal_file_opens_empty(tmp_path: Path) -> None:
    """Created, then the power cut before its header was written (upstream's mapping of a 0-byte file
    raised)."""
    path = tmp_path / "raft.journal"
    path.touch()
    assert _entries(path) == []
    _durable(path, ENTRIES[:1])
    assert _entries(path) == ENTRIES[:1]


def test_a_compaction_writes_a_new_journal_and_keeps_the_term_vote_and_commit_index(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    (tmp_path / "raft.journal.compacted").write_bytes(b"half a compaction")  # cut off before its rename
    journal = DurableJournal(str(path))
    assert not (tmp_path / "raft.journal.compacted").exists()
    try:
        for entry in ENTRIES:
            journal.add(*entry)
        journal.setCurrentTerm(3, "127.0.0.1:1")
        journal.setRaftCommitIndex(6)  # (stored once a second: not yet in the file)
        before = path.stat().st_ino
        journal.deleteEntriesTo(4)
        assert path.stat().st_ino != before  # a new file, renamed over the old one
        assert [journal[i] for i in range(len(journal))] == ENTRIES[4:]
        assert (journal.getCurrentTerm(), journal.getVotedForNodeId()) == (3, "127.0.0.1:1")
        assert journal.getRaftCommitIndex() == 6
        journal.add(b"after", 8, 3)  # appends go on into the new file
        journal.sync()
        journal.onOneSecondTimer()
    finally:
        journal._destroy()
    assert _entries(path) == [*ENTRIES[4:], (b"after", 8, 3)]
    reopened = DurableJournal(str(path))
    try:
        assert (reopened.getCurrentTerm(), reopened.getRaftCommitIndex()) == (3, 6)
    finally:
        reopened._destroy()


def _put(replica: RaftReplica, key: str) -> None:
    propose(replica, Put(key=key, value=key.encode()))


def test_a_replica_whose_journal_was_torn_starts_and_catches_up(tmp_path: Path) -> None:
    replicas = raft_group(tmp_path, 3)
    restarted: RaftReplica | None = None
    try:
        leader = leader_of(replicas)
        for i in range(10):
            _put(leader, f"k/{i}")
        follower = next(r for r in replicas if r is not leader)
        wait_until_sync(
            lambda: follower.read(lambda state: len(state.data)) == 10, timeout=30, what="the follower's copy"
        )
        follower.close()
        journal = follower.config.data_dir / "raft.journal"
        data = journal.read_bytes()
        end = _claimed(data)
        journal.write_bytes(_torn(data, end - 40, end))  # the last record's end never written
        for i in range(10, 15):  # written while it is down
            _put(leader, f"k/{i}")
        restarted = RaftReplica(follower.config)
        wait_until_sync(
            lambda: restarted.read(lambda state: len(state.data)) == 15,
            timeout=30,
            what="the restarted replica to catch up",
        )
        assert restarted.read(lambda state: state.get("k/9").kv.value) == b"k/9"
        done = threading.Event()
        restarted.propose(Put(key="k/15", value=b"k/15"), lambda _r, error: done.set())
        assert done.wait(30)
        wait_until_sync(
            lambda: all(r.read(lambda state: len(state.data)) == 16 for r in (leader, restarted)),
            timeout=30,
            what="a write through the restarted replica everywhere",
        )
    finally:
        for replica in [*replicas, *([restarted] if restarted else [])]:
            replica.close()
    assert os.path.exists(journal)


NO_FD_LEFT = """
import os, resource, sys
from aether_kv._journal import DurableJournal

journal = DurableJournal(sys.argv[1])
for index in range(1, 30):
    journal.add(b"x" * 100, index, 1)
journal.sync()
lowest_free = os.open(os.devnull, os.O_RDONLY)
os.close(lowest_free)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free + 1, hard))  # one descriptor at a time
try:
    journal.deleteEntriesTo(20)  # the new file written and renamed; its reopening (and map) finds none
    print("compacted")
except OSError as error:
    print("raised:", error)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
try:
    journal.add(b"after", 30, 1)
    journal.sync()
    print("acknowledged")
except OSError as error:
    print("refused:", error)
"""


def test_a_compacted_journal_that_cannot_be_opened_acknowledges_nothing_more(tmp_path: Path) -> None:
    """Renamed over the old journal, the new one could not be opened (no file descriptor left): the old
    file, still open, has no name any more, so what would be appended there is lost at the next start.
    Its sync fails from then on, as after a failed fsync (the replica is restarted)."""
    path = tmp_path / "raft.journal"
    ran = subprocess.run(
        [sys.executable, "-c", NO_FD_LEFT, str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    lines = ran.stdout.splitlines()
    assert lines[0].startswith("raised: the compacted journal") and "Too many open files" in lines[0], lines
    assert lines[1].startswith("refused:"), lines
    assert [entry[1] for entry in _entries(path)] == list(range(21, 30))  # what the new file holds
