"""A peer this node could not connect to is out for a while (`routing/_peer_backoff.py`): found by an
operator with two machines of three hung and the KV without a majority to expire their leases: every call
balanced to a hung node waited out the connect timeout (2 s) before it went elsewhere, two calls in three.
The pure bookkeeping, then `ClusterInvoker` with real `PeerClients` on real sockets: a peer that accepts
connections and never answers is connected to once, and the calls after go to the peer that answers."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from shell_support import FakeSliceStore, register

from aether_kv import MemoryStore, free_port
from aether_kv._keepalive import UNACKNOWLEDGED
from aether_node.core._coordinates import Coordinates
from aether_node.core._kv_cache import KVCache
from aether_node.core._records import EndpointRecord, encode_record
from aether_node.core._schema import endpoint_key
from aether_node.routing import _peer_backoff
from aether_node.routing._endpoints import EndpointRegistry
from aether_node.routing._invoker import ClusterInvoker
from aether_node.routing._peer_backoff import FIRST, LONGEST, PeerBackoff
from aether_node.routing._peers import LostInFlightError, PeerClients, serve_peers
from support import Unanswering

SECRET = "a cluster secret of 32 characters"
ECHO = Coordinates.parse("org.example:echo:1.0")


def test_a_peer_is_out_for_a_while_doubling_while_it_fails_and_back_once_reached() -> None:
    backoff = PeerBackoff()
    assert backoff.failed("a", 100.0) == FIRST
    assert backoff.is_out("a", 100.0 + FIRST / 2) and not backoff.is_out("a", 100.0 + FIRST)
    assert backoff.failed("a", 100.5) == 0.5  # (calls that tried it at once: one failure, no doubling)
    now, waits = 200.0, []
    for _ in range(7):  # each time it fails again once it is in again
        waits.append(backoff.failed("a", now))
        now += waits[-1]
    assert waits == [2.0, 4.0, 8.0, 16.0, LONGEST, LONGEST, LONGEST]
    assert backoff.failed_since("a", now - LONGEST) and not backoff.failed_since("a", now - LONGEST + 0.1)
    backoff.reached("a")
    assert not backoff.is_out("a", now) and not backoff.failed_since("a", 0.0)
    assert backoff.failed("a", 1000.0) == FIRST
    backoff.forget_all_but({"b"})  # (its node is gone)
    assert not backoff.is_out("a", 1000.0) and backoff.failed("a", 1000.0) == FIRST


def test_the_candidates_skip_a_peer_that_is_out_unless_none_would_be_left() -> None:
    backoff = PeerBackoff()
    peer = {"local": None, "x1": "a", "x2": "a", "y": "b"}
    candidates = list(peer)
    assert backoff.usable(candidates, peer.get, 0.0) is candidates  # (nobody out: the list as it is)
    backoff.failed("a", 10.0)
    assert backoff.usable(candidates, peer.get, 10.5) == ["local", "y"]
    assert backoff.usable(["x1", "x2"], peer.get, 10.5) == ["x1", "x2"]  # (all out: tried all the same)
    assert backoff.usable(candidates, peer.get, 11.0) is candidates  # (its time is out)


async def test_calls_go_to_the_peer_that_answers_after_one_could_not_be_connected_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_peer_backoff, "FIRST", 60.0)  # (out for the whole test, however slow the machine)
    kv = MemoryStore(address="n1")
    hung = Unanswering()
    try:
        async with trio.open_nursery() as nursery:

            async def answer(coordinates: str, instance: int, entry: str, payload: Any, *_: Any) -> Any:
                return "n3"

            answering = f"127.0.0.1:{free_port()}"
            await nursery.start(functools.partial(serve_peers, SECRET, answering, "n3", answer))
            for number, (name, address) in enumerate((("n2", hung.address), ("n3", answering)), start=1):
                await register(kv, name, peer=address)
                record = EndpointRecord(node_id=name, instance=number, entries=("echo",), idempotent=())
                await kv.put(endpoint_key(ECHO, number), encode_record(record))
            cache = KVCache(kv, EndpointRegistry.PREFIXES)
            await nursery.start(cache.run)
            peers = PeerClients(nursery, SECRET, connect_timeout=0.5)
            invoker = ClusterInvoker("n1", FakeSliceStore(), EndpointRegistry(cache), peers)
            # round robin over n2 and n3: without the backoff every other call waited 0.5 s on n2; eight
            # at once, then eight in turn (at once: those that queued behind the first connection to n2
            # do not try again when it fails)
            answers: list[Any] = []

            async def call() -> None:
                answers.append(await invoker.invoke("org.example:echo", "echo", None, 30.0))

            async with trio.open_nursery() as calls:
                for _ in range(8):
                    calls.start_soon(call)
            for _ in range(8):
                await call()
            assert answers == ["n3"] * 16  # (never sent to n2: not idempotent, and still tried elsewhere)
            assert len(hung.conns) == 1, hung.conns
            assert peers.backoff.is_out(hung.address, trio.current_time())
            nursery.cancel_scope.cancel()
    finally:
        hung.close()


@contextlib.contextmanager
def dropped(port: int) -> Iterator[None]:
    """Every packet to or from TCP `port` on this machine dropped (nftables), as a partition drops them;
    the table is removed on the way out."""
    table = f"aether_test_{os.getpid()}_{port}"
    script = (
        f"table inet {table} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n"
        f"    tcp dport {port} drop\n    tcp sport {port} drop\n  }}\n}}\n"
    )
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=False)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None, reason="drops packets with nftables: needs root and nft"
)
async def test_a_call_on_a_link_cut_mid_call_ends_with_the_link_not_at_its_timeout() -> None:
    """A partition between two nodes sends no reset: a call in flight on their link waited out its whole
    timeout (30 s by default), and so did every call sent on the link meanwhile. Now the kernel ends a link
    whose data goes unacknowledged for `UNACKNOWLEDGED` seconds, and the call ends as lost in flight (an
    idempotent one is then tried elsewhere, `test_lost_peers.py`)."""

    async def answer(coordinates: str, instance: int, entry: str, payload: Any, *_: Any) -> Any:
        if payload == "later":
            await trio.sleep_forever()
        return "n2"

    address = f"127.0.0.1:{free_port()}"
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(serve_peers, SECRET, address, "n2", answer))
        peers = PeerClients(nursery, SECRET)
        assert await peers.invoke(address, str(ECHO), 1, "echo", "now", 30.0) == "n2"  # (the link is up)
        port = int(address.rpartition(":")[2])
        with dropped(port), trio.fail_after(UNACKNOWLEDGED + 20), pytest.raises(LostInFlightError):
            await peers.invoke(address, str(ECHO), 1, "echo", "later", 120.0)
        nursery.cancel_scope.cancel()
