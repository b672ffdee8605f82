"""A replica's disk space: how much of the Raft journal to reserve, what counts as "the disk is full", and
the one record of whether it is. No pysyncobj here (`_raft.py` and `_pysyncobj_patches.py` use it).

pysyncobj's journal is a memory-mapped file grown with ftruncate, which allocates nothing: a store into
a mapped page the file system cannot back (a full disk) kills the process with SIGBUS. The journal
therefore reserves its blocks first (`os.posix_fallocate`, which fails cleanly with ENOSPC) and writes
only into reserved space; `reservation_target` says how much to ask for.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading

import attrs

log = logging.getLogger("aether_kv.raft")

RESERVE_CHUNK = 1 << 20  # the journal is reserved a mebibyte at a time (one fallocate per MiB of log)
PROBE_BYTES = 64 << 10  # while full, "is there room again?" asks for this much new space
PROBE_PERIOD = 0.5  # and asks at most this often (seconds)
# A journal record: its length (4 bytes), index and term (16), its checksum (4), its length again (4); a
# journal of upstream's format (no checksum) takes 4 bytes less a record.
RECORD_OVERHEAD = 28
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` says the file system has no room (ENOSPC, or EDQUOT: out of quota)."""
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def record_bytes(commands: list[bytes]) -> int:
    """The journal bytes that appending `commands` takes (pysyncobj's FileJournal record format)."""
    return sum(len(command) + RECORD_OVERHEAD for command in commands)


def reservation_target(reserved: int, needed_end: int, chunk: int = RESERVE_CHUNK) -> int:
    """How far to reserve the journal when a write must reach `needed_end` and `reserved` bytes are
    reserved: `reserved` if that is enough, else the next multiple of `chunk` at or past `needed_end`."""
    if needed_end <= reserved:
        return reserved
    return -(-needed_end // chunk) * chunk


def refuse_for_disk(*, leader_has_room: bool, replicas: int, without_room: int) -> bool:
    """Whether a leader refuses proposals for want of disk space: it cannot journal them itself, or the
    replicas whose disks are full (`without_room` of `replicas`, the leader included) leave no majority
    that could; an entry it took then would wait, uncommitted, for space to be freed (the writer
    hearing only that its outcome is unknown)."""
    return not leader_has_room or replicas - without_room <= replicas // 2


def can_hand_over(*, replicas: int, followers_with_room: int) -> bool:
    """Whether a leader whose own disk is full should hand its leadership over: the followers with room
    are a majority of the replicas by themselves (the new leader's entries need no room here), so a
    leader among them can take writes; otherwise it keeps leading (reads go on) and refuses writes."""
    return followers_with_room > replicas // 2


def allocate(fd: int, offset: int, length: int) -> None:
    """Make the file system back `length` bytes of `fd` from `offset` (the file grows to reach them);
    OSError (ENOSPC) when it cannot. posix_fallocate where the platform has it (Linux), else zeros
    written there: either way no page of the range is a hole when it returns."""
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, offset, length)
        return
    zeros = bytes(min(length, 1 << 20))
    end = offset + length
    while offset < end:
        offset += os.pwrite(fd, zeros[: end - offset], offset)


class JournalFullError(OSError):
    """The journal has no room for an append: nothing was written (raised before the write)."""

    def __init__(self, path: str, needed: int) -> None:
        super().__init__(errno.ENOSPC, f"no room for {needed} more bytes in the Raft journal", path)


@attrs.frozen
class DiskProblem:
    """Why this replica's disk is full: what failed to be written, and where."""

    what: str  # "the Raft journal", "the Raft term and vote", ...
    path: str

    def describe(self, replica: str) -> str:
        directory = os.path.dirname(self.path) or "."
        return (
            f"KV replica {replica}: disk full: {self.what} could not be written in {directory};"
            " it refuses writes it cannot store until space is freed there"
        )


class DiskState:
    """Whether this replica's disk is full, changed from the tick thread and read from any thread.
    Logged once per change (never per refused write)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._problem: DiskProblem | None = None

    @property
    def problem(self) -> DiskProblem | None:
        with self._lock:
            return self._problem

    def full(self, what: str, path: str) -> None:
        with self._lock:
            was, self._problem = self._problem, DiskProblem(what=what, path=path)
        if was is None:
            log.error(
                "disk full: %s could not be written (%s): refusing writes until space is freed there",
                what,
                path,
            )

    def room_again(self) -> None:
        with self._lock:
            was, self._problem = self._problem, None
        if was is not None:
            log.warning("the disk has room again (%s): writes resume", was.path)


def fsync_path(path: str) -> None:
    """fsync a file or directory by name (a missing one is skipped)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_durably(path: str) -> None:
    """An empty file at `path` (a marker), on disk with its name before this returns."""
    with open(path, "wb") as file:
        os.fsync(file.fileno())
    fsync_path(os.path.dirname(path) or ".")


def remove_durably(path: str) -> None:
    """`path` gone (if it was there), its removal on disk before this returns."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fsync_path(os.path.dirname(path) or ".")


def durable_replace(temporary: str, final: str) -> None:
    """Rename `temporary` over `final` once its data is on disk, then make the rename durable: a crash
    leaves the old file or the whole new one, never a short one (pysyncobj renamed without an fsync)."""
    fsync_path(temporary)
    os.replace(temporary, final)
    fsync_path(os.path.dirname(final) or ".")
