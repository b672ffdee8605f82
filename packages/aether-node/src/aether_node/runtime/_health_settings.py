"""The health checks in force for each slice on this node: the slice's `[slices.health]` from the
blueprints over the node's own `[health]` (`core/_health_spec.checks_of`); and the memory each of its
instances may use (`[slices.resources] memory_mib`, `_memory_limit.py`).

It reads the node's watch-fed copy of `blueprints/` (the `KVCache` the router also reads), so a change of
a slice's table reaches the running instances' checks without any restart, and decodes the blueprints
again only when they changed. It never writes; `follow` (run by the health checks) notices a change of
the blueprints and tells the checks waiting only when a slice's settings changed.
"""

from __future__ import annotations

import logging

import trio

from ..core._blueprint import Blueprint
from ..core._health_spec import HealthSpec, checks_of
from ..core._kv_cache import KVCache
from ..core._policies import HealthChecks
from ..core._records import RecordError, decode_record
from ..core._schema import BLUEPRINTS
from ._broadcast import Broadcast

log = logging.getLogger("aether_node.health_checks")


class SliceHealth:
    """`of(artifact_id)`: the checks of that slice here (None: off); `memory_mib(artifact_id)`: the memory
    an instance of it may use (0: no limit); `changed`: an event set at the next change of any slice's
    settings (capture it before reading), once `follow` runs. Without a cache: the node's own checks for
    every slice, and no memory limit."""

    def __init__(self, node: HealthChecks, cache: KVCache | None = None) -> None:
        if cache is not None and BLUEPRINTS not in cache.prefixes:
            raise ValueError(f"the cache must follow {BLUEPRINTS}")
        self.node = node
        self.cache = cache
        self._read_at = -1  # the cache's revision of `blueprints/` when `_specs` was decoded
        self._specs: dict[str, tuple[HealthSpec | None, int]] = {}  # artifact id → (health, memory_mib)
        self._changed = Broadcast()

    def of(self, artifact_id: str) -> HealthChecks | None:
        self.refresh()
        found = self._specs.get(artifact_id)
        return checks_of(found[0] if found is not None else None, self.node)

    def memory_mib(self, artifact_id: str) -> int:
        self.refresh()
        found = self._specs.get(artifact_id)
        return found[1] if found is not None else 0

    @property
    def changed(self) -> Broadcast:
        return self._changed

    def refresh(self) -> None:
        """Take in a change of the blueprints, if the cache has one: decode them again, and set `changed`
        if any slice's settings changed (a blueprint change of something else wakes no check)."""
        if self.cache is None or self.cache.seen[BLUEPRINTS] == self._read_at:
            return
        self._read_at = self.cache.seen[BLUEPRINTS]
        specs = self._decode(self.cache)
        if specs != self._specs:
            self._specs = specs
            changed, self._changed = self._changed, Broadcast()
            changed.set()

    async def follow(self) -> None:
        """`refresh` at every change of the cache, until cancelled (one task wakes for the cache's
        changes, of endpoints too; the checks of each instance only for a change of their settings)."""
        if self.cache is None:
            await trio.sleep_forever()
        while True:
            changed = self.cache.changed
            self.refresh()
            await changed.wait()

    @staticmethod
    def _decode(cache: KVCache) -> dict[str, tuple[HealthSpec | None, int]]:
        """Each deployed slice's health table and memory_mib by artifact id (one the blueprints cannot
        tell: the node's own checks, no memory limit)."""
        specs: dict[str, tuple[HealthSpec | None, int]] = {}
        for key, kv in cache.data[BLUEPRINTS].items():
            try:
                blueprint = decode_record(key, kv.value, Blueprint)
            except RecordError as error:
                log.warning("%s: its slices are checked with this node's settings", error.message)
                continue
            for spec in blueprint.slices:
                specs[spec.artifact.rsplit(":", 1)[0]] = (spec.health, spec.resources.memory_mib)
        return specs
