"""Calls in flight to a node that is declared lost end at once (found by an adversarial operator: with the
node frozen, a call to one of its instances waited its full 30 s though the node was declared lost in
2 s). `PeerClients.drop_all_but` on real sockets: a call waiting on a dropped peer is lost in flight at
once; `ClusterInvoker.drop_lost_peers` over the memory store: a node whose registration goes is dropped,
and an idempotent call lost with it is answered by another node."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio
from shell_support import FakeSliceStore, register

from aether_kv import MemoryStore, free_port
from aether_node.core._coordinates import Coordinates
from aether_node.core._kv_cache import KVCache
from aether_node.core._records import EndpointRecord, encode_record
from aether_node.core._schema import endpoint_key, node_key
from aether_node.routing._endpoints import EndpointRegistry
from aether_node.routing._invoker import ClusterInvoker
from aether_node.routing._peers import LostInFlightError, PeerClients, serve_peers
from support import wait_until

SECRET = "a cluster secret of 32 characters"
ECHO = Coordinates.parse("org.example:echo:1.0")


async def serve_slowly(nursery: trio.Nursery, name: str, started: list[str], delay: float) -> str:
    """A peer server whose instances answer their name after `delay` s (`started`: the peers that got a
    call, in order)."""

    async def slow(
        coordinates: str, instance: int, entry: str, payload: Any, timeout: float, depth: int
    ) -> Any:
        started.append(name)
        await trio.sleep(delay)
        return name

    address = f"127.0.0.1:{free_port()}"
    await nursery.start(functools.partial(serve_peers, SECRET, address, name, slow))
    return address


async def test_a_call_waiting_on_a_dropped_peer_is_lost_in_flight_at_once() -> None:
    async with trio.open_nursery() as nursery:
        started: list[str] = []
        address = await serve_slowly(nursery, "node-2", started, 10.0)
        peers = PeerClients(nursery, SECRET)
        outcome: list[BaseException] = []

        async def call() -> None:
            try:
                await peers.invoke(address, str(ECHO), 1, "echo", None, 30.0)
            except LostInFlightError as error:
                outcome.append(error)

        nursery.start_soon(call)
        await wait_until(lambda: started, timeout=10, what="the call in flight")
        assert await peers.drop_all_but({"127.0.0.1:1"}) == [address]
        # (the peer would answer at 10 s, the call time out at 30)
        await wait_until(lambda: outcome, timeout=5, what="the call lost in flight")
        assert "dropped during the call" in str(outcome[0])
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("idempotent", [True, False])
async def test_an_idempotent_call_to_a_node_that_leaves_is_answered_by_another(idempotent: bool) -> None:
    kv = MemoryStore(address="n1")
    async with trio.open_nursery() as nursery:
        started: list[str] = []
        addresses = {name: await serve_slowly(nursery, name, started, 2.0) for name in ("n2", "n3")}
        for number, (name, address) in enumerate(addresses.items(), start=1):
            await register(kv, name, peer=address)
            record = EndpointRecord(
                node_id=name, instance=number, entries=("echo",), idempotent=("echo",) if idempotent else ()
            )
            await kv.put(endpoint_key(ECHO, number), encode_record(record))
        cache = KVCache(kv, EndpointRegistry.PREFIXES)
        await nursery.start(cache.run)
        peers = PeerClients(nursery, SECRET)
        invoker = ClusterInvoker("n1", FakeSliceStore(), EndpointRegistry(cache), peers)
        nursery.start_soon(invoker.drop_lost_peers)
        outcome: list[Any] = []

        async def call() -> None:
            try:
                outcome.append(await invoker.invoke("org.example:echo", "echo", None, 300.0))
            except Exception as error:
                outcome.append(error)

        nursery.start_soon(call)
        await wait_until(lambda: started, timeout=10, what="the call in flight")
        (first,) = started
        await kv.delete(node_key(first))  # (its lease expired: declared lost; its endpoints go with it)
        await wait_until(lambda: outcome, timeout=30, what="the call's outcome")
        other = "n3" if first == "n2" else "n2"
        if idempotent:  # (before, the lost node's own answer after 2 s)
            assert outcome == [other], outcome
        else:
            assert "not idempotent" in str(outcome[0]) and started == [first], (outcome, started)
        nursery.cancel_scope.cancel()
