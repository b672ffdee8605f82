"""The reconciliation policy in the shell, in process on the memory store and trio's virtual clock: the
leader records a lost node (`cluster/reconcile/lost/`), keeps its instance records through the delay and
forgets the record when the node is back; `cluster rebalance` ends the wait at once; the management API
(`api/_reconcile.py`) shows, sets and refuses policies (a refusal writes nothing); and the events of
`cluster/reconcile/`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import attrs
import pytest
import test_handlers
import trio
from shell_support import apply, hold, instances, register
from trio.testing import MockClock

from aether_kv import Event, EventKind, KeyValue, MemoryStore
from aether_node.api._handlers import Handlers
from aether_node.api._reconcile import ReconcileOperations
from aether_node.client import BlueprintPolicy, LostNodeInfo
from aether_node.control._cluster_manager import ClusterDeploymentManager, LeadershipMonitor
from aether_node.core._blueprint import Blueprint, SliceSpec
from aether_node.core._errors import RequestError
from aether_node.core._reconcile_spec import ReconcilePolicy
from aether_node.core._records import (
    LostNodeRecord,
    RebalanceRequest,
    SliceState,
    decode_record,
    encode_record,
)
from aether_node.core._schema import (
    BLUEPRINTS,
    LOST_NODES,
    REBALANCE_KEY,
    RECONCILE_POLICY,
    SLICES,
    lost_node_key,
)
from aether_node.observe._events import describe, needs_time
from support import wait_until

ECHO = "org.example:echo:1.0"


# ---------------------------------------------------------------------------- the leader


@pytest.fixture
def kv() -> MemoryStore:
    return MemoryStore(clock=trio.current_time, address="n1")


handlers = test_handlers.handlers  # the management API's handlers on `kv`


async def lead(nursery: trio.Nursery, kv: MemoryStore) -> None:
    leadership = LeadershipMonitor(kv, period=0.1)
    manager = ClusterDeploymentManager(kv, "n1", interval=1.0, clock=trio.current_time)
    nursery.start_soon(leadership.run)
    nursery.start_soon(manager.run, leadership)


async def running(kv: MemoryStore) -> None:
    """Make every instance record ACTIVE, as the nodes would."""
    for key, record in (await instances(kv)).items():
        if record.state is SliceState.ACTIVATE:
            await kv.put(key, encode_record(attrs.evolve(record, state=SliceState.ACTIVE)))


async def on(kv: MemoryStore, node_id: str) -> list[str]:
    return [k for k in await instances(kv) if k.startswith(f"{SLICES}{node_id}/")]


@pytest.fixture
async def settled(kv: MemoryStore) -> AsyncIterator[tuple[MemoryStore, trio.Nursery, dict[str, int]]]:
    """Three nodes, a conservative cluster, 3 echo instances ACTIVE (one per node), a leader."""
    leases = {n: await register(kv, n) for n in ("n1", "n2", "n3")}
    await kv.put(RECONCILE_POLICY, encode_record(ReconcilePolicy(preset="conservative")))
    await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=3))
    async with trio.open_nursery() as nursery:
        await lead(nursery, kv)

        async def placed() -> bool:
            return len(await instances(kv)) == 3

        await wait_until(placed, timeout=60, what="three instances")
        await running(kv)
        yield kv, nursery, leases
        nursery.cancel_scope.cancel()


async def test_a_lost_node_is_recorded_its_records_kept_and_forgotten_when_it_is_back(
    autojump_clock: MockClock, settled: tuple[MemoryStore, trio.Nursery, dict[str, int]]
) -> None:
    kv, _, leases = settled
    kept = await on(kv, "n3")
    await kv.lease_revoke(leases["n3"])  # lost: its registration goes with its lease

    async def recorded() -> bool:
        return await kv.get(lost_node_key("n3")) is not None

    await wait_until(recorded, timeout=60, what="the lost node's record")
    found = await kv.get(lost_node_key("n3"))
    assert found is not None
    record = decode_record(found.key, found.value, LostNodeRecord)
    assert (record.instances, record.delay_s) == (1, 60.0)
    await hold(30)  # within the delay: nothing moves
    assert await on(kv, "n3") == kept
    assert len(await instances(kv)) == 3
    await register(kv, "n3")  # back, with its records

    async def forgotten() -> bool:
        return await kv.get(lost_node_key("n3")) is None

    await wait_until(forgotten, timeout=60, what="the lost node's record deleted")
    await hold(60)  # past the delay: it is live, so nothing is replaced
    assert await on(kv, "n3") == kept and len(await instances(kv)) == 3


async def test_after_the_delay_or_a_rebalance_the_instances_are_replaced(
    autojump_clock: MockClock, settled: tuple[MemoryStore, trio.Nursery, dict[str, int]]
) -> None:
    kv, _, leases = settled
    await kv.lease_revoke(leases["n3"])

    async def recorded() -> bool:
        return await kv.get(lost_node_key("n3")) is not None

    await wait_until(recorded, timeout=60, what="the lost node's record")
    await kv.put(REBALANCE_KEY, encode_record(RebalanceRequest(requested_at=trio.current_time())))

    async def replaced() -> bool:
        return not await on(kv, "n3") and len(await instances(kv)) == 3

    await wait_until(replaced, timeout=10, what="n3's instance replaced on n1 or n2")  # far within the delay

    async def forgotten() -> bool:
        return await kv.get(lost_node_key("n3")) is None

    await wait_until(forgotten, timeout=60, what="the lost node's record deleted")


# ---------------------------------------------------------------------------- the management API


async def test_the_api_shows_sets_and_refuses_policies(kv: MemoryStore, handlers: Handlers) -> None:
    api = ReconcileOperations(handlers)
    shown = await api.status()
    assert (shown.rebalance_delay_s, shown.max_moves, shown.preset, shown.settings) == (0.0, 0, "", {})
    shown = await api.set({"preset": "conservative"})
    assert (shown.rebalance_delay_s, shown.max_moves, shown.preset) == (60.0, 2, "conservative")
    shown = await api.set({"max_moves": 5, "preset": None})
    assert (shown.max_moves, shown.preset, shown.settings) == (5, "conservative", {"max_moves": 5})
    shown = await api.set({"preset": "aggressive"})  # a preset starts afresh
    assert (shown.rebalance_delay_s, shown.max_moves, shown.settings) == (0.0, 0, {})
    before = await kv.get(RECONCILE_POLICY)
    for body, message in [
        ({"preset": "lazy"}, 'policy.preset: must be one of aggressive, conservative, got "lazy"'),
        ({"max_moves": -1}, "policy.max_moves: must be a whole number in [0, 10000] (0: no limit), got -1"),
        (
            {"rebalance_delay_s": "soon"},
            'policy.rebalance_delay_s: must be a number of seconds in [0, 86400], got "soon"',
        ),
        ({"speed": 3}, "policy.speed: unknown key (expected: max_moves, preset, rebalance_delay_s)"),
        ({}, "nothing to set: give any of max_moves, preset, rebalance_delay_s"),
        ([], "the policy must be a JSON object"),
    ]:
        with pytest.raises(RequestError) as caught:
            await api.set(body)
        assert (caught.value.kind.value, caught.value.message) == ("bad_request", message)
    assert await kv.get(RECONCILE_POLICY) == before  # a refusal writes nothing


async def test_a_late_policy_change_does_not_undo_the_one_that_came_after_it(handlers: Handlers) -> None:
    api = ReconcileOperations(handlers)
    read = await handlers.current_revision()
    await api.set({"max_moves": 3}, since=read)  # the resend, elsewhere
    assert (await api.set({"max_moves": 3}, since=read)).max_moves == 3  # the first copy: done
    await api.set({"max_moves": 7}, since=await handlers.current_revision())
    with pytest.raises(RequestError, match="the reconciliation policy was changed at revision") as refused:
        await api.set({"max_moves": 3}, since=read)  # the first copy, after the operator went on
    assert refused.value.kind.value == "conflict"
    assert (await api.status()).max_moves == 7


async def test_the_api_lists_overriding_blueprints_and_lost_nodes_and_rebalances(
    kv: MemoryStore,
    handlers: Handlers,
) -> None:
    api = ReconcileOperations(handlers)
    careful = Blueprint(
        name="careful",
        slices=(SliceSpec(artifact=ECHO, instances=1),),
        policy=ReconcilePolicy(rebalance_delay_s=9.0),
    )
    await kv.put(BLUEPRINTS + "careful", encode_record(careful))
    await kv.put(lost_node_key("n3"), encode_record(LostNodeRecord(since=5.0, instances=2, delay_s=9.0)))
    shown = await api.status()
    assert shown.blueprints == (
        BlueprintPolicy(
            name="careful", preset="", settings={"rebalance_delay_s": 9.0}, rebalance_delay_s=9.0, max_moves=0
        ),
    )
    assert shown.lost == (LostNodeInfo(node_id="n3", since=5.0, instances=2, delay_s=9.0, awaited=True),)
    shown = await api.rebalance()
    assert shown.lost[0].awaited is False
    assert await kv.get(REBALANCE_KEY) is not None


async def test_a_late_rebalance_ends_no_wait_of_a_node_lost_after_it_was_asked(
    kv: MemoryStore, handlers: Handlers
) -> None:
    api = ReconcileOperations(handlers)
    lost = encode_record(LostNodeRecord(since=5.0, instances=2, delay_s=9.0))
    await kv.put(lost_node_key("n2"), lost)
    read = await handlers.current_revision()
    await kv.put(lost_node_key("n3"), lost)  # lost after the operator's client read the revision
    shown = await api.rebalance(since=read)  # (a late copy, or the resend: the same reach)
    assert {n.node_id: n.awaited for n in shown.lost} == {"n2": False, "n3": True}
    assert (await api.rebalance()).lost[1].awaited is False  # a rebalance asked now reaches n3
    shown = await api.rebalance(since=read)  # a late copy after it: the mark never goes back
    assert {n.node_id: n.awaited for n in shown.lost} == {"n2": False, "n3": False}


# ---------------------------------------------------------------------------- events


def _kv(key: str, value: bytes, revision: int) -> KeyValue:
    return KeyValue(key=key, value=value, create_revision=revision, mod_revision=revision, version=1)


def test_the_events_of_the_policy_lost_nodes_and_rebalances() -> None:
    policy = ReconcilePolicy(preset="conservative", max_moves=3, updated=100.0)
    raw = Event(kind=EventKind.PUT, kv=_kv(RECONCILE_POLICY, encode_record(policy), 5), prev=None, revision=5)
    (event,) = describe(raw)
    assert (event.kind, event.timestamp, event.message) == (
        "reconcile_policy_set",
        100.0,
        "reconciliation policy set: rebalance delay 60 s, at most 3 moves at a time (preset conservative)",
    )
    key = LOST_NODES + "n3"
    lost = encode_record(LostNodeRecord(since=200.0, instances=2, delay_s=60.0))
    raw = Event(kind=EventKind.PUT, kv=_kv(key, lost, 6), prev=None, revision=6)
    (event,) = describe(raw)
    assert (event.kind, event.node_id, event.timestamp) == ("rebalance_delayed", "n3", 200.0)
    assert (
        event.message
        == "node n3 lost: its 2 instance records wait up to 60 s for it to come back (rebalance delay)"
    )
    gone = Event(kind=EventKind.DELETE, kv=_kv(key, b"", 7), prev=_kv(key, lost, 6), revision=7)
    assert needs_time(gone)
    (event,) = describe(gone, at=250.0)
    assert (event.kind, event.timestamp) == ("rebalance_delay_ended", 250.0)
    request = encode_record(RebalanceRequest(requested_at=300.0))
    (event,) = describe(Event(kind=EventKind.PUT, kv=_kv(REBALANCE_KEY, request, 8), prev=None, revision=8))
    assert (event.kind, event.timestamp) == ("rebalance_requested", 300.0)
    bad = Event(kind=EventKind.PUT, kv=_kv(key, b"{", 9), prev=None, revision=9)
    assert describe(bad) == []
