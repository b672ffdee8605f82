"""The Raft journal on disk: pysyncobj's `FileJournal` made durable (`DurableJournal`). Appends mark it
dirty and `sync()` fsyncs it (`_raft.py` decides when: before any message but a leader's append-entries,
and around every tick); an append goes only into blocks reserved beforehand (`room`, `_disk.py`), so a
full disk is an error, never a SIGBUS; a failed fsync is sticky. After a power cut, what follows the last
whole record is dropped as it opens (`_journal_format.py`: upstream could not read it and the replica
never started again; `mend_journal` says when what it dropped may have been acknowledged); its records
carry a checksum (format 2, `_journal_format.py`; a journal of format 1 is read, and compacted into 2);
a compaction writes the entries it keeps into a new file renamed over the journal
(upstream rewrote them in place, where a power cut could tear acknowledged entries); the term, vote and
commit index file is written whole or not at all (fsynced before its rename). Runs on pysyncobj's tick
thread but for `sync`, which may be called from any thread.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pysyncobj.journal import (
    FIRST_RECORD_OFFSET,
    LAST_RECORD_OFFSET_OFFSET,
    FileJournal,
    MetaStorer,
    ResizableFile,
)
from pysyncobj.pickle import dumps, to_bytes

from ._disk import (
    PROBE_BYTES,
    PROBE_PERIOD,
    DiskState,
    JournalFullError,
    allocate,
    create_durably,
    durable_replace,
    fsync_path,
    is_disk_full,
    record_bytes,
    remove_durably,
    reservation_target,
)
from ._errors import JournalFormatError
from ._journal_format import WholeRecords, entries, format_of, header, journal_bytes, record, whole_records

log = logging.getLogger("aether_kv.journal")

# The journal is written through a shared mmap. On Linux that mapping is the file's page cache, and
# fsync writes back every dirty page of the file, mapped ones included (msync(MS_SYNC) is itself an
# fsync of the mapped range, mm/msync.c): msync first only added a second device flush to every sync
# (0.3 ms → 0.9 ms per sync measured on ext4, benchmarks/README.md). Elsewhere msync stays.
MSYNC_BEFORE_FSYNC = sys.platform != "linux"

_COMPACTED = ".compacted"  # the suffix of a compaction's new journal until it is renamed over the old
_COMPACTING = ".compacting"  # beside the journal while a compaction rewrites it in place (a full disk)


def mend_journal(path: str, on_lost_entries: Callable[[], None] | None = None) -> bool:
    """Before the journal at `path` is read: drop what follows its last whole record (a power cut while it
    was being written: `_journal_format`), saying so, and make that durable. True when what was dropped
    may have been acknowledged: whole records followed the torn one (`WholeRecords.followed`), or a
    compaction in place was cut off (its marker is there: the entries it kept may be torn or missing
    however whole the journal looks); then `on_lost_entries` is called first, before anything is
    dropped (what must survive a crash that would leave the journal mended and the loss forgotten).
    Raises JournalFormatError for a journal of a format this version does not know."""
    compacting = path + _COMPACTING
    cut_off = os.path.exists(compacting)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        if not cut_off:
            return False
        if on_lost_entries is not None:  # (its compaction cut off, and the journal gone since)
            on_lost_entries()
        remove_durably(compacting)
        return True
    try:
        size = os.fstat(fd).st_size
        if size:
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
                try:
                    found = whole_records(mapped)
                except JournalFormatError as error:
                    raise JournalFormatError(f"{path}: {error.message}") from None
        else:  # (created, and the power cut before its header was written: no map of 0 bytes)
            found = whole_records(b"")
        lost = found.followed or cut_off
        if lost and on_lost_entries is not None:
            on_lost_entries()
        if cut_off:
            log.error(
                "the Raft journal %s was being compacted in place (the disk was full) when the replica"
                " stopped: the entries it kept may be torn or missing, among them entries this replica may"
                " have acknowledged; %d whole entries read",
                path,
                found.count,
            )
        if found.torn is not None:
            _drop_torn_tail(fd, path, found, size, found.followed or cut_off)
        if cut_off:
            remove_durably(compacting)
        return lost
    finally:
        os.close(fd)


def _drop_torn_tail(fd: int, path: str, found: WholeRecords, size: int, maybe_acknowledged: bool) -> None:
    """Drop what follows the whole records `found` in the journal open at `fd`, saying so (as an error if
    it `maybe_acknowledged`), durably."""
    dropped = min(found.claimed, size) - found.end  # zeroed: never read as a record after a later cut
    if maybe_acknowledged:
        log.error(
            "the Raft journal %s has a record that is not whole, with whole ones after it or in a"
            " compaction cut off: %s; %d entries kept, the %d bytes after them dropped, among them entries"
            " this replica may have acknowledged",
            path,
            found.torn,
            found.count,
            max(dropped, 0),
        )
    else:
        log.warning(
            "the Raft journal %s ends in a record not wholly written (a power cut or crash before its"
            " fsync: never acknowledged): %s; %d entries kept, the %d bytes after them dropped",
            path,
            found.torn,
            found.count,
            max(dropped, 0),
        )
    os.pwrite(fd, header(found.end, found.format), 0)
    if dropped > 0:
        os.pwrite(fd, bytes(dropped), found.end)
    os.fsync(fd)


class _DurableMeta(MetaStorer):
    """Where the journal keeps its term, vote and commit index (`{journal}.meta`): upstream's, but the new
    file is fsynced before it is renamed over the old one, and the rename made durable (upstream renamed
    at once: a power cut could leave an empty file, and the replica start with no term and no vote, free
    to vote a second time in a term it had voted in)."""

    def storeMeta(self, meta: dict[str, Any]) -> None:
        temporary = self.getPath() + ".tmp"
        try:
            with open(temporary, "wb") as file:
                file.write(dumps(meta))
            durable_replace(temporary, self.getPath())
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


class _Journal(FileJournal):
    """Upstream's journal, read in either format and appended to in its own (`_journal_format`: a new
    journal is `CHECKSUMMED`), its term, vote and commit index written durably (`_DurableMeta`)."""

    def __init__(self, path: str) -> None:  # (upstream's reads format 1 only: not called)
        journal_file = ResizableFile(path, defaultContent=header(FIRST_RECORD_OFFSET))
        mapped = journal_file._ResizableFile__mm
        self.format = format_of(mapped)
        (end,) = struct.unpack_from("<I", mapped, LAST_RECORD_OFFSET_OFFSET)
        end = max(end, FIRST_RECORD_OFFSET)
        self._FileJournal__journalFile = journal_file
        self._FileJournal__journal = entries(mapped, end)
        self._FileJournal__currentOffset = end
        self._FileJournal__metaStorer = _DurableMeta(path + ".meta")
        self._FileJournal__meta = self._FileJournal__metaStorer.getMeta()
        self._FileJournal__metaSaved = True

    def add(self, command: bytes, idx: int, term: int) -> None:
        self._FileJournal__journal.append((command, idx, term))
        data = record(to_bytes(command), idx, term, self.format)
        offset = self._FileJournal__currentOffset
        self._FileJournal__journalFile.write(offset, data)
        self._FileJournal__currentOffset = offset + len(data)
        self._FileJournal__setLastRecordOffset(offset + len(data))


def open_journal(path: str) -> _Journal:
    """The journal at `path` (not made durable: `DurableJournal` wraps it); an unreadable meta file
    said."""
    journal = _Journal(path)
    meta = path + ".meta"
    if not journal._FileJournal__meta and os.path.exists(meta) and os.path.getsize(meta) > 0:
        log.error(
            "the Raft term and vote in %s cannot be read: this replica starts at term 0 with no vote (if it"
            " voted in a term still under way, it may vote again in it)",
            meta,
        )
    return journal


class DurableJournal:
    """Wraps pysyncobj's FileJournal: appends mark it dirty, `sync()` makes them durable; an append goes
    only into blocks reserved beforehand (`room`), so a full disk is an error, never a SIGBUS."""

    def __init__(self, path: str, disk: DiskState | None = None, *, mended: bool = False) -> None:
        """`mended`: `mend_journal` has run on `path` (else it runs here)."""
        if not mended:
            mend_journal(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + _COMPACTED)  # a compaction's new journal, cut off before its rename
        self._inner = open_journal(path)
        self._path = path
        self._meta_path = path + ".meta"
        self._dirty = False
        self._closed = False
        self._lock = threading.Lock()
        self._sync_failed: OSError | None = None
        self.disk = disk if disk is not None else DiskState()
        self._reserved = 0  # bytes from the file's start known to be allocated (0: not checked yet)
        self._refused = 0  # the size of the last append that found no room (room again must fit it)
        self._probed_at = 0.0

    # ------------------------------------------------------------ space

    def room(self, nbytes: int) -> bool:
        """Whether `nbytes` more journal bytes fit, reserving them (and up to a chunk more) if needed.
        False, with the disk marked full, when the file system has no room."""
        end = self._inner._FileJournal__currentOffset + nbytes
        if end <= self._reserved:
            return True
        try:
            self._reserve(reservation_target(self._reserved, end))
        except OSError as error:
            if not is_disk_full(error):
                raise
            try:
                self._reserve(end)  # the chunk did not fit: maybe this append still does
            except OSError as again:
                if not is_disk_full(again):
                    raise
                self._refused = nbytes
                self.disk.full("the Raft journal", self._path)
                return False
        return True

    def _reserve(self, end: int) -> None:
        resizable = self._inner._FileJournal__journalFile
        fd = resizable._ResizableFile__f.fileno()
        # what lies below the journal's end was written, so allocated (and must not be overwritten)
        start = max(min(self._reserved, end), self._inner._FileJournal__currentOffset)
        if end > start:
            allocate(fd, start, end - start)  # extends the file: upstream never resizes it again
        self._reserved = end
        mapped = resizable._ResizableFile__mm
        size = os.fstat(fd).st_size
        if len(mapped) < size:
            mapped.resize(size)  # map what was reserved (upstream writes through the map)

    def recheck(self) -> None:
        """On the tick thread: while the disk is full, see (at most every PROBE_PERIOD) whether fresh
        space is there again, enough for the append that was refused."""
        if self.disk.problem is None:
            return
        now = time.monotonic()
        if now - self._probed_at < PROBE_PERIOD:
            return
        self._probed_at = now
        wanted = max(self._inner._FileJournal__currentOffset + self._refused, self._reserved + PROBE_BYTES)
        try:
            self._reserve(wanted)
        except OSError as error:
            if not is_disk_full(error):
                raise
            return
        self.disk.room_again()

    # ------------------------------------------------------------ upstream's journal interface

    def add(self, command: bytes, idx: int, term: int) -> None:
        needed = record_bytes([command])
        if not self.room(needed):
            raise JournalFullError(self._path, needed)
        self._inner.add(command, idx, term)
        self._dirty = True

    def clear(self) -> None:
        self._inner.clear()
        self._dirty = True

    def deleteEntriesFrom(self, entry_from: int) -> None:
        """Drop the entries from `entry_from` on (a follower's conflicting entries), durably at once: the
        entries that follow are written over them, and a power cut in between must find either the old
        records or the new ones at a record's start, not a mix of both with the same index and term."""
        self._inner.deleteEntriesFrom(entry_from)
        self._dirty = True
        self.sync()

    def deleteEntriesTo(self, entry_to: int) -> None:
        """Drop the entries before `entry_to` (a compaction: a snapshot holds them). Upstream rewrites the
        journal in place from its start: a power cut before the next fsync could leave the entries kept
        half overwritten, acknowledged ones among them. Instead the entries kept go into a new file,
        fsynced, renamed over the journal. On a full disk, in place as upstream does (no new space), and
        fsynced at once. Once renamed, a failure to open the new file is a failed sync: nothing is
        acknowledged any more (the old file, still open, has no name: what went there would be lost)."""
        kept = self._inner._FileJournal__journal[entry_to:]
        temporary = self._path + _COMPACTED
        try:
            with open(temporary, "wb") as file:
                file.write(journal_bytes(kept))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self._path)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            if not is_disk_full(error):
                raise
            log.warning("no room for a compacted Raft journal (%s): compacted in place", error)
            self._compact_in_place(entry_to)
            return
        with self._lock:
            try:
                fsync_path(os.path.dirname(self._path) or ".")
                new = open_journal(self._path)
            except Exception as error:
                failure = OSError(f"the compacted journal {self._path} could not be opened: {error}")
                log.critical("%s: restart this replica", failure)
                self._sync_failed = failure
                raise failure from error
            old, self._inner = self._inner, new
            # the term, vote and commit index as this replica knows them (the commit index is stored
            # once a second: the file may be behind)
            new._FileJournal__meta = old._FileJournal__meta
            new._FileJournal__metaSaved = old._FileJournal__metaSaved
            self._reserved = 0  # the new file's blocks are reserved at the next append
            self._dirty = False  # everything kept was just fsynced
            with contextlib.suppress(OSError):  # (the old file, renamed over: nothing of it is read again)
                old._destroy()

    def _compact_in_place(self, entry_to: int) -> None:
        """Upstream's compaction: the entries kept rewritten over the journal's start (no new space), then
        fsynced; marked beside the journal meanwhile (a marker takes no data block), so that a replica
        cut off in between knows that entries it acknowledged may be torn (`mend_journal`)."""
        marker: str | None = self._path + _COMPACTING
        try:
            create_durably(marker)
        except OSError as error:
            log.error(
                "could not mark the Raft journal %s as compacted in place (%s): a power cut during this"
                " compaction could tear entries this replica acknowledged, unseen at its next start",
                self._path,
                error,
            )
            with contextlib.suppress(OSError):  # (made, and its fsync failed: no false alarm later)
                os.unlink(marker)
            marker = None
        self._inner.deleteEntriesTo(entry_to)  # rewrites a prefix of what is written: no new space
        self._dirty = True
        self.sync()
        if marker is not None:
            with contextlib.suppress(OSError):  # (left: the next start is careful for nothing)
                remove_durably(marker)

    def setCurrentTerm(self, term: int, voted_for: Any) -> None:
        """Durable before it returns (`_DurableMeta`); on a full disk it raises with the term and vote
        unchanged, on disk and in this journal's copy (upstream updates its copy before it writes the
        file)."""
        self.sync()
        meta = self._inner._FileJournal__meta
        before = dict(meta)
        try:
            self._inner.setCurrentTerm(term, voted_for)
        except OSError as error:
            meta.clear()
            meta.update(before)
            if is_disk_full(error):
                self.disk.full("the Raft term and vote", self._meta_path)
            raise

    def setRaftCommitIndex(self, index: int) -> None:
        # A follower sets it on every heartbeat; upstream then rewrites the meta file once a second even
        # when the index did not move (an idle replica's only disk write).
        if index != self._inner.getRaftCommitIndex():
            self._inner.setRaftCommitIndex(index)

    def onOneSecondTimer(self) -> None:
        # The stored commit index is a hint for the start (Raft learns it again from the leader): on a
        # full disk it waits for room; it is no reason to stop the tick.
        try:
            self._inner.onOneSecondTimer()
        except OSError as error:
            if not is_disk_full(error):
                raise
            self.disk.full("the Raft commit index", self._meta_path)

    def _destroy(self) -> None:  # pysyncobj closes its journal on its tick thread when destroyed
        with self._lock:
            with contextlib.suppress(OSError):  # a failed sync was logged when it happened
                self._sync_locked()
            self._closed = True
            self._inner._destroy()

    def sync(self) -> None:
        if not self._dirty and self._sync_failed is None:
            return
        with self._lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        if self._sync_failed is not None:
            # After a failed fsync Linux may drop the dirty pages, and the next fsync succeeds without
            # them: nothing may be acknowledged any more. Restarting re-reads the journal from disk.
            raise self._sync_failed
        if self._dirty and not self._closed:
            self._dirty = False  # before the fsync: an append meanwhile makes it dirty again
            file = self._inner._FileJournal__journalFile
            try:
                if MSYNC_BEFORE_FSYNC:
                    file.flush()  # msync of the mapped journal
                os.fsync(file._ResizableFile__f.fileno())
            except OSError as error:
                log.critical(
                    "fsync of the Raft journal %s failed (%s): restart this replica", self._path, error
                )
                self._sync_failed = error
                raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __getitem__(self, item: Any) -> Any:
        return self._inner[item]

    def __len__(self) -> int:
        return len(self._inner)
