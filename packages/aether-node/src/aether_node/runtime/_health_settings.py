"""The health checks in force for each slice on this node: the slice's `[slices.health]` from the
blueprints over the node's own `[health]` (`core/_health_spec.checks_of`).

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
    """`of(artifact_id)`: the checks of that slice here (None: off); `changed`: an event set at the next
    change of any slice's settings (capture it before reading), once `follow` runs. Without a cache: the
    node's own for every slice."""

    def __init__(self, node: HealthChecks, cache: KVCache | None = None) -> None:
        if cache is not None and BLUEPRINTS not in cache.prefixes:
            raise ValueError(f"the cache must follow {BLUEPRINTS}")
        self.node = node
        self.cache = cache
        self._read_at = -1  # the cache's revision of `blueprints/` when `_specs` was decoded
        self._specs: dict[str, HealthSpec | None] = {}
        self._changed = Broadcast()

    def of(self, artifact_id: str) -> HealthChecks | None:
        self.refresh()
        return checks_of(self._specs.get(artifact_id), self.node)

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
    def _decode(cache: KVCache) -> dict[str, HealthSpec | None]:
        """Each deployed slice's table by artifact id (one the blueprints cannot tell: the node's own)."""
        specs: dict[str, HealthSpec | None] = {}
        for key, kv in cache.data[BLUEPRINTS].items():
            try:
                blueprint = decode_record(key, kv.value, Blueprint)
            except RecordError as error:
                log.warning("%s: its slices are checked with this node's settings", error.message)
                continue
            for spec in blueprint.slices:
                specs[spec.artifact.rsplit(":", 1)[0]] = spec.health
        return specs
