"""Instance numbers never given twice: the leader's `cluster/instance-numbers/{group:artifact}` records
(`InstanceNumbers`: the next number). Pure: decoding them, and the transactions that create a pass's new
instances of one slice together with its record. No I/O.

The planner numbers a slice's new instances from its record, or from the highest number recorded + 1
where that is higher or there is none (a cluster from before the record), and says the next number
(`_reconcile.Plan.numbers`). The leader writes that number in the transaction that creates the
instances, compared on the record's mod revision (0: created only if still absent), so a number is
in a record before any instance has it: a leader that takes over reads it and goes on after it, and a
removed instance's number (its key, log file, metrics labels and events) is never another instance's.
A pass that creates more than `CHUNK` instances of one slice sends the rest in further transactions once
the first, with the record, has gone through: they only use numbers it reserved. A number reserved by a
transaction that went through while its instances did not (a later chunk lost, the leader gone) is
skipped: numbers may have gaps, never repeats.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import attrs

from aether_kv import Compare, CompareOp, CompareTarget, KeyValue, Put

from ..core._bad_records import log_once
from ..core._records import InstanceNumbers, RecordError, decode_record, encode_record
from ..core._schema import INSTANCE_NUMBERS, instance_numbers_key

log = logging.getLogger("aether_node.cluster")

# Creations per transaction: each is a compare, a read of it should the transaction fail, and a put, so
# that a chunk with the record and the fence (3 × 320 + 5) stays within the store's 1,024 (`MAX_TXN_OPS`),
# and a blueprint's 300 new instances are still one transaction.
CHUNK = 320

Operation = tuple[list[Compare], list[Put]]


@attrs.frozen(kw_only=True)
class Numbers:
    """The records as the leader read them: artifact id → the next number (those that decode), and
    artifact id → the record's mod revision (every record, so that one that does not decode is replaced)."""

    next: Mapping[str, int] = attrs.field(factory=dict)
    revisions: Mapping[str, int] = attrs.field(factory=dict)


def decode_numbers(raw: Mapping[str, KeyValue]) -> Numbers:
    """The `cluster/instance-numbers/` records (key → KeyValue). One that does not decode counts as
    absent for the numbering (highest + 1) and is logged once per change."""
    found: dict[str, int] = {}
    revisions: dict[str, int] = {}
    for key, kv in raw.items():
        artifact_id = key[len(INSTANCE_NUMBERS) :]
        revisions[artifact_id] = kv.mod_revision
        try:
            found[artifact_id] = decode_record(key, kv.value, InstanceNumbers).next
        except RecordError as error:
            log_once(log, error, key, kv.mod_revision)
    return Numbers(next=found, revisions=revisions)


def creation_txns(
    artifact_id: str,
    records: Sequence[tuple[str, bytes]],
    next_number: int,
    revision: int,
    fenced: Compare,
) -> list[Operation]:
    """The transactions that create one slice's new instance `records` ((key, value), at most `CHUNK`
    each): each compares the leader's fence and that its keys are absent; the first also writes the
    slice's record with `next_number`, compared on `revision` (the record's mod revision as read, 0:
    absent). The others must go only once the first has gone through."""
    key = instance_numbers_key(artifact_id)
    numbered = Put(key=key, value=encode_record(InstanceNumbers(next=next_number)))
    unchanged = Compare(key=key, target=CompareTarget.MOD_REVISION, op=CompareOp.EQ, operand=revision)
    txns: list[Operation] = []
    for start in range(0, max(len(records), 1), CHUNK):
        chunk = records[start : start + CHUNK]
        compares = [fenced] + [_absent(k) for k, _ in chunk]
        puts = [Put(key=k, value=value) for k, value in chunk]
        if start == 0:
            compares.insert(1, unchanged)
            puts.insert(0, numbered)
        txns.append((compares, puts))
    return txns


def _absent(key: str) -> Compare:
    return Compare(key=key, target=CompareTarget.EXISTS, op=CompareOp.EQ, operand=False)
