"""EndpointRegistry: a passive, watch-fed index of every published endpoint in the cluster, the split of
calls between two versions while a canary or blue-green rollout runs (`cluster/rollouts/`), and the
choice of one endpoint per call (version split and balancing strategies, pure). It never writes to the
KV."""

from __future__ import annotations

import collections
import random
from collections.abc import Mapping, Sequence

import attrs

from ..core._blueprint import Balancing, Blueprint
from ..core._coordinates import Coordinates
from ..core._kv_cache import KVCache
from ..core._records import EndpointRecord, NodeRecord, RecordError, RolloutRecord, decode_record
from ..core._schema import BLUEPRINTS, ENDPOINTS, NODES, ROLLOUTS, parse_endpoint_key


@attrs.frozen(kw_only=True)
class Endpoint:
    coordinates: Coordinates
    entry: str
    instance: int
    node_id: str
    idempotent: bool
    # (coordinates, instance): the instance this endpoint reaches; computed once, read on every call
    target: tuple[str, int] = attrs.field(init=False, eq=False, repr=False)

    @target.default
    def _target(self) -> tuple[str, int]:
        return (str(self.coordinates), self.instance)


@attrs.frozen(kw_only=True)
class VersionSplit:
    """A rollout's split of one slice's calls: `share` percent to the `candidate` version, the rest to the
    `stable` one."""

    stable: str
    candidate: str
    share: int


def split_by_version(endpoints: Sequence[Endpoint], split: VersionSplit, turn: int) -> Sequence[Endpoint]:
    """The endpoints call number `turn` may go to: the candidate's when the running share crosses a whole
    call (so any 100 consecutive calls send exactly `share` to the candidate, spread evenly), else the
    stable version's. Pure. If the chosen version has no endpoint, the other's; if neither has one, any
    (a call is never refused for the split)."""
    to_candidate = (turn + 1) * split.share // 100 > turn * split.share // 100
    first, second = (split.candidate, split.stable) if to_candidate else (split.stable, split.candidate)
    for version in (first, second):
        chosen = [e for e in endpoints if e.coordinates.version == version]
        if chosen:
            return chosen
    return endpoints


def may_retry(*, reached: bool, idempotent: bool) -> bool:
    """Whether a failed attempt of a call may go to another endpoint: one that never reached an instance
    (not sent, or the instance was gone) always; one that may have run (its process or node died mid-call)
    only if the entry point is idempotent. Pure: the invoker and the fast ingress's worker both ask it."""
    return not reached or idempotent


def choose(
    endpoints: Sequence[Endpoint],
    strategy: Balancing,
    *,
    local_node: str,
    in_flight: Mapping[tuple[str, int], int],
    turn: int,
    rng: random.Random,
) -> Endpoint:
    """Pick one endpoint. Pure given `turn` (round-robin position) and `rng`."""
    if strategy is Balancing.LOCAL_FIRST:
        local = [e for e in endpoints if e.node_id == local_node]
        return (local or list(endpoints))[turn % len(local or endpoints)]
    if strategy is Balancing.RANDOM:
        return rng.choice(list(endpoints))
    if strategy is Balancing.POWER_OF_TWO and len(endpoints) > 1:
        first, second = rng.sample(list(endpoints), 2)
        return min((first, second), key=lambda e: in_flight.get(e.target, 0))
    return endpoints[turn % len(endpoints)]


def _order(endpoint: Endpoint) -> tuple[str, str, int]:
    return (endpoint.node_id, *endpoint.target)


class EndpointRegistry:
    """Endpoints by (artifact, entry), node addresses, per-slice balancing; rebuilt when the cache moves."""

    def __init__(self, cache: KVCache) -> None:
        self.cache = cache
        self._built_at: tuple[int, ...] = ()
        # only endpoints of registered nodes; each tuple sorted by (node, coordinates, instance)
        self._endpoints: dict[tuple[str, str], tuple[Endpoint, ...]] = {}
        self._entries: dict[str, set[str]] = {}
        self._nodes: dict[str, NodeRecord] = {}
        self._balancing: dict[str, Balancing] = {}
        self._splits: dict[str, VersionSplit] = {}

    PREFIXES = (ENDPOINTS, NODES, BLUEPRINTS, ROLLOUTS)

    def _refresh(self) -> None:
        seen = self.cache.seen
        # self.PREFIXES, unrolled: every call
        version = (seen[ENDPOINTS], seen[NODES], seen[BLUEPRINTS], seen[ROLLOUTS])
        if version == self._built_at:
            return
        endpoints: dict[tuple[str, str], list[Endpoint]] = collections.defaultdict(list)
        entries: dict[str, set[str]] = collections.defaultdict(set)
        for key, kv in self.cache.data[ENDPOINTS].items():
            parsed = parse_endpoint_key(key)
            if parsed is None:
                continue
            coordinates, entry, instance = parsed
            try:
                record = decode_record(key, kv.value, EndpointRecord)
            except RecordError:
                continue
            endpoint = Endpoint(
                coordinates=coordinates,
                entry=entry,
                instance=instance,
                node_id=record.node_id,
                idempotent=record.idempotent,
            )
            endpoints[(coordinates.artifact_id, entry)].append(endpoint)
            entries[coordinates.artifact_id].add(entry)
        nodes = {}
        for key, kv in self.cache.data[NODES].items():
            try:
                record = decode_record(key, kv.value, NodeRecord)
            except RecordError:
                continue
            nodes[record.node_id] = record
        routable = {
            route: tuple(sorted((e for e in found if e.node_id in nodes), key=_order))
            for route, found in endpoints.items()
        }
        balancing = {}
        for key, kv in self.cache.data[BLUEPRINTS].items():
            try:
                blueprint = decode_record(key, kv.value, Blueprint)
            except RecordError:
                continue
            for spec in blueprint.slices:
                balancing[spec.artifact.rsplit(":", 1)[0]] = spec.balancing
        splits = {}
        for key, kv in self.cache.data[ROLLOUTS].items():
            try:
                rollout = decode_record(key, kv.value, RolloutRecord)
            except RecordError:
                continue
            if rollout.share is not None:
                splits[rollout.artifact_id] = VersionSplit(
                    stable=rollout.stable, candidate=rollout.candidate, share=rollout.share
                )
        self._endpoints, self._entries, self._nodes, self._balancing, self._splits = (
            routable,
            dict(entries),
            nodes,
            balancing,
            splits,
        )
        self._built_at = version

    def endpoints(self, artifact_id: str, entry: str) -> tuple[Endpoint, ...]:
        """The endpoints of registered nodes, sorted by (node, coordinates, instance)."""
        self._refresh()
        return self._endpoints.get((artifact_id, entry), ())

    def routes(self) -> list[tuple[tuple[str, str], tuple[Endpoint, ...]]]:
        """Every (artifact id, entry) with its endpoints, as `endpoints` gives them."""
        self._refresh()
        return list(self._endpoints.items())

    def entries(self, artifact_id: str) -> set[str]:
        self._refresh()
        return self._entries.get(artifact_id, set())

    def node(self, node_id: str) -> NodeRecord | None:
        self._refresh()
        return self._nodes.get(node_id)

    def balancing(self, artifact_id: str) -> Balancing:
        self._refresh()
        return self._balancing.get(artifact_id, Balancing.ROUND_ROBIN)

    def split(self, artifact_id: str) -> VersionSplit | None:
        """The version split of a rollout of `artifact_id` in progress; None: calls go by instance."""
        self._refresh()
        return self._splits.get(artifact_id)
