"""One Aether node: its KV replica, registration, slice store, deployment manager and HTTP ingress.

`serve_node` runs until cancelled; on the way out (SIGTERM) it withdraws its endpoints, stops and unloads
its instances, revokes its lease (its registration goes with it) and stops its KV replica.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any

import attrs
import trio

from aether_kv import KVClient, KVError, LeaseNotFoundError, open_client

from ._cluster_manager import ClusterDeploymentManager, LeadershipMonitor
from ._config import ConfigError, NodeConfig
from ._deployment import NodeDeploymentManager
from ._endpoints import EndpointRegistry
from ._handlers import Handlers
from ._http import ingress_app, serve_http
from ._installer import SliceInstaller
from ._invoker import ClusterInvoker
from ._kv_cache import KVCache
from ._kv_replica import run_kv_replica
from ._management import Authorizer, management_app, parse_api_keys
from ._metrics import NodeMetrics
from ._peers import PeerClients, serve_peers
from ._records import NodeRecord, encode_record
from ._schema import node_key
from ._slice_host import HostListener
from ._slice_store import SliceStore

log = logging.getLogger("aether_node.node")


@attrs.frozen(kw_only=True)
class NodeInfo:
    node_id: str
    ingress: str
    kv_client: str


def load_api_keys(config: NodeConfig) -> dict[str, str]:
    """API keys from the configured file and AETHER_API_KEYS (read here, at start-up, never at import)."""
    text = os.environ.get("AETHER_API_KEYS", "")
    if config.api_keys_file is not None:
        try:
            text += "\n" + config.api_keys_file.read_text()
        except OSError as error:
            raise ConfigError(
                f"api_keys_file {config.api_keys_file}: cannot read it ({error.strerror})"
            ) from None
    try:
        keys = parse_api_keys(text)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if not keys and not config.dev_mode and config.management:
        raise ConfigError(
            "no API keys configured (api_keys_file or AETHER_API_KEYS): the management API would be open;"
            " configure keys, or run with --dev-mode on a machine of your own"
        )
    return keys


async def wait_for_kv(kv: KVClient, *, timeout: float = 60.0) -> None:
    """Until the cluster has a leader and this node's client can commit a barrier."""
    with trio.fail_after(timeout):
        while True:
            try:
                await kv.barrier()
                return
            except KVError as error:
                log.info("waiting for the KV cluster: %s", error.message)
                await trio.sleep(0.2)


class _Registration:
    """The node's lease and its `nodes/{id}` record; kept alive, renewed if it was lost."""

    def __init__(self, kv: KVClient, config: NodeConfig, record: NodeRecord) -> None:
        self.kv = kv
        self.config = config
        self.record = record
        self.lease = 0

    async def register(self) -> int:
        grant = await self.kv.lease_grant(self.config.lease_ttl)
        self.lease = grant.lease
        await self.kv.put(node_key(self.config.node_id), encode_record(self.record), lease=self.lease)
        return self.lease

    async def keep_alive(self, on_renewed: Any) -> None:
        # four renewals per TTL: three may be lost or late (a Raft election, a busy moment) before it lapses
        period = self.config.lease_ttl / 4
        while True:
            await trio.sleep(period)
            try:
                await self.kv.lease_keepalive(self.lease)
            except LeaseNotFoundError:
                log.error("the node's lease expired (was the node cut off?); registering again")
                await self.register()
                await on_renewed(self.lease)
            except KVError as error:
                log.warning("lease keep-alive failed: %s", error.message)

    async def mark_leaving(self) -> None:
        """Mark the registration as leaving: the leader places nothing here any more, and the event log
        says "left", not "lost"."""
        self.record = attrs.evolve(self.record, leaving=True)  # also if it registers again meanwhile
        try:
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


async def serve_node(
    config: NodeConfig,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[NodeInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the node until `shutdown` is set (then stop gracefully and return) or until cancelled (then
    end every slice process and stop at once)."""
    secret = config.secret
    api_keys = load_api_keys(config)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    async with trio.open_nursery() as outer:
        own = [config.kv.client] if config.kv.client else []
        if config.kv.runs_replica:
            await outer.start(run_kv_replica, config)
        async with (
            open_client([*own, *config.kv.endpoints], secret, request_timeout=10.0) as kv,
            open_client(own or list(config.kv.endpoints), secret, request_timeout=2.0) as own_replica,
        ):
            await wait_for_kv(kv)
            record = NodeRecord(
                node_id=config.node_id,
                ingress=config.ingress,
                peer=config.peer,
                management=config.management or "",
                capacity=config.capacity,
                labels=config.labels,
                started_at=time.time(),
                lease_ttl=config.lease_ttl,
            )
            registration = _Registration(kv, config, record)
            lease = await registration.register()
            metrics = NodeMetrics(enabled=config.metrics)
            metrics.watch_backlog = kv.watch_backlog
            async with trio.open_nursery() as nursery:
                installer = SliceInstaller(config.index, config.data_dir, timeout=config.timeouts.install)
                invoker_box: list[ClusterInvoker] = []

                async def on_call(artifact: str, entry: str, payload: Any, timeout: float) -> Any:
                    return await invoker_box[0].invoke(artifact, entry, payload, timeout, source="slice")

                listener = HostListener(config.data_dir / "run")
                await nursery.start(listener.serve)
                store = SliceStore(
                    nursery,
                    installer,
                    listener,
                    config.data_dir / "logs",
                    on_call=on_call,
                    timeouts=config.timeouts,
                )
                cache = KVCache(kv, EndpointRegistry.PREFIXES)
                await nursery.start(cache.run)
                invoker = ClusterInvoker(
                    config.node_id,
                    store,
                    EndpointRegistry(cache),
                    PeerClients(nursery, secret),
                    metrics=metrics,
                )
                invoker_box.append(invoker)
                manager = NodeDeploymentManager(
                    kv, config.node_id, store, lease=lease, restart_policy=config.restart, metrics=metrics
                )
                metrics.instances = manager.instance_samples
                try:
                    nursery.start_soon(registration.keep_alive, manager.republish)
                    await nursery.start(manager.run)
                    await nursery.start(
                        functools.partial(
                            serve_peers,
                            secret,
                            config.peer,
                            config.node_id,
                            invoker.invoke_local,
                            stats=metrics.call_stats,
                        )
                    )
                    await nursery.start(serve_http, ingress_app(invoker.invoke), config.ingress)
                    handlers = Handlers(kv, invoker)

                    async def ready() -> bool:
                        with trio.move_on_after(1.0):
                            try:
                                await kv.barrier()
                                return True
                            except KVError:
                                return False
                        return False

                    if config.management:
                        app = management_app(
                            handlers,
                            Authorizer(api_keys, open_access=config.dev_mode),
                            ready,
                            metrics=metrics,
                            status_kv=own_replica,
                        )
                        await nursery.start(serve_http, app, config.management)
                    if config.kv.runs_replica:  # the cluster is led by the node whose replica leads Raft
                        leadership = LeadershipMonitor(own_replica)
                        nursery.start_soon(leadership.run)
                        cluster_manager = ClusterDeploymentManager(kv, config.node_id, metrics=metrics)
                        nursery.start_soon(cluster_manager.run, leadership)
                    log.info("node %s ready: ingress http://%s", config.node_id, config.ingress)
                    task_status.started(
                        NodeInfo(
                            node_id=config.node_id, ingress=config.ingress, kv_client=config.kv.client or ""
                        )
                    )
                    await (shutdown.wait() if shutdown is not None else trio.sleep_forever())
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
                finally:
                    await store.close_all()  # after a hard cancellation: at least end every process
                    nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()
