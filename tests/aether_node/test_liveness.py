"""The liveness watch's probe on real loopback sockets: a port that listens is alive, a port nobody
listens on is gone (refused), and one that does not answer in time is unknown, never gone. And which
registrations a new leader probes at once (`Sightings`): those it had seen registered for SETTLED_AFTER
seconds, timed by its own clock (a node's `started_at` is its own wall clock: nodes' may be far apart)."""

from __future__ import annotations

import trio

from aether_node.control._liveness import SETTLED_AFTER, Probe, Sightings, probe


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


def test_a_registration_settles_after_being_seen_long_enough() -> None:
    sightings = Sightings()
    sightings.saw({("n1", 7), ("n2", 8)}, now=100.0)
    sightings.saw({("n1", 7), ("n2", 8), ("n3", 9)}, now=105.0)
    assert sightings.settled(100.0 + SETTLED_AFTER - 0.1) == set()
    assert sightings.settled(100.0 + SETTLED_AFTER) == {("n1", 7), ("n2", 8)}
    assert sightings.settled(105.0 + SETTLED_AFTER) == {("n1", 7), ("n2", 8), ("n3", 9)}


def test_a_registration_again_on_another_lease_is_new_and_one_gone_is_forgotten() -> None:
    sightings = Sightings()
    sightings.saw({("n1", 7), ("n2", 8)}, now=0.0)
    sightings.saw({("n1", 70), ("n2", 8)}, now=9.0)  # n1 registered again (restarted, or its lease lapsed)
    assert sightings.settled(SETTLED_AFTER) == {("n2", 8)}
    sightings.saw(set(), now=11.0)
    sightings.saw({("n2", 8)}, now=12.0)  # gone, then back: seen anew
    assert sightings.settled(12.0 + SETTLED_AFTER - 1) == set()
