"""The invoker's retry rule, in process: endpoints come from the memory store through the real registry,
local instances are simulated slice processes, remote nodes answer through a stand-in for the peer
connections (the seam `ClusterInvoker` takes). A call that never reached an instance is tried on another
endpoint; one that may have run is retried only if its entry point is idempotent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
from shell_support import FakeSliceStore, hold, register

from aether_kv import MemoryStore, Put
from aether_node.core._blueprint import Blueprint, SliceSpec
from aether_node.core._coordinates import Coordinates
from aether_node.core._errors import InvocationError, NoEndpointError
from aether_node.core._kv_cache import KVCache
from aether_node.core._records import EndpointRecord, RolloutPhase, RolloutRecord, encode_record
from aether_node.core._schema import BLUEPRINTS, InstanceKey, endpoint_key, rollout_key
from aether_node.core._update_spec import DEFAULT_MIN_READY_S
from aether_node.observe._metrics import UNKNOWN, NodeMetrics
from aether_node.routing._endpoints import EndpointRegistry
from aether_node.routing._invoker import ClusterInvoker
from aether_node.routing._peer_backoff import PeerBackoff
from aether_node.routing._peers import LostInFlightError, NotSentError
from aether_node.runtime._lifecycle import Phase

ECHO = Coordinates.parse("org.example:echo:1.0")


class Peers:
    """Remote nodes: each address fails as told (a call never sent, or lost in flight) or answers."""

    def __init__(self) -> None:
        self.failures: dict[str, Exception] = {}
        self.calls: list[str] = []
        self.backoff = PeerBackoff()  # (as PeerClients': nobody is out here)

    async def invoke(
        self,
        address: str,
        coordinates: str,
        instance: int,
        entry: str,
        payload: Any,
        timeout: float,
        depth: int = 0,
    ) -> Any:
        await trio.lowlevel.checkpoint()
        self.calls.append(address)
        if address in self.failures:
            raise self.failures[address]
        return {"from": address}


@attrs.define
class World:
    kv: MemoryStore
    store: FakeSliceStore
    peers: Peers
    invoker: ClusterInvoker
    cache: KVCache

    async def publish(self, node_id: str, instance: int, *, idempotent: bool) -> None:
        record = EndpointRecord(
            node_id=node_id, instance=instance, entries=("echo",), idempotent=("echo",) if idempotent else ()
        )
        await self.kv.txn(success=[Put(key=endpoint_key(ECHO, instance), value=encode_record(record))])
        await self.cache.caught_up("endpoints/", self.kv.revision)

    async def deploy(self, instances: int) -> None:
        """A blueprint `demo` that asks for `instances` of echo."""
        blueprint = Blueprint(name="demo", slices=(SliceSpec(artifact=str(ECHO), instances=instances),))
        revision = (await self.kv.put(BLUEPRINTS + "demo", encode_record(blueprint))).revision
        await self.cache.caught_up(BLUEPRINTS, revision)

    async def withdraw(self, instance: int) -> None:
        """The instance's endpoint record deleted, as when it leaves ACTIVE."""
        revision = (await self.kv.delete(endpoint_key(ECHO, instance))).revision
        await self.cache.caught_up("endpoints/", revision)

    async def local(self, instance: int, *, idempotent: bool) -> InstanceKey:
        key = InstanceKey("n1", ECHO, instance)
        await self.store.activate(await self.store.load(key, {}))
        await self.publish("n1", instance, idempotent=idempotent)
        return key


@pytest.fixture
async def world() -> AsyncIterator[World]:
    kv = MemoryStore()
    for node_id in ("n1", "n2"):
        await register(kv, node_id)
    async with trio.open_nursery() as nursery:
        cache = KVCache(kv, EndpointRegistry.PREFIXES)
        await nursery.start(cache.run)
        store, peers = FakeSliceStore(), Peers()
        invoker = ClusterInvoker("n1", store, EndpointRegistry(cache), peers)  # type: ignore[arg-type]
        yield World(kv, store, peers, invoker, cache)
        nursery.cancel_scope.cancel()


async def test_a_call_is_answered_by_a_local_instance(world: World) -> None:
    await world.local(0, idempotent=False)
    answer = await world.invoker.invoke("org.example:echo", "echo", {"x": 1})
    assert answer["payload"] == {"x": 1}


async def test_an_instance_that_is_gone_is_skipped_whatever_the_entry_point(world: World) -> None:
    gone = await world.local(0, idempotent=False)
    await world.local(1, idempotent=False)
    world.store.get(gone).phase = Phase.LOADED  # type: ignore[union-attr]  # stopping: not ACTIVE
    for _ in range(3):
        answer = await world.invoker.invoke("org.example:echo", "echo", None)
        assert answer["pid"] == world.store.get(InstanceKey("n1", ECHO, 1)).host.pid  # type: ignore[union-attr]


@pytest.mark.parametrize(("idempotent", "retried"), [(True, True), (False, False)])
async def test_a_call_lost_in_flight_is_retried_only_if_idempotent(
    world: World, idempotent: bool, retried: bool
) -> None:
    await world.publish("n2", 0, idempotent=idempotent)
    await world.local(1, idempotent=idempotent)
    world.peers.failures["n2.invalid:1"] = LostInFlightError("the connection to n2 closed mid-call")
    # round robin: calls alternate, so within two calls one goes to n2 first
    outcomes = []
    for _ in range(2):
        try:
            outcomes.append(await world.invoker.invoke("org.example:echo", "echo", None))
        except InvocationError as error:
            outcomes.append(error)
    errors = [o for o in outcomes if isinstance(o, InvocationError)]
    assert world.peers.calls == ["n2.invalid:1"]
    if retried:
        assert errors == []
    else:
        assert len(errors) == 1 and errors[0].kind == "unavailable" and "not idempotent" in errors[0].message


async def test_a_call_never_sent_is_tried_elsewhere_even_if_not_idempotent(world: World) -> None:
    await world.publish("n2", 0, idempotent=False)
    await world.local(1, idempotent=False)
    world.peers.failures["n2.invalid:1"] = NotSentError("could not connect to n2")
    for _ in range(2):
        assert "pid" in await world.invoker.invoke("org.example:echo", "echo", None)
    assert world.peers.calls == ["n2.invalid:1"]


async def test_when_every_endpoint_fails_the_last_reason_is_raised(world: World) -> None:
    await world.publish("n2", 0, idempotent=True)
    world.peers.failures["n2.invalid:1"] = NotSentError("could not connect to n2")
    with pytest.raises(InvocationError, match="could not connect to n2") as raised:
        await world.invoker.invoke("org.example:echo", "echo", None)
    assert raised.value.kind == "unavailable"
    with pytest.raises(InvocationError) as raised:
        await world.invoker.invoke("org.example:nothing", "echo", None)
    assert raised.value.kind == "no_endpoint"


async def no_endpoint(invoker: ClusterInvoker, entry: str = "echo") -> NoEndpointError:
    with pytest.raises(NoEndpointError) as raised:
        await invoker.invoke("org.example:echo", entry, None)
    return raised.value


async def test_a_deployed_slice_with_no_active_instance_is_unavailable_not_unknown(world: World) -> None:
    assert (await no_endpoint(world.invoker)).kind == "no_endpoint"  # nothing deploys it: a typo
    await world.deploy(2)
    unavailable = await no_endpoint(world.invoker)
    assert unavailable.kind == "unavailable"
    assert unavailable.message == (
        "no ACTIVE instance of org.example:echo now: blueprint demo asks for 2 instances, starting or"
        " restarting (`aether slice status org.example:echo`); try again shortly"
    )
    # an instance is ACTIVE: it answers; a wrong entry point is known to be one while it publishes
    await world.local(0, idempotent=False)
    assert "pid" in await world.invoker.invoke("org.example:echo", "echo", None)
    typo = await no_endpoint(world.invoker, "ehco")
    assert (typo.kind, typo.message) == (
        "no_endpoint",
        "org.example:echo has no entry point 'ehco' (it has: echo)",
    )
    # every instance gone (restarting): unavailable again; any entry point then (none publishes its own)
    await world.withdraw(0)
    assert (await no_endpoint(world.invoker)).kind == "unavailable"
    assert (await no_endpoint(world.invoker, "ehco")).kind == "unavailable"
    # the blueprint gone too: a slice nothing knows
    await world.cache.caught_up(BLUEPRINTS, (await world.kv.delete(BLUEPRINTS + "demo")).revision)
    assert (await no_endpoint(world.invoker)).kind == "no_endpoint"
    assert world.peers.calls == [], "a call that found no endpoint is sent nowhere"


async def test_a_deployed_slice_whose_instances_nodes_are_not_registered_is_unavailable(world: World) -> None:
    await world.publish("n9", 0, idempotent=True)  # n9 never registered (its lease lapsed)
    error = await no_endpoint(world.invoker)
    assert error.kind == "unavailable" and "on a registered node" in error.message
    assert (await no_endpoint(world.invoker, "ehco")).kind == "no_endpoint"
    assert world.peers.calls == []


async def test_an_unavailable_call_that_was_routed_is_no_no_endpoint_error(world: World) -> None:
    await world.deploy(1)
    await world.publish("n2", 0, idempotent=True)
    world.peers.failures["n2.invalid:1"] = NotSentError("could not connect to n2")
    with pytest.raises(InvocationError, match="could not connect to n2") as raised:
        await world.invoker.invoke("org.example:echo", "echo", None)
    assert raised.value.kind == "unavailable" and not isinstance(raised.value, NoEndpointError)


async def test_what_a_call_that_found_no_endpoint_named_becomes_no_label(world: World) -> None:
    metrics = NodeMetrics()
    invoker = ClusterInvoker("n1", world.store, world.invoker.registry, world.peers, metrics=metrics)  # type: ignore[arg-type]
    await world.deploy(1)
    for entry in ("echo", "ehco"):  # (no instance publishes: the entry point cannot be checked)
        assert (await no_endpoint(invoker, entry)).kind == "unavailable"
    await world.local(0, idempotent=False)
    await invoker.invoke("org.example:echo", "echo", None)
    await world.withdraw(0)
    assert (await no_endpoint(invoker)).kind == "unavailable"  # a known pair now: its own label
    errors = {
        (labels["artifact"], labels["entry"]): sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == "aether_invocation_errors_total"
        and (labels := sample.labels)["kind"] == "unavailable"
    }
    assert errors == {(UNKNOWN, UNKNOWN): 2, ("org.example:echo", "echo"): 1}


async def test_a_rollout_splits_the_calls_by_its_share_and_an_abort_sends_them_all_back(
    world: World, autojump_clock: Any
) -> None:
    await register(world.kv, "n3")
    candidate = Coordinates.parse("org.example:echo:2.0")
    for coordinates, node_id, instance in ((ECHO, "n2", 0), (candidate, "n3", 1)):
        record = EndpointRecord(node_id=node_id, instance=instance, entries=("echo",), idempotent=("echo",))
        await world.kv.put(endpoint_key(coordinates, instance), encode_record(record))
    rollout = RolloutRecord(
        artifact_id="org.example:echo",
        strategy="canary",
        stable="1.0",
        candidate="2.0",
        phase=RolloutPhase.OBSERVING,
        share=10,
    )
    await world.kv.put(rollout_key("org.example:echo"), encode_record(rollout))
    await world.cache.caught_up("cluster/rollouts/", world.kv.revision)
    # The candidate's endpoint was published just now: not ready (the slice's min_ready_s, the default
    # here, by this node's clock), its share goes to the stable version meanwhile.
    for _ in range(100):
        await world.invoker.invoke("org.example:echo", "echo", None, source="slice")
    assert set(world.peers.calls) == {"n2.invalid:1"}
    world.peers.calls.clear()
    await hold(DEFAULT_MIN_READY_S)  # (its window passes: virtual time)
    for _ in range(100):
        await world.invoker.invoke("org.example:echo", "echo", None, source="slice")
    assert world.peers.calls.count("n3.invalid:1") == 10  # the canary's share, exactly, over 100 calls
    assert world.peers.calls.count("n2.invalid:1") == 90
    counted = world.invoker.version_calls.snapshot()["org.example:echo"]  # for the leader's verdict
    assert (counted["1.0"]["calls"], counted["2.0"]["calls"], counted["2.0"]["errors"]) == (190, 10, 0)

    world.peers.calls.clear()
    aborted = attrs.evolve(rollout, phase=RolloutPhase.ABORTED, share=0)
    await world.kv.put(rollout_key("org.example:echo"), encode_record(aborted))
    await world.cache.caught_up("cluster/rollouts/", world.kv.revision)
    for _ in range(20):
        await world.invoker.invoke("org.example:echo", "echo", None)
    assert set(world.peers.calls) == {"n2.invalid:1"}

    # The stable version gone (its node's endpoints withdrawn): the split never refuses a call.
    world.peers.calls.clear()
    await world.kv.delete(endpoint_key(ECHO, 0))
    await world.cache.caught_up("endpoints/", world.kv.revision)
    await world.invoker.invoke("org.example:echo", "echo", None)
    assert world.peers.calls == ["n3.invalid:1"]
