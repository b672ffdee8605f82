"""A node's per-slice health settings (`runtime/_health_settings.SliceHealth`) over a watch-fed copy of
`blueprints/` (a real `KVCache` on the in-process `MemoryStore`): a slice's `[slices.health]` over the
node's `[health]`, checks off, the node's own for a slice without a table, for an unknown slice and for
a blueprint that does not decode; the checks waiting are woken when a slice's settings change, and not
for a change of anything else."""

from __future__ import annotations

import trio

from aether_kv import MemoryStore
from aether_node.core._blueprint import Blueprint, SliceSpec
from aether_node.core._health_spec import HealthSpec
from aether_node.core._kv_cache import KVCache
from aether_node.core._policies import HealthChecks
from aether_node.core._records import encode_record
from aether_node.core._schema import BLUEPRINTS
from aether_node.runtime._health_settings import SliceHealth

NODE = HealthChecks(interval=10.0, timeout=5.0, failures=3)
FAULTY = "org.aether:faulty"
KEY = f"{BLUEPRINTS}demo"


def blueprint(health: HealthSpec | None, instances: int = 1) -> bytes:
    specs = (
        SliceSpec(artifact=f"{FAULTY}:1.0.0", instances=instances, health=health),
        SliceSpec(artifact="org.aether:echo:1.0.0", instances=1),
    )
    return encode_record(Blueprint(name="demo", slices=specs))


async def changed_after(store: MemoryStore, settings: SliceHealth, value: bytes) -> bool:
    """Write `value` to the blueprint's key; whether the settings said they changed, once the cache has
    the write and the settings have taken it in."""
    changed = settings.changed
    revision = (await store.put(KEY, value)).revision
    assert settings.cache is not None
    with trio.fail_after(5):
        await settings.cache.caught_up(BLUEPRINTS, revision)
    settings.refresh()  # (as `follow` does at each change of the cache)
    return changed.is_set()


async def test_a_slices_table_over_the_nodes_settings_wakes_the_checks_only_when_it_changes() -> None:
    store = MemoryStore()
    cache = KVCache(store, [BLUEPRINTS])
    settings = SliceHealth(NODE, cache)
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)
        assert settings.of(FAULTY) == NODE

        assert await changed_after(store, settings, blueprint(HealthSpec(timeout=60.0)))
        assert settings.of(FAULTY) == HealthChecks(interval=10.0, timeout=60.0, failures=3)
        assert settings.of("org.aether:echo") == settings.of("org.aether:other") == NODE

        assert not await changed_after(store, settings, blueprint(HealthSpec(timeout=60.0), instances=2))

        assert await changed_after(store, settings, blueprint(HealthSpec(enabled=False)))
        assert settings.of(FAULTY) is None

        assert await changed_after(store, settings, b"not a blueprint")
        assert settings.of(FAULTY) == NODE
        nursery.cancel_scope.cancel()


async def test_follow_wakes_a_check_waiting_for_a_change() -> None:
    store = MemoryStore()
    cache = KVCache(store, [BLUEPRINTS])
    settings = SliceHealth(NODE, cache)
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)
        nursery.start_soon(settings.follow)
        waiting = settings.changed

        await store.put(KEY, blueprint(HealthSpec(interval=1.0)))

        with trio.fail_after(5):
            await waiting.wait()
        assert settings.of(FAULTY) == HealthChecks(interval=1.0, timeout=5.0, failures=3)
        nursery.cancel_scope.cancel()


def test_without_a_cache_every_slice_has_the_nodes_settings() -> None:
    assert SliceHealth(NODE).of(FAULTY) == NODE
