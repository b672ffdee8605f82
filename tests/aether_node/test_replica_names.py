"""`cluster status` names a KV replica by its node, also once the node is no longer registered (stopped:
its replica stays a member of the store): each node puts `cluster/replicas/{raft-address}` with its
registration (`_Registration.register`), `replica_names` reads it with the registered nodes over it, and
the health's reason names both ends (an address nobody claims is shown as it is)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from shell_support import handlers_over, kv_status, node_info, register

from aether_kv import KeyValue, Member, MemoryStore, Status
from aether_node import NodeConfig, NodeRecord
from aether_node.api._cluster_view import ClusterView
from aether_node.api._handlers import Handlers
from aether_node.control._membership import replica_names
from aether_node.core._bad_records import Undecodable, record_type
from aether_node.core._config import KVSettings
from aether_node.core._records import ReplicaRecord, decode_record, encode_record
from aether_node.core._schema import REPLICAS, node_key, replica_key
from aether_node.node._node import _Registration


def stored(key: str, value: bytes) -> KeyValue:
    return KeyValue(key=key, value=value, create_revision=1, mod_revision=1, version=1, lease=0)


def named(raft: str, node_id: str) -> tuple[str, KeyValue]:
    key = replica_key(raft)
    return key, stored(key, encode_record(ReplicaRecord(node_id=node_id)))


def test_replica_names_come_from_the_records_with_the_registered_nodes_over_them() -> None:
    records = dict([named("a:1", "old-a"), named("c:1", "n3")])
    records[replica_key("d:1")] = stored(replica_key("d:1"), b"{")  # names nobody
    registered = [
        NodeRecord(node_id="n1", ingress="x:1", raft="a:1"),
        NodeRecord(node_id="n9", ingress="x:2"),
    ]
    assert replica_names(records, registered) == {"a:1": "n1", "c:1": "n3"}


def test_the_health_reason_names_the_nodes_of_the_replicas_and_falls_back_to_the_address() -> None:
    status = kv_status(connected=False)  # a:1 answers, b:1 is not connected
    nodes = [node_info("n1", leader=True)]
    reasons = Handlers._summary(status, nodes, [], {}, [], replicas={"a:1": "n1", "b:1": "n2"}).reasons
    assert reasons == ("KV replica a:1 (node n1) is not connected to b:1 (node n2)",)
    reasons = Handlers._summary(status, nodes, [], {}, [], replicas={"a:1": "n1"}).reasons
    assert reasons == ("KV replica a:1 (node n1) is not connected to b:1",)


@pytest.fixture
async def kv() -> MemoryStore:
    return MemoryStore(address="a:1")


@pytest.fixture
async def handlers(kv: MemoryStore) -> AsyncIterator[Handlers]:
    async with handlers_over(kv) as handlers:
        yield handlers


async def test_cluster_status_names_the_replica_of_a_node_that_stopped(
    kv: MemoryStore, handlers: Handlers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """n3 registered with its replica at c:1, then stopped (its registration went with its lease; the
    store keeps c:1 as a member, unreachable): both status paths, the direct reads and the watch-fed
    view, name it."""
    await register(kv, "n1", raft="a:1")
    await kv.put(*_record(replica_key("c:1"), ReplicaRecord(node_id="n3")))
    served = kv.status

    async def status() -> Status:  # (the memory store's members are always connected)
        found = await served()
        members = (Member(raft_address="a:1", connected=True), Member(raft_address="c:1", connected=False))
        return attrs.evolve(found, members=members)

    monkeypatch.setattr(kv, "status", status)
    said = "KV replica a:1 (node n1) is not connected to c:1 (node n3)"
    assert said in (await handlers.cluster_status()).reasons
    assert said in (await handlers.overview()).status.reasons
    view = ClusterView(kv)
    async with trio.open_nursery() as nursery:
        await nursery.start(view.run)
        viewed = Handlers(kv, handlers.invoker, view=view)
        await trio.testing.wait_all_tasks_blocked()
        assert said in (await viewed.cluster_status()).reasons
        nursery.cancel_scope.cancel()


def _record(key: str, record: object) -> tuple[str, bytes]:
    return key, encode_record(record)


async def test_a_node_names_its_replica_with_its_registration_and_a_client_node_does_not(
    kv: MemoryStore, tmp_path: Path
) -> None:
    def config(node_id: str, kv_settings: KVSettings) -> NodeConfig:
        return NodeConfig(
            node_id=node_id,
            data_dir=tmp_path,
            index=str(tmp_path),
            ingress="127.0.0.1:1",
            peer="127.0.0.1:1",
            kv=kv_settings,
            lease_ttl=10.0,
        )

    replica = config("n1", KVSettings(raft="127.0.0.1:7001", client="127.0.0.1:7002"))
    client = config("n4", KVSettings(endpoints=("127.0.0.1:7002",)))
    for cfg in (replica, client):
        record = NodeRecord(node_id=cfg.node_id, ingress=cfg.ingress, raft=cfg.kv.raft or "")
        lease = await _Registration(kv, cfg, record).register()  # type: ignore[arg-type]
        found = await kv.get(node_key(cfg.node_id))
        assert found is not None and found.lease == lease
    named_replicas = (await kv.range(replica_key(""))).kvs
    assert [(kv.key, decode_record(kv.key, kv.value, ReplicaRecord).node_id) for kv in named_replicas] == [
        (replica_key("127.0.0.1:7001"), "n1")
    ]


def test_a_replica_record_that_does_not_decode_is_named_as_one() -> None:
    assert record_type(REPLICAS + "10.0.0.1:7000") is ReplicaRecord
    bad = KeyValue(
        key=REPLICAS + "10.0.0.1:7000", value=b"not json", create_revision=3, mod_revision=3, version=1
    )
    assert list(Undecodable().update([{bad.key: bad}])) == [bad.key]
