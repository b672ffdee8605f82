"""hypercorn's trio worker with listeners of ours and a connection handler that lets go of a connection
once its client has: the node's HTTP servers (`_http.serve_http`) run on it, plain (`serve_plain`) and
HTTPS (`_hypercorn_tls.serve_https`, whose listeners make TLS streams). Must not choose addresses or
certificates: the configuration and the listeners come in.

Why a connection handler of ours: hypercorn's (`TCPServer`), at the client's end of file (it shut down
its write side: a half-close) with no request in flight, did not close the connection: its keep-alive
timer held it until it ran out, the socket in CLOSE-WAIT all that time (hundreds of half-closed
connections held as many sockets and descriptors). `_Connection` stops that timer once nothing more can
come, so the connection closes at once, or, with a request in flight, once it is answered (hypercorn
still sends that answer, then closes: the client's side is closed, so the connection is not kept).

`serve_listeners` is hypercorn 0.18's `worker_serve` (pinned in uv.lock) with listeners of ours and
without what the node does not use (QUIC, `max_requests`, a shutdown trigger: it is stopped by
cancellation). It relies on these hypercorn internals: `TCPServer(app, config, context, state,
stream).run()` serves one connection, reads it in `_read_data` (which returns at the client's end of
file or a failed read) and closes it once its tasks end; its `idle_task` is the keep-alive timer;
`WorkerContext`, `Lifespan`, `ConnectionState`, `wrap_app`, `repr_socket_addr`, `Config.create_sockets`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app
from starlette.types import ASGIApp

from ._connection_slots import ConnectionSlots

LINGER_SECONDS = 5.0  # a closing connection waits at most so long for its client to close its side
LINGER_BYTES = 64 << 20  # ... and reads and drops at most so much of what it still sends


class _Connection(TCPServer):
    """hypercorn's connection handler, closing once the client has closed its side, and lingering before
    it closes a connection itself (above)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._closing = False
        self._reader: trio.lowlevel.Task | None = None
        self._client_done = trio.Event()  # the client's end of file, or the connection failed
        self._lingered = 0  # bytes read and dropped since the server closed its side

    async def _read_data(self) -> None:
        # hypercorn's loop (its `read_timeout` is not set here), but what comes once the server has
        # closed its side is dropped (counted: `_linger`), not given to the protocol
        self._reader = trio.lowlevel.current_task()
        while True:
            try:
                data = await self.stream.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.BusyResourceError):
                break
            if self._closing:
                self._lingered += len(data)
                if not data or self._lingered > LINGER_BYTES:
                    break
                continue
            await self.protocol.handle(RawData(bytes(data)))
            if not data:
                break
        self._client_done.set()
        await self.protocol.handle(Closed())
        # End of file (or the connection failed): nothing more can come, so the keep-alive timer must
        # not hold the connection; it ends with its tasks (a request in flight: once it is answered).
        await self.idle_task.stop()

    async def _close(self) -> None:
        try:
            if not self._closing:
                self._closing = True
                await self._linger()
        finally:  # (a linger cancelled, a handler's task group ending: the connection closes all the same)
            await self.stream.aclose()

    async def _linger(self) -> None:
        """Before the server closes a plain TCP connection with its answer sent: its side shut, what
        the client still sends read and dropped until it closes its side, for at most LINGER_SECONDS and
        LINGER_BYTES. Closed at once, a socket with unread bytes makes the kernel reset the connection,
        and a client still sending a body (one over the limit, answered 400 before it was read) could
        lose the answer it had been sent."""
        if self._client_done.is_set():
            return
        try:
            await self.stream.send_eof()
        except (AttributeError, trio.BrokenResourceError, trio.BusyResourceError, trio.ClosedResourceError):
            # A TLS stream cannot shut one side (a client reading to the end would wait for the close
            # while this side waited for its): closed at once, as before; a broken or closed one (the
            # keep-alive timer's close came first) is gone already.
            return
        with trio.move_on_after(LINGER_SECONDS):
            if trio.lowlevel.current_task() is not self._reader:
                await self._client_done.wait()  # (the reader drops what comes)
                return
            while self._lingered <= LINGER_BYTES:  # the reader itself closes: it reads here
                try:
                    data = await self.stream.receive_some(MAX_RECV)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # (gone: nothing left to wait for)
                if not data:
                    return
                self._lingered += len(data)


async def serve_listeners(
    app: ASGIApp,
    config: Config,
    listeners: Sequence[trio.abc.Listener[Any]],
    binds: list[str],
    *,
    slots: ConnectionSlots | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI `app` on `listeners` until cancelled, as hypercorn's `serve` would (lifespan,
    keep-alive, timeouts); reports `binds` (their URLs) once listening. A connection's failure ends that
    connection only. With `slots`, at most their limit of connections at once. Cancelled: the
    connections are given `config.graceful_timeout`, then given up, and the app's lifespan shutdown runs,
    as with hypercorn's `serve`."""
    asgi = wrap_app(app, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(asgi, config, lifespan_state)
    worker = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            for bind in binds:
                await config.log.info(f"Running on {bind}")
            state = ConnectionState(lifespan_state.copy())

            async def connection(stream: Any) -> None:
                await _Connection(asgi, config, worker, state, stream).run()

            if slots is not None:
                listeners, connection = slots.listeners(listeners), slots.handler(connection)
            task_status.started(binds)
            try:
                await trio.serve_listeners(connection, listeners, handler_nursery=server_nursery)
            finally:
                await worker.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


def bound_sockets(config: Config) -> list[Any]:
    """The listening sockets of `config.bind` (the config knows no TLS: its binds are its "insecure"
    sockets, whatever the listeners then speak)."""
    sockets = config.create_sockets().insecure_sockets
    for sock in sockets:
        sock.listen(config.backlog)
    return sockets


async def serve_plain(
    app: ASGIApp,
    config: Config,
    *,
    slots: ConnectionSlots | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI `app` over plain HTTP on `config.bind` until cancelled (`serve_listeners`, with
    `slots`); reports the bound addresses (`http://host:port`) once listening."""
    sockets = bound_sockets(config)
    listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(sock)) for sock in sockets]
    binds = [f"http://{repr_socket_addr(sock.family, sock.getsockname())}" for sock in sockets]
    await serve_listeners(app, config, listeners, binds, slots=slots, task_status=task_status)
