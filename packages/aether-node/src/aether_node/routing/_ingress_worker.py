"""The fast ingress's worker process: HTTP/1.1 on asyncio + uvloop with httptools (a raw protocol, no ASGI).

It owns the HTTP side of the app ingress: parsing, keep-alive, the JSON body, and the answers that need no
routing (/healthz, 404, 405, 400 for a body that is not JSON). Each invoke goes over one link to its node
(frames of a 4-byte length and a JSON object, many in flight at once) and the node routes it exactly as
the trio ingress does (`_fast_ingress`: the same option checks, balancing, retries, timeouts, metrics);
the worker renders the node's answer as the trio ingress would.

The direct path (`_ingress_direct`, fed by the node's `_direct`): a call the node's table lets the worker
decide (every endpoint an attached local instance, no rollout split, no per-call option) goes straight
to an instance over the worker's own connection to it, balanced, retried and timed out by the invoker's
rules, and counted in the node's metrics (reported in batches). Everything else goes to the node.

`python -m aether_node.routing._ingress_worker [--cert PEM --key PEM]`, spawned by its node with fd 0 =
the listening TCP socket (bound by the node) and fd 1 = the link (a connected Unix socket). With a
certificate and key (the operator's `ingress_cert`, `ingress_key`), it serves HTTPS (HTTP/1.1) instead of
HTTP; only that listener: the direct path's Unix socket stays as it is. Ends when the link closes (its node
stopped or died: calls in flight then get 503) or on SIGTERM (the same); dies with its node
(PR_SET_PDEATHSIG).

Link frames (`aether_slice.protocol`'s), worker → node: {"i": id, "a": artifact, "e": entry, "p": payload,
"q": query string (if any)}; {"c": id} when the client went away first (the node cancels that call).
Node → worker: {"i": id, "s": status, "r": result} or {"i", "s", "x": error object}, or {"i", "s": 500}
alone for an unexpected failure (a plain 500, as starlette answers one); {"ready": pid} from the worker
once it serves, with "socket": the Unix socket path local instances attach to, or {"error": message}
instead if it cannot serve (a certificate that does not load: which file, and why), and it exits.
Direct path: {"t": table} node → worker, {"m": call records, "f": in flight} worker → node (see
`_direct`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aether_slice import protocol
from aether_slice.protocol import ProtocolError

from ..core._config import ConfigError
from ..core._error_kinds import RETRY_AFTER, ErrorKind, http_status
from ._body_limit import body_too_large
from ._http import INVOKE_PATH, MAX_BODY, TLS_HANDSHAKE_TIMEOUT, ingress_ssl_context, parse_payload
from ._ingress_direct import DirectRouter, InstanceLink

# node → worker: a reply carries a result of at most the slice frame limit (16 MiB), JSON-escaped again;
# worker → node: the slice frame limit, which the node reads its link with
MAX_LINK_FRAME = 64 * 1024 * 1024
MAX_QUEUED = 64  # pipelined requests of one connection in flight before it stops reading

# JSON as starlette's JSONResponse renders it (compact, UTF-8, strict: NaN is an error)
_render = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Content Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


_RETRY_AFTER = b"retry-after: %d\r\n" % RETRY_AFTER  # on every 503, as the trio ingress says it


def _response(status: int, body: bytes, content_type: bytes, extra: bytes = b"") -> bytes:
    reason = _REASONS.get(status, b"Unknown")
    if status == 503:
        extra += _RETRY_AFTER
    return b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\ncontent-type: %s\r\n%s\r\n%s" % (
        status,
        reason,
        len(body),
        content_type,
        extra,
        body,
    )


def _json_response(status: int, content: Any) -> bytes:
    return _response(status, _render(content).encode(), b"application/json")


def _plain(status: int, extra: bytes = b"") -> bytes:
    return _response(status, _REASONS[status], b"text/plain; charset=utf-8", extra)


def _error(kind: str, message: str) -> bytes:
    return _json_response(http_status(kind), {"error": {"kind": kind, "message": message}})


def render_reply(reply: dict[str, Any]) -> bytes:
    """The HTTP response for the node's answer to one call."""
    status = reply.get("s", 500)
    if "r" in reply:
        try:
            return _json_response(status, reply["r"])
        except ValueError as why:  # not strict JSON (NaN): as the node answers one (`unanswerable`)
            return _error(ErrorKind.BAD_RESULT, f"the result cannot be answered: {why}")
    if "x" in reply:
        return _json_response(status, {"error": reply["x"]})
    return _plain(500)


def render_result(result: bytes) -> bytes:
    """The HTTP 200 for a result's JSON bytes that are already what `render_reply` would write."""
    return _response(200, result, b"application/json")


def _verbatim(body: bytes, payload: Any) -> bytes | None:
    """The body to pass on as the payload's JSON as it is: UTF-8 (JSON may come in UTF-16 or 32, or
    with a BOM) and not empty (that is null); None: encode the payload."""
    if payload is None:
        return b"null"
    return body if json.detect_encoding(body) == "utf-8" else None


class _Slot:
    """One request's place in its connection's answer order (HTTP/1.1 answers pipelined requests in order)."""

    __slots__ = ("call_id", "data", "keep_alive")

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.data: bytes | None = None
        self.call_id = 0


class HttpConnection(asyncio.Protocol):
    def __init__(self, worker: Worker) -> None:
        import httptools

        self.worker = worker
        self.parser = httptools.HttpRequestParser(self)
        self._parser_error = httptools.HttpParserError
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.queue: collections.deque[_Slot] = collections.deque()
        self.paused = False
        self.closed = False

    # ------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.worker.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.worker.connections.discard(self)
        for slot in self.queue:
            if slot.data is None and slot.call_id:
                self.worker.abandon(slot.call_id)
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except self._parser_error:
            self._fail(_plain(400))
        except Exception:  # an upgrade request, or anything else httptools refuses: this connection only
            self._fail(_plain(400))

    def _fail(self, data: bytes) -> None:
        slot = _Slot(False)
        slot.data = data
        self.queue.append(slot)
        self._flush()

    # ------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self.url, self.body, self.size, self.too_large = b"", [], 0, False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # (not behind answers still due: it would overtake them; then the client waits a moment instead)
        if name.lower() == b"expect" and value.lower() == b"100-continue" and not self.queue:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_BODY:
            self.too_large, self.body = True, []
        elif not self.too_large:
            self.body.append(body)

    def on_message_complete(self) -> None:
        slot = _Slot(self.parser.should_keep_alive())
        self.queue.append(slot)
        if len(self.queue) >= MAX_QUEUED and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        try:
            self.worker.route(self, slot, self.parser.get_method(), self.url, self.body, self.too_large)
        except Exception:  # a bug costs this request a plain 500 (as starlette answers one), not its answer
            traceback.print_exc()
            if slot.data is None:
                self.answer(slot, _plain(500))

    # ------------------------------------------------------------ answers

    def answer(self, slot: _Slot, data: bytes) -> None:
        slot.data = data
        self._flush()

    def _flush(self) -> None:
        queue, transport = self.queue, self.transport
        if self.closed or transport is None:
            return
        while queue and queue[0].data is not None:
            slot = queue.popleft()
            transport.write(slot.data)  # type: ignore[arg-type]
            if not slot.keep_alive:
                self.closed = True
                transport.close()
                return
        if self.paused and len(queue) < MAX_QUEUED // 2:
            self.paused = False
            transport.resume_reading()


class Worker:
    """Routes requests: answers what needs no node, forwards invokes over the link, matches the replies."""

    def __init__(self, link: socket.socket) -> None:
        self.link = link
        self.link_transport: asyncio.Transport | None = None
        self.connections: set[HttpConnection] = set()
        self.calls: dict[int, tuple[HttpConnection, _Slot]] = {}
        self.next_id = 0
        self.out: list[bytes] = []
        self.done = asyncio.Event()
        self.direct = DirectRouter(self, render_reply, render_result)

    # ------------------------------------------------------------ requests

    def route(
        self, conn: HttpConnection, slot: _Slot, method: bytes, url: bytes, body: list[bytes], too_large: bool
    ) -> None:
        path, _, query = url.partition(b"?")
        text = path.decode("latin-1")
        if "%" in text:
            text = unquote(text)  # as hypercorn decodes the ASGI path
        match = INVOKE_PATH.fullmatch(text)
        if match is not None:
            if method != b"POST":
                conn.answer(slot, _plain(405, b"allow: POST\r\n"))
            elif too_large:
                conn.answer(slot, _error("bad_request", body_too_large(MAX_BODY)))
            else:
                self._forward(conn, slot, match["artifact"], match["entry"], b"".join(body), query)
        elif text == "/healthz":
            if method in (b"GET", b"HEAD"):
                data = _json_response(200, {"ok": True})
                conn.answer(slot, data if method == b"GET" else data[: data.index(b"\r\n\r\n") + 4])
            else:
                conn.answer(slot, _plain(405, b"allow: GET, HEAD\r\n"))
        else:
            conn.answer(slot, _plain(404))

    def _forward(
        self, conn: HttpConnection, slot: _Slot, artifact: str, entry: str, body: bytes, query: bytes
    ) -> None:
        try:
            payload = parse_payload(body)
        except ValueError as error:
            conn.answer(slot, _error("bad_request", str(error)))
            return
        if self.link_transport is None:
            conn.answer(slot, _error("unavailable", "the node's ingress is stopping"))
            return
        if not query and self.direct.try_call(conn, slot, artifact, entry, payload, _verbatim(body, payload)):
            return
        self.forward_payload(conn, slot, artifact, entry, payload, query)

    def forward_payload(
        self, conn: HttpConnection, slot: _Slot, artifact: str, entry: str, payload: Any, query: bytes
    ) -> None:
        """Send the call to the node, which routes it (after the records of the calls made directly)."""
        if self.direct.records:
            self.direct.report()
        if self.link_transport is None:
            conn.answer(
                slot, _error("unavailable", "the node's ingress stopped before the call was answered")
            )
            return
        self.next_id += 1
        message: dict[str, Any] = {"i": self.next_id, "a": artifact, "e": entry, "p": payload}
        if query:
            message["q"] = query.decode("latin-1")
        try:
            frame = protocol.encode(message)
        except ProtocolError as error:  # its JSON, escaped, is over what the node reads
            conn.answer(slot, _error("bad_request", f"the request cannot be passed on: {error}"))
            return
        call_id = slot.call_id = self.next_id
        self.calls[call_id] = (conn, slot)
        self._send(frame)

    def abandon(self, call_id: int) -> None:
        """The client went away: forget the call and ask the node to cancel it."""
        if self.calls.pop(call_id, None) is not None and self.link_transport is not None:
            self._send(protocol.encode({"c": call_id}))

    # ------------------------------------------------------------ the link

    def send_message(self, message: dict[str, Any]) -> None:
        if self.link_transport is not None:
            self._send(protocol.encode(message, max_frame=MAX_LINK_FRAME))

    def _send(self, frame: bytes) -> None:
        if not self.out:  # one write per loop pass, however many frames it brought
            asyncio.get_running_loop().call_soon(self._flush_link)
        self.out.append(frame)

    def _flush_link(self) -> None:
        out, self.out = self.out, []
        if self.link_transport is not None:
            self.link_transport.write(b"".join(out))

    def reply(self, message: dict[str, Any]) -> None:
        if "t" in message:
            self.direct.update(message["t"])
            return
        call_id = message.get("i")
        found = self.calls.pop(call_id, None) if isinstance(call_id, int) else None
        if found is not None:
            conn, slot = found
            try:
                data = render_reply(message)
            except Exception:  # an answer of a shape not foreseen: a plain 500 for that call, not the link
                traceback.print_exc()
                data = _plain(500)
            conn.answer(slot, data)

    def link_closed(self) -> None:
        """The node is gone or stopping: answer every call in flight with 503, close, end."""
        self.link_transport = None
        calls, self.calls = self.calls, {}
        stopped = _error("unavailable", "the node's ingress stopped before the call was answered")
        for conn, slot in calls.values():
            conn.answer(slot, stopped)
        self.direct.fail_all(stopped)
        for conn in list(self.connections):
            if conn.transport is not None and not conn.queue:
                conn.transport.close()
        self.done.set()


class LinkProtocol(asyncio.Protocol):
    """Frames from the node."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.frames = protocol.FrameDecoder(max_frame=MAX_LINK_FRAME)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.worker.link_transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        frames, reply = self.frames, self.worker.reply
        frames.feed(data)
        try:
            while (message := frames.next()) is not None:
                reply(message)
        except ProtocolError as error:
            print(f"ingress worker: the node broke the link's protocol ({error}); closing", file=sys.stderr)
            self.worker.link_closed()

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.link_closed()


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the link's EOF still ends us
        pass
    if os.getppid() == 1:
        os._exit(1)


async def serve(listener: socket.socket, link: socket.socket, tls: ssl.SSLContext | None = None) -> None:
    loop = asyncio.get_running_loop()
    worker = Worker(link)
    await loop.create_unix_connection(lambda: LinkProtocol(worker), sock=link)
    server = await loop.create_server(
        lambda: HttpConnection(worker),
        sock=listener,
        backlog=1024,
        ssl=tls,
        ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if tls is not None else None,
    )
    directory = tempfile.mkdtemp(prefix="aether-ingress-")  # (mode 0700: this user's instances only)
    path = os.path.join(directory, "attach.sock")
    attach = await loop.create_unix_server(lambda: InstanceLink(worker.direct), path, backlog=256)
    loop.add_signal_handler(signal.SIGTERM, worker.link_closed)
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # Ctrl-C in the node's terminal is the node's
    worker._send(protocol.encode({"ready": os.getpid(), "socket": path}))
    try:
        await worker.done.wait()
    finally:
        attach.close()
        shutil.rmtree(directory, ignore_errors=True)
    server.close()
    # let the answers just written (503s among them) go out, briefly
    for _ in range(100):
        if not any(conn.queue for conn in worker.connections):
            break
        await asyncio.sleep(0.01)


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m aether_node.routing._ingress_worker")
    parser.add_argument("--cert", type=Path, help="the certificate (PEM) for HTTPS on the ingress")
    parser.add_argument("--key", type=Path, help="its private key (PEM)")
    return parser.parse_args()


def main() -> None:
    _die_with_parent()
    options = _options()
    listener = socket.socket(fileno=os.dup(0))
    link = socket.socket(fileno=os.dup(1))
    tls = None
    if options.cert is not None and options.key is not None:
        try:
            tls = ingress_ssl_context(options.cert, options.key)
        except ConfigError as error:  # the node logs it and starts a worker again later
            link.sendall(protocol.encode({"error": error.message}))
            os._exit(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # print goes to the node's stderr
    sys.stdout = sys.stderr
    try:
        import uvloop

        uvloop.run(serve(listener, link, tls))
    except KeyboardInterrupt:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
