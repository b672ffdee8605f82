"""A request answered before its body arrived leaves its keep-alive connection open (`_unread_body`, in
`serve_http`: the management API and the trio ingress), over real HTTP on 127.0.0.1 with hypercorn: the
app refuses a POST without reading its body, the client sends the body only after that, gets the
answer, and its next request on the same connection is answered. hypercorn alone closed the connection
without saying so, and the next request met "Server disconnected without sending a response". A body
over MAX_UNREAD is not read: the answer says `Connection: close` and the connection closes."""

from __future__ import annotations

import functools
import socket
import threading
from collections.abc import AsyncIterator

import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aether_node.routing._http import MAX_BODY, serve_http
from aether_node.routing._unread_body import MAX_UNREAD

refused = threading.Event()  # set when the app has answered a request without a key


async def guarded(request: Request) -> JSONResponse:
    """401 at once without a key (the body unread), as the management API does; with one, the body's size."""
    if "authorization" not in request.headers:
        refused.set()
        return JSONResponse({"error": {"kind": "unauthenticated"}}, status_code=401)
    return JSONResponse({"size": len(await request.body())})


@pytest.fixture
async def address() -> AsyncIterator[tuple[str, int]]:
    refused.clear()
    app = Starlette(routes=[Route("/guarded", guarded, methods=["POST"])])
    async with trio.open_nursery() as nursery:
        (bound,) = await nursery.start(functools.partial(serve_http, max_body=MAX_BODY), app, "127.0.0.1:0")
        host, port = bound.removeprefix("http://").rsplit(":", 1)
        yield host, int(port)
        nursery.cancel_scope.cancel()


def head(length: int, key: bool) -> bytes:
    auth = "Authorization: Bearer k\r\n" if key else ""
    return f"POST /guarded HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: {length}\r\n\r\n".encode()


def answer(conn: socket.socket) -> bytes:
    """One answer (its head and its small JSON body), or what came before the server closed."""
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def late_body_then_next_request(address: tuple[str, int], size: int) -> tuple[bytes, bytes]:
    with socket.create_connection(address, timeout=10) as conn:
        conn.sendall(head(size, key=False))
        assert refused.wait(timeout=10), "the app never answered the request without a key"
        try:
            conn.sendall(b"x" * size)  # after the app answered
            early = answer(conn)
            conn.sendall(head(3, key=True) + b"abc")
            return early, answer(conn)
        except (BrokenPipeError, ConnectionResetError) as error:
            return repr(error).encode(), b""


async def test_the_next_request_on_the_connection_is_answered(address: tuple[str, int]) -> None:
    early, second = await trio.to_thread.run_sync(late_body_then_next_request, address, 1000)
    assert early.startswith(b"HTTP/1.1 401") and b"connection: close" not in early.lower(), early
    assert second.startswith(b"HTTP/1.1 200") and second.endswith(b'{"size":3}'), second


async def test_a_body_over_the_limit_is_not_read_and_the_answer_says_the_connection_closes(
    address: tuple[str, int],
) -> None:
    early, second = await trio.to_thread.run_sync(late_body_then_next_request, address, MAX_UNREAD + 65536)
    assert early.startswith(b"HTTP/1.1 401") and b"connection: close" in early.lower(), early
    assert second == b"", second
