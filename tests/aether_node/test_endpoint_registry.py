"""The EndpointRegistry kept up to date from the keys its cache says were touched, against one built
afresh over the same records (routes, entry points, balancing, splits, what the blueprints deploy),
through random sequences of endpoint, node, blueprint and rollout changes on an in-memory KV; and a
route no change touched keeps its tuple (the fast ingress's table keeps that route's row then); each
endpoint with when the cache first saw its record, each split with its slice's `min_ready_s`."""

from __future__ import annotations

import random
from typing import Any

import attrs
import pytest
import trio
from shell_support import hold

from aether_kv import MemoryStore
from aether_node.core._blueprint import Balancing, Blueprint, SliceSpec
from aether_node.core._coordinates import Coordinates
from aether_node.core._kv_cache import KVCache
from aether_node.core._records import EndpointRecord, NodeRecord, RolloutPhase, RolloutRecord, encode_record
from aether_node.core._schema import BLUEPRINTS, ENDPOINTS, NODES, ROLLOUTS, endpoint_key
from aether_node.core._update_spec import DEFAULT_MIN_READY_S, UpdateSpec
from aether_node.routing._endpoints import EndpointRegistry, VersionSplit

VERSIONS = [Coordinates.parse(c) for c in ("org.example:echo:1.0", "org.example:echo:2.0", "org.example:b:1")]


def view(registry: EndpointRegistry) -> object:
    routes = dict(registry.routes())
    artifacts = {artifact_id for artifact_id, _ in routes} | {"org.example:echo", "org.example:b"}
    return (
        routes,
        {a: registry.entries(a) for a in artifacts},
        {a: (registry.balancing(a), registry.split(a), registry.deployed(a)) for a in artifacts},
        {n: registry.node(n) for n in ("n1", "n2", "n3")},
    )


async def change(kv: MemoryStore, rng: random.Random) -> tuple[str, int]:
    """One random change; returns its prefix and revision."""
    kind = rng.choice(["endpoint"] * 6 + ["garbled", "node", "blueprint", "rollout"])
    if kind in ("endpoint", "garbled"):
        coordinates = rng.choice(VERSIONS)
        key = endpoint_key(coordinates, rng.randint(1, 6))
        if rng.random() < 0.3 and await kv.get(key) is not None:  # (deleting nothing makes no event)
            return ENDPOINTS, (await kv.delete(key)).revision
        entries = tuple(e for e in ("ping", "run") if rng.random() < 0.6)
        record = EndpointRecord(
            node_id=rng.choice(["n1", "n2", "n3"]),
            instance=1,
            entries=entries,
            idempotent=tuple(e for e in entries if rng.random() < 0.5),
        )
        return ENDPOINTS, (await kv.put(key, b"{" if kind == "garbled" else encode_record(record))).revision
    if kind == "node":
        node_id = rng.choice(["n1", "n2", "n3"])
        if rng.random() < 0.4 and await kv.get(NODES + node_id) is not None:
            return NODES, (await kv.delete(NODES + node_id)).revision
        return NODES, (
            await kv.put(NODES + node_id, encode_record(NodeRecord(node_id=node_id, ingress="x:1")))
        ).revision
    if kind == "blueprint":
        # (a slice is deployed by one blueprint at most: an apply refuses a second)
        name, artifact = rng.choice([("bp", "org.example:echo"), ("other", "org.example:b")])
        if rng.random() < 0.3 and await kv.get(BLUEPRINTS + name) is not None:
            return BLUEPRINTS, (await kv.delete(BLUEPRINTS + name)).revision
        spec = SliceSpec(
            artifact=f"{artifact}:1.0",
            instances=rng.randint(0, 3),
            balancing=rng.choice(list(Balancing)),
        )
        blueprint = encode_record(Blueprint(name=name, slices=(spec,)))
        return BLUEPRINTS, (await kv.put(BLUEPRINTS + name, blueprint)).revision
    record = RolloutRecord(
        artifact_id="org.example:echo",
        strategy="canary",
        stable="1.0",
        candidate="2.0",
        phase=RolloutPhase.OBSERVING,
        share=rng.choice([None, 10, 50]),
    )
    return ROLLOUTS, (await kv.put(ROLLOUTS + "org.example:echo", encode_record(record))).revision


@pytest.mark.parametrize("seed", range(6))
async def test_the_registry_kept_from_touched_keys_equals_one_built_afresh(seed: int) -> None:
    rng = random.Random(seed)
    kv = MemoryStore()
    for _ in range(10):
        await change(kv, rng)
    async with trio.open_nursery() as nursery:
        cache = KVCache(kv, EndpointRegistry.PREFIXES)
        await nursery.start(cache.run)
        kept = EndpointRegistry(cache)
        for _ in range(40):
            for _ in range(rng.randint(1, 4)):
                prefix, revision = await change(kv, rng)
                await cache.caught_up(prefix, revision)
            fresh_cache = KVCache(kv, EndpointRegistry.PREFIXES)
            async with trio.open_nursery() as inner:
                await inner.start(fresh_cache.run)
                assert view(kept) == view(EndpointRegistry(fresh_cache))
                inner.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


RUN1 = EndpointRecord(node_id="n1", instance=1, entries=("run",))


async def test_one_record_per_instance_gives_a_route_per_entry_point_it_lists() -> None:
    kv = MemoryStore()
    await kv.put(NODES + "n1", encode_record(NodeRecord(node_id="n1", ingress="x:1")))
    echo = VERSIONS[0]
    record = EndpointRecord(node_id="n1", instance=3, entries=("ping", "run"), idempotent=("ping",))
    await kv.put(endpoint_key(echo, 3), encode_record(record))
    async with trio.open_nursery() as nursery:
        cache = KVCache(kv, EndpointRegistry.PREFIXES)
        await nursery.start(cache.run)
        registry = EndpointRegistry(cache)
        assert registry.entries("org.example:echo") == {"ping", "run"}
        (ping,) = registry.endpoints("org.example:echo", "ping")
        (run,) = registry.endpoints("org.example:echo", "run")
        assert (ping.instance, ping.node_id, ping.idempotent, ping.coordinates) == (3, "n1", True, echo)
        assert (run.instance, run.idempotent) == (3, False)

        # The instance's record lists one entry point fewer: that route goes, the other stays.
        written = await kv.put(endpoint_key(echo, 3), encode_record(attrs.evolve(record, entries=("run",))))
        await cache.caught_up("endpoints/", written.revision)
        assert registry.entries("org.example:echo") == {"run"}
        assert registry.endpoints("org.example:echo", "ping") == ()
        assert len(registry.endpoints("org.example:echo", "run")) == 1

        # Withdrawn: one delete takes every route of the instance.
        await kv.put(endpoint_key(echo, 3), encode_record(record))
        deleted = await kv.delete(endpoint_key(echo, 3))
        await cache.caught_up("endpoints/", deleted.revision)
        assert registry.routes() == [] and registry.entries("org.example:echo") == set()
        nursery.cancel_scope.cancel()


async def test_a_route_no_change_touched_keeps_its_tuple() -> None:
    kv = MemoryStore()
    await kv.put(NODES + "n1", encode_record(NodeRecord(node_id="n1", ingress="x:1")))
    echo, other = VERSIONS[0], VERSIONS[2]
    for coordinates in (echo, other):
        await kv.put(endpoint_key(coordinates, 1), encode_record(RUN1))
    async with trio.open_nursery() as nursery:
        cache = KVCache(kv, EndpointRegistry.PREFIXES)
        await nursery.start(cache.run)
        registry = EndpointRegistry(cache)
        first = registry.endpoints("org.example:b", "run")
        written = await kv.put(endpoint_key(echo, 2), encode_record(attrs.evolve(RUN1, instance=2)))
        await cache.caught_up("endpoints/", written.revision)
        assert len(registry.endpoints("org.example:echo", "run")) == 2
        assert registry.endpoints("org.example:b", "run") is first
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- readiness of a rollout's candidates


async def test_an_endpoint_carries_when_the_watch_first_saw_its_record_and_a_split_its_min_ready_s(
    autojump_clock: Any,
) -> None:
    """`Endpoint.seen`: when the cache's watch delivered the record (not when a call first asked, which
    may be much later), seen anew when the record is put again (a restart publishes a new one), kept
    when the cache lists the prefix again and the record is the same; `VersionSplit.min_ready_s`: the
    slice's, from its blueprint (the default for a rollout no blueprint deploys)."""
    kv = MemoryStore()
    await kv.put(NODES + "n1", encode_record(NodeRecord(node_id="n1", ingress="x:1")))
    new = VERSIONS[1]
    rollout = RolloutRecord(
        artifact_id="org.example:echo",
        strategy="canary",
        stable="1.0",
        candidate="2.0",
        phase=RolloutPhase.OBSERVING,
        share=10,
    )
    await kv.put(ROLLOUTS + "org.example:echo", encode_record(rollout))
    async with trio.open_nursery() as nursery:
        cache = KVCache(kv, EndpointRegistry.PREFIXES)
        await nursery.start(cache.run)
        registry = EndpointRegistry(cache)
        assert registry.split("org.example:echo") == VersionSplit(
            stable="1.0", candidate="2.0", share=10, min_ready_s=DEFAULT_MIN_READY_S
        )
        spec = SliceSpec(artifact="org.example:echo:2.0", instances=2, update=UpdateSpec(min_ready_s=7.0))
        written = await kv.put(BLUEPRINTS + "bp", encode_record(Blueprint(name="bp", slices=(spec,))))
        await cache.caught_up(BLUEPRINTS, written.revision)
        split = registry.split("org.example:echo")
        assert split is not None and split.min_ready_s == 7.0

        published = trio.current_time()
        written = await kv.put(endpoint_key(new, 1), encode_record(RUN1))
        await cache.caught_up(ENDPOINTS, written.revision)
        await hold(30)  # no call asks meanwhile
        (first,) = registry.endpoints("org.example:echo", "run")
        assert first.seen == published

        # Listed again (the cache's task restarted, as its supervisor does): the same record, the same time.
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)
        (again,) = registry.endpoints("org.example:echo", "run")
        assert again.seen == published

        # Published again (the instance restarted): seen anew.
        await hold(1)
        await kv.delete(endpoint_key(new, 1))
        republished = trio.current_time()
        written = await kv.put(endpoint_key(new, 1), encode_record(RUN1))
        await cache.caught_up(ENDPOINTS, written.revision)
        (restarted,) = registry.endpoints("org.example:echo", "run")
        assert restarted.seen == republished > published
        nursery.cancel_scope.cancel()
