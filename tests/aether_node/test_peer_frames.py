"""The peer protocol's frame limit on real sockets: a call whose payload does not fit in one frame between
nodes is a `bad_request` naming the limit, sent nowhere (no 500 from an untranslated KV error), and the
connection serves the next call."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio

from aether_kv import free_port
from aether_node.core._errors import InvocationError
from aether_node.routing._peers import MAX_FRAME, PeerClients, serve_peers

SECRET = "a cluster secret of 32 characters"


async def test_a_payload_over_the_frame_limit_is_a_bad_request_and_the_link_serves_on() -> None:
    served: list[Any] = []

    async def echo(
        coordinates: str, instance: int, entry: str, payload: Any, timeout: float, depth: int
    ) -> Any:
        served.append(payload)
        return payload

    port = free_port()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(serve_peers, SECRET, f"127.0.0.1:{port}", "node-2", echo))
        peers = PeerClients(nursery, SECRET)
        address = f"127.0.0.1:{port}"
        assert await peers.invoke(address, "org.example:echo:1", 1, "echo", "small", 5.0) == "small"
        with pytest.raises(InvocationError) as raised:
            await peers.invoke(address, "org.example:echo:1", 1, "echo", "x" * MAX_FRAME, 5.0)
        assert raised.value.kind == "bad_request"
        assert raised.value.message == (
            f"the call is over the {MAX_FRAME} bytes a call between nodes may take (to {address}): send a"
            " smaller payload"
        )
        assert await peers.invoke(address, "org.example:echo:1", 1, "echo", "again", 5.0) == "again"
        assert served == ["small", "again"]
        nursery.cancel_scope.cancel()
