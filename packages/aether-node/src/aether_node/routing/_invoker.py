"""Routing a call to a live instance anywhere in the cluster.

The EndpointRegistry names the candidates; a balancing strategy picks one; local instances are called
directly, remote ones over the peer connections. A call that never reached an instance is tried on
another endpoint; one that may have run (its node or process died mid-call) only if the entry point is
idempotent. "no endpoint", "timed out" and "the slice raised" stay distinct `InvocationError` kinds; a
call that finds no endpoint is told apart (`_no_endpoint`) only then: a slice nothing knows or an entry
point its instances lack (404 `no_endpoint`) from a deployed slice with no ACTIVE instance now (503
`unavailable`).
"""

from __future__ import annotations

import collections
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from ..client import ClusterCalls
from ..core._blueprint import Balancing
from ..core._coordinates import Coordinates, parse_artifact_id
from ..core._error_kinds import ErrorKind
from ..core._errors import InvalidCoordinatesError, InvocationError, NoEndpointError
from ..core._records import NodeRecord
from ..core._schema import NODES, InstanceKey
from ..observe._metrics import NodeMetrics, merge_call_stats
from ..observe._slice_usage import slice_usage
from ..observe._version_calls import VersionCalls
from ..runtime._lifecycle import Phase
from ..runtime._slice_store import SliceStore
from ._endpoints import Endpoint, EndpointRegistry, choose, may_retry, split_by_version
from ._no_endpoint import no_endpoint_error
from ._peers import LostInFlightError, NotSentError, PeerClients

log = logging.getLogger("aether_node.invoker")

STATS_TIMEOUT = 2.0  # a node that does not give its call statistics in time is left out of the sum


class ClusterInvoker:
    def __init__(
        self,
        node_id: str,
        store: SliceStore,
        registry: EndpointRegistry,
        peers: PeerClients,
        *,
        rng: random.Random | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.node_id = node_id
        self.metrics = metrics or NodeMetrics(enabled=False)
        self.store = store
        self.registry = registry
        self.peers = peers
        self.rng = rng or random.Random()
        self.in_flight: dict[tuple[str, int], int] = collections.defaultdict(int)
        self._turns: dict[tuple[str, str], itertools.count[int]] = {}
        self._split_turns: dict[str, itertools.count[int]] = {}  # per artifact id: its version split
        self.version_calls = VersionCalls()  # calls per version while a rollout splits them
        # calls the fast ingress's worker sent straight to local instances, in flight, per artifact id
        # (as it last reported them)
        self.direct_in_flight: dict[str, int] = {}

    def in_flight_by_artifact(self) -> dict[str, int]:
        """Calls this node routed and has not had answered yet, per artifact id (group:artifact)."""
        found: dict[str, int] = {}
        for (coordinates, _), count in self.in_flight.items():
            if count:
                artifact_id = coordinates.rsplit(":", 1)[0]
                found[artifact_id] = found.get(artifact_id, 0) + count
        for artifact_id, count in self.direct_in_flight.items():
            found[artifact_id] = found.get(artifact_id, 0) + count
        return found

    async def invoke(
        self,
        artifact_id: str,
        entry: str,
        payload: Any,
        timeout: float | None = None,
        balancing: Balancing | None = None,
        *,
        source: str = "ingress",
        depth: int = 0,
    ) -> Any:
        """Call `entry` of `artifact_id` (group:artifact) on some live instance. Raises InvocationError.
        `source` (ingress, slice, api) labels the call in the metrics; `depth`: how many slice-to-slice
        calls led to this one (0: a call from outside), which the instance is told."""
        started = time.perf_counter()
        try:
            result = await self._route(artifact_id, entry, payload, timeout, balancing, depth)
        except InvocationError as error:
            routed = not isinstance(error, NoEndpointError)
            seconds = time.perf_counter() - started
            self.metrics.invocation(artifact_id, entry, source, seconds, error.kind, routed=routed)
            raise
        self.metrics.invocation(artifact_id, entry, source, time.perf_counter() - started, None)
        return result

    async def _route(
        self,
        artifact_id: str,
        entry: str,
        payload: Any,
        timeout: float | None,
        balancing: Balancing | None,
        depth: int = 0,
    ) -> Any:
        """Call `entry` of `artifact_id` (group:artifact) on some live instance. Raises InvocationError."""
        # This runs for every call: look-ups only, no parsing or formatting on the way to the instance.
        registry = self.registry
        endpoints = registry.endpoints(artifact_id, entry)
        if not endpoints:  # (a malformed artifact id has none either: only then is it worth checking)
            try:
                parse_artifact_id(artifact_id)
            except InvalidCoordinatesError as error:
                raise InvocationError(ErrorKind.BAD_REQUEST, error.message) from None
        timeout = timeout or self.store.timeouts.invoke
        deadline = trio.current_time() + timeout
        strategy = balancing or registry.balancing(artifact_id)
        split = registry.split(artifact_id)
        tried: set[tuple[str, int]] = set()
        last_error: InvocationError | None = None
        while True:
            candidates = [e for e in endpoints if e.target not in tried] if tried else endpoints
            if not candidates:
                raise last_error or self._no_endpoint(artifact_id, entry)
            # (not the instances of a peer this node could not connect to lately, while others remain)
            candidates = self.peers.backoff.usable(candidates, self._peer_of, trio.current_time())
            if split is not None:  # a canary or blue-green rollout: its share of the calls per version
                split_turns = self._split_turns.get(artifact_id)
                if split_turns is None:
                    split_turns = self._split_turns[artifact_id] = itertools.count()
                # (a candidate's endpoint seen less than its slice's min_ready_s ago waits: trio's clock,
                # the one the registry's cache stamps records with)
                candidates = split_by_version(candidates, split, next(split_turns), now=trio.current_time())
            turns = self._turns.get((artifact_id, entry))
            if turns is None:
                turns = self._turns[(artifact_id, entry)] = itertools.count()
            endpoint = choose(
                candidates,
                strategy,
                local_node=self.node_id,
                in_flight=self.in_flight,
                turn=next(turns),
                rng=self.rng,
            )
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                raise InvocationError(
                    ErrorKind.TIMEOUT, f"{artifact_id}/{entry}: no answer within {timeout:g} s"
                )
            target = endpoint.target
            self.in_flight[target] += 1
            try:
                if split is not None:
                    return await self._counted(artifact_id, endpoint, payload, remaining, depth)
                return await self._call(endpoint, payload, remaining, depth)
            except InvocationError as error:
                if error.kind == ErrorKind.GONE:
                    last_error = InvocationError(ErrorKind.UNAVAILABLE, error.message)
                elif error.kind == ErrorKind.UNAVAILABLE and may_retry(
                    reached=True, idempotent=endpoint.idempotent
                ):
                    last_error = error  # the process died mid-call: safe to repeat an idempotent call
                else:
                    raise
            except NotSentError as error:
                last_error = InvocationError(ErrorKind.UNAVAILABLE, str(error))
            except LostInFlightError as error:
                if not may_retry(reached=True, idempotent=endpoint.idempotent):
                    raise InvocationError(
                        ErrorKind.UNAVAILABLE,
                        f"{error}; {artifact_id}/{entry} is not idempotent, so it was not retried",
                    ) from None
                last_error = InvocationError(ErrorKind.UNAVAILABLE, str(error))
            finally:
                self.in_flight[target] -= 1
            tried.add(target)
            endpoints = registry.endpoints(artifact_id, entry)  # it may have changed meanwhile

    async def _counted(
        self, artifact_id: str, endpoint: Endpoint, payload: Any, timeout: float, depth: int
    ) -> Any:
        """`_call`, counted per version (`version_calls`) for a rollout's verdict: a call that never ran
        (not sent, or the instance was gone) is not counted."""
        started = time.perf_counter()
        fault: str | None = None
        try:
            return await self._call(endpoint, payload, timeout, depth)
        except InvocationError as error:
            if error.kind == ErrorKind.GONE:
                started = None  # type: ignore[assignment]
            fault = error.kind
            raise
        except LostInFlightError:
            fault = ErrorKind.UNAVAILABLE
            raise
        except NotSentError:
            started = None  # type: ignore[assignment]
            raise
        finally:
            if started is not None:
                seconds = time.perf_counter() - started
                self.version_calls.record(artifact_id, endpoint.coordinates.version, seconds, fault)

    def _no_endpoint(self, artifact_id: str, entry: str) -> NoEndpointError:
        registry = self.registry
        return no_endpoint_error(
            artifact_id, entry, entries=registry.entries(artifact_id), deployed=registry.deployed(artifact_id)
        )

    async def _call(self, endpoint: Endpoint, payload: Any, timeout: float, depth: int = 0) -> Any:
        if endpoint.node_id == self.node_id:
            key = InstanceKey(self.node_id, endpoint.coordinates, endpoint.instance)
            return await self._invoke_instance(key, endpoint.entry, payload, timeout, depth)
        node = self.registry.node(endpoint.node_id)
        if node is None or not node.peer:
            raise NotSentError(f"node {endpoint.node_id} has no peer address")
        return await self.peers.invoke(
            node.peer, str(endpoint.coordinates), endpoint.instance, endpoint.entry, payload, timeout, depth
        )

    def _peer_of(self, endpoint: Endpoint) -> str | None:
        """The peer address of the node that runs `endpoint`'s instance; None for this node's own."""
        if endpoint.node_id == self.node_id:
            return None
        node = self.registry.node(endpoint.node_id)
        return node.peer if node is not None else None

    async def drop_lost_peers(self) -> None:
        """Until cancelled: whenever the registered nodes change, close the connections to peers no longer
        among them (a node declared lost: its lease expired), so that the calls in flight to it end at
        once (tried elsewhere if idempotent) rather than at their timeout."""
        cache = self.registry.cache
        looked_at = -1
        while True:
            changed = cache.changed
            if cache.seen[NODES] != looked_at:  # (not for every other change: a deploy makes thousands)
                looked_at = cache.seen[NODES]
                dropped = await self.peers.drop_all_but(self.registry.peer_addresses())
                for address in dropped:
                    log.info("the node at %s is no longer registered: its connection closed", address)
            await changed.wait()

    async def invoke_local(
        self, coordinates: str, instance: int, entry: str, payload: Any, timeout: float, depth: int = 0
    ) -> Any:
        """Call an instance of this node (for local routing and for peers)."""
        try:
            key = InstanceKey(self.node_id, Coordinates.parse(coordinates), instance)
        except InvalidCoordinatesError as error:
            raise InvocationError(ErrorKind.BAD_REQUEST, error.message) from None
        return await self._invoke_instance(key, entry, payload, timeout, depth)

    async def _invoke_instance(
        self, key: InstanceKey, entry: str, payload: Any, timeout: float, depth: int = 0
    ) -> Any:
        local = self.store.get(key)
        if local is None or local.phase is not Phase.ACTIVE or not local.alive:
            raise InvocationError(ErrorKind.GONE, f"{key.label} is not ACTIVE on {self.node_id}")
        if entry not in local.entry_points:
            known = ", ".join(sorted(local.entry_points))
            raise InvocationError(
                ErrorKind.NO_ENDPOINT, f"{key.coordinates} has no entry point {entry!r} (it has: {known})"
            )
        local.in_flight += 1
        try:
            return await local.host.invoke(entry, payload, timeout, depth)
        finally:
            local.in_flight -= 1

    async def version_readings(self, nodes: Sequence[NodeRecord]) -> dict[str, Any]:
        """Every node's `VersionCalls.snapshot()` (this one directly, the others over the peer
        connections, concurrently), by node id; a node that does not answer in time is left out."""
        return await self._readings(nodes, self.version_calls.snapshot, self.peers.versions)

    async def usage_readings(self, nodes: Sequence[NodeRecord]) -> dict[str, Any]:
        """Every node's `slice_usage` (its figures per slice, as the leader's autoscaler reads them),
        by node id, like `version_readings`; a node that does not answer in time is left out."""
        return await self._readings(nodes, self.local_usage, self.peers.usage)

    def local_usage(self) -> Any:
        """This node's `slice_usage`: its figures per slice (for the autoscaler and its signals)."""
        return slice_usage(self.metrics, self.in_flight_by_artifact())

    async def _readings(
        self,
        nodes: Sequence[NodeRecord],
        local: Callable[[], Any],
        remote: Callable[[str, float], Awaitable[Any]],
    ) -> dict[str, Any]:
        readings: dict[str, Any] = {}

        async def ask(node: NodeRecord) -> None:
            if node.node_id == self.node_id:
                readings[node.node_id] = local()
                return
            if not node.peer:
                return
            try:
                with trio.fail_after(STATS_TIMEOUT):
                    readings[node.node_id] = await remote(node.peer, STATS_TIMEOUT)
            except (NotSentError, LostInFlightError, InvocationError, trio.TooSlowError):
                return

        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(ask, node)
        return readings

    async def cluster_calls(self, nodes: list[NodeRecord], *, now: float) -> ClusterCalls:
        """Call statistics of every node in `nodes` (this one directly, the others over the peer
        connections, concurrently), summed per entry point."""
        readings: list[Any] = []
        outcome: dict[str, str] = {}

        async def ask(node: NodeRecord) -> None:
            if node.node_id == self.node_id:
                readings.append(self.metrics.call_stats())
                outcome[node.node_id] = "ok" if self.metrics.enabled else "metrics are off"
                return
            if not node.peer:
                outcome[node.node_id] = "no peer address"
                return
            try:
                with trio.fail_after(STATS_TIMEOUT):
                    reading = await self.peers.stats(node.peer, STATS_TIMEOUT)
            except (NotSentError, LostInFlightError, InvocationError, trio.TooSlowError) as error:
                outcome[node.node_id] = f"no answer: {error or type(error).__name__}"
                return
            readings.append(reading)
            outcome[node.node_id] = "ok" if isinstance(reading, list) else "not understood"

        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(ask, node)
        return ClusterCalls(at=now, nodes=dict(sorted(outcome.items())), slices=merge_call_stats(readings))
