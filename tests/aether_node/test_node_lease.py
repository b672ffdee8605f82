"""The node's lease keep-alive (`node/_node._Registration`) against three real KV replicas, through a TCP
proxy that can stall the connections it carries (what a lossy link does to a TCP stream): one stalled
keep-alive must not hold back the next, so the lease of a healthy node does not lapse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from aether_kv import LocalCluster, open_client
from aether_node import NodeConfig, NodeRecord
from aether_node.core._config import KVSettings
from aether_node.node._node import _Registration, lease_request_timeout
from support import wait_until

pytestmark = pytest.mark.integration


class StallingProxy:
    """Forwards TCP connections to `target`; `stall()` freezes every connection open at that moment (they
    forward nothing in either direction until the proxy closes); connections opened later flow."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.address = ""
        self.connections = 0
        self._frozen: set[int] = set()

    def stall(self) -> None:
        self._frozen = set(range(self.connections))

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        host, port = listeners[0].socket.getsockname()[:2]
        self.address = f"{host}:{port}"
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        number = self.connections
        self.connections += 1
        try:
            server = await trio.open_tcp_stream(*self.target)
        except OSError:
            return
        async with server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, server, number, nursery.cancel_scope)
            nursery.start_soon(self._pump, server, client, number, nursery.cancel_scope)

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, number: int, scope: trio.CancelScope
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                if number in self._frozen:
                    await trio.sleep_forever()  # a stalled stream: the bytes never arrive
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()


class CountingKV:
    """The node's KV client, counting the keep-alives that were answered (what the tests wait on)."""

    def __init__(self, kv: Any) -> None:
        self.kv = kv
        self.renewals = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kv, name)

    async def lease_keepalive(self, lease: int) -> Any:
        answer = await self.kv.lease_keepalive(lease)
        self.renewals += 1
        return answer


async def renewed(kv: CountingKV, times: int, what: str) -> None:
    goal = kv.renewals + times

    async def done() -> bool:
        return kv.renewals >= goal

    await wait_until(done, timeout=30, what=what)


def _config(tmp_path: Path, ttl: float) -> NodeConfig:
    return NodeConfig(
        node_id="node-a",
        data_dir=tmp_path,
        index=str(tmp_path),
        ingress="127.0.0.1:1",
        peer="127.0.0.1:1",
        kv=KVSettings(endpoints=("127.0.0.1:1",)),
        lease_ttl=ttl,
    )


async def test_a_stalled_keep_alive_does_not_let_the_lease_lapse(
    kv_cluster: LocalCluster, tmp_path: Path
) -> None:
    # (twice the default TTL: the keep-alives' schedule and deadlines are fractions of it, so the test is
    # the same, with a new connection's margin, ~a quarter TTL, wide enough for a busy CI machine: at
    # 1.5 s it was ~0.4 s, and once, on CI beside other tests, the lease lapsed)
    ttl = 3.0
    config = _config(tmp_path, ttl)
    timeout = lease_request_timeout(config)
    record = NodeRecord(node_id="node-a", ingress="127.0.0.1:1", peer="127.0.0.1:1", lease_ttl=ttl)
    async with trio.open_nursery() as nursery:
        proxy = StallingProxy(kv_cluster.endpoints[0])
        await nursery.start(proxy.serve)
        async with (
            open_client([proxy.address], kv_cluster.secret, request_timeout=timeout) as client,
            open_client(kv_cluster.endpoints, kv_cluster.secret) as observer,
        ):
            kv = CountingKV(client)
            registration = _Registration(kv, config, record)
            lease = await registration.register_until_done(timeout=10)
            await nursery.start(registration.keep_alive)
            await renewed(kv, 2, "two renewals through the proxy")
            proxy.stall()  # the connection carrying the keep-alives stalls for good
            lapsed: list[int] = []

            async def watch_registration() -> None:
                async for events in observer.watch("nodes/node-a"):
                    lapsed.extend(e.revision for e in events if e.kind == "delete")

            nursery.start_soon(watch_registration)
            # Three TTLs: the stalled connection is given up after half a TTL and the renewals go on
            # over a new one; the registration is never deleted.
            deadline = trio.current_time() + 3 * ttl
            while trio.current_time() < deadline:
                await trio.sleep(0.1)
                assert not lapsed, "the registration was deleted: its lease lapsed"
            assert registration.lease == lease and registration.generation == 1
            assert proxy.connections >= 2, "the keep-alives never left the stalled connection"
            assert await observer.get("nodes/node-a") is not None
            nursery.cancel_scope.cancel()


async def test_a_lease_that_lapsed_is_registered_again_once(kv_cluster: LocalCluster, tmp_path: Path) -> None:
    ttl = 1.5
    config = _config(tmp_path, ttl)
    timeout = lease_request_timeout(config)
    record = NodeRecord(node_id="node-a", ingress="127.0.0.1:1", peer="127.0.0.1:1", lease_ttl=ttl)
    async with (
        open_client(kv_cluster.endpoints, kv_cluster.secret, request_timeout=timeout) as client,
        trio.open_nursery() as nursery,
    ):
        kv = CountingKV(client)
        registration = _Registration(kv, config, record)
        first = await registration.register_until_done(timeout=10)
        await kv.lease_revoke(first)  # as if it had lapsed while the node was cut off
        await nursery.start(registration.keep_alive)

        async def registered_again() -> bool:
            stored = await kv.get("nodes/node-a")
            return stored is not None and registration.lease != first

        await wait_until(registered_again, timeout=10, what="the node registered on a new lease")
        # a TTL's worth of renewals on the new lease (four per TTL): one that raced the first
        # re-registration must not have started another
        await renewed(kv, 4, "renewals on the new lease")
        assert registration.generation == 2
        nursery.cancel_scope.cancel()
