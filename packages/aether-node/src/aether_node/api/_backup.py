"""Backup and restore of a cluster's desired state: the blueprints, their kept revisions and the named
API keys (`BACKED_UP`), read in one transaction (one revision: a consistent snapshot) and written back
into a fresh cluster.

Left out, on purpose: what the running cluster derives or holds for its live processes (node
registrations, endpoints, instance records, the leader's claim and problems, expected members, event
time stamps, the agent lease, node operations and stop requests, the next instance numbers). A restored
cluster places the blueprints' instances on its own nodes, numbered from 1 (a fresh store: no number of
its own was given before). The event history lives in the store's bounded watch history,
not in keys, and is not part of a backup.

A backup is JSON: `{"format": "aether-backup", "version": 1, "revision", "taken_at", "entries": [{"key",
"value"}]}`, values as UTF-8 text (every record is JSON). It is answered in one message of the store's
client protocol (≤ 64 MiB): a cluster whose desired state is larger needs a store-level copy instead.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from aether_kv import KV, Compare, CompareOp, CompareTarget, Put, Range

from ..core._blueprint import Blueprint
from ..core._error_kinds import ErrorKind
from ..core._errors import RequestError
from ..core._kv_errors import store_errors
from ..core._records import ApiKeyRecord, RecordError, decode_record, encode_record
from ..core._schema import API_KEYS, BLUEPRINT_REVISIONS, BLUEPRINTS, revision_key
from ..core._strict_json import parse_strict_json
from ..core._text import shown
from ._api_keys import check_name, check_role

FORMAT = "aether-backup"
VERSION = 1
BACKED_UP = (BLUEPRINTS, BLUEPRINT_REVISIONS, API_KEYS)
RECORDS: dict[str, type] = {BLUEPRINTS: Blueprint, BLUEPRINT_REVISIONS: Blueprint, API_KEYS: ApiKeyRecord}
PER_WRITE = 64  # keys per transaction of a restore (each transaction stays well below a frame)


async def take_backup(kv: KV, *, now: float | None = None) -> dict[str, Any]:
    """Every key under `BACKED_UP`, read at one revision."""
    with store_errors("could not read the cluster's state for a backup"):
        result = await kv.txn([], [Range(prefix=prefix) for prefix in BACKED_UP])
    entries = [
        {"key": item.key, "value": item.value.decode()}
        for found in result.results
        for item in getattr(found, "kvs", ())
    ]
    taken = time.time() if now is None else now
    return {
        "format": FORMAT,
        "version": VERSION,
        "revision": result.revision,
        "taken_at": taken,
        "entries": entries,
    }


def check_backup(data: object) -> list[tuple[str, bytes]]:
    """The (key, value) pairs of a backup, or a `bad_request` error naming what is wrong (and where): each
    value must decode as the record its key holds."""

    def bad(message: str) -> RequestError:
        return RequestError(ErrorKind.BAD_REQUEST, f"backup: {message}")

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise bad(f'not an Aether backup (expected an object with "format": "{FORMAT}")')
    if data.get("version") != VERSION:
        raise bad(f"version {shown(data.get('version'))} is not understood (this node reads {VERSION})")
    entries = data.get("entries")
    if not isinstance(entries, list):
        raise bad('"entries" must be a list')
    pairs = []
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise bad(f"entries[{number}]: expected an object with key and value")
        key, value = entry.get("key"), entry.get("value")
        if not isinstance(key, str) or not key.startswith(BACKED_UP):
            raise bad(f"entries[{number}]: key {shown(key)} is not under {', '.join(BACKED_UP)}")
        if not isinstance(value, str):
            raise bad(f"entries[{number}] ({key}): value must be text")
        # A record no node can read would be written and then fail the leader on every pass: refuse it;
        # and one that no node of this cluster could have written (a backup is a file: it may be edited).
        # Not checked again: a blueprint's TOML, by today's rules (the kept revisions were applied under
        # the rules of their day, and a cluster's own backup must restore).
        kind = next(RECORDS[prefix] for prefix in BACKED_UP if key.startswith(prefix))
        try:
            record = decode_record(key, value.encode(), kind)
            # (as a node would store it: no NaN, no infinity; a lone surrogate of an old record is words)
            parse_strict_json(encode_record(record).decode())
            why = _not_as_made(key, record)
        except (RecordError, RequestError) as error:
            why = error.message
        except ValueError as error:
            why = f"{key}: not JSON as JSON is: {error}"
        except RecursionError:  # (json.loads's own limit, past which it raises this)
            why = f"{key}: nested too deeply"
        if why:
            raise bad(f"entries[{number}]: {why}")
        pairs.append((key, value.encode()))
    return pairs


def _not_as_made(key: str, record: object) -> str | None:
    """Why `record` at `key` is not what this cluster's own apply or key creation makes (None: it is)."""
    if isinstance(record, ApiKeyRecord):
        check_name(record.name)
        check_role(record.role)
        return None if key == API_KEYS + record.name else f"{key}: holds the key named {record.name!r}"
    assert isinstance(record, Blueprint)
    expected = (
        BLUEPRINTS + record.name if key.startswith(BLUEPRINTS) else revision_key(record.name, record.revision)
    )
    if key != expected:
        return f"{key}: holds blueprint {record.name!r} (revision {record.revision}), kept at {expected}"
    return None


async def restore_backup(kv: KV, data: object) -> dict[str, Any]:
    """Write a backup into a cluster that has nothing under `BACKED_UP` yet (else `conflict`, nothing
    written). Written in transactions of `PER_WRITE` keys, each only if none of its keys exists. The
    backup is checked in a worker thread (a large one took seconds of the event loop)."""
    pairs = await trio.to_thread.run_sync(check_backup, data)
    with store_errors("could not restore the backup"):
        for prefix in BACKED_UP:
            found = await kv.range(prefix, limit=1, linearizable=True)
            if found.kvs:
                raise RequestError(
                    ErrorKind.CONFLICT,
                    f"this cluster already has state under {prefix} ({found.kvs[0].key}): restore into a"
                    " fresh cluster",
                )
        for start in range(0, len(pairs), PER_WRITE):
            chunk = pairs[start : start + PER_WRITE]
            absent = [
                Compare(key=key, target=CompareTarget.CREATE_REVISION, op=CompareOp.EQ, operand=0)
                for key, _ in chunk
            ]
            result = await kv.txn(absent, [Put(key=key, value=value) for key, value in chunk])
            if not result.succeeded:
                raise RequestError(
                    ErrorKind.CONFLICT,
                    f"the cluster changed during the restore: {start} of {len(pairs)} keys were written,"
                    " then one of the next was found; restore into a fresh cluster",
                )
    counts = {prefix: sum(key.startswith(prefix) for key, _ in pairs) for prefix in BACKED_UP}
    return {"restored": len(pairs), "revision": data.get("revision", 0), "by_prefix": counts}  # type: ignore[union-attr]
