"""HTTPS on hypercorn's trio worker with TLS on the socket (`aether_kv.TLSSocketStream`: OpenSSL's record
layer on a non-blocking `ssl.SSLSocket`) instead of trio's `SSLStream` (the record layer driven from
Python through memory BIOs: tens of µs of Python per read and write, ~200 µs of CPU per request on the
ingress by wrk). Used by `_http.serve_http` for HTTPS only; plain HTTP is hypercorn's own `serve`.
Must not choose certificates: the SSL context comes in, and stays the one object every connection is
made with (a renewed certificate is loaded into it, `aether_kv.ReloadingTLS`).

Why a serve function of ours: hypercorn's `worker_serve` builds its listeners itself (trio's
`SSLListener`). `serve_https` is `worker_serve` (hypercorn 0.18, pinned in uv.lock) with listeners of
ours and without what the node does not use (QUIC, `max_requests`, a shutdown trigger: it is stopped
by cancellation). It relies on these hypercorn internals:

- `hypercorn.trio.tcp_server.TCPServer(app, config, context, state, stream).run()` serves one
  connection and takes a TLS stream duck-typed as trio's `SSLStream`: it calls `do_handshake()` under
  `config.ssl_handshake_timeout` (trio.BrokenResourceError or trio.TooSlowError: it gives up the
  connection), `selected_alpn_protocol()`, and reads the addresses from `transport_stream.socket`
  (`family`, `getpeername()`, `getsockname()`); it closes with `send_eof()` (an AttributeError is
  taken as a TLS stream) and `aclose()`;
- `WorkerContext`, `Lifespan` (the ASGI lifespan protocol), `ConnectionState`, `wrap_app`,
  `repr_socket_addr`, and `Config.create_sockets` for the bound sockets.
"""

from __future__ import annotations

import ssl
from typing import Any, NamedTuple

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app
from starlette.types import ASGIApp

from aether_kv import TLSSocketStream


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
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI `app` over HTTPS with `context` on `config.bind` until cancelled, as hypercorn's
    `serve` would (lifespan, keep-alive, timeouts, h2 if ALPN says so); reports the bound addresses
    (`https://host:port`) once listening. A connection's failure (a failed or timed-out handshake, a
    reset, plain text on the port) ends that connection only. Cancelled: the connections are given up
    at once and the app's lifespan shutdown runs, as with hypercorn's `serve`."""
    asgi = wrap_app(app, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(asgi, config, lifespan_state)
    worker = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            listeners, binds = [], []
            # (the config knows no TLS: its binds come back as its "insecure" sockets)
            for sock in config.create_sockets().insecure_sockets:
                sock.listen(config.backlog)
                listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                listeners.append(_TLSListener(listener, context))
                binds.append(f"https://{repr_socket_addr(sock.family, sock.getsockname())}")
                await config.log.info(f"Running on {binds[-1]}")
            state = ConnectionState(lifespan_state.copy())

            async def connection(stream: Any) -> None:
                await TCPServer(asgi, config, worker, state, stream).run()

            task_status.started(binds)
            try:
                await trio.serve_listeners(connection, listeners, handler_nursery=server_nursery)
            finally:
                await worker.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
