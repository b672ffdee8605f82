"""A limit on the size of a request's body, for the node's HTTP servers (the ingress and the management
API on hypercorn).

Without it, an app that reads a body (`await request.body()`, the ingress's invoke path) holds all of it
in memory, whatever its size: a client sending gigabytes, to the public ingress or to the join endpoint
that needs no key, could take the node down. `limit_body` wraps an ASGI app: a body whose declared length
(`Content-Length`) is over the limit is answered at once without the app; one that grows past it as it
arrives (chunked) ends for the app as a client that went away, and what the app would answer is replaced
by the same error. The answer is the API's JSON error, kind `bad_request` (400), as the fast ingress
answers it: "the request body is over N bytes".
"""

from __future__ import annotations

import json
from typing import Any

from ..core._error_kinds import ErrorKind, http_status


def body_too_large(max_bytes: int) -> str:
    return f"the request body is over {max_bytes} bytes"


def limit_body(app: Any, max_bytes: int) -> Any:
    """`app` (ASGI) with each HTTP request's body limited to `max_bytes`."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > max_bytes:
            await _refuse(send, max_bytes)
            return
        received = 0
        over = False
        started = False

        async def counted() -> dict[str, Any]:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received > max_bytes:
                over = True  # the app sees a client that went away; the rest stays unread
                return {"type": "http.disconnect"}
            return message

        async def guarded(message: dict[str, Any]) -> None:
            nonlocal started
            if over:
                return  # whatever the app answers to a body it never got whole: ours instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await app(scope, counted, guarded)
        except Exception:
            if not over:
                raise
            # (starlette raises ClientDisconnect from `request.body()`: the client is not gone, it sent
            # too much)
        if over and not started:
            await _refuse(send, max_bytes)

    return wrapped


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # hypercorn's h11 refuses such a request before the app sees it
    return None


async def _refuse(send: Any, max_bytes: int) -> None:
    kind = ErrorKind.BAD_REQUEST
    refusal = {"error": {"kind": kind.value, "message": body_too_large(max_bytes)}}
    body = json.dumps(refusal, separators=(",", ":")).encode()  # (compact, as every other answer)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),  # the rest of the body is not read
    ]
    await send({"type": "http.response.start", "status": http_status(kind), "headers": headers})
    await send({"type": "http.response.body", "body": body})
