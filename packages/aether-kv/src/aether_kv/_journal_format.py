"""pysyncobj's journal file, read and written whole: where its last whole record ends (a power cut can tear
the tail), and the bytes of a journal holding given records (a compaction writes a new file instead of
rewriting the old one in place). Pure; `_journal.py` does the file I/O.

The format (pysyncobj 0.3.17, `pysyncobj/journal.py`): a header (the name `PYSYNCOBJ`, its version, the
format version, then the offset where the records end), then the records, each its length (4 bytes,
little-endian), the entry's index and term (8 bytes each) and its command, and its length again.

The journal is written through a mapping and made durable by one fsync per batch (`_raft.py`); until that
fsync has returned, the kernel may have written any of its dirty pages and not the others. A power cut
then can leave the header's end offset on disk and not the last records, or part of them: upstream's
load then reads zeros as a record and raises (`struct.error`), and the replica could never start again.
What lies past the last whole record was never fsynced, so never acknowledged: it is dropped, as a
replica that had not received it would not have it, and the leader sends it again.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import attrs
from pysyncobj.journal import (
    APP_NAME,
    APP_VERSION,
    FIRST_RECORD_OFFSET,
    JOURNAL_FORMAT_VERSION,
    LAST_RECORD_OFFSET_OFFSET,
    NAME_SIZE,
    VERSION_SIZE,
)

_LENGTH = struct.Struct("<I")
_INDEX_TERM = struct.Struct("<QQ")
_RECORD_OVERHEAD = 2 * _LENGTH.size  # a record's length, before and after it


@attrs.frozen
class WholeRecords:
    """What of a journal file can be read: its records end at `end`, `count` of them; `torn` says why the
    bytes after `end`, up to the header's end offset `claimed`, are not a record (None: none are)."""

    end: int
    count: int
    claimed: int
    torn: str | None


def header(last_record_offset: int) -> bytes:
    """A journal's header, its records ending at `last_record_offset`."""
    name = APP_NAME + b"\0" * (NAME_SIZE - len(APP_NAME))
    version = APP_VERSION + b"\0" * (VERSION_SIZE - len(APP_VERSION))
    return name + version + struct.pack("<II", JOURNAL_FORMAT_VERSION, last_record_offset)


def whole_records(journal: bytes | memoryview) -> WholeRecords:
    """Where the whole records of `journal` (the file's bytes) end: each record's two lengths agree, it
        fits before the header's end offset, and its entry follows the one before (index + 1, term not
        lower). A file shorter than its header, or whose header's end offset is inside it (never written),
    holds none."""
    if len(journal) < FIRST_RECORD_OFFSET:
        return WholeRecords(FIRST_RECORD_OFFSET, 0, 0, "the file is shorter than its header")
    (claimed,) = _LENGTH.unpack_from(journal, LAST_RECORD_OFFSET_OFFSET)
    if claimed < FIRST_RECORD_OFFSET:
        return WholeRecords(FIRST_RECORD_OFFSET, 0, claimed, f"its header's end offset is {claimed}")
    limit = min(claimed, len(journal))
    offset, count, previous = FIRST_RECORD_OFFSET, 0, None
    while offset < claimed:
        torn = _record_problem(journal, offset, limit, previous)
        if torn is not None:
            return WholeRecords(offset, count, claimed, f"the record at byte {offset}: {torn}")
        (size,) = _LENGTH.unpack_from(journal, offset)
        previous = _INDEX_TERM.unpack_from(journal, offset + _LENGTH.size)
        offset += size + _RECORD_OVERHEAD
        count += 1
    return WholeRecords(offset, count, claimed, None)


def _record_problem(
    journal: bytes | memoryview, offset: int, limit: int, previous: tuple[int, int] | None
) -> str | None:
    """Why the record at `offset` is not whole (None if it is)."""
    if offset + _LENGTH.size > limit:
        return "its length is cut off"
    (size,) = _LENGTH.unpack_from(journal, offset)
    end = offset + size + _RECORD_OVERHEAD
    if size < _INDEX_TERM.size or end > limit:
        return f"a length of {size} bytes does not fit"
    (after,) = _LENGTH.unpack_from(journal, end - _LENGTH.size)
    if after != size:
        return f"its lengths differ ({size}, then {after})"
    index, term = _INDEX_TERM.unpack_from(journal, offset + _LENGTH.size)
    if previous is not None and (index != previous[0] + 1 or term < previous[1]):
        return f"entry {index} (term {term}) does not follow entry {previous[0]} (term {previous[1]})"
    return None


def journal_bytes(entries: Iterable[tuple[bytes, int, int]]) -> bytes:
    """A whole journal file holding `entries` (command, index, term), as upstream's `add` writes them."""
    records = []
    for command, index, term in entries:
        data = _INDEX_TERM.pack(index, term) + command
        length = _LENGTH.pack(len(data))
        records.append(length + data + length)
    body = b"".join(records)
    return header(FIRST_RECORD_OFFSET + len(body)) + body
