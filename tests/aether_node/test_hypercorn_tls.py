"""HTTPS as the node serves it on the trio ingress and the management API (`serve_http` with an SSL
context: hypercorn on `TLSSocketStream`, `routing/_hypercorn_tls.py`), over real sockets on 127.0.0.1:
what a client sees of the connection (ALPN, its address in the app's scope), and the ways a connection
can fail (no handshake, a reset in the middle of one, plain HTTP on the port), each of which must end
that connection only."""

from __future__ import annotations

import functools
import json
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aether_kv import CA_FILE, client_identity
from aether_node.routing._http import MAX_BODY, ingress_ssl_context, serve_http
from support import operator_certificate, wait_until


async def _whoami(request: Request) -> JSONResponse:
    scope = request.scope
    return JSONResponse(
        {
            "client": list(scope["client"]),
            "server": list(scope["server"]),
            "scheme": scope["scheme"],
            "http_version": scope["http_version"],
        }
    )


APP = Starlette(routes=[Route("/whoami", _whoami)])


@asynccontextmanager
async def _https(context: ssl.SSLContext) -> AsyncIterator[tuple[int, trio.Nursery]]:
    """APP over HTTPS with `context` on an ephemeral port, as the node serves it. Yields (the port, a
    nursery for the test's own tasks); a failure of the server fails the test."""
    async with trio.open_nursery() as nursery:
        serve = functools.partial(serve_http, max_body=MAX_BODY, ssl_context=context)
        (bound,) = await nursery.start(serve, APP, "127.0.0.1:0")
        assert bound.startswith("https://127.0.0.1:")
        yield int(bound.rpartition(":")[2]), nursery
        nursery.cancel_scope.cancel()


@pytest.fixture
def operator(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(the ingress's server context from an operator's certificate, a client context that trusts it)."""
    ca, cert, key = operator_certificate(tmp_path)
    return ingress_ssl_context(cert, key), ssl.create_default_context(cafile=str(ca))


async def _get_whoami(
    port: int, verify: ssl.SSLContext, *, http2: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """GET /whoami over a new connection: (the JSON answer, what the client saw of its connection)."""
    async with (
        httpx.AsyncClient(
            base_url=f"https://127.0.0.1:{port}", verify=verify, http2=http2, timeout=30
        ) as client,
        client.stream("GET", "/whoami") as response,
    ):
        assert response.status_code == 200
        network = response.extensions["network_stream"]
        seen = {
            "address": list(network.get_extra_info("client_addr")),
            "alpn": network.get_extra_info("ssl_object").selected_alpn_protocol(),
            "http_version": response.http_version,
        }
        return json.loads(await response.aread()), seen


async def _raw_connection(port: int) -> trio.socket.SocketType:
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", port))
    return sock


def _reset(sock: trio.socket.SocketType) -> None:
    """Close with a TCP reset (as a killed client's kernel, or a middlebox, would)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def _until_closed(sock: trio.socket.SocketType) -> bytes:
    """What the server sends until it closes the connection (an end, or a reset)."""
    received = b""
    with trio.fail_after(30):  # (a loaded machine; the server's own limits are shorter)
        try:
            while chunk := await sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


def _client_hello() -> bytes:
    """A TLS client's first flight (its ClientHello), as a client would send it."""
    outgoing = ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def test_alpn_agrees_http_1_1_and_the_app_sees_the_clients_own_address(
    operator: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, verify = operator
    async with _https(server) as (port, _):
        for http2 in (False, True):  # offering h2 too: the ingress's context says http/1.1 only
            answer, seen = await _get_whoami(port, verify, http2=http2)
            assert seen["alpn"] == "http/1.1" and seen["http_version"] == "HTTP/1.1"
            assert answer == {
                "client": seen["address"],
                "server": ["127.0.0.1", port],
                "scheme": "https",
                "http_version": "1.1",
            }


async def test_h2_by_alpn_on_the_management_apis_context(tmp_path: Path) -> None:
    """The management API's context (`ReloadingTLS.https`) offers h2: a client that asks gets it."""
    tls = client_identity("a cluster secret of 32 characters", tmp_path, name="node", hosts=("127.0.0.1",))
    verify = ssl.create_default_context(cafile=str(tmp_path / CA_FILE))
    async with _https(tls.https()) as (port, _):
        answer, seen = await _get_whoami(port, verify, http2=True)
        assert seen["alpn"] == "h2" and seen["http_version"] == "HTTP/2"
        assert answer["http_version"] == "2" and answer["client"] == seen["address"]


async def test_a_silent_client_and_a_half_handshake_hold_up_no_one_else(
    operator: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, verify = operator
    async with _https(server) as (port, _):  # the node's handshake timeout: longer than this test
        silent = await _raw_connection(port)
        halfway = await _raw_connection(port)
        await halfway.send(_client_hello()[:20])
        answer, seen = await _get_whoami(port, verify)
        assert answer["client"] == seen["address"]
        silent.close()
        halfway.close()


async def test_a_handshake_not_done_in_time_ends_that_connection(
    operator: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """In the node's handshake time (10 s): a client that connected and said nothing held one of the
    server's connection slots for hypercorn's 60 s."""
    server, verify = operator
    async with _https(server) as (port, _):
        silent = await _raw_connection(port)
        assert await _until_closed(silent) == b""  # the server hung up on it, sending nothing
        silent.close()
        answer, seen = await _get_whoami(port, verify)
        assert answer["client"] == seen["address"]


async def test_plain_http_on_the_https_port_ends_that_connection_only(
    operator: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, verify = operator
    async with _https(server) as (port, _):
        plain = await _raw_connection(port)
        await plain.send(b"GET /whoami HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        assert not (await _until_closed(plain)).startswith(b"HTTP/")
        plain.close()
        answer, seen = await _get_whoami(port, verify)
        assert answer["client"] == seen["address"]


@pytest.mark.parametrize("when", ["at once", "in its ClientHello", "after the ServerHello"])
async def test_a_reset_before_or_mid_handshake_ends_that_connection_only(
    operator: tuple[ssl.SSLContext, ssl.SSLContext], when: str
) -> None:
    server, verify = operator
    hello = _client_hello()
    async with _https(server) as (port, _):
        for _ in range(3):
            client = await _raw_connection(port)
            if when == "at once":  # (gone before the server wraps it, most likely: the listener skips it)
                pass
            elif when == "in its ClientHello":
                await client.send(hello[: len(hello) // 2])
            else:
                await client.send(hello)
                with trio.fail_after(30):
                    assert (await client.recv(65536))[:1] == b"\x16"  # a handshake record: the server's
            _reset(client)
        answer, seen = await _get_whoami(port, verify)
        assert answer["client"] == seen["address"]


_OUT_OF_FDS = r"""
import functools, logging, os, resource, sys
from pathlib import Path

import trio

from aether_node.routing._http import MAX_BODY, ingress_app, ingress_ssl_context, serve_http


async def echo(artifact, entry, payload, **options):
    return payload


async def main():
    context = ingress_ssl_context(Path(sys.argv[1]), Path(sys.argv[2]))
    async with trio.open_nursery() as nursery:
        serve = functools.partial(serve_http, max_body=MAX_BODY, ssl_context=context)
        (bound,) = await nursery.start(serve, ingress_app(echo), "127.0.0.1:0")
        limit = len(os.listdir("/proc/self/fd")) + 4  # room for about four connections
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        print(bound, flush=True)


logging.basicConfig(level=logging.ERROR)
trio.run(main)
"""


async def test_out_of_file_descriptors_the_listener_waits_then_serves_again(tmp_path: Path) -> None:
    """accept's EMFILE reaches trio's `serve_listeners` (which logs it and tries again a little later):
    the server goes on, and serves once connections are given up. In a process of its own, whose file
    descriptors are limited."""
    ca, cert, key = operator_certificate(tmp_path)
    errors = tmp_path / "stderr"
    with errors.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", _OUT_OF_FDS, str(cert), str(key)], stdout=subprocess.PIPE, stderr=stderr
        )
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(60):
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some(1)
        port = int(line.decode().strip().rpartition(":")[2])
        held = [await _raw_connection(port) for _ in range(12)]
        await wait_until(lambda: b"EMFILE" in errors.read_bytes(), timeout=30, what="accept's EMFILE")
        for sock in held:
            sock.close()
        verify = ssl.create_default_context(cafile=str(ca))
        async with httpx.AsyncClient(verify=verify, timeout=30) as client:
            response = await client.get(f"https://127.0.0.1:{port}/healthz")
        assert (response.status_code, response.json()) == (200, {"ok": True})
        assert process.poll() is None, errors.read_text()
    finally:
        process.kill()
        await process.wait()
        await process.stdout.aclose()
