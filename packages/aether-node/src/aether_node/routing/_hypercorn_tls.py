"""HTTPS on hypercorn's trio worker with TLS on the socket (`aether_kv.TLSSocketStream`: OpenSSL's record
layer on a non-blocking `ssl.SSLSocket`) instead of trio's `SSLStream` (the record layer driven from
Python through memory BIOs: tens of µs of Python per read and write, ~200 µs of CPU per request on the
ingress by wrk). Used by `_http.serve_http` for HTTPS only; plain HTTP is `_hypercorn_serve.serve_plain`.
Must not choose certificates: the SSL context comes in, and stays the one object every connection is
made with (a renewed certificate is loaded into it, `aether_kv.ReloadingTLS`).

Why listeners of ours: hypercorn's `worker_serve` builds its listeners itself (trio's `SSLListener`);
`serve_https` serves with `_hypercorn_serve.serve_listeners` (`worker_serve` with listeners of ours and
its connection handler, hypercorn's `TCPServer` made to close once the client has). It relies on these
hypercorn internals:

- `TCPServer(app, config, context, state, stream).run()` serves one connection and takes a TLS stream
  duck-typed as trio's `SSLStream`: it calls `do_handshake()` under `config.ssl_handshake_timeout`
  (trio.BrokenResourceError or trio.TooSlowError: it gives up the connection),
  `selected_alpn_protocol()`, and reads the addresses from `transport_stream.socket` (`family`,
  `getpeername()`, `getsockname()`); it closes with `send_eof()` (an AttributeError is taken as a TLS
  stream) and `aclose()`;
- `repr_socket_addr`.
"""

from __future__ import annotations

import ssl
from typing import NamedTuple

import trio
from hypercorn.config import Config
from hypercorn.utils import repr_socket_addr
from starlette.types import ASGIApp

from aether_kv import TLSSocketStream

from ._connection_slots import ConnectionSlots
from ._hypercorn_serve import bound_sockets, serve_listeners


class _Transport(NamedTuple):
    socket: ssl.SSLSocket


class _HypercornTLSStream(TLSSocketStream):
    """A TLS connection as hypercorn's TCPServer reads one (written for trio's SSLStream): also the
    connection's socket, for its addresses, as `transport_stream.socket`."""

    @property
    def transport_stream(self) -> _Transport:
        return _Transport(self.socket)


class _TLSListener(trio.abc.Listener[TLSSocketStream]):
    """TCP connections as TLS streams whose handshake is not begun: the connection's own task does it
    (`do_handshake`), so a slow or silent client holds up only its own connection. Each connection is
    made with `context` as it is then (a renewed certificate loaded into it serves new connections)."""

    def __init__(self, transport: trio.SocketListener, context: ssl.SSLContext) -> None:
        self.transport = transport
        self.context = context

    async def accept(self) -> TLSSocketStream:
        """The next connection. Raises what the TCP listener's `accept` does (EMFILE and the like:
        `trio.serve_listeners` waits and tries again); a connection already gone is skipped."""
        while True:
            stream = await self.transport.accept()
            try:
                return _HypercornTLSStream.wrap_unhandshaken(stream, self.context, server_side=True)
            except trio.BrokenResourceError:
                continue  # reset between accept and wrap (closed by then)

    async def aclose(self) -> None:
        await self.transport.aclose()


async def serve_https(
    app: ASGIApp,
    config: Config,
    context: ssl.SSLContext,
    *,
    slots: ConnectionSlots | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI `app` over HTTPS with `context` on `config.bind` until cancelled, as hypercorn's
    `serve` would (lifespan, keep-alive, timeouts, h2 if ALPN says so; `_hypercorn_serve.serve_listeners`,
    whose connections close once their client has); reports the bound addresses (`https://host:port`)
    once listening. A connection's failure (a failed or timed-out handshake, a reset, plain text on the
    port) ends that connection only. With `slots`, at most their limit of connections at once.
    Cancelled: the connections are given up and the app's lifespan shutdown runs, as with hypercorn's
    `serve`."""
    sockets = bound_sockets(config)
    listeners = [
        _TLSListener(trio.SocketListener(trio.socket.from_stdlib_socket(sock)), context) for sock in sockets
    ]
    binds = [f"https://{repr_socket_addr(sock.family, sock.getsockname())}" for sock in sockets]
    await serve_listeners(app, config, listeners, binds, slots=slots, task_status=task_status)
