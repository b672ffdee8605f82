"""The servers that keep a connection per client node for as long as it lives (a KV replica's client
port, a node's peer port) turn TCP keep-alive on for each connection they accept: one whose other end's
machine died hard (nothing said goodbye, nothing more is sent) was held, with its descriptor and its
connection slot, until the process ended. Read from the kernel: /proc/net/tcp shows the keep-alive timer
of the server's end (timer 2) once the connection is idle."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import trio

from aether_kv import LocalCluster, free_port, open_client
from aether_node.routing._peers import PeerClients, serve_peers
from support import wait_until

SECRET = "a cluster secret of 32 characters"
KEEPALIVE_TIMER = "2"  # /proc/net/tcp's `tr` column: 0 none, 1 retransmit, 2 keep-alive, 4 zero window


def server_end_timers(port: int) -> list[str]:
    """The timer kinds of the established connections whose local port is `port` (the server's end)."""
    timers = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, timer = fields[1], fields[3], fields[5]
        if int(local.split(":")[1], 16) == port and state == "01":  # ESTABLISHED
            timers.append(str(int(timer.split(":")[0], 16)))
    return timers


def armed(timers: list[str]) -> bool:
    return bool(timers) and all(timer == KEEPALIVE_TIMER for timer in timers)


async def test_a_kv_replica_keeps_its_clients_connections_alive(kv_cluster: LocalCluster) -> None:
    endpoint = kv_cluster.endpoints[0]
    async with open_client([endpoint], kv_cluster.secret) as kv:
        await kv.put("k", b"v")
        port = int(endpoint.rpartition(":")[2])
        await wait_until(lambda: server_end_timers(port), until=armed, timeout=10, what="keep-alive armed")


async def test_a_peer_server_keeps_its_callers_connections_alive() -> None:
    async def answer(
        coordinates: str, instance: int, entry: str, payload: Any, timeout: float, depth: int
    ) -> Any:
        return payload

    port = free_port()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(serve_peers, SECRET, f"127.0.0.1:{port}", "n2", answer))
        peers = PeerClients(nursery, SECRET)
        assert await peers.invoke(f"127.0.0.1:{port}", "org.example:echo:1.0", 1, "echo", 7, 10.0) == 7
        await wait_until(lambda: server_end_timers(port), until=armed, timeout=10, what="keep-alive armed")
        nursery.cancel_scope.cancel()
