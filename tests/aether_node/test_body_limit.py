"""A request body over the server's limit (`_body_limit`, in `serve_http`: the management API and the trio
ingress), over real HTTP on 127.0.0.1 with hypercorn: declared too long, it is refused before the app
runs; sent in chunks past the limit, the app sees a client that went away and the answer is the same
refusal; at the limit, the app reads it as before. Without it, the app held any body whole in memory."""

from __future__ import annotations

import functools
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aether_node.routing import _unread_body
from aether_node.routing._http import serve_http

LIMIT = 1000
calls: list[str] = []  # what the app saw: "read N" or "gone"


async def size(request: Request) -> JSONResponse:
    """Reads the whole body, as the management API's handlers do."""
    try:
        body = await request.body()
    except Exception:  # starlette's ClientDisconnect
        calls.append("gone")
        raise
    calls.append(f"read {len(body)}")
    return JSONResponse({"size": len(body)})


@pytest.fixture
async def url() -> AsyncIterator[str]:
    calls.clear()
    app = Starlette(routes=[Route("/size", size, methods=["POST"])])
    async with trio.open_nursery() as nursery:
        serve = functools.partial(serve_http, max_body=LIMIT)
        (bound,) = await nursery.start(serve, app, "127.0.0.1:0")
        yield f"{bound}/size"
        nursery.cancel_scope.cancel()


def _refusal(answer: httpx.Response) -> None:
    assert answer.status_code == 400, answer.text
    assert answer.json() == {
        "error": {"kind": "bad_request", "message": f"the request body is over {LIMIT} bytes"}
    }


async def test_a_body_at_the_limit_reaches_the_app(url: str) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(url, content=b"x" * LIMIT)
    assert (answer.status_code, answer.json()) == (200, {"size": LIMIT})
    assert calls == [f"read {LIMIT}"]


async def test_a_body_declared_over_the_limit_is_refused_before_the_app_runs(url: str) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(url, content=b"x" * (LIMIT + 1))
        _refusal(answer)
        assert answer.headers["connection"] == "close"
        assert calls == []
        after = await http.post(url, content=b"{}")  # the server serves on (a new connection)
    assert after.json() == {"size": 2}


async def test_a_chunked_body_that_grows_past_the_limit_is_refused_and_the_app_sees_it_end(url: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked transfer encoding
        for _ in range(50):
            yield b"y" * 100

    async with httpx.AsyncClient() as http:
        answer = await http.post(url, content=chunks())
        _refusal(answer)
        assert calls == ["gone"]  # the app's read ended; what it would have answered was not sent
        after = await http.post(url, content=b"[]")
    assert after.json() == {"size": 2}


def refusal_of(address: tuple[str, int], declared: int, sent: int) -> bytes:
    """What a client that sends `sent` bytes of a body declared `declared` long, and only then reads,
    gets: the answer's bytes up to the server's close."""
    with socket.create_connection(address, timeout=30) as conn:
        conn.sendall(f"POST /size HTTP/1.1\r\nHost: t\r\nContent-Length: {declared}\r\n\r\n".encode())
        try:
            conn.sendall(b"x" * sent)  # (as http.client does: the whole body before reading)
        except OSError as error:  # the server reset the connection under it
            return f"the body could not be sent: {error!r}".encode()
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        return answer


def address_of(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").removesuffix("/size").rsplit(":", 1)
    return host, int(port)


async def test_a_body_declared_over_the_limit_is_answered_before_it_is_sent(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answered at once: the connection is not kept, so the rest of the body is not waited for (it was,
    for up to `UNREAD_TIMEOUT`, made longer here than the client waits)."""
    monkeypatch.setattr(_unread_body, "UNREAD_TIMEOUT", 600.0)
    answer = await trio.to_thread.run_sync(refusal_of, address_of(url), LIMIT * 1000, 0)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert answer.endswith(f'"the request body is over {LIMIT} bytes"}}}}'.encode()), answer


async def test_a_client_sending_its_whole_body_before_reading_gets_the_refusal(url: str) -> None:
    """The server lingers before it closes: it shuts its side and drops what the client still sends.
    Closed at once, the unread bytes made the kernel reset the connection under the client, which lost
    the answer it had been sent."""
    answer = await trio.to_thread.run_sync(refusal_of, address_of(url), 8 << 20, 8 << 20)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert answer.endswith(f'"the request body is over {LIMIT} bytes"}}}}'.encode()), answer
    assert calls == []


def garbage_then_answer(address: tuple[str, int], junk: int) -> bytes:
    """What a client that sends a request hypercorn cannot parse, then `junk` more bytes, and only then
    reads, gets."""
    with socket.create_connection(address, timeout=30) as conn:
        conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        try:
            conn.sendall(b"x" * junk)
        except OSError as error:
            return f"the rest could not be sent: {error!r}".encode()
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        return answer


async def test_a_request_that_is_no_http_is_answered_to_a_client_still_sending(url: str) -> None:
    """The server closes from the task that reads (its parser failed): it lingers there too, reading and
    dropping what comes, and the client gets the 400."""
    answer = await trio.to_thread.run_sync(garbage_then_answer, address_of(url), 4 << 20)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


async def test_a_connection_closed_already_closes_again_quietly() -> None:
    """The keep-alive timer's close can come first (a request that is no HTTP, answered from the reading
    task while the timer runs out): the server's own close then meets a closed stream, and must not
    raise (an error out of a connection's task would end every connection of the server)."""
    from hypercorn.config import Config
    from hypercorn.trio.worker_context import WorkerContext
    from hypercorn.typing import ConnectionState

    from aether_node.routing._hypercorn_serve import _Connection

    ours, theirs = trio.socket.socketpair()
    with theirs:
        stream = trio.SocketStream(ours)
        connection = _Connection(None, Config(), WorkerContext(None), ConnectionState({}), stream)
        await stream.aclose()  # (as `_initiate_server_close` does)
        await connection._close()
        await connection._close()
