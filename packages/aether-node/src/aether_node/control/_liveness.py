"""LivenessWatch: on the leader, notices a node process that died from its dropped connection, long before
its lease would lapse.

While this node leads, it holds one authenticated connection to the peer port of every other registered
node that is not leaving. A node's process that dies closes that connection at once (the kernel does it).
The connection dropping is only a hint: the watch then probes the peer port, and only if the port refuses
the connection (nobody listens there any more: the process is gone) does it declare the node lost, by
revoking the node's lease (its registration and endpoints go with it, and the cluster manager replaces
its instances). A probe that connects (the node lives: its connection was reset) or gets no answer (a
paused or cut-off node: the kernel of a paused one still accepts, a cut-off one does not answer) declares
nothing: the lease decides those, so a slow node is never declared dead on a hint. Once the connection
was up for a registration, a refused reconnection is a hint too (the node died while the watch was
reconnecting); a node never connected to on this registration (still starting: its peer port may not
listen yet) is never probed — but for one this leader found registered when its term began, that it had
seen registered for `SETTLED_AFTER` seconds by then: the leader that watched it may be the node that died
with it (a leader's node killed), and its refused connection is the only hint there will be (its lease,
renewed for the new leader's takeover, lapsed 4.5 s later, and a node restarted before that took over its
own dead instances silently, the slice below its floor meanwhile). How long is measured by this node's
own monotonic clock, from when it first saw the registration (`Sightings`, kept whether it leads or
not): nodes' wall clocks may be far apart (a registration's `started_at` is the node's own).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

import trio

from aether_kv import (
    KV,
    FramedStream,
    KVError,
    LeaseNotFoundError,
    ReloadingTLS,
    client_handshake,
    connect_tls,
)

from ..core._kv_cache import KVCache
from ..core._records import NodeRecord, RecordError, decode_record
from ..core._schema import NODES
from ._cluster_manager import LeadershipMonitor, follow_while_leading

log = logging.getLogger("aether_node.liveness")

# A registration found when a term begins, seen registered this long already, has had its peer port up:
# a refused connection says it died (the one just registered may not listen yet).
SETTLED_AFTER = 10.0


class Probe(enum.Enum):
    ALIVE = "alive"  # the port accepted
    GONE = "gone"  # the port refused: no process listens there
    UNKNOWN = "unknown"  # no answer in time


async def probe(address: str, timeout: float) -> Probe:
    """Whether something listens at `address` (host:port; a numeric host, as nodes register)."""
    host, _, port = address.rpartition(":")
    family = trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET
    with trio.socket.socket(family, trio.socket.SOCK_STREAM) as sock:
        with trio.move_on_after(timeout):
            try:
                await sock.connect((host.strip("[]"), int(port)))
            except ConnectionRefusedError:
                return Probe.GONE
            except OSError:
                return Probe.UNKNOWN
            return Probe.ALIVE
    return Probe.UNKNOWN


class Held(enum.Enum):
    DROPPED = "dropped"  # the connection was up, then ended
    REFUSED = "refused"  # the connection was refused (a probe confirms: nothing listens)
    FAILED = "failed"  # no connection in time, or no handshake: says nothing


class Sightings:
    """When this node first saw each registration (node id, lease) of another node, by its own monotonic
    clock; fed from the store whether this node leads or not. Pure but for the caller's clock."""

    def __init__(self) -> None:
        self.first_seen: dict[tuple[str, int], float] = {}

    def saw(self, registrations: set[tuple[str, int]], now: float) -> None:
        """The registrations there are now (those gone are forgotten)."""
        self.first_seen = {seen: self.first_seen.get(seen, now) for seen in registrations}

    def settled(self, now: float) -> set[tuple[str, int]]:
        """The registrations seen for `SETTLED_AFTER` seconds or more."""
        return {seen for seen, since in self.first_seen.items() if now - since >= SETTLED_AFTER}


class LivenessWatch:
    def __init__(
        self,
        kv: KV,
        node_id: str,
        secret: str,
        *,
        probe_timeout: float = 0.25,
        retry: float = 0.5,
        connect_timeout: float = 2.0,
        tls: ReloadingTLS | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kv = kv
        self.clock = clock  # this node's own: how long it has seen each registration
        self.sightings = Sightings()  # (kept across terms and restarts of `run`)
        self.tls = tls
        self.node_id = node_id
        self.secret = secret
        self.probe_timeout = probe_timeout
        self.retry = retry
        self.connect_timeout = connect_timeout
        self.declared: list[str] = []  # node ids declared lost (for tests and logs)

    async def run(self, leadership: LeadershipMonitor) -> None:
        """Forever: watch while this node leads; stop watching when it does not. Registrations are
        sighted all along (a follower that becomes the leader knows which ones have settled)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.sight)
            await follow_while_leading(leadership, self.follow, "liveness watch")

    async def sight(self) -> None:
        """Until cancelled: note when each registration is first seen (a KV error: again after a while;
        what was seen is kept)."""
        while True:
            cache = KVCache(self.kv, [NODES])
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(cache.run)
                    while True:
                        changed = cache.changed
                        current = {(node_id, lease) for node_id, (lease, _) in self._watched(cache).items()}
                        self.sightings.saw(current, self.clock())
                        await changed.wait()
            except KVError as error:
                log.debug("sighting registrations: %s; again in %g s", error.message, self.retry)
                await trio.sleep(self.retry)

    async def follow(self) -> None:
        """Watch every other live node until cancelled (one leadership term). Raises KVError."""
        cache = KVCache(self.kv, [NODES])
        watching: dict[str, tuple[int, str, trio.CancelScope]] = {}  # node → (lease, peer, scope)
        async with trio.open_nursery() as nursery:
            await nursery.start(cache.run)
            inherited: set[tuple[str, int]] | None = None  # settled registrations when the term began
            while True:
                changed = cache.changed
                current = self._watched(cache)
                if inherited is None:
                    inherited = self.sightings.settled(self.clock())
                for node_id, (lease, peer, scope) in list(watching.items()):
                    if current.get(node_id) != (lease, peer):
                        scope.cancel()
                        del watching[node_id]
                for node_id, (lease, peer) in current.items():
                    if node_id not in watching:
                        scope = trio.CancelScope()
                        watching[node_id] = (lease, peer, scope)
                        settled = (node_id, lease) in inherited
                        nursery.start_soon(self._watch, node_id, lease, peer, scope, settled)
                await changed.wait()

    def _watched(self, cache: KVCache) -> dict[str, tuple[int, str]]:
        """node id → (lease, peer address) of every registered node to watch."""
        found = {}
        for key, kv in cache.data[NODES].items():
            try:
                record = decode_record(key, kv.value, NodeRecord)
            except RecordError:
                continue
            if record.node_id != self.node_id and not record.leaving and record.peer and kv.lease:
                found[record.node_id] = (kv.lease, record.peer)
        return found

    async def _watch(
        self, node_id: str, lease: int, peer: str, scope: trio.CancelScope, settled: bool = False
    ) -> None:
        """`settled`: found registered, and running for a while, when the term began (module doc)."""
        with scope:
            # connected once on this registration (or settled): a node still starting is never probed
            was_up = settled
            while True:
                held = await self._hold(node_id, peer)
                was_up = was_up or held is Held.DROPPED
                if was_up and held is not Held.FAILED:
                    verdict = await probe(peer, self.probe_timeout)
                    if verdict is Probe.GONE:
                        await self._declare_lost(node_id, lease, peer)
                        return
                    log.info("node %s: connection dropped, but the node is %s", node_id, verdict.value)
                    # A process being torn down may still accept for a moment: look again soon.
                    await trio.sleep(min(self.retry, 0.05))
                    continue
                await trio.sleep(self.retry)

    async def _hold(self, node_id: str, peer: str) -> Held:
        """Connect and authenticate to node `node_id`'s peer port, then wait until the connection ends."""
        host, _, port = peer.rpartition(":")
        family = trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET
        sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
        try:
            with trio.fail_after(self.connect_timeout):
                await sock.connect((host.strip("[]"), int(port)))
        except ConnectionRefusedError:
            sock.close()
            return Held.REFUSED
        except (OSError, trio.TooSlowError):
            sock.close()
            return Held.FAILED
        stream: trio.abc.Stream = trio.SocketStream(sock)
        try:
            try:
                with trio.fail_after(self.connect_timeout):
                    stream = await connect_tls(stream, self.tls, host)  # (TLS owns the connection)
                    framed = FramedStream(stream)
                    await client_handshake(framed, self.secret, peer)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, KVError):
                return Held.FAILED
            log.info("node %s: watching its connection (%s)", node_id, peer)  # (from now on, a death is seen)
            try:
                while await framed.receive() is not None:
                    pass  # the peer sends nothing unasked; anything it does send is ignored
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, KVError):
                pass
        finally:
            await stream.aclose()
        return Held.DROPPED

    async def _declare_lost(self, node_id: str, lease: int, peer: str) -> None:
        log.warning(
            "node %s is gone: its connection dropped and nothing listens at %s; revoking its lease",
            node_id,
            peer,
        )
        try:
            await self.kv.lease_revoke(lease)
        except LeaseNotFoundError:
            return  # gone already
        except KVError as error:  # its lease lapses in time all the same
            log.warning("node %s: revoking its lease failed: %s", node_id, error.message)
            return
        self.declared.append(node_id)
