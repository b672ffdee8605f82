"""Records in the KV that do not decode (written by hand, by a node of another version, or damaged).
Wherever they are read they are skipped; this module owns what is said of them: the log, once per key
and change of the record (its mod revision), not on every pass that reads it (`log_once`); and the
records the cluster's state is made of that do not decode (`Undecodable`), which `cluster status` shows
as a health problem naming each key. No I/O but the log."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Protocol

from ._blueprint import Blueprint
from ._reconcile_spec import ReconcilePolicy
from ._records import (
    AutoscaleSettings,
    InstanceNumbers,
    LeaderClaim,
    LostNodeRecord,
    NodeOperationRecord,
    NodeRecord,
    PausedRollout,
    RecordError,
    ReplicaRecord,
    RolloutRecord,
    ServingVersion,
    decode_record,
)
from ._schema import (
    AUTOSCALE,
    BLUEPRINTS,
    INSTANCE_NUMBERS,
    LEADER_KEY,
    LOST_NODES,
    NODE_OPS,
    NODES,
    PAUSED,
    RECONCILE_POLICY,
    REPLICAS,
    ROLLOUTS,
    SERVING,
)

# The records the leader plans from, by key or prefix (most specific first), and what each must decode
# to; `slices/` is checked where its records are decoded anyway (`api/_cluster_view.py`).
RECORD_TYPES: tuple[tuple[str, type], ...] = (
    (NODES, NodeRecord),
    (BLUEPRINTS, Blueprint),
    (LEADER_KEY, LeaderClaim),
    (NODE_OPS, NodeOperationRecord),
    (PAUSED, PausedRollout),
    (ROLLOUTS, RolloutRecord),
    (AUTOSCALE, AutoscaleSettings),
    (RECONCILE_POLICY, ReconcilePolicy),
    (LOST_NODES, LostNodeRecord),
    (INSTANCE_NUMBERS, InstanceNumbers),
    (SERVING, ServingVersion),
    (REPLICAS, ReplicaRecord),
)
MAX_LOGGED = 4096  # keys whose last logged change is remembered (beyond: the oldest is logged again)


class Stored(Protocol):
    value: bytes
    mod_revision: int


# key → the mod revision last logged: one per process, as the log is (the leader's planner, its loops
# and the API decode the same records; a change is worth one line, whoever reads it first).
_logged: dict[str, int] = {}


def log_once(log: logging.Logger, error: RecordError, key: str, mod_revision: int) -> None:
    """Log `error` (the record at `key` does not decode) unless this change of it was logged already."""
    if _logged.get(key) == mod_revision:
        return
    _logged.pop(key, None)
    _logged[key] = mod_revision
    if len(_logged) > MAX_LOGGED:
        del _logged[next(iter(_logged))]
    log.error("%s (the record is skipped: fix or delete it)", error.message)


def record_type(key: str) -> type | None:
    """What the record at `key` must decode to (None: not a record the cluster's state is made of)."""
    for prefix, kind in RECORD_TYPES:
        if key == prefix or (prefix.endswith("/") and key.startswith(prefix)):
            return kind
    return None


class Undecodable:
    """The records of `RECORD_TYPES` in a copy of the KV that do not decode → why; each record is
    decoded once per change."""

    def __init__(self) -> None:
        self._checked: dict[str, tuple[int, str | None]] = {}  # key → (mod revision, why or None)

    def update(self, records: Iterable[Mapping[str, Stored]]) -> dict[str, str]:
        """Every record of `records` (KV copies by prefix) whose type is known and that does not decode
        → its error message (the key first), in key order."""
        checked: dict[str, tuple[int, str | None]] = {}
        for items in records:
            for key, kv in items.items():
                kind = record_type(key)
                if kind is None:
                    continue
                entry = self._checked.get(key)
                if entry is None or entry[0] != kv.mod_revision:
                    try:
                        decode_record(key, kv.value, kind)
                        entry = (kv.mod_revision, None)
                    except RecordError as error:
                        entry = (kv.mod_revision, error.message)
                checked[key] = entry
        self._checked = checked
        return {key: why for key, (_, why) in sorted(checked.items()) if why is not None}
