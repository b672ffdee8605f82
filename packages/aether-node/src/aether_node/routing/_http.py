"""The node's HTTP serving: the one module that serves HTTP (ASGI apps on hypercorn's trio worker).

App ingress: `POST /invoke/{group}:{artifact}/{entry}` with a JSON body → the entry point's JSON result.
Errors are JSON `{"error": {"kind", "message", ...}}` with the status of their kind (`http_status`,
`core/_error_kinds.py`), for the ingress and the management API alike; a 503 says `Retry-After`.

The invoke route is the node's data path, so it is served by a raw ASGI callable (starlette's routing,
middleware, Request and Response objects cost more per call than the rest of the ingress's own work);
every other request (other paths and methods: 404, 405, /healthz) goes to a starlette app, which also
keeps their answers exactly what starlette gives.

HTTPS on the app ingress, with the operator's certificate and key: `ingress_ssl_context`, which both
ingress servers use (hypercorn here, the fast ingress's worker process in `_ingress_worker`). hypercorn
serves HTTPS here with TLS on the socket (`_hypercorn_tls`), plain HTTP with `_hypercorn_serve.serve_plain`;
both with hypercorn's connection handler made to close a connection once its client has closed its side
(`_hypercorn_serve`). An idle keep-alive connection is closed after `keep_alive` seconds.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from aether_slice import protocol

from ..core._blueprint import Balancing
from ..core._config import ConfigError
from ..core._error_kinds import RETRY_AFTER, ErrorKind, http_status
from ..core._errors import InvocationError
from ..core._off_loop import in_pieces, json_size_at_least, run_sized
from ..core._strict_json import parse_strict_json
from ..core._table_problems import unknown_keys
from ..core._text import carried, shown
from ._body_limit import limit_body
from ._connection_slots import ConnectionSlots
from ._hypercorn_serve import serve_plain
from ._hypercorn_tls import serve_https
from ._unread_body import read_unread_body

log = logging.getLogger("aether_node.http")

Invoke = Callable[..., Awaitable[Any]]  # (artifact, entry, payload, *, timeout=, balancing=) → result

MAX_BODY = protocol.MAX_FRAME - 4096  # a call's body must fit in one frame to the node and on to the slice
MAX_MANAGEMENT_BODY = 64 * 1024 * 1024  # a blueprint is at most 1 MiB (a KV value); a backup at most 64 MiB
INGRESS_KEEP_ALIVE = 75.0  # seconds an idle keep-alive connection is kept: the ingress's (load balancers')
MANAGEMENT_KEEP_ALIVE = 10.0  # ... the management API's: its clients (the CLI) open one per request
# seconds a connection to an HTTPS port may take to finish its TLS handshake (hypercorn's default, 60 s,
# let a client that connected and said nothing hold one of the server's connection slots for a minute)
TLS_HANDSHAKE_TIMEOUT = 10.0

# starlette's own pattern for the route "/invoke/{artifact}/{entry}"
INVOKE_PATH = re.compile(r"^/invoke/(?P<artifact>[^/]+)/(?P<entry>[^/]+)$")
_JSON_HEADERS = (b"content-type", b"application/json")
_RETRY_AFTER = (b"retry-after", str(RETRY_AFTER).encode())  # on every 503


def error_response(kind: str, message: str, **extra: Any) -> JSONResponse:
    fields = {"kind": kind, "message": message, **{k: v for k, v in extra.items() if v is not None}}
    status = http_status(kind)
    return JSONResponse({"error": carried(fields)}, status_code=status, headers=_retry_after(status))


def _retry_after(status: int) -> dict[str, str] | None:
    return {"retry-after": str(RETRY_AFTER)} if status == 503 else None


# JSON as starlette's JSONResponse renders it (compact, UTF-8, strict: NaN is a ValueError); one encoder
# for all calls (json.dumps with these options would build one per call)
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode
_ENCODE_IN_PIECES = in_pieces(_encode)


def _render(content: Any) -> bytes:
    return _encode(content).encode("utf-8")


def _render_big(content: Any) -> bytes:
    """`_render`, in pieces (`in_pieces`: in a worker thread, the event loop's thread runs meanwhile)."""
    return _ENCODE_IN_PIECES(content).encode("utf-8")


def _error(error: InvocationError) -> tuple[int, bytes]:
    """An error's answer. Its texts come from a slice (its exception's message, its traceback), which may
    hold a lone surrogate that no UTF-8 can carry: written as its escape's text (`\\udcff`), never a bare
    500."""
    return http_status(error.kind), _render({"error": error.to_wire()})


def unanswerable(artifact: str, entry: str, error: Exception) -> InvocationError:
    """The error answering a result the node cannot render: not strict JSON (NaN, Infinity). A slice
    process of this version refuses to send one (`bad_result`); one of another version may, and a peer
    pass it on: `bad_result` here too, with its status, never a bare 500."""
    message = f"{artifact}/{entry}: the result cannot be answered: {error}"
    return InvocationError(ErrorKind.BAD_RESULT, message)


CALL_OPTIONS = ("balancing", "timeout")


def call_options(query: Mapping[str, str]) -> dict[str, Any]:
    """Per-call options from the query string: ?timeout=SECONDS&balancing=STRATEGY; any other parameter
    is refused (a misspelt `?timout=5` was left out unseen, the call taking the default timeout)."""
    unknown = unknown_keys(query, CALL_OPTIONS, "query parameter")
    if unknown:
        raise ValueError(unknown)
    options: dict[str, Any] = {}
    if "timeout" in query:
        try:
            timeout = float(query["timeout"])
        except ValueError:
            raise ValueError(f"timeout: expected seconds, got {shown(query['timeout'])}") from None
        if not 0 < timeout <= 3600:
            raise ValueError(f"timeout: must be in (0, 3600] seconds, got {timeout:g}")
        options["timeout"] = timeout
    if "balancing" in query:
        try:
            options["balancing"] = Balancing(query["balancing"])
        except ValueError:
            choices = ", ".join(b.value for b in Balancing)
            raise ValueError(f"balancing: must be one of {choices}") from None
    return options


def parse_json(body: bytes) -> Any:
    """A request body's JSON, strictly: no NaN or Infinity (no answer could carry them back, nor a slice
    take them: the call would run and then fail), no nesting past the parser's limit, no lone UTF-16
    surrogate, escaped or encoded (no text: nothing could encode it again). Raises ValueError with the
    400's message, saying why. The one parser of request bodies: the ingresses' (both servers) and the
    management API's (`api/_management.parse_json_body`)."""
    try:  # (the encoding as json.loads finds it, decoded strictly: json.loads lets surrogates through)
        return parse_strict_json(body.decode(json.detect_encoding(body)), from_utf8=True)
    except ValueError as error:  # not UTF-8, not JSON, not a JSON value, an integer of > 4300 digits
        raise ValueError(f"the request body is not valid JSON: {error}") from None


def parse_payload(body: bytes) -> Any:
    """The call's payload: the JSON body, strictly (`parse_json`; an empty one is null). Raises ValueError
    with the 400's message."""
    if not body.strip():
        return None
    return parse_json(body)


async def _answer(
    invoke: Invoke, artifact: str, entry: str, body: bytes, query_string: bytes
) -> tuple[int, bytes]:
    """One call: (status, JSON body). Other exceptions than InvocationError propagate."""
    try:
        payload = await run_sized(len(body), parse_payload, body)
    except ValueError as error:
        return _error(InvocationError(ErrorKind.BAD_REQUEST, str(error)))
    try:
        options = call_options(QueryParams(query_string)) if query_string else {}
    except ValueError as error:
        return _error(InvocationError(ErrorKind.BAD_REQUEST, str(error)))
    try:
        result = await invoke(artifact, entry, payload, **options)
    except InvocationError as error:
        return _error(error)
    try:
        return 200, await run_sized(json_size_at_least(result), _render, result, big=_render_big)
    except ValueError as error:  # (not strict JSON)
        return _error(unanswerable(artifact, entry, error))


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client went away first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def ingress_app(invoke: Invoke) -> ASGIApp:
    async def invoke_endpoint(request: Request) -> Response:  # only if the fast path is bypassed
        status, body = await _answer(
            invoke,
            request.path_params["artifact"],
            request.path_params["entry"],
            await request.body(),
            request.scope["query_string"],
        )
        return Response(body, status, headers=_retry_after(status), media_type="application/json")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    others = Starlette(
        routes=[
            Route("/invoke/{artifact}/{entry}", invoke_endpoint, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            match = INVOKE_PATH.fullmatch(scope["path"])
            if match is not None:
                await _serve_invoke(invoke, match["artifact"], match["entry"], scope, receive, send)
                return
        await others(scope, receive, send)

    return app


async def _serve_invoke(
    invoke: Invoke, artifact: str, entry: str, scope: Scope, receive: Receive, send: Send
) -> None:
    body = await _read_body(receive)
    if body is None:
        return
    try:
        status, content = await _answer(invoke, artifact, entry, body, scope["query_string"])
    except Exception:
        # what starlette's ServerErrorMiddleware does: a plain 500, then re-raise for the server to log
        await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
        raise
    headers = [(b"content-length", str(len(content)).encode()), _JSON_HEADERS]
    if status == 503:
        headers.append(_RETRY_AFTER)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def ingress_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The server context of HTTPS on the app ingress (HTTP/1.1 by ALPN), from the operator's certificate
    and key (PEM files). Raises ConfigError naming the file that does not load, and why."""
    texts = {}
    for name, path in (("ingress_cert", cert), ("ingress_key", key)):
        try:
            texts[name] = path.read_bytes()
        except OSError as error:
            raise ConfigError(f"{name} {path}: cannot read it ({error.strerror})") from None
    # (OpenSSL's "PEM lib" says neither which file nor what is wrong with it)
    if b"-----BEGIN CERTIFICATE-----" not in texts["ingress_cert"]:
        raise ConfigError(f"ingress_cert {cert}: no PEM certificate in it")
    if b"PRIVATE KEY-----" not in texts["ingress_key"]:
        raise ConfigError(f"ingress_key {key}: no PEM private key in it")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"ingress_cert {cert}, ingress_key {key}: cannot load them ({error})") from None
    return context


async def serve_http(
    app: ASGIApp,
    address: str,
    *,
    max_body: int,
    ssl_context: ssl.SSLContext | None = None,
    keep_alive: float = INGRESS_KEEP_ALIVE,
    slots: ConnectionSlots | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on host:port until cancelled, over HTTPS with `ssl_context`; reports the bound
    addresses once listening. An idle keep-alive connection is closed after `keep_alive` seconds, one
    whose client closed its side once any request in flight is answered. With `slots`, at most their
    limit of connections at once (`_connection_slots`). A request body over `max_body` bytes is refused
    unread (`_body_limit`); a request the app answers before reading its whole body has the rest read
    first (`_unread_body`), so its keep-alive connection stays usable."""
    served = read_unread_body(limit_body(app, max_body))
    config = http_config(address, keep_alive)
    if ssl_context is None:
        await serve_plain(served, config, slots=slots, task_status=task_status)
    else:  # TLS on the socket, not trio's SSLStream (the context stays the one renewal reloads)
        await serve_https(served, config, ssl_context, slots=slots, task_status=task_status)


def http_config(address: str, keep_alive: float = INGRESS_KEEP_ALIVE) -> HypercornConfig:
    """hypercorn's configuration of the node's HTTP servers, bound to host:port."""
    config = HypercornConfig()
    config.bind = [address]
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = keep_alive
    config.ssl_handshake_timeout = TLS_HANDSHAKE_TIMEOUT
    return config
