"""The cluster's expected nodes: `cluster/members/{node-id}`, kept by the leader.

A node is expected from the moment it first registers until it leaves gracefully (it marks itself as
leaving, then revokes its lease) or an operator forgets it (`Handlers.forget_node`). Forgetting leaves a
marker, `cluster/forgotten/{node-id}`, in the same transaction: a new leader's replay skips the
registrations older than it (without it, a leader change re-added a forgotten node from history); a
registration newer than it (the node came back by itself) makes the node expected again and deletes it.
A node that is lost — killed, hung, cut off: its lease expired without it leaving — stays expected, so the
cluster's health says it is missing until it is back. That is the difference between `nodes/` (who is
registered now, bound to leases) and this set (who should be).

`replica_names` says which node runs the KV replica at each Raft address, for `cluster status`: from the
registered nodes, and for a node that is no longer registered (stopped, lost: its replica stays a member
of the store) from `cluster/replicas/{raft-address}`, which each node puts with its registration.

`Membership.run` follows `nodes/` while this node leads (replaying a window of history on taking over, so
joins and departures during a leader change are not missed); it writes nothing but member records and
deletes nothing but them and the forgotten markers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping

import attrs

from aether_kv import KV, Compare, CompareOp, CompareTarget, Delete, KeyValue, Put

from ..core._records import NodeRecord, RecordError, ReplicaRecord, decode_record, encode_record
from ..core._schema import NODES, REPLICAS
from ._cluster_manager import LeadershipMonitor, follow_while_leading

log = logging.getLogger("aether_node.membership")

MEMBERS = "cluster/members/"
FORGOTTEN = "cluster/forgotten/"  # an operator forgot the node: older registrations do not count
LOOKBACK = 1000  # revisions of history a new leader replays


@attrs.frozen(kw_only=True)
class MemberRecord:
    """`cluster/members/{node-id}`: a node the cluster expects to be registered."""

    node_id: str
    since: float  # when the leader first saw it register
    schema_version: int = 1


def member_key(node_id: str) -> str:
    return MEMBERS + node_id


def forgotten_key(node_id: str) -> str:
    return FORGOTTEN + node_id


def _registers(key: str, value: bytes) -> bool:
    """Whether a record under `nodes/` is a node's registration: one that does not decode (written by
    hand, or damaged) makes no node expected (`cluster status` names it as a record that does not
    decode, `core/_bad_records.py`)."""
    try:
        decode_record(key, value, NodeRecord)
    except RecordError:
        return False
    return True


def _left(value: bytes | None, key: str) -> bool:
    """Whether a deleted registration had marked its node as leaving (a graceful stop)."""
    if not value:
        return False
    try:
        return decode_record(key, value, NodeRecord).leaving
    except RecordError:
        return False


class Membership:
    def __init__(self, kv: KV, *, clock: Callable[[], float] = time.time) -> None:
        self.kv = kv
        self.clock = clock

    async def run(self, leadership: LeadershipMonitor) -> None:
        """While this node leads, keep the member records. Runs until cancelled; KV errors are logged and
        retried, never raised."""
        await follow_while_leading(leadership, self._follow, "cluster members")

    async def _follow(self) -> None:
        status = await self.kv.status()
        registered = await self.kv.range(NODES)
        for kv in registered.kvs:
            if _registers(kv.key, kv.value):
                await self._add(kv.key[len(NODES) :])
        start = max(status.compact_revision + 1, status.revision - LOOKBACK + 1, 1)
        watch = self.kv.watch(NODES, start)
        try:
            while True:
                for event in await watch.__anext__():
                    node_id = event.kv.key[len(NODES) :]
                    if event.kind == "put":
                        if not _registers(event.kv.key, event.kv.value):
                            continue
                        if event.revision > registered.revision:
                            await self._add(node_id)
                        elif event.prev is None:  # replayed history: a first registration
                            await self._add(node_id, registered_at=event.revision)
                    elif _left(event.prev.value if event.prev else None, event.kv.key):
                        # replayed history: only if it has not registered again since
                        current = await self.kv.get(event.kv.key)
                        if current is None:
                            await self.kv.delete(member_key(node_id))
        finally:
            await watch.aclose()

    async def _add(self, node_id: str, *, registered_at: int | None = None) -> None:
        """Expect `node_id` (if it is not yet). `registered_at`: the revision of a replayed registration,
        which counts only if the node was not forgotten after it; None: the node is registered now."""
        key = member_key(node_id)
        if await self.kv.get(key) is not None:
            return
        marker = await self.kv.get(forgotten_key(node_id))
        if marker is not None and registered_at is not None and registered_at < marker.mod_revision:
            return  # forgotten after this registration: it stays forgotten
        record = MemberRecord(node_id=node_id, since=self.clock())
        compares = [Compare(key=key, target=CompareTarget.EXISTS, operand=False)]
        success: list[Put | Delete] = [Put(key=key, value=encode_record(record))]
        if marker is not None:  # registered since it was forgotten: the marker has done its job
            compares.append(
                Compare(
                    key=marker.key,
                    target=CompareTarget.MOD_REVISION,
                    op=CompareOp.EQ,
                    operand=marker.mod_revision,
                )
            )
            success.append(Delete(key=marker.key))
        await self.kv.txn(compares=compares, success=success)


def replica_names(replicas: Mapping[str, KeyValue], nodes: Iterable[NodeRecord]) -> dict[str, str]:
    """Raft address → the node id whose KV replica it is: the `cluster/replicas/` records (key → KeyValue;
    one that does not decode names nobody), with the registered `nodes`' own addresses over them. Pure."""
    names = {}
    for key, kv in replicas.items():
        try:
            names[key[len(REPLICAS) :]] = decode_record(key, kv.value, ReplicaRecord).node_id
        except RecordError:
            continue
    names.update({node.raft: node.node_id for node in nodes if node.raft})
    return names


async def expected_nodes(kv: KV) -> list[str]:
    """The node ids the cluster expects (sorted). Raises KVError."""
    return sorted(kv.key[len(MEMBERS) :] for kv in (await kv.range(MEMBERS)).kvs)


async def forget(kv: KV, node_id: str) -> bool:
    """Stop expecting `node_id` (gone for good), leaving the marker that keeps a new leader from
    expecting it again out of history; False if it was not expected. Raises KVError."""
    key = member_key(node_id)
    result = await kv.txn(
        compares=[Compare(key=key, target=CompareTarget.EXISTS, operand=True)],
        success=[Delete(key=key), Put(key=forgotten_key(node_id), value=b"")],
    )
    return result.succeeded
