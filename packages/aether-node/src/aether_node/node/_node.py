"""One Aether node: its KV replica, registration, slice store, deployment manager and HTTP ingress.

`serve_node` runs until cancelled; on the way out (SIGTERM) it withdraws its endpoints, stops and unloads
its instances, revokes its lease (its registration goes with it) and stops its KV replica.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import resource
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from aether_kv import (
    KV,
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    KVClient,
    KVError,
    LeaseNotFoundError,
    Put,
    TLSError,
    UnavailableError,
    open_client,
)

from ..api._api_keys import ApiKeys, Authorizer, parse_api_keys
from ..api._cluster_view import ClusterView
from ..api._handlers import Handlers
from ..api._join_tokens import JoinDesk
from ..api._management import management_app
from ..api._slice_logs import SliceLogs
from ..control._autoscaler import Autoscaler
from ..control._cluster_manager import ClusterDeploymentManager, LeadershipMonitor
from ..control._event_clock import EventClock
from ..control._liveness import LivenessWatch
from ..control._membership import Membership
from ..core._config import ConfigError, NodeConfig
from ..core._kv_cache import KVCache
from ..core._records import (
    NodeRecord,
    NodeStopRequest,
    RecordError,
    ReplicaRecord,
    decode_record,
    encode_record,
)
from ..core._schema import API_KEYS, node_key, node_stop_key, replica_key
from ..observe._metrics import NodeMetrics
from ..routing._connection_slots import ConnectionSlots, connection_limit
from ..routing._endpoints import EndpointRegistry
from ..routing._fast_ingress import serve_fast_ingress
from ..routing._http import (
    MANAGEMENT_KEEP_ALIVE,
    MAX_BODY,
    MAX_MANAGEMENT_BODY,
    ingress_app,
    ingress_ssl_context,
    serve_http,
)
from ..routing._invoker import ClusterInvoker
from ..routing._listen import check_free
from ..routing._peers import PeerClients, serve_peers
from ..runtime._deployment import NodeDeploymentManager
from ..runtime._health_checks import check_forever
from ..runtime._health_settings import SliceHealth
from ..runtime._installer import SliceInstaller
from ..runtime._kv_replica import run_kv_replica
from ..runtime._memory_cgroup import MemoryCgroups
from ..runtime._node_problems import NodeProblems
from ..runtime._slice_store import SliceStore
from ._certificates import NodeCertificates
from ._remote_stop import StopAsked, follow_stop_requests
from ._supervise import run_forever, supervise

log = logging.getLogger("aether_node.node")


@attrs.frozen(kw_only=True)
class NodeInfo:
    node_id: str
    ingress: str
    kv_client: str


def load_api_keys(config: NodeConfig) -> dict[str, str]:
    """API keys from the configured file and AETHER_API_KEYS (read here, at start-up, never at import)."""
    sources = [("AETHER_API_KEYS", os.environ.get("AETHER_API_KEYS", ""))]
    if config.api_keys_file is not None:
        try:
            sources.append((f"api_keys_file {config.api_keys_file}", config.api_keys_file.read_text()))
        except OSError as error:
            raise ConfigError(
                f"api_keys_file {config.api_keys_file}: cannot read it ({error.strerror})"
            ) from None
    keys: dict[str, str] = {}
    try:
        for where, text in sources:
            keys.update(parse_api_keys(text, where))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if not keys and not config.dev_mode and config.management:
        raise ConfigError(
            "no API keys configured (api_keys_file or AETHER_API_KEYS): the management API would be open;"
            " configure keys, or run with --dev-mode on a machine of your own"
        )
    return keys


def join_desk(kv: KVClient, secret: str, certificates: NodeCertificates | None) -> JoinDesk | None:
    """What lets new nodes join through this node's management API: with TLS on only (the secret is
    never handed out in plain text)."""
    if certificates is None:
        return None
    ca = certificates.ca
    return JoinDesk(kv=kv, secret=secret, ca_pem=ca.pem.decode(), fingerprint=ca.fingerprint)


def ingress_context(config: NodeConfig) -> ssl.SSLContext | None:
    """The SSL context of HTTPS on the app ingress, from the operator's certificate and key (if given);
    ConfigError if they do not load. (The fast ingress's worker loads the same files the same way.)"""
    if config.ingress_cert is None or config.ingress_key is None:
        return None
    return ingress_ssl_context(config.ingress_cert, config.ingress_key)


async def refuse_a_twin(kv: KVClient, record: NodeRecord) -> None:
    """Before the first registration: a live registration of this node id by a node at other addresses
    is another node (a copied configuration), not this node's last run (a restart keeps its addresses).
    Overwriting it would take that node's place: its instances, and with its leaving, its registration
    and the leader's claim. Raises ConfigError then; KVError if the store cannot be read."""
    found = await kv.get(node_key(record.node_id), linearizable=True)
    if found is None:
        return
    try:
        other = decode_record(found.key, found.value, NodeRecord)
    except RecordError:
        return  # not a registration anyone could be using: take the id
    if (other.ingress, other.peer, other.management) == (record.ingress, record.peer, record.management):
        return
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(other.started_at))
    raise ConfigError(
        f"node id {record.node_id!r} is registered by another running node (ingress {other.ingress}, peer"
        f" {other.peer}, started {since}): every node needs its own node_id. If that node is gone for"
        f" good, its registration lapses within {other.lease_ttl or record.lease_ttl:g} s: start this one"
        " again then"
    )


async def wait_for_kv(kv: KVClient, endpoints: list[str], *, timeout: float = 60.0) -> None:
    """Until the cluster has a leader and this node's client can commit a barrier. Raises UnavailableError
    after `timeout` s, naming `endpoints` and the last error (the node then ends with status 1, and its
    service manager starts it again: a replica host started long before the others)."""
    last, said_at = "no answer", -math.inf
    with trio.move_on_after(timeout):
        while True:
            try:
                await kv.barrier()
                return
            except KVError as error:
                if error.message != last or trio.current_time() - said_at >= WAITING_SAID_EVERY:
                    log.info("waiting for the KV cluster: %s", error.message)
                    said_at = trio.current_time()
                last = error.message
                await trio.sleep(0.2)
    raise UnavailableError(
        f"the KV store ({', '.join(endpoints)}) had no leader within {timeout:g} s (last: {last}): "
        + kv_unreachable_hint(last)
    )


WAITING_SAID_EVERY = 5.0  # seconds: the same reason to wait for the KV cluster is logged this often


def kv_unreachable_hint(last: str) -> str:
    """What most likely keeps a starting node from the KV cluster, from the last error. Pure."""
    text = last.lower()
    if "not yet valid" in text or "has expired" in text or "certificate expired" in text:
        return (
            "a certificate is not valid at this host's time: are the hosts' clocks right? (a cluster"
            " certificate is valid from 5 minutes before it was made)"
        )
    if "certificate verify failed" in text or "unknown ca" in text or "bad certificate" in text:
        return (
            "the TLS handshake with the replicas failed: a certificate of another CA (is kv.secret_file"
            " the cluster's secret? each node makes the cluster CA from it), or a clock far off (are the"
            " hosts' clocks right?)"
        )
    return (
        "a majority of the replicas must be up and reach each other (kv.raft, kv.peers); start the"
        " others, check the addresses and the firewall"
    )


def lease_request_timeout(config: NodeConfig) -> float:
    """How long one request on the lease's own KV client may take: half a TTL (at least 0.5 s), so a
    stalled keep-alive is given up while two more renewals still fit in the lease's life."""
    return max(config.lease_ttl / 2, 0.5)


class _Registration:
    """The node's lease and its `nodes/{id}` record: kept alive, and registered again if it was lost.

    Keeping the lease alive is one task that never waits for anything else the node does (it has its own
    KV client, see `serve_node`): republishing the endpoints after a new registration is another task,
    told by `generation`. A lost lease is a state to recover from: register again, republish, retry both
    with backoff, never give up. A registration deleted under a live lease is put back (`guard`).
    """

    def __init__(self, kv: KVClient, config: NodeConfig, record: NodeRecord) -> None:
        self.kv = kv
        self.config = config
        self.record = record
        self.lease = 0
        self.generation = 0  # bumped by every registration (the first one included)
        self.on_lease: Callable[[int], None] = lambda lease: None  # told each new lease at once
        self._registered = trio.Event()
        self._reregistering = False
        self._rewriting = trio.Lock()  # a rewrite of the registration (problems, leaving) at a time
        self._published: tuple[str, ...] = ()  # the problems the registration carries in the KV

    async def register(self) -> int:
        """Grant a lease and put the registration on it, and (a node with a KV replica) which node the
        replica's Raft address is, in the same transaction (one attempt; raises KVError)."""
        grant = await self.kv.lease_grant(self.config.lease_ttl)
        node_id = self.config.node_id
        record = self.record
        operations = [Put(key=node_key(node_id), value=encode_record(record), lease=grant.lease)]
        if self.record.raft:
            replica = ReplicaRecord(node_id=node_id)
            operations.append(Put(key=replica_key(self.record.raft), value=encode_record(replica)))
        await self.kv.txn([], operations)
        self._published = record.problems
        self.lease = grant.lease
        self.generation += 1
        self.on_lease(self.lease)
        registered, self._registered = self._registered, trio.Event()
        registered.set()
        return self.lease

    async def register_until_done(self, *, timeout: float = math.inf) -> int:
        """`register`, retried with backoff until it goes through (or `timeout` passes: TooSlowError)."""
        backoff = 0.1
        with trio.fail_after(timeout):
            while True:
                try:
                    return await self.register()
                except KVError as error:
                    log.warning("registering the node failed: %s; retrying in %.1f s", error.message, backoff)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, max(self.config.lease_ttl / 2, 0.5))

    async def follow(
        self,
        republish: Callable[[int], Awaitable[None]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """After every registration but the first: `republish(lease)` (the endpoints went with the old
        lease), retried with backoff until it went through on the latest lease."""
        # The first registration needs no republish; a restart of this task after a later one republishes
        # on the current lease at once (harmless if it was done: the same puts again).
        done = min(self.generation, 1)
        backoff = 0.1
        task_status.started()
        while True:
            while self.generation == done:
                await self._registered.wait()
            generation, lease = self.generation, self.lease
            try:
                await republish(lease)
            except KVError as error:
                log.warning("republishing endpoints failed: %s; retrying in %.1f s", error.message, backoff)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            log.info("endpoints republished on the node's new lease")
            done, backoff = generation, 0.1

    async def keep_alive(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Renew the lease four times per TTL, on schedule: each renewal is its own task, bounded by the
        lease client's request timeout (half a TTL), so one that stalls (a lost packet, a stuck
        connection, which the client then retires) never holds back the next; three may be lost or late
        before the lease lapses."""
        period = self.config.lease_ttl / 4
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                await trio.sleep(period)
                nursery.start_soon(self._renew)

    async def _renew(self) -> None:
        """One keep-alive attempt; a lapsed lease is registered again (by one attempt at a time)."""
        lease = self.lease
        try:
            with trio.move_on_after(self.config.lease_ttl):  # the client's own deadline comes first
                await self.kv.lease_keepalive(lease)
        except LeaseNotFoundError:
            if lease == self.lease:  # else: already registered again
                await self._register_again("the node's lease expired (was the node cut off?)")
        except KVError as error:
            log.warning("lease keep-alive failed: %s", error.message)

    async def _register_again(self, why: str) -> None:
        """A new lease and registration, unless the node is leaving or one is being made already."""
        if self.record.leaving or self._reregistering:
            return
        self._reregistering = True
        try:
            log.error("%s; registering again", why)
            await self.register_until_done()
        finally:
            self._reregistering = False

    async def publish_problems(self, problems: NodeProblems) -> None:
        """Until cancelled: the registration carries what is wrong on this node (`NodeRecord.problems`),
        written again on the node's lease whenever that changes, and tried again with backoff while the
        KV fails (a lapsed lease: the registration made again carries them)."""
        backoff = 0.1
        while True:
            changed = problems.next_change()
            lines = problems.lines()
            self.record = attrs.evolve(self.record, problems=lines)  # (a registration made again has them)
            if lines != self._published:
                try:
                    async with self._rewriting:  # (never over the mark of a node leaving)
                        if not self.record.leaving:
                            key = node_key(self.config.node_id)
                            await self.kv.put(key, encode_record(self.record), lease=self.lease)
                except KVError as error:
                    log.warning(
                        "publishing the node's problems failed: %s; again in %.1f s", error.message, backoff
                    )
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff, self._published = 0.1, lines
            await changed.wait()

    async def guard(self, kv: KV) -> None:
        """Put the registration back whenever it is deleted while the node runs and is not leaving (an
        operator deleted the key, a twin that had taken it stopped): on the lease it has, or, if that is
        gone too, on a new one. Without this the node ran on unregistered: the leader placed nothing
        on it and the cluster's status, which names the leader among the registered nodes, said that no
        node led. `kv` is the node's main client (a watch, not the lease's). Runs until cancelled; KV
        errors are logged and it starts over, reading the key afresh."""
        key = node_key(self.config.node_id)
        backoff = 0.1
        while True:
            try:
                found = await kv.get_with_revision(key)
                if found.kv is None:
                    await self._restore(key)
                watch = kv.watch(key, found.revision + 1)
                try:
                    async for events in watch:
                        # (the prefix also matches longer node ids: only this key counts)
                        if any(e.kind == "delete" and e.kv.key == key for e in events):
                            await self._restore(key)
                        backoff = 0.1
                finally:
                    await watch.aclose()
            except KVError as error:
                log.warning(
                    "following the node's registration failed: %s; again in %.1f s", error.message, backoff
                )
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _restore(self, key: str) -> None:
        if self.record.leaving or self._reregistering:
            return  # left on purpose, or being registered again (which puts it back)
        try:
            await self.kv.put(key, encode_record(self.record), lease=self.lease)
        except LeaseNotFoundError:  # (the usual cause: the lease lapsed, which deletes the key with it)
            await self._register_again("the node's lease expired (was the node cut off?)")
            return
        log.error("the node's registration was deleted while the node ran; put it back")

    async def mark_leaving(self) -> None:
        """Mark the registration as leaving: the leader places nothing here any more, and the event log
        says "left", not "lost"."""
        self.record = attrs.evolve(self.record, leaving=True)  # also if it registers again meanwhile
        try:
            async with self._rewriting:  # (after a rewrite of its problems under way, not before)
                await self.kv.put(node_key(self.config.node_id), encode_record(self.record), lease=self.lease)
        except KVError as error:
            log.warning("could not mark the node as leaving: %s", error.message)

    async def revoke(self) -> None:
        """Leave the cluster: mark the registration as leaving, then revoke the lease, which deletes it."""
        await self.mark_leaving()
        try:
            await self.kv.lease_revoke(self.lease)
        except KVError as error:
            log.warning("could not revoke the node's lease: %s", error.message)


async def _first_of(*events: trio.Event | None) -> None:
    """Wait until any of the events is set (None: never)."""
    async with trio.open_nursery() as nursery:
        for event in events:
            if event is not None:

                async def wait(event: trio.Event = event) -> None:
                    await event.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(wait)
        await trio.sleep_forever()


async def _forget_stop_request(kv: KVClient, node_id: str, started_at: float) -> None:
    """Delete this run's stop request (if that is what the key holds): a restart must not stop again."""
    key = node_stop_key(node_id)
    try:
        found = await kv.get(key)
        if found is None or decode_record(key, found.value, NodeStopRequest).started_at != started_at:
            return
        unchanged = Compare(
            key=key, target=CompareTarget.MOD_REVISION, op=CompareOp.EQ, operand=found.mod_revision
        )
        await kv.txn([unchanged], [Delete(key=key)])
    except (KVError, RecordError) as error:
        log.warning("could not delete the stop request: %s", error.message)


RESTART_RECHECK = 5.0  # seconds: a refused restart's problem is looked at again this often


def listening_ports(config: NodeConfig) -> dict[str, str | None]:
    """What the node (and its KV replica) will listen on, by the name of its setting."""
    ports = {"ingress": config.ingress, "peer": config.peer, "management": config.management}
    if config.kv.runs_replica:
        ports |= {"kv.raft": config.kv.raft, "kv.client": config.kv.client}
    return ports


async def serve_node(
    config: NodeConfig,
    *,
    shutdown: trio.Event | None = None,
    startable: Callable[[], str | None] | None = None,
    task_status: trio.TaskStatus[NodeInfo] = trio.TASK_STATUS_IGNORED,
) -> bool:
    """Run the node until `shutdown` is set or a stop is asked through the API (then stop gracefully and
    return) or until cancelled (then end every slice process and stop at once). Returns whether the stop
    was `aether node restart`: the caller then starts the node again, with the same configuration
    (`startable()`: why it would not start again now, None if it would: a restart is refused then)."""
    secret = config.secret
    api_keys = load_api_keys(config)
    restart = False
    config.data_dir.mkdir(parents=True, exist_ok=True)
    ingress_tls = ingress_context(config)
    check_free(listening_ports(config))  # before the cluster hears of this node: see `_listen`
    try:
        certificates = NodeCertificates(config, secret) if config.tls_on else None
    except (OSError, TLSError) as error:
        raise ConfigError(f"{config.tls_dir}: cannot write or load the node certificate ({error})") from None
    tls = certificates.tls if certificates is not None else None
    if tls is None:
        log.warning("TLS is off: the peer, KV and management ports speak plain text")
    async with trio.open_nursery() as outer:
        own = [config.kv.client] if config.kv.client else []
        if config.kv.runs_replica:
            await outer.start(run_kv_replica, config)
        async with (
            open_client([*own, *config.kv.endpoints], secret, request_timeout=10.0, tls=tls) as kv,
            open_client(
                own or list(config.kv.endpoints), secret, request_timeout=2.0, tls=tls
            ) as own_replica,
            # The lease's own connection: a keep-alive never queues behind the node's other KV traffic
            # (a republish of hundreds of endpoints, a reconcile pass), and gives up within half a TTL
            # (then the client retires a connection that made no progress).
            open_client(
                [*own, *config.kv.endpoints],
                secret,
                request_timeout=lease_request_timeout(config),
                tls=tls,
            ) as lease_kv,
        ):
            await wait_for_kv(kv, [*own, *config.kv.endpoints])
            record = NodeRecord(
                node_id=config.node_id,
                ingress=config.advertised_ingress,
                peer=config.peer,
                management=config.management or "",
                capacity=config.capacity,
                labels=config.labels,
                started_at=time.time(),
                lease_ttl=config.lease_ttl,
                raft=config.kv.raft or "",
            )
            await refuse_a_twin(kv, record)
            registration = _Registration(lease_kv, config, record)
            lease = await registration.register_until_done(timeout=60)
            metrics = NodeMetrics(enabled=config.metrics)
            metrics.watch_backlog = kv.watch_backlog
            async with trio.open_nursery() as nursery:
                installer = SliceInstaller(config.index, config.data_dir, timeout=config.timeouts.install)
                invoker_box: list[ClusterInvoker] = []

                async def on_call(artifact: str, entry: str, payload: Any, timeout: float, depth: int) -> Any:
                    return await invoker_box[0].invoke(
                        artifact, entry, payload, timeout, source="slice", depth=depth
                    )

                # Every long-running service runs under `supervise`: an error nobody expected restarts
                # that service, never ends the node.
                async def start(name: str, service: Any, *args: Any, on_restart: Any = None) -> Any:
                    return await nursery.start(
                        functools.partial(
                            supervise,
                            name,
                            functools.partial(service, *args),
                            on_restart=on_restart,
                            on_failure=metrics.service_restarted,
                        )
                    )

                cache = KVCache(kv, EndpointRegistry.PREFIXES)
                slice_health = SliceHealth(config.health, cache)
                store = SliceStore(
                    nursery,
                    installer,
                    config.data_dir / "logs",
                    on_call=on_call,
                    timeouts=config.timeouts,
                    cgroups=MemoryCgroups.find(config.node_id, config.data_dir)
                    if config.memory_cgroups
                    else None,
                    memory_mib=slice_health.memory_mib,
                )
                await start("idle slice templates", run_forever(store.retire_idle_templates))
                await start("endpoint cache", cache.run)
                await start(
                    "instance health checks",
                    run_forever(functools.partial(check_forever, store, slice_health)),
                )
                if certificates is not None:
                    await start("certificate renewal", run_forever(certificates.renew_forever))
                peer_clients = PeerClients(nursery, secret, tls=tls)
                invoker = ClusterInvoker(
                    config.node_id, store, EndpointRegistry(cache), peer_clients, metrics=metrics
                )

                invoker_box.append(invoker)
                metrics.version_calls = invoker.version_calls.snapshot
                await start("lost peers", run_forever(invoker.drop_lost_peers))
                manager = NodeDeploymentManager(
                    kv, config.node_id, store, lease=lease, restart_policy=config.restart, metrics=metrics
                )
                metrics.instances = manager.instance_samples
                registration.on_lease = functools.partial(setattr, manager, "lease")

                async def republish_current() -> None:
                    await manager.republish(registration.lease)  # a restarted manager withdrew them

                try:
                    await start("lease keep-alive", registration.keep_alive)
                    await start("registration guard", run_forever(functools.partial(registration.guard, kv)))
                    publish = functools.partial(registration.publish_problems, store.problems)
                    await start("node problems", run_forever(publish))
                    await start("republish", registration.follow, manager.republish)
                    await start("deployment", manager.run, on_restart=republish_current)
                    peers = functools.partial(
                        serve_peers,
                        stats=metrics.call_stats,
                        usage=invoker.local_usage,
                        versions=invoker.version_calls.snapshot,
                        tls=tls,
                        slots=connection_slots("peer", config.peer),
                    )
                    local = invoker.invoke_local
                    await start("peer server", peers, secret, config.peer, config.node_id, local)
                    if config.ingress_server == "fast":  # (its worker loads the certificate itself)
                        cert, key = config.ingress_cert, config.ingress_key
                        fast = functools.partial(serve_fast_ingress, direct=invoker, cert=cert, key=key)
                        await start("ingress", fast, invoker.invoke, config.ingress)
                    else:
                        ingress = functools.partial(
                            serve_http,
                            max_body=MAX_BODY,
                            ssl_context=ingress_tls,
                            slots=connection_slots("ingress", config.ingress),
                        )
                        await start("ingress", ingress, ingress_app(invoker.invoke), config.ingress)
                    view = None
                    if config.management:  # status reads from a watch-fed copy, not the whole KV each time
                        view = ClusterView(kv)
                        await start("cluster view", view.run)
                    handlers = Handlers(kv, invoker, history=config.blueprint_history, view=view)

                    async def ready() -> bool:
                        with trio.move_on_after(1.0):
                            try:
                                await kv.barrier()
                                return True
                            except KVError:
                                return False
                        return False

                    if config.management:
                        # named keys: every node follows them, so a new or revoked key counts at once
                        key_cache = KVCache(kv, [API_KEYS])
                        await start("API key cache", key_cache.run)
                        authorizer = Authorizer(
                            api_keys, open_access=config.dev_mode, node_id=config.node_id, cache=key_cache
                        )
                        await start("API key uses", authorizer.record_uses, ApiKeys(kv))
                        app = management_app(
                            handlers,
                            authorizer,
                            ready,
                            metrics=metrics,
                            status_kv=own_replica,
                            node_id=config.node_id,
                            logs=SliceLogs(
                                config.node_id,
                                handlers,
                                store.log_of,
                                tls=tls.client if tls is not None else None,
                            ),
                            join=join_desk(kv, secret, certificates),
                        )
                        https = functools.partial(
                            serve_http,
                            max_body=MAX_MANAGEMENT_BODY,
                            ssl_context=tls.https() if tls else None,
                            keep_alive=MANAGEMENT_KEEP_ALIVE,
                            slots=connection_slots("management", config.management),
                        )
                        await start("management API", https, app, config.management)
                    if config.kv.runs_replica:  # the cluster is led by the node whose replica leads Raft
                        leadership = LeadershipMonitor(own_replica)
                        await start("leadership monitor", run_forever(leadership.run))
                        cluster_manager = ClusterDeploymentManager(
                            kv, config.node_id, metrics=metrics, read_versions=invoker.version_readings
                        )
                        autoscaler = Autoscaler(
                            kv,
                            config.node_id,
                            local_usage=invoker.local_usage,
                            ask_peer=peer_clients.usage,
                            keep=config.blueprint_history,
                        )
                        for name, service in (
                            ("cluster manager", cluster_manager.run),
                            ("event clock", EventClock(kv).run),  # event times
                            ("membership", Membership(kv).run),  # expected nodes
                            (
                                "liveness",
                                LivenessWatch(kv, config.node_id, secret, tls=tls).run,
                            ),  # dead nodes
                            ("autoscaler", autoscaler.run),  # [slices.autoscale]: counts from live usage
                        ):
                            await start(name, run_forever(functools.partial(service, leadership)))
                    scheme = "https" if ingress_tls else "http"
                    ingress = config.advertised_ingress
                    log.info("node %s ready: ingress %s://%s", config.node_id, scheme, ingress)
                    task_status.started(
                        NodeInfo(node_id=config.node_id, ingress=ingress, kv_client=config.kv.client or "")
                    )
                    stop_asked = StopAsked()  # `aether node stop|restart`: the graceful stop of SIGTERM

                    async def restart_refused(why: str) -> None:
                        line = f"a restart was refused: the node would not start again: {why}"
                        clearing = "restart" in store.problems.sources()
                        store.problems.set("restart", line)
                        await _forget_stop_request(kv, config.node_id, record.started_at)
                        if not clearing:  # (one watch of the configuration is enough)
                            nursery.start_soon(clear_when_startable)

                    async def clear_when_startable() -> None:  # (the problem lasts while it is one)
                        while startable is not None and startable() is not None:
                            await trio.sleep(RESTART_RECHECK)
                        store.problems.set("restart", None)

                    follow = functools.partial(
                        follow_stop_requests, startable=startable, refused=restart_refused
                    )
                    await start("stop requests", follow, kv, config.node_id, record.started_at, stop_asked)
                    await _first_of(stop_asked.event, shutdown)
                    restart = stop_asked.restart and stop_asked.event.is_set()
                    # Graceful: everything still runs. The KV may be going away too (a whole cluster
                    # stopping), so what needs it is bounded.
                    log.info("node %s stopping: withdrawing endpoints, stopping instances", config.node_id)
                    with trio.move_on_after(2):
                        await registration.mark_leaving()  # first: no new placement here
                    manager.stop()  # no worker restarts (or records FAILED) what the store now stops
                    with trio.move_on_after(3):
                        await manager.withdraw_all()
                    await store.close_all()  # stop hooks have their own deadline
                    with trio.move_on_after(2):
                        await manager.forget_all()  # a clean stop leaves no instance record behind
                    with trio.move_on_after(2):
                        await registration.revoke()
                    with trio.move_on_after(1):
                        await _forget_stop_request(kv, config.node_id, record.started_at)
                finally:
                    await store.close_all()  # after a hard cancellation: at least end every process
                    if store.cgroups is not None:
                        with trio.CancelScope(shield=True):
                            await store.cgroups.close()
                    nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()
    return restart


def connection_slots(server: str, address: str) -> ConnectionSlots:
    """The connections `server` (ingress, peer, management) at `address` may hold at once: its share of
    this process's open-files limit (`_connection_slots`)."""
    open_files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return ConnectionSlots(f"{server} {address}", connection_limit(server, open_files))
