"""ClusterView: the cluster as `cluster status` shows it, from a watch-fed copy of the KV on this node.

It follows `nodes/`, `blueprints/`, `slices/`, `cluster/members/`, `cluster/leader`, the node operations
(`cluster/node-ops/`), the leader's problems, which node runs each KV replica (`cluster/replicas/`), the
rollouts (a blue-green one SWITCHED keeps its old set without keeping the blueprint from converging) and
the other records the leader plans from (paused
updates, autoscaling settings, the reconciliation policy, the next instance numbers: only to name those
that do not decode, `core/_bad_records.py`) through a `KVCache`, decodes a record only when it changed,
and keeps the last result until the next change, so a status read costs the same with 30 instances as
with 3,000 (plus the KV status request, of fixed size). The view is as fresh as this node's watches
(they follow the KV within milliseconds), not linearizable: status decides nothing. Reads only.
"""

from __future__ import annotations

from typing import TypeVar

import trio

from aether_kv import KV, KeyValue

from ..client import InstanceInfo
from ..control._membership import MEMBERS, replica_names
from ..control._node_ops import decode_operations
from ..control._strategies import decode_rollouts
from ..core._bad_records import Undecodable
from ..core._blueprint import Blueprint
from ..core._config_digest import config_digest
from ..core._kv_cache import KVCache
from ..core._records import (
    LeaderClaim,
    NodeOperationRecord,
    NodeRecord,
    RecordError,
    RolloutRecord,
    SliceRecord,
    decode_record,
)
from ..core._schema import (
    AUTOSCALE,
    BLUEPRINTS,
    INSTANCE_NUMBERS,
    LEADER_KEY,
    NODE_OPS,
    NODES,
    PAUSED,
    PROBLEMS_PREFIX,
    RECONCILE,
    REPLICAS,
    ROLLOUTS,
    SERVING,
    SLICES,
    InstanceKey,
)

T = TypeVar("T")


class ClusterView:
    PREFIXES = (NODES, BLUEPRINTS, SLICES, MEMBERS, LEADER_KEY, NODE_OPS, PROBLEMS_PREFIX, ROLLOUTS, REPLICAS)
    CHECKED = (
        PAUSED,
        AUTOSCALE,
        RECONCILE,
        INSTANCE_NUMBERS,
        SERVING,
    )  # followed only to name what does not decode

    def __init__(self, kv: KV) -> None:
        self.cache = KVCache(kv, self.PREFIXES + self.CHECKED)
        self.ready = False
        # key → (mod revision, decoded, or why it does not decode)
        self._instances: dict[str, tuple[int, InstanceInfo | str | None]] = {}
        self._undecodable = Undecodable()
        self._snapshot: tuple[int, Snapshot] | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the KV until cancelled; reports started once the copy is filled."""
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.cache.run)
                self.ready = True
                task_status.started()
        finally:
            self.ready = False

    def snapshot(self) -> Snapshot:
        """The decoded view (the same object until something changes)."""
        version = sum(self.cache.seen.values())
        if self._snapshot is not None and self._snapshot[0] == version:
            return self._snapshot[1]
        data = self.cache.data
        instances, bad_instances = self._decoded_instances(data[SLICES])
        undecodable = self._undecodable.update(data[p] for p in self.PREFIXES + self.CHECKED if p != SLICES)
        nodes = _decode_all(self.cache.data[NODES], NodeRecord)
        snapshot = Snapshot(
            nodes=nodes,
            blueprints={b.name: b for b in _decode_all(self.cache.data[BLUEPRINTS], Blueprint)},
            instances=instances,
            expected=sorted(key[len(MEMBERS) :] for key in self.cache.data[MEMBERS]),
            leader=_leader(self.cache.data[LEADER_KEY].get(LEADER_KEY)),
            operations=decode_operations(self.cache.data[NODE_OPS]),
            problems={
                key[len(PROBLEMS_PREFIX) :]: kv.value.decode()
                for key, kv in self.cache.data[PROBLEMS_PREFIX].items()
            },
            rollouts=decode_rollouts(self.cache.data[ROLLOUTS])[0],
            undecodable=dict(sorted((undecodable | bad_instances).items())),
            replicas=replica_names(data[REPLICAS], nodes),
        )
        self._snapshot = (version, snapshot)
        return snapshot

    def _decoded_instances(self, raw: dict[str, KeyValue]) -> tuple[list[InstanceInfo], dict[str, str]]:
        """The instances, and the instance records that do not decode → why."""
        known = self._instances
        for key in [k for k in known if k not in raw]:
            del known[key]
        found = []
        bad = {}
        for key in sorted(raw):
            kv = raw[key]
            entry = known.get(key)
            if entry is None or entry[0] != kv.mod_revision:
                entry = known[key] = (kv.mod_revision, instance_info(key, kv))
            if isinstance(entry[1], InstanceInfo):
                found.append(entry[1])
            elif entry[1] is not None:
                bad[key] = entry[1]
        return found, bad


class Snapshot:
    """What the records say, decoded (records that do not decode are left out, as everywhere)."""

    def __init__(
        self,
        *,
        nodes: list[NodeRecord],
        blueprints: dict[str, Blueprint],
        instances: list[InstanceInfo],
        expected: list[str],
        leader: str | None,
        operations: dict[str, NodeOperationRecord],
        problems: dict[str, str],
        rollouts: dict[str, RolloutRecord],
        undecodable: dict[str, str],
        replicas: dict[str, str],
    ) -> None:
        self.nodes = nodes
        self.blueprints = blueprints
        self.instances = instances
        self.expected = expected
        self.leader = leader
        self.operations = operations  # node id → its cordon or drain
        self.problems = problems  # group:artifact → the leader's problem text
        self.rollouts = rollouts  # group:artifact → its canary or blue-green rollout
        self.undecodable = undecodable  # key → why its record does not decode (it is skipped)
        self.replicas = replicas  # Raft address → the node whose KV replica it is (`replica_names`)
        self.derived: dict[object, object] = {}  # what callers derived from it, kept with it


def _decode_all(raw: dict[str, KeyValue], kind: type[T]) -> list[T]:
    found = []
    for key in sorted(raw):
        try:
            found.append(decode_record(key, raw[key].value, kind))
        except RecordError:
            continue
    return found


def instance_info(key: str, kv: KeyValue) -> InstanceInfo | str | None:
    """The instance; why its record does not decode; None for a key that names no instance."""
    parsed = InstanceKey.parse(key)
    if parsed is None:
        return None
    try:
        record = decode_record(key, kv.value, SliceRecord)
    except RecordError as error:
        return error.message
    return InstanceInfo(
        node_id=parsed.node_id,
        artifact=str(parsed.coordinates),
        instance=parsed.instance,
        state=str(record.state),
        reason=record.reason,
        timestamp=record.timestamp,
        config_digest=config_digest(record.config),
        restarts=record.restarts,
        last_exit=record.last_exit,
    )


def _leader(kv: KeyValue | None) -> str | None:
    if kv is None:
        return None
    try:
        return decode_record(LEADER_KEY, kv.value, LeaderClaim).node_id
    except RecordError:
        return None
