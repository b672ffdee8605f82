"""The fast app ingress (`--ingress-server fast`): HTTP in a worker process, routing in the node.

The node binds the ingress port and hands it to one worker process (`_ingress_worker`: asyncio + uvloop +
httptools), which parses HTTP (HTTPS with the operator's certificate, which it loads itself) and sends
each invoke over a Unix socket pair (the link: the slice host protocol's frames, `aether_slice.protocol`,
with messages of its own; many calls in flight, several per read). This module serves that link in the
node's trio loop: each call goes to the same `invoke` as the trio ingress (ClusterInvoker.invoke:
balancing, the retry rule, the per-call timeout, metrics), with the same option checks and error kinds.
So the URL surface, statuses and JSON errors are the trio ingress's; what moves out of the node's loop
is HTTP itself.

Given the invoker (`direct`), the node also keeps the worker's routing table current (`_direct`) so that
the worker sends calls to this node's own instances straight to them, and counts the calls it reports.

The service reports ready once the worker serves; if the worker dies, or does not start (a certificate
that no longer loads: it says which file and why), the service fails (its supervisor starts it again,
with a new worker). On cancellation the link closes: the worker answers calls still in flight with 503
and exits; it is SIGKILLed if it lingers over 1 s.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from starlette.datastructures import QueryParams

from aether_slice import protocol
from aether_slice.protocol import ProtocolError

from ..core._error_kinds import http_status
from ..core._errors import InvocationError
from ..core._off_loop import json_size_at_least
from ..runtime._processes import ChildProcess, spawn
from ..runtime._slice_host import _Connection, encode_frame
from ._direct import DirectRoutes, record_direct
from ._http import Invoke, call_options, unanswerable
from ._ingress_worker import MAX_LINK_FRAME
from ._listen import listen_socket

if TYPE_CHECKING:
    from ._invoker import ClusterInvoker

log = logging.getLogger("aether_node.fast_ingress")

READY_TIMEOUT = 30.0  # the worker imports uvloop and httptools, then says it serves


class IngressWorkerError(Exception):
    """The ingress worker process failed to start or exited (the supervisor restarts the service)."""


def _url(sock: socket.socket, scheme: str) -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def serve_fast_ingress(
    invoke: Invoke,
    address: str,
    *,
    direct: ClusterInvoker | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the app ingress on host:port through a worker process until cancelled; reports the bound
    address once the worker serves. With `direct` (the node's invoker), the worker calls this node's
    instances itself where the table allows. With `cert` and `key` (PEM files), it serves HTTPS. Raises
    IngressWorkerError if the worker does not start (saying why, if the worker could) or exits."""
    command = [sys.executable, "-m", "aether_node.routing._ingress_worker"]
    if cert is not None and key is not None:
        command += ["--cert", str(cert), "--key", str(key)]
    listener = listen_socket(address)
    url = _url(listener, "https" if cert is not None and key is not None else "http")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        process = spawn(
            command,
            stdin=listener.fileno(),
            stdout=theirs.fileno(),
        )
    finally:
        listener.close()  # the worker holds them now
        theirs.close()
    connection = _Connection(trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
    hello: dict[str, Any] | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.write_loop)
            with trio.move_on_after(READY_TIMEOUT):
                hello = await _receive(connection)
            if hello and "ready" in hello:
                link = _Link(connection, invoke)
                if direct is not None and isinstance(hello.get("socket"), str):
                    link.on_report = functools.partial(record_direct, direct)
                    nursery.start_soon(DirectRoutes(direct, hello["socket"], link.push).run)
                task_status.started([url])
                await link.serve(nursery)
            nursery.cancel_scope.cancel()
        with trio.move_on_after(1.0):
            await process.wait()
        if hello and isinstance(hello.get("error"), str):
            raise IngressWorkerError(f"the ingress worker did not start: {hello['error']}")
        what = "exited unexpectedly" if hello and "ready" in hello else "did not start"
        raise IngressWorkerError(f"the ingress worker {what} ({_exited(process)})")
    finally:
        connection.close()  # the worker answers what is in flight with 503, then exits
        await process.stop(1.0)
        if hello and isinstance(hello.get("socket"), str):  # (the worker removes it, unless killed)
            shutil.rmtree(os.path.dirname(hello["socket"]), ignore_errors=True)


def _exited(process: ChildProcess) -> str:
    code = process.returncode
    return "still running" if code is None else f"exit code {code}"


async def _receive(connection: _Connection) -> dict[str, Any] | None:
    try:
        return await connection.receive()
    except (trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError):
        return None


class _Link:
    """The node's side of the link: one task per call, the call's cancel scope kept until it ends. Replies
    are written together, once per scheduler pass (one system call for all the answers that are ready)."""

    def __init__(self, connection: _Connection, invoke: Invoke) -> None:
        self.connection = connection
        self.invoke = invoke
        self.calls: dict[int, trio.CancelScope] = {}
        self._frames: list[bytes] = []
        self._wake = trio.Event()
        self.on_report: Callable[[dict[str, Any]], None] | None = None  # the worker's call records

    def push(self, message: dict[str, Any]) -> None:
        """Send a message of the node's own (a routing table) with the next replies."""
        self._queue(protocol.encode(message, max_frame=MAX_LINK_FRAME))

    def _queue(self, frame: bytes) -> None:
        if not self._frames:
            self._wake.set()
        self._frames.append(frame)

    async def serve(self, nursery: trio.Nursery) -> None:
        """Until the worker closes the link (or sends what is not a frame)."""
        nursery.start_soon(self._flush_loop)
        while True:
            message = await _receive(self.connection)
            if message is None:
                return
            call_id = message.get("i")
            if isinstance(call_id, int):
                scope = self.calls[call_id] = trio.CancelScope()
                nursery.start_soon(self._call, call_id, scope, message)
            elif isinstance(message.get("c"), int):  # the client went away
                cancelled = self.calls.pop(message["c"], None)
                if cancelled is not None:
                    cancelled.cancel()
            elif "m" in message and self.on_report is not None:
                self.on_report(message)

    async def _call(self, call_id: int, scope: trio.CancelScope, message: dict[str, Any]) -> None:
        try:
            with scope:
                reply = await self._answer(message)
        finally:
            self.calls.pop(call_id, None)
        if scope.cancelled_caught:
            return  # the client went away: nobody waits for the answer
        reply["i"] = call_id
        try:  # (a big result is written off the event loop)
            frame = await encode_frame(reply, json_size_at_least(reply.get("r")), max_frame=MAX_LINK_FRAME)
        except ProtocolError as why:  # a result that cannot be framed (not JSON: NaN; too large)
            error = unanswerable(str(message.get("a")), str(message.get("e")), why)
            failure = error.to_wire()
            frame = protocol.encode({"i": call_id, "s": http_status(error.kind), "x": failure})
        self._queue(frame)

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            frames, self._frames = self._frames, []
            try:
                self.connection.write(b"".join(frames))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the reader ends the link

    async def _answer(self, message: dict[str, Any]) -> dict[str, Any]:
        query = message.get("q")
        try:
            options = call_options(QueryParams(query)) if query else {}
        except ValueError as error:
            return {"s": 400, "x": {"kind": "bad_request", "message": str(error)}}
        try:
            result = await self.invoke(
                str(message.get("a")), str(message.get("e")), message.get("p"), **options
            )
        except InvocationError as error:
            return {"s": http_status(error.kind), "x": error.to_wire()}
        except Exception:  # a bug costs this call a plain 500, never the link
            log.exception("serving an ingress call failed")
            return {"s": 500}
        return {"s": 200, "r": result}
