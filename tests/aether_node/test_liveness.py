"""The liveness watch's probe on real loopback sockets: a port that listens is alive, a port nobody
listens on is gone (refused), and one that does not answer in time is unknown, never gone."""

from __future__ import annotations

import trio

from aether_node.control._liveness import Probe, probe


async def test_a_listening_port_is_alive_and_a_closed_one_is_gone() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    assert await probe(f"127.0.0.1:{port}", 1.0) is Probe.ALIVE
    await listeners[0].aclose()
    assert await probe(f"127.0.0.1:{port}", 1.0) is Probe.GONE


async def test_no_answer_in_time_is_unknown() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with listeners[0]:
        assert await probe(f"127.0.0.1:{port}", 0.0) is Probe.UNKNOWN  # no time to connect at all
