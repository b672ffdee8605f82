"""pysyncobj's journal file, read and written whole: its records, where the last whole one ends (a power
cut can tear the tail), and the bytes of a journal holding given records (a compaction writes a new file
instead of rewriting the old one in place). Pure; `_journal.py` does the file I/O.

The format (pysyncobj 0.3.17, `pysyncobj/journal.py`): a header (the name `PYSYNCOBJ`, its version, the
format version, then the offset where the records end), then the records, each its length (4 bytes,
little-endian), the entry's index and term (8 bytes each) and its command, and its length again. Upstream
writes format 1 (`PLAIN`). This project writes format 2 (`CHECKSUMMED`): the same, with a CRC-32 of the
entry's index, term and command after the command, inside the record's length (etcd's WAL checks each
record the same way). A journal keeps the format it was created with until a compaction writes it anew:
a format-1 journal of an earlier version is read, appended to and compacted into format 2.

The journal is written through a mapping and made durable by one fsync per batch (`_raft.py`); until that
fsync has returned, the kernel may have written any of its dirty pages and not the others. A power cut
then can leave the header's end offset on disk and not the last records, or part of them: upstream's
load then reads zeros as a record and raises (`struct.error`), and the replica could never start again.
What lies past the last whole record was never fsynced, so never acknowledged: it is dropped, as a
replica that had not received it would not have it, and the leader sends it again. Without a checksum, a
record longer than a page whose middle page never reached the disk reads as whole (zeros inside its
command); with one, it is torn too. A torn record followed by a whole one that continues the log is not a
torn tail for certain (the disk lost what was written before a fsync, or a power cut tore one record of a
batch and wrote the next): what follows it is dropped as well, and `WholeRecords.followed` says so, since
those entries may have been acknowledged.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

import attrs
from pysyncobj.journal import (
    APP_NAME,
    APP_VERSION,
    FIRST_RECORD_OFFSET,
    LAST_RECORD_OFFSET_OFFSET,
    NAME_SIZE,
    VERSION_SIZE,
)

from ._errors import JournalFormatError

PLAIN = 1  # upstream's records
CHECKSUMMED = 2  # each record's command followed by a CRC-32 of its index, term and command
FORMATS = (PLAIN, CHECKSUMMED)
FORMAT_OFFSET = NAME_SIZE + VERSION_SIZE  # where the header keeps the format version

_LENGTH = struct.Struct("<I")
_CRC = struct.Struct("<I")
_INDEX_TERM = struct.Struct("<QQ")
_RECORD_OVERHEAD = 2 * _LENGTH.size  # a record's length, before and after it

Entry = tuple[bytes, int, int]  # command, index, term (as pysyncobj's journal holds them)


@attrs.frozen
class WholeRecords:
    """What of a journal file can be read: its records end at `end`, `count` of them; `torn` says why the
    bytes after `end`, up to the header's end offset `claimed`, are not a record (None: none are);
    `followed`: a whole record that continues the log follows the torn one (see the module's doc);
    `format`: the file's format (`PLAIN` or `CHECKSUMMED`; a file without a header: `CHECKSUMMED`)."""

    end: int
    count: int
    claimed: int
    torn: str | None
    followed: bool = False
    format: int = CHECKSUMMED


def format_of(journal: bytes | memoryview) -> int:
    """The format of a journal file (`CHECKSUMMED` for one whose header was never written: zeros, or
    shorter than a header); raises JournalFormatError for a format this version does not know."""
    if len(journal) < FIRST_RECORD_OFFSET:
        return CHECKSUMMED
    (version,) = _LENGTH.unpack_from(journal, FORMAT_OFFSET)
    if version == 0:
        return CHECKSUMMED
    if version not in FORMATS:
        raise JournalFormatError(
            f"the Raft journal is in format {version}; this version reads formats {PLAIN} and"
            f" {CHECKSUMMED} (was it written by a later version of aether-kv?)"
        )
    return int(version)


def header(last_record_offset: int, journal_format: int = CHECKSUMMED) -> bytes:
    """A journal's header, its records ending at `last_record_offset`."""
    name = APP_NAME + b"\0" * (NAME_SIZE - len(APP_NAME))
    version = APP_VERSION + b"\0" * (VERSION_SIZE - len(APP_VERSION))
    return name + version + struct.pack("<II", journal_format, last_record_offset)


def record(command: bytes, index: int, term: int, journal_format: int = CHECKSUMMED) -> bytes:
    """One record of a journal in `journal_format`."""
    data = _INDEX_TERM.pack(index, term) + command
    if journal_format == CHECKSUMMED:
        data += _CRC.pack(zlib.crc32(data))
    length = _LENGTH.pack(len(data))
    return length + data + length


def record_overhead(journal_format: int) -> int:
    """The bytes a record takes besides its command."""
    return _RECORD_OVERHEAD + _INDEX_TERM.size + (_CRC.size if journal_format == CHECKSUMMED else 0)


def whole_records(journal: bytes | memoryview) -> WholeRecords:
    """Where the whole records of `journal` (the file's bytes) end: each record's two lengths agree, it
    fits before the header's end offset, its entry follows the one before (index + 1, term not lower),
    and in a `CHECKSUMMED` journal its checksum is right. A file shorter than its header, or whose
    header's end offset is inside it (never written), holds none."""
    journal_format = format_of(journal)
    if len(journal) < FIRST_RECORD_OFFSET:
        return WholeRecords(FIRST_RECORD_OFFSET, 0, 0, "the file is shorter than its header")
    (claimed,) = _LENGTH.unpack_from(journal, LAST_RECORD_OFFSET_OFFSET)
    if claimed < FIRST_RECORD_OFFSET:
        return WholeRecords(
            FIRST_RECORD_OFFSET, 0, claimed, f"its header's end offset is {claimed}", format=journal_format
        )
    limit = min(claimed, len(journal))
    offset, count, previous = FIRST_RECORD_OFFSET, 0, None
    while offset < claimed:
        torn = _record_problem(journal, offset, limit, previous, journal_format)
        if torn is not None:
            followed = _followed(journal, offset, limit, previous, journal_format)
            return WholeRecords(
                offset, count, claimed, f"the record at byte {offset}: {torn}", followed, journal_format
            )
        (size,) = _LENGTH.unpack_from(journal, offset)
        previous = _INDEX_TERM.unpack_from(journal, offset + _LENGTH.size)
        offset += size + _RECORD_OVERHEAD
        count += 1
    return WholeRecords(offset, count, claimed, None, format=journal_format)


def _record_end(journal: bytes | memoryview, offset: int, limit: int, journal_format: int) -> int | str:
    """Where the record at `offset` ends, if its lengths fit before `limit` and agree; else why not."""
    if offset + _LENGTH.size > limit:
        return "its length is cut off"
    (size,) = _LENGTH.unpack_from(journal, offset)
    end = offset + size + _RECORD_OVERHEAD
    if size < record_overhead(journal_format) - _RECORD_OVERHEAD or end > limit:
        return f"a length of {size} bytes does not fit"
    (after,) = _LENGTH.unpack_from(journal, end - _LENGTH.size)
    if after != size:
        return f"its lengths differ ({size}, then {after})"
    return end


def _record_problem(
    journal: bytes | memoryview,
    offset: int,
    limit: int,
    previous: tuple[int, int] | None,
    journal_format: int,
) -> str | None:
    """Why the record at `offset` is not whole (None if it is)."""
    end = _record_end(journal, offset, limit, journal_format)
    if isinstance(end, str):
        return end
    index, term = _INDEX_TERM.unpack_from(journal, offset + _LENGTH.size)
    if previous is not None and (index != previous[0] + 1 or term < previous[1]):
        return f"entry {index} (term {term}) does not follow entry {previous[0]} (term {previous[1]})"
    if journal_format == CHECKSUMMED:
        checksum_at = end - _LENGTH.size - _CRC.size
        (checksum,) = _CRC.unpack_from(journal, checksum_at)
        if zlib.crc32(memoryview(journal)[offset + _LENGTH.size : checksum_at]) != checksum:
            return f"the checksum of entry {index} (term {term}) is wrong"
    return None


def _followed(
    journal: bytes | memoryview,
    offset: int,
    limit: int,
    previous: tuple[int, int] | None,
    journal_format: int,
) -> bool:
    """Whether the record after the torn one at `offset` is whole and continues the log (the entry after
    the torn one's place): only where the torn one's lengths agree (its extent is known), and only in a
    `CHECKSUMMED` journal (without a checksum, a torn record is told from a whole one by its lengths
    alone: one whose lengths agree is torn only where its entry does not follow, older records a
    compaction in place left, or garbage)."""
    end = _record_end(journal, offset, limit, journal_format)
    if journal_format != CHECKSUMMED or isinstance(end, str):
        return False
    # the torn one's place in the log: after `previous`, or (the first record) what it says of itself;
    # the next is of its term or later (an older record a follower's truncation left past a new one torn,
    # of an earlier term, is not: those were never acknowledged)
    torn_index, torn_term = _INDEX_TERM.unpack_from(journal, offset + _LENGTH.size)
    place = (previous[0] + 1, max(previous[1], torn_term)) if previous else (torn_index, torn_term)
    return _record_problem(journal, end, limit, place, journal_format) is None


def entries(journal: bytes | memoryview, end: int) -> list[Entry]:
    """The entries of the records of `journal` up to byte `end` (all whole: `whole_records`)."""
    journal_format = format_of(journal)
    trailer = _CRC.size if journal_format == CHECKSUMMED else 0
    found: list[Entry] = []
    offset = FIRST_RECORD_OFFSET
    view = memoryview(journal)
    while offset < end:
        (size,) = _LENGTH.unpack_from(journal, offset)
        index, term = _INDEX_TERM.unpack_from(journal, offset + _LENGTH.size)
        start = offset + _LENGTH.size + _INDEX_TERM.size
        found.append((bytes(view[start : offset + _LENGTH.size + size - trailer]), index, term))
        offset += size + _RECORD_OVERHEAD
    return found


def journal_bytes(entries: Iterable[Entry], journal_format: int = CHECKSUMMED) -> bytes:
    """A whole journal file holding `entries` (command, index, term)."""
    body = b"".join(record(command, index, term, journal_format) for command, index, term in entries)
    return header(FIRST_RECORD_OFFSET + len(body), journal_format) + body
