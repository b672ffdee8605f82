"""Read what is left of a request's body before answering it, so that its connection stays open.

hypercorn (0.18) closes a keep-alive HTTP/1.1 connection when the app's answer is complete before the
request's body is: a 401 for a POST without a key, a 404 or 405 of the router, any early error. It sends
no `Connection: close`, so the client, which did get its answer, keeps the connection and sends its next
request into a closed socket ("Server disconnected without sending a response"): an error for a request
that was fine. `read_unread_body` wraps an ASGI app: when the app starts its answer before it has read the
whole body, the rest is read first (at most MAX_UNREAD bytes, for at most UNREAD_TIMEOUT seconds; a
client that waits for `100 Continue` gets it from hypercorn as the body is asked for), so hypercorn starts
the next cycle on the same connection. A longer or slower body is left, and the answer says
`Connection: close`, which hypercorn then does. An answer that says so already (a body declared over the
limit, `_body_limit`) is sent at once: the connection is not kept, and its close lingers
(`_hypercorn_serve`) so that the client still sending gets it.
"""

from __future__ import annotations

from typing import Any

import trio

MAX_UNREAD = 1 << 20  # bytes of an unread body worth reading to keep the connection
UNREAD_TIMEOUT = 5.0  # seconds


def read_unread_body(app: Any) -> Any:
    """`app` (ASGI) with the rest of each HTTP request's body read before its answer starts."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        ended = False

        async def tracked() -> dict[str, Any]:
            nonlocal ended
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                ended = True
            return message

        async def answer(message: dict[str, Any]) -> None:
            if not ended and message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                said = [value.strip().lower() for name, value in headers if name.lower() == b"connection"]
                left = MAX_UNREAD
                with trio.move_on_after(0 if b"close" in said else UNREAD_TIMEOUT):
                    while not ended and left >= 0:
                        left -= len((await tracked()).get("body", b""))
                if not ended and not said:
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await app(scope, tracked, answer)

    return wrapped
