"""Validation of operations at every boundary. Pure: raises InvalidRequestError naming what and where."""

from __future__ import annotations

import math

from ._errors import InvalidRequestError
from ._records import (
    MAX_BATCH_COMMANDS,
    MAX_KEY_BYTES,
    MAX_LEASE_TTL,
    MAX_TXN_OPS,
    MAX_VALUE_BYTES,
    Barrier,
    Batch,
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    DeletePrefix,
    Get,
    LeaseExpire,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRevoke,
    Put,
    Range,
    Txn,
)


def check_key(key: object, where: str = "key") -> str:
    if not isinstance(key, str):
        raise InvalidRequestError(f"{where}: must be a string, got {type(key).__name__}")
    if not key:
        raise InvalidRequestError(f"{where}: must not be empty")
    _check_key_size(key, where)
    return key


def check_prefix(prefix: object, where: str = "prefix") -> str:
    if not isinstance(prefix, str):
        raise InvalidRequestError(f"{where}: must be a string, got {type(prefix).__name__}")
    _check_key_size(prefix, where)
    return prefix


def _check_key_size(key: str, where: str) -> None:
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise InvalidRequestError(f"{where}: {size} bytes is over the limit of {MAX_KEY_BYTES} bytes")
    if "\x00" in key:
        raise InvalidRequestError(f"{where}: must not contain NUL characters")


def check_value(value: object, where: str = "value") -> bytes:
    if not isinstance(value, bytes):
        raise InvalidRequestError(f"{where}: must be bytes, got {type(value).__name__}")
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidRequestError(f"{where}: {len(value)} bytes is over the limit of {MAX_VALUE_BYTES} bytes")
    return value


def check_lease_id(lease: object, where: str = "lease", *, allow_zero: bool = True) -> int:
    if isinstance(lease, bool) or not isinstance(lease, int) or lease < 0:
        raise InvalidRequestError(f"{where}: must be a non-negative integer, got {lease!r}")
    if lease == 0 and not allow_zero:
        raise InvalidRequestError(f"{where}: must be a granted lease id, got 0")
    return lease


def check_ttl(ttl: object, where: str = "ttl") -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise InvalidRequestError(f"{where}: must be a number of seconds, got {ttl!r}")
    if not 0 < ttl <= MAX_LEASE_TTL:
        raise InvalidRequestError(f"{where}: must be in (0, {MAX_LEASE_TTL:g}] seconds, got {ttl!r}")
    return float(ttl)


def check_limit(limit: object, where: str = "limit") -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidRequestError(f"{where}: must be a non-negative integer (0: no limit), got {limit!r}")
    return limit


MAX_REVISION = 2**63 - 1  # revisions are int64, as etcd's


def check_start_revision(start: object, where: str = "start_revision") -> int:
    """A watch's first revision: 0 (the next change) up to the largest revision there can be (a later
    one is waited for, as etcd does)."""
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= MAX_REVISION:
        raise InvalidRequestError(
            f"{where}: must be a revision from 0 (the next change) to 2**63-1, got {start!r}"
        )
    return start


def check_compare(compare: object, where: str) -> None:
    if not isinstance(compare, Compare):
        raise InvalidRequestError(f"{where}: must be a compare, got {type(compare).__name__}")
    check_key(compare.key, f"{where}.key")
    if not isinstance(compare.target, CompareTarget):
        choices = ", ".join(t.value for t in CompareTarget)
        raise InvalidRequestError(f"{where}.target: must be one of {choices}, got {compare.target!r}")
    if not isinstance(compare.op, CompareOp):
        choices = ", ".join(o.value for o in CompareOp)
        raise InvalidRequestError(f"{where}.op: must be one of {choices}, got {compare.op!r}")
    operand = compare.operand
    if compare.target is CompareTarget.EXISTS:
        if not isinstance(operand, bool):
            raise InvalidRequestError(f"{where}.operand: 'exists' compares a boolean, got {operand!r}")
        if compare.op not in (CompareOp.EQ, CompareOp.NE):
            raise InvalidRequestError(f"{where}.op: 'exists' can only be compared with == or !=")
    elif compare.target is CompareTarget.VALUE:
        check_value(operand, f"{where}.operand")
    elif isinstance(operand, bool) or not isinstance(operand, int):
        raise InvalidRequestError(f"{where}.operand: '{compare.target}' compares an integer, got {operand!r}")


def check_txn_op(op: object, where: str) -> None:
    match op:
        case Get(key=key) | Delete(key=key):
            check_key(key, f"{where}.key")
        case Range(prefix=prefix, limit=limit):
            check_prefix(prefix, f"{where}.prefix")
            check_limit(limit, f"{where}.limit")
        case Put(key=key, value=value, lease=lease):
            check_key(key, f"{where}.key")
            check_value(value, f"{where}.value")
            check_lease_id(lease, f"{where}.lease")
        case DeletePrefix(prefix=prefix):
            check_prefix(prefix, f"{where}.prefix")
        case _:
            raise InvalidRequestError(f"{where}: unknown operation {type(op).__name__}")


def check_command(command: object) -> None:
    """Raise InvalidRequestError if `command` is not a well-formed state-machine command."""
    match command:
        case Put() | Delete() | DeletePrefix():
            check_txn_op(command, "request")
        case Txn(compares=compares, success=success, failure=failure):
            for name, items in (("compares", compares), ("success", success), ("failure", failure)):
                if not isinstance(items, tuple | list):
                    raise InvalidRequestError(f"txn.{name}: must be a list, got {type(items).__name__}")
            if len(compares) + len(success) + len(failure) > MAX_TXN_OPS:
                raise InvalidRequestError(
                    f"txn: {len(compares) + len(success) + len(failure)} compares and operations"
                    f" is over the limit of {MAX_TXN_OPS}"
                )
            for i, compare in enumerate(compares):
                check_compare(compare, f"txn.compares[{i}]")
            for branch, ops in (("success", success), ("failure", failure)):
                for i, op in enumerate(ops):
                    check_txn_op(op, f"txn.{branch}[{i}]")
                _check_no_overlapping_writes(ops, f"txn.{branch}")
        case LeaseGrant(ttl=ttl, now=now):
            check_ttl(ttl)
            _check_now(now)
        case LeaseKeepAlive(lease=lease, now=now):
            check_lease_id(lease, allow_zero=False)
            _check_now(now)
        case LeaseRevoke(lease=lease):
            check_lease_id(lease, allow_zero=False)
        case LeaseExpire(lease=lease, now=now):
            check_lease_id(lease, allow_zero=False)
            _check_now(now)
        case Barrier():
            pass
        case Batch(commands=commands):
            # the structure only: each command is checked when it is applied, on its own
            if not isinstance(commands, tuple) or not 1 <= len(commands) <= MAX_BATCH_COMMANDS:
                raise InvalidRequestError(
                    f"batch: must be a tuple of 1 to {MAX_BATCH_COMMANDS} commands, got {commands!r:.80}"
                )
            for i, item in enumerate(commands):
                if isinstance(item, Batch):
                    raise InvalidRequestError(f"batch[{i}]: a batch may not hold a batch")
        case _:
            raise InvalidRequestError(f"unknown operation {type(command).__name__}")


def _check_no_overlapping_writes(ops: object, where: str) -> None:
    """Like etcd: one branch may not write a key twice, nor put a key that a delete_prefix also covers."""
    written: set[str] = set()
    prefixes: list[tuple[int, str]] = []
    for i, op in enumerate(ops):  # type: ignore[arg-type]
        if isinstance(op, Put | Delete):
            if op.key in written:
                raise InvalidRequestError(f"{where}[{i}].key: {op.key!r} is written twice in one branch")
            written.add(op.key)
        elif isinstance(op, DeletePrefix):
            prefixes.append((i, op.prefix))
    for i, prefix in prefixes:
        for key in written:
            if key.startswith(prefix):
                raise InvalidRequestError(
                    f"{where}[{i}].prefix: {prefix!r} also deletes {key!r}, which the same branch writes"
                )


def _check_now(now: object) -> None:
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise InvalidRequestError(f"now: must be a finite timestamp, got {now!r}")
