"""The Raft journal after a power cut (`_journal_format.py`, `_journal.py`).

A power cut cannot be staged here, so the tests write the files a power cut leaves: the journal is written
through a mapping and fsynced once per batch, and until that fsync returns the kernel may have written
any of its dirty pages and not the others (the header's end offset and not the last records, or part of a
record). Upstream then raised reading the journal (`struct.error`): the replica could never start again.
Now what follows the last whole record (never fsynced, so never acknowledged) is dropped, said, and the
replica starts; a real group takes such a replica back and it catches up.

A compaction wrote the entries it keeps over the journal's start in place: torn, the entries kept
(acknowledged ones) were half overwritten. It now writes a new file and renames it over the journal.

Upstream's records carry no checksum: a record longer than a page whose middle page never reached the disk
read as whole. Records now carry a CRC-32 (format 2); upstream's format is still read, and compacted into
the new one. A torn record followed by a whole one may have taken acknowledged entries with it: the
replica then starts as one that lost its disk (it votes once it has caught up).
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

from aether_kv import JournalFormatError
from aether_kv._journal import DurableJournal, mend_journal
from aether_kv._journal_format import (
    CHECKSUMMED,
    PLAIN,
    format_of,
    header,
    journal_bytes,
    record_overhead,
    whole_records,
)
from aether_kv._ports import free_port
from aether_kv._raft import RaftReplica
from aether_kv._records import Put
from support import wait_until_sync

ENTRIES = [(f"command {index}".encode() * index, index, 1 + index // 3) for index in range(1, 8)]


def _record_size(entry: tuple[bytes, int, int], journal_format: int = CHECKSUMMED) -> int:
    return len(entry[0]) + record_overhead(journal_format)


def _claimed(data: bytes | bytearray) -> int:
    return int(struct.unpack_from("<I", data, LAST_RECORD_OFFSET_OFFSET)[0])


def _torn(data: bytes, zeros_from: int, zeros_to: int) -> bytes:
    """`data` with the bytes in [zeros_from, zeros_to) never written (zeros, as the reserved blocks are)."""
    return data[:zeros_from] + b"\0" * (zeros_to - zeros_from) + data[zeros_to:]


@pytest.mark.parametrize("journal_format", [PLAIN, CHECKSUMMED])
def test_a_whole_journal_is_read_to_its_end(journal_format: int) -> None:
    data = journal_bytes(ENTRIES, journal_format)
    found = whole_records(data)
    assert (found.end, found.count, found.torn, found.format) == (
        len(data),
        len(ENTRIES),
        None,
        journal_format,
    )
    assert found.end == _claimed(data)
    assert whole_records(journal_bytes([], journal_format)).torn is None


@pytest.mark.parametrize(
    "tear",
    [
        "record never written",  # the header's page went to disk, the last record's did not
        "record's end never written",  # its first page did, its last (the second length) did not
        "length cut off",  # the header claims 2 bytes past the last record
        "an older record after the new ones",  # a compaction rewriting in place, cut off
    ],
)
@pytest.mark.parametrize("journal_format", [PLAIN, CHECKSUMMED])
def test_a_torn_tail_ends_at_the_last_whole_record(tear: str, journal_format: int) -> None:
    data = journal_bytes(ENTRIES, journal_format)
    whole_end, whole_count = len(data) - _record_size(ENTRIES[-1], journal_format), len(ENTRIES) - 1
    if tear == "record never written":
        torn = _torn(data, whole_end, len(data))
    elif tear == "record's end never written":
        torn = _torn(data, len(data) - 4, len(data))
    elif tear == "length cut off":  # every record is whole; two bytes of a next length are not
        cut = bytearray(data + b"\0" * 8)
        struct.pack_into("<I", cut, LAST_RECORD_OFFSET_OFFSET, len(data) + 2)
        torn, whole_end, whole_count = bytes(cut), len(data), len(ENTRIES)
    else:
        older = journal_bytes([ENTRIES[0]], journal_format)[FIRST_RECORD_OFFSET:]  # entry 1 where 7 should be
        torn = data[:whole_end] + older + b"\0" * (len(data) - whole_end - len(older))
    found = whole_records(torn)
    assert (found.end, found.count) == (whole_end, whole_count), found
    assert found.torn is not None and f"byte {whole_end}" in found.torn, found
    assert found.claimed == _claimed(torn) and not found.followed


def test_a_journal_whose_header_was_never_written_holds_nothing() -> None:
    assert whole_records(b"").torn == "the file is shorter than its header"
    zeros = b"\0" * 4096
    found = whole_records(zeros)
    assert (found.end, found.count, found.torn) == (FIRST_RECORD_OFFSET, 0, "its header's end offset is 0")


def test_a_plain_journal_written_whole_is_the_one_upstream_writes(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    written = FileJournal(str(path))
    try:
        for entry in ENTRIES:
            written.add(*entry)
    finally:
        written._destroy()
    data = path.read_bytes()
    assert data[: _claimed(data)] == journal_bytes(ENTRIES, PLAIN)
    assert header(FIRST_RECORD_OFFSET) == journal_bytes([])


def _torn_in_the_middle(journal_format: int, *, followed: bool) -> tuple[bytes, int]:
    """A journal whose entry 7, three pages long, has its middle page never written (zeros) and, if
    `followed`, entry 8 after it whole; and where its whole records end."""
    long = (b"0123456789abcdef" * 768, 7, 3)  # 12 KiB
    entries = [*ENTRIES[:6], long, *([(b"the next one", 8, 3)] if followed else [])]
    data = journal_bytes(entries, journal_format)
    start = len(journal_bytes(ENTRIES[:6], journal_format))
    page = (start // 4096 + 1) * 4096  # the first page wholly inside entry 7
    assert page + 4096 < start + _record_size(long, journal_format)
    return _torn(data, page, page + 4096), start


def test_a_record_with_a_page_never_written_inside_is_torn() -> None:
    """Both its lengths reached the disk, a page in between did not: its checksum says so. (Upstream's
    format has none: the record reads as whole, zeros in its command.)"""
    torn, start = _torn_in_the_middle(CHECKSUMMED, followed=False)
    found = whole_records(torn)
    assert (found.end, found.count, found.followed) == (start, 6, False), found
    assert found.torn == f"the record at byte {start}: the checksum of entry 7 (term 3) is wrong"
    plain, _start = _torn_in_the_middle(PLAIN, followed=False)
    assert whole_records(plain).torn is None  # (why format 2 has a checksum)


def test_a_torn_record_followed_by_a_whole_one_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A whole record after a torn one that continues the log: not a torn tail for certain (the disk lost
    what a fsync had written, or a power cut tore one record and wrote the next): the entries dropped
    may have been acknowledged, and `mend_journal` says so (the replica then catches up before it votes,
    below)."""
    torn, start = _torn_in_the_middle(CHECKSUMMED, followed=True)
    found = whole_records(torn)
    assert (found.end, found.count, found.followed) == (start, 6, True), found
    path = tmp_path / "raft.journal"
    path.write_bytes(torn)
    seen_then: list[bytes] = []  # the journal when the replica is told (before anything is dropped)
    with caplog.at_level(logging.WARNING, logger="aether_kv.journal"):
        assert mend_journal(str(path), on_lost_entries=lambda: seen_then.append(path.read_bytes())) is True
    assert seen_then == [torn]  # (the marker that it must catch up is made while the loss still shows)
    said = [r for r in caplog.records if "with whole ones after it" in r.getMessage()]
    assert (
        len(said) == 1
        and said[0].levelno == logging.ERROR
        and "may have acknowledged" in said[0].getMessage()
    )
    assert _entries(path) == ENTRIES[:6]
    assert mend_journal(str(path), on_lost_entries=lambda: seen_then.append(b"")) is False  # mended
    assert len(seen_then) == 1


def test_a_compaction_in_place_cut_off_is_said_as_entries_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A compaction on a full disk rewrites the entries it keeps over the journal's start, marked beside
    the journal meanwhile: cut off, the journal may read whole (its header says where the rewrite had
    got to) with acknowledged entries missing. The marker says so: as entries lost (the replica then
    catches up before it votes), once."""
    path = tmp_path / "raft.journal"
    path.write_bytes(journal_bytes(ENTRIES[4:6]))  # (the rewrite had got to two of the entries it keeps)
    (tmp_path / "raft.journal.compacting").touch()
    told: list[bool] = []
    with caplog.at_level(logging.WARNING, logger="aether_kv.journal"):
        assert mend_journal(str(path), on_lost_entries=lambda: told.append(True)) is True
    assert told == [True] and not (tmp_path / "raft.journal.compacting").exists()
    said = [r for r in caplog.records if "compacted in place" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.ERROR and "2 whole entries" in said[0].getMessage()
    assert mend_journal(str(path), on_lost_entries=lambda: told.append(True)) is False
    assert _entries(path) == ENTRIES[4:6]
    path.unlink()  # its journal gone since as well: still entries lost, and the marker goes
    (tmp_path / "raft.journal.compacting").touch()
    assert mend_journal(str(path), on_lost_entries=lambda: told.append(True)) is True
    assert told == [True, True] and not (tmp_path / "raft.journal.compacting").exists()


def test_an_older_record_after_a_torn_one_is_not_taken_for_the_next() -> None:
    """After a compaction in place (a full disk), older records lie past the journal's end: a torn record
    with one of them after it is a torn tail, not a record followed by a whole one."""
    data = journal_bytes(ENTRIES)
    last = len(data) - _record_size(ENTRIES[-1])
    broken = bytearray(data + journal_bytes([(b"old", 2, 1)])[FIRST_RECORD_OFFSET:])
    broken[last + 30] ^= 0xFF  # entry 7's command: its checksum is wrong
    struct.pack_into("<I", broken, LAST_RECORD_OFFSET_OFFSET, len(broken))
    found = whole_records(bytes(broken))
    assert (found.end, found.followed) == (last, False), found


def test_an_earlier_terms_record_after_a_torn_one_is_not_taken_for_the_next() -> None:
    """A follower truncated entries 7 and 8 of term 3 (fsynced) and wrote 7 and 8 of term 4 over them,
    the same sizes; the power cut kept the new 7's first page only. The old 8 after it is whole and has
    the next index, but an earlier term than the torn 7: the new records were never acknowledged, and the
    replica need not catch up."""
    long = b"0123456789abcdef" * 768  # 12 KiB: entry 7 spans pages
    old = journal_bytes([*ENTRIES[:6], (long, 7, 3), (b"eight", 8, 3)])
    new = journal_bytes([*ENTRIES[:6], (long.upper(), 7, 4), (b"EIGHT", 8, 4)])
    start = len(journal_bytes(ENTRIES[:6]))
    page = (start // 4096 + 1) * 4096
    torn = new[:page] + old[page:]  # (the header, and the new 7's first page)
    found = whole_records(torn)
    assert (found.end, found.count) == (start, 6) and "checksum of entry 7 (term 4)" in str(found.torn)
    assert not found.followed


def test_a_journal_of_an_unknown_format_is_refused_with_its_format(tmp_path: Path) -> None:
    """A journal a later version wrote: the replica does not start, says why in one line (its path and
    format), and leaves the file as it was."""
    data = bytearray(journal_bytes(ENTRIES))
    struct.pack_into("<I", data, LAST_RECORD_OFFSET_OFFSET - 4, 7)
    with pytest.raises(JournalFormatError, match="in format 7; this version reads formats 1 and 2"):
        whole_records(bytes(data))
    path = tmp_path / "d" / "raft.journal"
    path.parent.mkdir()
    path.write_bytes(data)
    with pytest.raises(JournalFormatError, match=f"^{path}: the Raft journal is in format 7"):
        DurableJournal(str(path))
    secret = tmp_path / "secret"
    secret.write_text("a-test-secret-of-16+\n")
    raft, client = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "aether_kv", "serve", "--id", "kv1", "--data-dir", str(path.parent)]
    command += ["--raft", raft, "--client", client, "--secret-file", str(secret)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    said = [line for line in done.stderr.splitlines() if "aether-kv: error:" in line]
    assert said == [
        f"aether-kv: error: {path}: the Raft journal is in format 7; this version reads formats 1 and 2 (was"
        " it written by a later version of aether-kv?)"
    ], done.stderr
    assert "Traceback" not in done.stderr
    assert path.read_bytes() == data  # left as it was


def test_a_plain_journal_is_read_appended_to_and_compacted_into_the_checksummed_format(
    tmp_path: Path,
) -> None:
    """A journal an earlier version wrote (upstream's format): read, appended to in its format (upstream
    still reads it), and written in the checksummed format at its next compaction."""
    path = tmp_path / "raft.journal"
    path.write_bytes(journal_bytes(ENTRIES[:4], PLAIN))
    _durable(path, ENTRIES[4:])
    assert format_of(path.read_bytes()) == PLAIN and _entries(path) == ENTRIES
    upstream = FileJournal(str(path))
    try:
        assert [upstream[i] for i in range(len(upstream))] == ENTRIES
    finally:
        upstream._destroy()
    journal = DurableJournal(str(path))
    try:
        journal.deleteEntriesTo(2)
        journal.add(b"after", 8, 3)
        journal.sync()
    finally:
        journal._destroy()
    assert format_of(path.read_bytes()) == CHECKSUMMED
    assert _entries(path) == [*ENTRIES[2:], (b"after", 8, 3)]
    assert whole_records(path.read_bytes()).count == len(ENTRIES) - 1


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
    path.write_bytes(journal_bytes(ENTRIES, PLAIN))  # upstream's format, which upstream reads (below)
    data = path.read_bytes()
    end = _claimed(data)
    path.write_bytes(_torn(data, end - _record_size(ENTRIES[-1], PLAIN), end))
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
