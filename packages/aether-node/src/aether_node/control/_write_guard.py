"""Operator writes made "as of" a KV revision: a change an operator's client sends carries the revision
it read just before (`since`), and it lands only if nothing changed its key after that revision.

Why: a client resends a write that went unanswered to another node (docs/ARCHITECTURE.md, "Resending"),
and an operator does the same by hand. If the first node was frozen with the request unread in its
socket, it runs the request when it resumes, perhaps minutes later, after the resend landed and the
operator went on: without a guard, a stale `apply B` would undo the `apply C` that came after it, a stale
`uncordon` a later `cordon`. With the guard such a request finds its key changed after `since`: it is
done if the key already holds what it asks for (the resend, or someone else, did it), and refused
otherwise (`Superseded`), changing nothing.

A delete leaves no key to compare, so the guarded writers keep a tombstone per deleted key under
`cluster/tombstones/{key}`: written in the same transaction as the delete, removed in the same
transaction as the next put. "Changed after `since`" is then: the key's or its tombstone's mod revision
is above `since`. Only the writers of the management API keep tombstones; the leader's own writes (a
scale by the autoscaler, a rollout's records) change keys' mod revisions, which is enough for them.

Pure but for `read_guarded` (two reads): builds compares and operations; the callers send them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from aether_kv import KV, Compare, CompareOp, CompareTarget, Delete, KeyValue, Put

from ..core._records import RecordError, decode_record
from ..core._schema import TOMBSTONES


class Superseded(Exception):
    """Raised when an operator's write found its key changed after the revision its client read, to
    something other than what the write asks for: another change came after it (or the request was
    delayed past it), so it was not written. The operator's to read again and decide."""


def tombstone_key(key: str) -> str:
    """`cluster/tombstones/{key}`: where the revision of the last guarded delete of `key` is kept."""
    return f"{TOMBSTONES}{key}"


async def read_guarded(kv: KV, key: str) -> tuple[KeyValue | None, KeyValue | None]:
    """`key` and its tombstone as they are (after the caller's barrier: linearizable)."""
    return await kv.get(key), await kv.get(tombstone_key(key))


def changed_after(since: int | None, found: KeyValue | None, tombstone: KeyValue | None) -> bool:
    """Whether the key (`found`, None if absent) or its `tombstone` changed after revision `since` (never,
    for a write that names no revision)."""
    if since is None:
        return False
    return any(item is not None and item.mod_revision > since for item in (found, tombstone))


def unchanged_since(key: str, found: KeyValue | None, tombstone: KeyValue | None) -> list[Compare]:
    """The compares that make a transaction land only if `key` and its tombstone are still as read."""
    return [
        Compare(
            key=k,
            target=CompareTarget.MOD_REVISION,
            op=CompareOp.EQ,
            operand=item.mod_revision if item is not None else 0,
        )
        for k, item in ((key, found), (tombstone_key(key), tombstone))
    ]


def guarded_put(key: str, value: bytes) -> list[Put | Delete]:
    """Put `key` (its tombstone, if any, goes: the key's own revision now tells when it changed)."""
    return [Put(key=key, value=value), Delete(key=tombstone_key(key))]


def guarded_delete(key: str) -> list[Put | Delete]:
    """Delete `key` and leave a tombstone whose mod revision says when."""
    return [Delete(key=key), Put(key=tombstone_key(key), value=b"")]


def holds_setting(wanted: Any) -> Callable[[KeyValue | None], bool]:
    """Whether a key holds the settings record `wanted` already, but for its `updated` time (the same
    change made again, or by a resend that landed)."""

    def holds(found: KeyValue | None) -> bool:
        if found is None:
            return False
        try:
            now = decode_record(found.key, found.value, type(wanted))
        except RecordError:
            return False
        return bool(attrs.evolve(now, updated=wanted.updated) == wanted)

    return holds


def superseded_message(since: int, found: KeyValue | None, what: str, *, gone: str = "deleted") -> str:
    """The message of a `Superseded` write of `what` (`gone`: what its key's absence means)."""
    now = f"changed at revision {found.mod_revision}" if found is not None else gone
    return (
        f"{what} was {now}, after revision {since} that this request was made from: another change came"
        " after it (or this request was delayed past it), and this request changed nothing; read the"
        " state again and decide"
    )
