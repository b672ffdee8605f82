"""The fast ingress (`--ingress-server fast`) beyond the surface it shares with the trio one (test_http.py
runs that on both): a real worker process on 127.0.0.1, linked to this trio loop, with an invoke that the
test controls. Pipelined requests, a client that goes away, a stop with calls in flight, a worker that
dies, a port that is taken, HTTPS (a plain request to it, a certificate that does not load)."""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from aether_node.core._config import ConfigError, load_config
from aether_node.routing._fast_ingress import IngressWorkerError, serve_fast_ingress
from aether_node.routing._http import TLS_HANDSHAKE_TIMEOUT
from support import operator_certificate, wait_until


async def until(condition: Any, what: str) -> None:
    async def holds() -> bool:
        return bool(condition())

    await wait_until(holds, timeout=10, what=what)


class Gate:
    """An invoke that parks every call until released, and remembers which calls were cancelled."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.started: list[Any] = []
        self.cancelled: list[Any] = []

    async def __call__(self, artifact: str, entry: str, payload: Any, **options: Any) -> Any:
        self.started.append(payload)
        try:
            if entry != "fast":
                await self.release.wait()
        except trio.Cancelled:
            self.cancelled.append(payload)
            raise
        return payload


def worker_pids() -> list[int]:
    """The ingress workers that are children of this test process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"_ingress_worker" in command:
            found.append(int(entry.name))
    return found


@pytest.fixture
async def served() -> AsyncIterator[tuple[trio.Nursery, Gate, str]]:
    gate = Gate()
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(serve_fast_ingress, gate, "127.0.0.1:0")
        yield nursery, gate, bound[0].removeprefix("http://")
        nursery.cancel_scope.cancel()


def request(path: str, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (path.encode(), len(body), body)


async def read_responses(stream: trio.SocketStream, count: int) -> list[bytes]:
    """`count` HTTP responses (with content-length) from the stream, as their bodies."""
    data, bodies = b"", []
    with trio.fail_after(20):
        while len(bodies) < count:
            head, sep, rest = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                None,
            )
            if sep and length is not None and len(rest) >= length:
                bodies.append(rest[:length])
                data = rest[length:]
                continue
            chunk = await stream.receive_some()
            assert chunk, "the connection closed early"
            data += chunk
    return bodies


async def test_pipelined_requests_are_answered_in_order(served: tuple[trio.Nursery, Gate, str]) -> None:
    _, gate, address = served
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    # the first call waits for the gate, the second would be answered at once: answers keep the order
    await stream.send_all(request("/invoke/a:b/slow", b"1") + request("/invoke/a:b/fast", b"2"))
    await until(lambda: len(gate.started) == 2, "both calls reach the node")
    gate.release.set()
    assert await read_responses(stream, 2) == [b"1", b"2"]
    await stream.aclose()


async def test_a_client_that_goes_away_cancels_its_call(served: tuple[trio.Nursery, Gate, str]) -> None:
    _, gate, address = served
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(request("/invoke/a:b/slow", b'"gone"'))
    await until(lambda: gate.started == ["gone"], "the call reaches the node")
    await stream.aclose()
    await until(lambda: gate.cancelled == ["gone"], "the call is cancelled")
    # the ingress still serves
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(f"http://{address}/invoke/a:b/fast", content=b"3")
    assert (answer.status_code, answer.json()) == (200, 3)


async def test_a_stop_answers_the_calls_in_flight_with_503() -> None:
    gate = Gate()
    answers: list[httpx.Response] = []
    async with trio.open_nursery() as outer, trio.open_nursery() as nursery:
        bound = await nursery.start(serve_fast_ingress, gate, "127.0.0.1:0")

        async def call() -> None:
            async with httpx.AsyncClient(timeout=20) as http:
                answers.append(await http.post(f"{bound[0]}/invoke/a:b/slow", content=b"{}"))

        outer.start_soon(call)
        await until(lambda: len(gate.started) == 1, "the call reaches the node")
        nursery.cancel_scope.cancel()
    assert [a.status_code for a in answers] == [503]
    assert answers[0].json()["error"]["kind"] == "unavailable"
    assert answers[0].headers["retry-after"] == "1"
    assert worker_pids() == []


async def test_a_worker_that_dies_ends_the_service_with_an_error() -> None:
    with pytest.raises(ExceptionGroup) as raised:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_fast_ingress, Gate(), "127.0.0.1:0")
            (pid,) = worker_pids()
            os.kill(pid, signal.SIGKILL)
            with trio.fail_after(20):
                await trio.sleep_forever()
    assert raised.group_contains(IngressWorkerError, match=r"exited unexpectedly \(exit code -9\)")
    assert worker_pids() == []


async def test_a_port_that_is_taken_fails_before_ready() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(OSError, match="Address already in use"):
            await serve_fast_ingress(Gate(), f"127.0.0.1:{taken.getsockname()[1]}")
    finally:
        taken.close()
    assert worker_pids() == []


async def test_large_bodies_and_many_calls_in_flight(served: tuple[trio.Nursery, Gate, str]) -> None:
    """Bodies far larger than a socket buffer and many calls at once on the one link: each caller gets
    exactly its own payload back."""
    _, gate, address = served
    gate.release.set()
    answers: dict[int, tuple[int, bool]] = {}

    async def call(http: httpx.AsyncClient, number: int) -> None:
        payload = {"n": number, "text": f"{number}é" * (400_000 if number % 4 == 0 else 5)}
        answer = await http.post(f"http://{address}/invoke/a:b/echo", content=json.dumps(payload))
        answers[number] = (answer.status_code, answer.json() == payload)

    async with httpx.AsyncClient(timeout=30) as http, trio.open_nursery() as nursery:
        for number in range(24):
            nursery.start_soon(call, http, number)
    assert answers == {number: (200, True) for number in range(24)}


async def test_head_has_no_body_and_the_connection_goes_on(served: tuple[trio.Nursery, Gate, str]) -> None:
    address = served[2]
    async with httpx.AsyncClient(base_url=f"http://{address}", timeout=10) as http:
        head = await http.head("/healthz")
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-type"] == "application/json"
        for path in ("/healthz", "/healthz"):  # the same connection: nothing was left in it
            answer = await http.get(path)
            assert (answer.status_code, answer.json()) == (200, {"ok": True})
        answer = await http.post("/invoke/a:b/fast", content=b"[]", headers={"expect": "100-continue"})
        assert (answer.status_code, answer.json()) == (200, [])


async def test_https_refuses_plain_http_and_serves_on(tmp_path: Path) -> None:
    """With the operator's certificate the worker speaks HTTPS (HTTP/1.1 by ALPN), verified against that
    certificate's CA; a request in plain HTTP gets no HTTP answer and never reaches the node, and the
    port serves HTTPS on."""
    ca, cert, key = operator_certificate(tmp_path)
    verify = ssl.create_default_context(cafile=str(ca))
    gate = Gate()
    gate.release.set()
    async with trio.open_nursery() as nursery:
        serve = functools.partial(serve_fast_ingress, cert=cert, key=key)
        (url,) = await nursery.start(serve, gate, "127.0.0.1:0")
        assert url.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(verify=verify, timeout=10) as http:
            answer = await http.post(f"{url}/invoke/a:b/echo", content=b"[1]")
            assert (answer.status_code, answer.json()) == (200, [1])
            with pytest.raises(httpx.TransportError):
                await http.post(f"{url.replace('https', 'http')}/invoke/a:b/echo", content=b"[2]")
            answer = await http.post(f"{url}/invoke/a:b/echo", content=b"[3]")
            assert (answer.status_code, answer.json()) == (200, [3])
        host, port = url.removeprefix("https://").rsplit(":", 1)
        verify.set_alpn_protocols(["h2", "http/1.1"])
        stream = trio.SSLStream(await trio.open_tcp_stream(host, int(port)), verify, server_hostname=host)
        await stream.do_handshake()
        assert stream.selected_alpn_protocol() == "http/1.1"
        await stream.send_all(request("/invoke/a:b/echo", b"[4]"))
        assert await read_responses(stream, 1) == [b"[4]"]
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert gate.started == [[1], [3], [4]]


async def test_a_client_silent_on_the_https_port_is_hung_up_on_in_the_node_s_handshake_time(
    tmp_path: Path,
) -> None:
    """asyncio's default (60 s) let a client that connected and said nothing hold a connection for a
    minute; the worker hangs up in the node's handshake time (10 s), as the trio servers do."""
    _, cert, key = operator_certificate(tmp_path)
    async with trio.open_nursery() as nursery:
        serve = functools.partial(serve_fast_ingress, cert=cert, key=key)
        (url,) = await nursery.start(serve, Gate(), "127.0.0.1:0")
        host, port = url.removeprefix("https://").rsplit(":", 1)
        silent = await trio.open_tcp_stream(host, int(port))
        with trio.fail_after(TLS_HANDSHAKE_TIMEOUT + 15):  # (a loaded machine)
            try:
                assert await silent.receive_some() == b""  # the worker closed it, sending nothing
            except trio.BrokenResourceError:  # (or reset it)
                pass
        await silent.aclose()
        nursery.cancel_scope.cancel()


async def test_a_certificate_that_does_not_load_fails_the_start_saying_which(tmp_path: Path) -> None:
    """The worker says which file and why; the node's supervisor logs it and tries again later."""
    _, cert, key = operator_certificate(tmp_path)
    cert.write_text("not a certificate")
    with pytest.raises(IngressWorkerError, match=rf"did not start: ingress_cert {cert}: no PEM certificate"):
        await serve_fast_ingress(Gate(), "127.0.0.1:0", cert=cert, key=key)
    assert worker_pids() == []


def test_the_node_config_chooses_the_ingress_server(tmp_path: Path) -> None:
    base = {
        "node_id": "n1",
        "data_dir": str(tmp_path),
        "index": str(tmp_path),
        "ingress": "127.0.0.1:8000",
        "peer": "127.0.0.1:8001",
        "kv": {"raft": "127.0.0.1:8002", "client": "127.0.0.1:8003"},
    }
    assert load_config(None, base).ingress_server == "trio"
    assert load_config(None, {**base, "ingress_server": "fast"}).ingress_server == "fast"
    config = tmp_path / "node.toml"
    config.write_text('ingress_server = "quick"\n')
    with pytest.raises(
        ConfigError,
        match=r'node\.toml:1:1: ingress_server: expected one of "trio", "fast", got "quick"',
    ):
        load_config(config, base)
