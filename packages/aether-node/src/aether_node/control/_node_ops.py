"""Node operations: an operator's cordon or drain of a node, kept at `cluster/node-ops/{node-id}` (not
bound to any lease: the intent outlives the node's restarts and leader changes), and the node states
they make. Pure: records in, states and sets out. No I/O.

States: ON_DUTY (no operation), CORDONED (no new instance is placed there), DRAINING (cordoned, and its
instances move off, each replacement ACTIVE first, never below a slice's floor), DRAINED (draining with
nothing left on it), LEAVING (the node is stopping gracefully: its registration says `leaving`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping

from aether_kv import KeyValue, Status

from ..core._bad_records import log_once
from ..core._records import NodeOperation, NodeOperationRecord, RecordError, decode_record
from ..core._schema import NODE_OPS
from ..core._text import plural, replica_label

log = logging.getLogger("aether_node.cluster")

ON_DUTY = "ON_DUTY"
CORDONED = "CORDONED"
DRAINING = "DRAINING"
DRAINED = "DRAINED"
LEAVING = "LEAVING"
NODE_STATES = (ON_DUTY, CORDONED, DRAINING, DRAINED, LEAVING)


def decode_operations(items: Mapping[str, KeyValue]) -> dict[str, NodeOperationRecord]:
    """`cluster/node-ops/` keys → node id → its operation. A record that does not decode is logged and
    skipped (the node counts as on duty: a bad record must not stop placements everywhere)."""
    found = {}
    for key, kv in items.items():
        if not key.startswith(NODE_OPS):
            continue
        try:
            found[key[len(NODE_OPS) :]] = decode_record(key, kv.value, NodeOperationRecord)
        except RecordError as error:
            log_once(log, error, key, kv.mod_revision)
    return found


def split_operations(operations: Mapping[str, NodeOperationRecord]) -> tuple[frozenset[str], frozenset[str]]:
    """The planner's inputs: (cordoned nodes, draining nodes)."""
    cordoned = frozenset(n for n, r in operations.items() if r.operation is NodeOperation.CORDONED)
    draining = frozenset(n for n, r in operations.items() if r.operation is NodeOperation.DRAINING)
    return cordoned, draining


def node_state(operation: NodeOperationRecord | None, *, leaving: bool, instances: int) -> str:
    """A node's state from its operation, whether it is stopping, and how many instance records it has."""
    if leaving:
        return LEAVING
    if operation is None:
        return ON_DUTY
    if operation.operation is NodeOperation.CORDONED:
        return CORDONED
    return DRAINING if instances else DRAINED


def drain_waits(
    node_id: str, remaining: Iterable[str], problems: Mapping[str, str], removing: Collection[str] = ()
) -> str:
    """What a draining node waits for: its remaining instances (`group:artifact:version#n`), each with
    its artifact's problem if the planner reported one (e.g. the floor holds it); those in `removing`
    are on their way out (their replacement is ACTIVE, or their slice is in no blueprint now)."""
    parts = []
    for label in sorted(remaining):
        artifact_id = label.rsplit(":", 1)[0]
        problem = problems.get(artifact_id, "")
        if label in removing:
            parts.append(f"{label}: being removed")
            continue
        parts.append(f"{label}" + (f" ({problem})" if problem else ": its replacement is not ACTIVE yet"))
    if not parts:
        return ""
    return f"drain of {node_id} waits for {plural(len(parts), 'instance')} to move: " + "; ".join(parts)


def quorum_lost_by_stopping(
    status: Status, raft: str, *, stopping: Collection[str] = (), names: Mapping[str, str] | None = None
) -> str | None:
    """Why stopping the KV replica at Raft address `raft` (a node's `NodeRecord.raft`; "" if it runs
    none) would leave the store without a majority of its replicas up, as the replica whose `status`
    this is sees them (itself and the members it is connected to, but those in `stopping`: the replicas
    of nodes leaving or asked to stop already), the replicas down named by their nodes where `names`
    (`replica_names`) knows them; None if it would not. Pure."""
    replicas = {m.raft_address for m in status.members} | {status.self_address}
    if raft not in replicas:
        return None
    up = ({m.raft_address for m in status.members if m.connected} | {status.self_address}) - set(stopping)
    needed = len(replicas) // 2 + 1
    left = len(up - {raft})
    if left >= needed:
        return None
    down = sorted(replicas - up)
    return (
        f"leave {left} of the KV store's {plural(len(replicas), 'replica')} up, fewer than the {needed} it"
        " needs to commit anything: every change in the cluster would stop until enough are back"
        + (f" (not up now: {', '.join(replica_label(d, names or {}) for d in down)})" if down else "")
    )
