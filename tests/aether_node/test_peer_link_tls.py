"""The peer link over mutual TLS (`routing/_peers.py` on `aether_kv`'s TLS stream): a call crosses it as
one TLS record each way on the one connection the link keeps (so one write and one read at each end),
counted by a relay between the two nodes that reads the records' headers. Real sockets on 127.0.0.1,
in this process."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import trio

from aether_kv import ReloadingTLS, client_identity, free_port
from aether_node.routing._peers import PeerClients, serve_peers

SECRET = "a cluster secret of 32 characters"
APPLICATION_DATA = 23  # TLS 1.3 sends every record after the hello under this outer type


def _identity(directory: Path, name: str) -> ReloadingTLS:
    return client_identity(SECRET, directory, name=name, hosts=("127.0.0.1",))


class _RecordRelay:
    """Forwards TCP between a client and `target`, counting the TLS records of each direction and the
    connections made."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.connections = 0
        self.records = {"to server": 0, "to client": 0}

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream, direction: str) -> None:
        pending = bytearray()
        try:
            while data := await source.receive_some():
                pending += data
                while len(pending) >= 5 and len(pending) >= 5 + int.from_bytes(pending[3:5]):
                    if pending[0] == APPLICATION_DATA:
                        self.records[direction] += 1
                    del pending[: 5 + int.from_bytes(pending[3:5])]
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await sink.aclose()

    async def handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        server = await trio.open_tcp_stream("127.0.0.1", self.target)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, server, "to server")
            nursery.start_soon(self._pump, server, client, "to client")


async def test_a_call_is_one_tls_record_each_way_on_the_one_connection(tmp_path: Path) -> None:
    async def echo(
        coordinates: str, instance: int, entry: str, payload: Any, timeout: float, depth: int
    ) -> Any:
        return {"entry": entry, "payload": payload}

    port = free_port()
    relay = _RecordRelay(port)
    server_tls, client_tls = (
        _identity(tmp_path / "server", "node-2"),
        _identity(tmp_path / "client", "node-1"),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(serve_peers, SECRET, f"127.0.0.1:{port}", "node-2", echo, tls=server_tls)
        )
        listeners = await nursery.start(functools.partial(trio.serve_tcp, relay.handle, 0, host="127.0.0.1"))
        address = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        peers = PeerClients(nursery, SECRET, tls=client_tls)
        payload = {"text": "x" * 2000}
        first = await peers.invoke(address, "org.example:echo:1", 0, "echo", payload, 5.0)
        assert first == {"entry": "echo", "payload": payload}
        before = dict(relay.records)  # the handshakes (the secret's too) and session tickets are past
        for number in range(20):
            assert await peers.invoke(address, "org.example:echo:1", 0, "echo", number, 5.0) == {
                "entry": "echo",
                "payload": number,
            }
        # (a reply has crossed the relay, counted, before the call returns: no waiting needed)
        assert relay.records == {"to server": before["to server"] + 20, "to client": before["to client"] + 20}
        assert relay.connections == 1
        nursery.cancel_scope.cancel()
