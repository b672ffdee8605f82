"""The fast ingress's direct path, the node's side: the routing table its worker decides calls by.

The worker (`_ingress_worker`, `_ingress_direct`) sends a call straight to a local instance, over a
connection of its own to that instance (the host protocol's ATTACH: the instance connects to the worker's
Unix socket with a one-time token and serves invokes there too), when this node's table says the call's
(artifact, entry) may go that way: every endpoint of it is an instance of this node that is ACTIVE, alive
and attached, and no rollout splits the slice's calls (those stay in the node, where `version_calls`
counts them for the verdict and `split_by_version` keeps the candidate's share off its endpoints that
have not stood the slice's `min_ready_s`: the worker needs neither). Everything else, and whatever the
worker cannot decide (a per-call option in the query, an instance it is not connected to, a call that
must be routed again), goes over the link to the node's invoker as before.

The table is pushed whenever the KV cache the EndpointRegistry reads moves (endpoints are published
after activation and withdrawn before deactivation), and again when an attachment ends or fails. A
route's row is worked out again only when its endpoints, split or balancing changed (the registry keeps
the tuple of an untouched route), or after an attachment changed; the table is sent whole. A table
that is stale for a moment is safe: an instance that died closes the worker's connection (its calls are
routed again if idempotent, by the rule the invoker uses), and one that was stopped answers "stopped"
(the call did not run: the worker hands it to the node).

Table (node → worker, {"t": table}): {"node": node id, "timeout": the default invoke timeout,
"routes": [[artifact id, entry, balancing, [[coordinates, instance, idempotent, label], ...]], ...],
"tokens": {token: [coordinates, instance]}} (the instances the worker may accept connections from).
Metrics (worker → node, {"m": [[artifact id, entry, seconds, error kind or null], ...], "f": {artifact
id: calls in flight}}): the node counts every direct call as its own invoker would (source "ingress").
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

import trio

from aether_slice.protocol import Kind

from ..core._errors import NodeError
from ..core._schema import InstanceKey
from ..runtime._lifecycle import Phase
from ..runtime._slice_host import SliceHost
from ..runtime._slice_store import LocalInstance
from ._endpoints import Endpoint
from ._invoker import ClusterInvoker

log = logging.getLogger("aether_node.fast_ingress")

ATTACH_TIMEOUT = 5.0
COALESCE = 0.05  # seconds a table waits after a change for the changes that come with it


class DirectRoutes:
    """Keeps one worker's table current and attaches local instances to it."""

    def __init__(self, invoker: ClusterInvoker, socket_path: str, send: Callable[[dict[str, Any]], None]):
        self.invoker = invoker
        self.socket_path = socket_path
        self.send = send
        # (coordinates, instance) → the host attached (or being) and its token; None: it cannot attach
        self.attached: dict[tuple[str, int], tuple[SliceHost, str | None]] = {}
        # route → (its endpoints, its split and balancing, its row or None) as of the last push
        self._rows: dict[tuple[str, str], tuple[tuple[Endpoint, ...], object, list[Any] | None]] = {}
        self._recheck = True
        self._poke = trio.Event()

    def poke(self) -> None:
        """An attachment ended or failed: push again, checking every route."""
        self._recheck = True
        self._poke.set()

    async def run(self) -> None:
        """Push the table now and after every change, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow_cache)
            while True:
                self._poke = trio.Event()
                for target, host, token in self.push():
                    nursery.start_soon(self._attach, target, host, token)
                await self._poke.wait()
                await trio.sleep(COALESCE)  # a burst of changes (a blueprint converging): one table

    async def _follow_cache(self) -> None:
        cache = self.invoker.registry.cache
        while True:
            await cache.changed.wait()
            self._poke.set()  # (the routes whose endpoints changed are checked again)

    def push(self) -> list[tuple[tuple[str, int], SliceHost, str]]:
        """Send the current table; returns the instances to attach now. A route whose endpoints (the
        registry's tuple, the same object while none of them changed), split and balancing are as at the
        last push keeps its row, unless an attachment changed since (`poke`): then every route is
        checked again."""
        invoker = self.invoker
        registry, store, node_id = invoker.registry, invoker.store, invoker.node_id
        recheck, self._recheck = self._recheck, False
        for target, (host, _) in list(self.attached.items()):
            if host.exited.is_set():
                del self.attached[target]
                recheck = True
        to_attach: list[tuple[tuple[str, int], SliceHost, str]] = []
        rows: dict[tuple[str, str], tuple[tuple[Endpoint, ...], object, list[Any] | None]] = {}
        for route, endpoints in registry.routes():
            artifact_id, entry = route
            how = (registry.split(artifact_id) is None, registry.balancing(artifact_id).value)
            known = self._rows.get(route)
            if not recheck and known is not None and known[0] is endpoints and known[1] == how:
                rows[route] = known
                continue
            row = None
            if endpoints and how[0]:
                found = self._direct(endpoints, entry, to_attach)
                if found is not None:
                    row = [artifact_id, entry, how[1], found]
            rows[route] = (endpoints, how, row)
        self._rows = rows
        routes = [row for _, _, row in rows.values() if row is not None]
        tokens = {token: list(target) for target, (_, token) in self.attached.items() if token}
        self.send(
            {"t": {"node": node_id, "timeout": store.timeouts.invoke, "routes": routes, "tokens": tokens}}
        )
        return to_attach

    def _direct(
        self, endpoints: tuple[Endpoint, ...], entry: str, to_attach: list[Any]
    ) -> list[list[Any]] | None:
        """The table's instances of a route whose every endpoint is a local instance that serves it and
        is attached (or being); None otherwise (its calls go via the node)."""
        invoker = self.invoker
        store, node_id = invoker.store, invoker.node_id
        found = []
        for endpoint in endpoints:
            if endpoint.node_id != node_id:
                return None
            local = store.get(InstanceKey(node_id, endpoint.coordinates, endpoint.instance))
            if not _serves(local, entry):
                return None
            assert local is not None
            if self._token(endpoint.target, local.host, to_attach) is None:
                return None
            found.append([*endpoint.target, endpoint.idempotent, local.host.label])
        return found

    def _token(self, target: tuple[str, int], host: SliceHost, to_attach: list[Any]) -> str | None:
        known = self.attached.get(target)
        if known is not None and known[0] is host:
            return known[1]
        token = secrets.token_hex(16)
        self.attached[target] = (host, token)
        to_attach.append((target, host, token))
        return token

    async def _attach(self, target: tuple[str, int], host: SliceHost, token: str) -> None:
        try:
            await host.request(Kind.ATTACH, ATTACH_TIMEOUT, socket=self.socket_path, token=token)
        except NodeError as error:  # (an aether-slice without ATTACH, or it died): calls go via the node
            log.info("%s: not attached to the ingress worker: %s", host.label, error)
            if self.attached.get(target, (None,))[0] is host:
                self.attached[target] = (host, None)
            self.poke()
            return
        await host.exited.wait()
        self.poke()


def _serves(local: LocalInstance | None, entry: str) -> bool:
    return local is not None and local.phase is Phase.ACTIVE and local.alive and entry in local.entry_points


def record_direct(invoker: ClusterInvoker, message: dict[str, Any]) -> None:
    """Count the calls the worker reports (a {"m", "f"} message) as the invoker counts its own."""
    invocation = invoker.metrics.invocation
    for record in message.get("m") or ():
        try:
            artifact_id, entry, seconds, kind = record
            invocation(str(artifact_id), str(entry), "ingress", float(seconds), kind and str(kind))
        except (TypeError, ValueError):
            continue
    in_flight = message.get("f")
    if isinstance(in_flight, dict):
        invoker.direct_in_flight = {str(k): int(v) for k, v in in_flight.items() if isinstance(v, int)}
