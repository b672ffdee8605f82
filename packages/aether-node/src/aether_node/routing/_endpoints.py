"""EndpointRegistry: a passive, watch-fed index of every published endpoint in the cluster (with when
this node first saw its record), the split of calls between two versions while a canary or blue-green
rollout runs (`cluster/rollouts/`, with the slice's `min_ready_s`), what the blueprints deploy (each
slice's balancing; for a call that finds no endpoint, whether its slice is deployed: `_no_endpoint`),
and the choice of one endpoint per call (version split and balancing strategies, pure: the clock's
reading comes in as `now`). It never writes to the KV."""

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
from ..core._update_spec import DEFAULT_MIN_READY_S
from ._no_endpoint import Deployment, deployments


@attrs.frozen(kw_only=True)
class Endpoint:
    coordinates: Coordinates
    entry: str
    instance: int
    node_id: str
    idempotent: bool
    # When this node's endpoint watch first saw the record (trio's clock; None: not known, it counts as
    # ready). A restart publishes a new record, so it is seen anew.
    seen: float | None = attrs.field(default=None, eq=False)
    # (coordinates, instance): the instance this endpoint reaches; computed once, read on every call
    target: tuple[str, int] = attrs.field(init=False, eq=False, repr=False)

    @target.default
    def _target(self) -> tuple[str, int]:
        return (str(self.coordinates), self.instance)


@attrs.frozen(kw_only=True)
class VersionSplit:
    """A rollout's split of one slice's calls: `share` percent to the `candidate` version, the rest to the
    `stable` one; a candidate's endpoint counts only once its record has stood `min_ready_s` (the
    slice's `[slices.update]`)."""

    stable: str
    candidate: str
    share: int
    min_ready_s: float = 0.0


def split_by_version(
    endpoints: Sequence[Endpoint], split: VersionSplit, turn: int, *, now: float
) -> Sequence[Endpoint]:
    """The endpoints call number `turn` may go to: the candidate's when the running share crosses a whole
    call (so any 100 consecutive calls send exactly `share` to the candidate, spread evenly), else the
    stable version's. Pure.

    A candidate's endpoint first seen (`Endpoint.seen`) less than `split.min_ready_s` before `now` is not
    ready (a new instance, or one that restarted: perhaps crash-looping), as the leader counts
    new instances for a step or the switch: the candidate's calls go to its ready endpoints, else to the
    stable version (a canary's share waits for candidates that stay up). If the chosen version has no
    endpoint, the other's; then the candidate's endpoints that are not ready; if none of them, any (a call
    is never refused for the split). A config change alone has `stable == candidate`: its endpoints
    cannot be told apart, so every endpoint of that version not ready gives way to those that are."""
    to_candidate = (turn + 1) * split.share // 100 > turn * split.share // 100
    ready_after = split.min_ready_s
    candidate: list[Endpoint] = []
    stable: list[Endpoint] = []
    settling: list[Endpoint] = []
    for e in endpoints:
        version = e.coordinates.version
        if version == split.candidate:
            if ready_after > 0 and e.seen is not None and now - e.seen < ready_after:
                settling.append(e)
            elif version == split.stable:
                stable.append(e)  # (a config change alone: both sides are one version)
            else:
                candidate.append(e)
        elif version == split.stable:
            stable.append(e)
    first, second = (candidate, stable) if to_candidate else (stable, candidate)
    for chosen in (first, second, settling):
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


def _endpoints(key: str, value: bytes, seen: float | None) -> tuple[Endpoint, ...]:
    """An `endpoints/` record (first seen at `seen`) as one Endpoint per entry point it lists; none if
    its key or value does not parse."""
    parsed = parse_endpoint_key(key)
    if parsed is None:
        return ()
    coordinates, instance = parsed
    try:
        record = decode_record(key, value, EndpointRecord)
    except RecordError:
        return ()
    idempotent = set(record.idempotent)
    return tuple(
        Endpoint(
            coordinates=coordinates,
            entry=entry,
            instance=instance,
            node_id=record.node_id,
            idempotent=entry in idempotent,
            seen=seen,
        )
        for entry in record.entries
    )


class EndpointRegistry:
    """Endpoints by (artifact, entry), node addresses, per-slice balancing and deployments (the
    blueprints that ask for the slice, with their numbers of instances); brought up to date when the
    cache moves: an endpoint record (an instance's, listing its entry points) is decoded once per change
    of it (the keys the cache says were
    touched), and only the routes it belongs to are sorted again (a route not touched keeps its tuple,
    the same object); a change of `nodes/` filters every route again, one of `blueprints/` or
    `cluster/rollouts/` decodes those (few) records again. Each endpoint carries when the cache first
    saw its record (`KVCache.first_seen`: when the watch delivered it, not when a call first asked), and
    each split its slice's `min_ready_s`, for `split_by_version`'s readiness rule."""

    def __init__(self, cache: KVCache) -> None:
        self.cache = cache
        self._built_at: tuple[int, ...] = ()
        # only endpoints of registered nodes; each tuple sorted by (node, coordinates, instance)
        self._endpoints: dict[tuple[str, str], tuple[Endpoint, ...]] = {}
        self._entries: dict[str, set[str]] = {}
        self._nodes: dict[str, NodeRecord] = {}
        self._balancing: dict[str, Balancing] = {}
        self._min_ready: dict[str, float] = {}  # each deployed slice's min_ready_s, by artifact id
        self._deployed: dict[str, tuple[Deployment, ...]] = {}
        self._splits: dict[str, VersionSplit] = {}
        # every decoded endpoint record, of any node: its endpoints (one per entry point) by key, and
        # each endpoint by route and key
        self._decoded: dict[str, tuple[Endpoint, ...]] = {}
        self._found: dict[tuple[str, str], dict[str, Endpoint]] = {}

    PREFIXES = (ENDPOINTS, NODES, BLUEPRINTS, ROLLOUTS)

    def _refresh(self) -> None:
        seen = self.cache.seen
        # self.PREFIXES, unrolled: every call
        version = (seen[ENDPOINTS], seen[NODES], seen[BLUEPRINTS], seen[ROLLOUTS])
        if version == self._built_at:
            return
        before = self._built_at or (-1, -1, -1, -1)
        self._built_at = version
        routes = self._found.keys() if version[1] != before[1] else set()
        if version[1] != before[1]:
            self._nodes = self._decode_nodes()
        dirty = self._update_endpoints(self.cache.touched(ENDPOINTS))
        for route in dirty | routes:
            found = self._found.get(route)
            if found is None:
                self._endpoints.pop(route, None)
            else:
                nodes = self._nodes
                self._endpoints[route] = tuple(
                    sorted((e for e in found.values() if e.node_id in nodes), key=_order)
                )
        if dirty:
            entries: dict[str, set[str]] = collections.defaultdict(set)
            for artifact_id, entry in self._found:
                entries[artifact_id].add(entry)
            self._entries = dict(entries)
        if version[2] != before[2]:
            self._balancing, self._min_ready, self._deployed = self._decode_blueprints()
        if version[2] != before[2] or version[3] != before[3]:
            self._splits = self._decode_splits()

    def _update_endpoints(self, touched: set[str] | None) -> set[tuple[str, str]]:
        """Decode the endpoint records touched since the last time (None: every one); returns the
        routes whose endpoints changed (a record is an instance's: a route per entry point it lists)."""
        data, seen = self.cache.data[ENDPOINTS], self.cache.first_seen[ENDPOINTS]
        keys = data.keys() | self._decoded.keys() if touched is None else touched
        dirty = set()
        for key in keys:
            for old in self._decoded.pop(key, ()):
                route = (old.coordinates.artifact_id, old.entry)
                found = self._found[route]
                del found[key]
                if not found:
                    del self._found[route]
                dirty.add(route)
            kv = data.get(key)
            endpoints = () if kv is None else _endpoints(key, kv.value, seen.get(key))
            if endpoints:
                self._decoded[key] = endpoints
            for endpoint in endpoints:
                route = (endpoint.coordinates.artifact_id, endpoint.entry)
                self._found.setdefault(route, {})[key] = endpoint
                dirty.add(route)
        return dirty

    def _decode_nodes(self) -> dict[str, NodeRecord]:
        nodes = {}
        for key, kv in self.cache.data[NODES].items():
            try:
                record = decode_record(key, kv.value, NodeRecord)
            except RecordError:
                continue
            nodes[record.node_id] = record
        return nodes

    def _decode_blueprints(
        self,
    ) -> tuple[dict[str, Balancing], dict[str, float], dict[str, tuple[Deployment, ...]]]:
        """Each deployed slice's balancing strategy and `min_ready_s`, and what its blueprints ask for, by
        artifact id."""
        blueprints = []
        for key, kv in self.cache.data[BLUEPRINTS].items():
            try:
                blueprints.append(decode_record(key, kv.value, Blueprint))
            except RecordError:
                continue
        specs = {spec.artifact.rsplit(":", 1)[0]: spec for b in blueprints for spec in b.slices}
        balancing = {artifact_id: spec.balancing for artifact_id, spec in specs.items()}
        min_ready = {artifact_id: spec.min_ready_s for artifact_id, spec in specs.items()}
        return balancing, min_ready, deployments(blueprints)

    def _decode_splits(self) -> dict[str, VersionSplit]:
        splits = {}
        for key, kv in self.cache.data[ROLLOUTS].items():
            try:
                rollout = decode_record(key, kv.value, RolloutRecord)
            except RecordError:
                continue
            if rollout.share is not None:
                splits[rollout.artifact_id] = VersionSplit(
                    stable=rollout.stable,
                    candidate=rollout.candidate,
                    share=rollout.share,
                    min_ready_s=self._min_ready.get(rollout.artifact_id, DEFAULT_MIN_READY_S),
                )
        return splits

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

    def peer_addresses(self) -> set[str]:
        """The peer addresses of the registered nodes."""
        self._refresh()
        return {node.peer for node in self._nodes.values() if node.peer}

    def balancing(self, artifact_id: str) -> Balancing:
        self._refresh()
        return self._balancing.get(artifact_id, Balancing.ROUND_ROBIN)

    def deployed(self, artifact_id: str) -> tuple[Deployment, ...]:
        """The blueprints that deploy `artifact_id`, each with the number of instances it asks for
        (by blueprint name); none: no blueprint deploys it."""
        self._refresh()
        return self._deployed.get(artifact_id, ())

    def split(self, artifact_id: str) -> VersionSplit | None:
        """The version split of a rollout of `artifact_id` in progress; None: calls go by instance."""
        self._refresh()
        return self._splits.get(artifact_id)
