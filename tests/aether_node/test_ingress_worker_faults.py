"""The fast ingress's worker when its peers misbehave: a real worker process, with this test playing its
node (the link) and a local instance attached to it (the host protocol's frames). Whatever goes wrong
(an answer of a shape not foreseen, an instance's connection closed or garbled mid-call, an error reply
of an odd shape, a body nested too deeply), the client gets an HTTP answer with a JSON error, never a
connection closed without one, and the worker goes on serving."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from aether_slice import protocol
from support import wait_until

ARTIFACT = "org.test:work"
COORDINATES = f"{ARTIFACT}:1.0.0"


class Peer:
    """One end of a framed connection (the node's link, or an attached instance's connection)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.frames = protocol.FrameDecoder(max_frame=64 * 1024 * 1024)

    async def receive(self) -> dict[str, Any]:
        with trio.fail_after(20):
            while (message := self.frames.next()) is None:
                data = await self.stream.receive_some()
                assert data, "the worker closed the connection"
                self.frames.feed(data)
        return message

    async def send(self, message: dict[str, Any]) -> None:
        await self.stream.send_all(protocol.encode(message))


class Worker:
    def __init__(self, address: str, node: Peer, attach_path: str) -> None:
        self.url = f"http://{address}"
        self.node = node
        self.attach_path = attach_path

    async def attach(self, *, idempotent: bool) -> Peer:
        """A table with one route to an instance, and that instance attached."""
        route = [ARTIFACT, "work", "round_robin", [[COORDINATES, 1, idempotent, "work#1"]]]
        table = {"node": "n1", "timeout": 30.0, "routes": [route], "tokens": {"token": [COORDINATES, 1]}}
        await self.node.send({"t": table})
        instance = Peer(await trio.open_unix_socket(self.attach_path))
        await instance.send(protocol.hello("token", 1))
        return instance


@asynccontextmanager
async def worker_process() -> AsyncIterator[Worker]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    command = [sys.executable, "-m", "aether_node.routing._ingress_worker"]
    process = subprocess.Popen(command, stdin=listener.fileno(), stdout=theirs.fileno())
    listener.close()
    theirs.close()
    node = Peer(trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
    try:
        hello = await node.receive()
        yield Worker(address, node, hello["socket"])
    finally:
        await node.stream.aclose()
        with trio.move_on_after(5):
            while process.poll() is None:
                await trio.sleep(0.05)
        process.kill()
        process.wait()


async def post(worker: Worker, entry: str, body: bytes, answers: list[httpx.Response]) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        answers.append(await http.post(f"{worker.url}/invoke/{ARTIFACT}/{entry}", content=body))


async def node_call(worker: Worker) -> dict[str, Any]:
    """The next call the worker hands to the node (skipping its call records)."""
    while "i" not in (message := await worker.node.receive()):
        pass
    return message


async def test_an_answer_from_the_node_of_an_unforeseen_shape_is_a_500_and_the_worker_goes_on() -> None:
    async with worker_process() as worker, trio.open_nursery() as nursery:
        answers: list[httpx.Response] = []
        nursery.start_soon(post, worker, "work", b"1", answers)
        call = await node_call(worker)
        await worker.node.send({"i": call["i"], "s": "not a status", "r": 1})
        await wait_until(lambda: len(answers) >= 1, timeout=20, what="an answer")
        assert answers[0].status_code == 500
        nursery.start_soon(post, worker, "work", b"2", answers)
        call = await node_call(worker)
        await worker.node.send({"i": call["i"], "s": 200, "r": call["p"]})
        await wait_until(lambda: len(answers) >= 2, timeout=20, what="the second answer")
        assert (answers[1].status_code, answers[1].json()) == (200, 2)


async def direct_call(
    nursery: trio.Nursery, worker: Worker, instance: Peer, answers: list[httpx.Response]
) -> Any:
    """Send calls until one reaches the instance (the worker may not have seen it attach yet: those go
    to the node, which this test answers); returns that invoke's request id."""
    while True:
        count = len(answers)
        nursery.start_soon(post, worker, "work", b'"x"', answers)
        with trio.move_on_after(2):
            return (await instance.receive())["id"]
        call = await node_call(worker)
        await worker.node.send({"i": call["i"], "s": 200, "r": call["p"]})
        await wait_until(lambda n=count: len(answers) > n, timeout=20, what="the node's answer")
        answers.pop()


@pytest.mark.parametrize(
    ("reply", "status", "kind"),
    [
        ({"error": "just text"}, 500, "raised"),
        ({"error": {"kind": 7, "message": ["not", "text"]}}, 503, "unavailable"),
        ({"error": None}, 500, "raised"),
    ],
)
async def test_an_error_reply_of_an_odd_shape_is_answered_with_a_json_error(
    reply: dict[str, Any], status: int, kind: str
) -> None:
    async with worker_process() as worker:
        instance = await worker.attach(idempotent=False)
        answers: list[httpx.Response] = []
        async with trio.open_nursery() as nursery:
            request_id = await direct_call(nursery, worker, instance, answers)
            await instance.send({"id": request_id, **reply})
            await wait_until(lambda: len(answers) >= 1, timeout=20, what="an answer")
        assert answers[0].status_code == status, answers[0].text
        assert answers[0].json()["error"]["kind"] == kind


@pytest.mark.parametrize("how", ["closed", "not a frame", "an id of no call's type"])
@pytest.mark.parametrize("idempotent", [False, True])
async def test_an_instance_connection_that_fails_mid_call_still_gets_the_client_an_answer(
    how: str, idempotent: bool
) -> None:
    """Non-idempotent: 503 (it may have run); idempotent: handed to the node, whose answer comes back."""
    async with worker_process() as worker:
        instance = await worker.attach(idempotent=idempotent)
        answers: list[httpx.Response] = []
        async with trio.open_nursery() as nursery:
            await direct_call(nursery, worker, instance, answers)
            if how == "closed":
                await instance.stream.aclose()
            elif how == "not a frame":
                await instance.stream.send_all(b"\x00\x00\x00\x05nope!")
            else:
                await instance.send({"id": [1], "ok": "x"})
            if idempotent:
                call = await node_call(worker)
                assert call["q"].startswith("timeout="), call
                await worker.node.send({"i": call["i"], "s": 200, "r": "from the node"})
            await wait_until(lambda: len(answers) >= 1, timeout=20, what="an answer")
        if idempotent:
            assert (answers[0].status_code, answers[0].json()) == (200, "from the node")
        else:
            assert answers[0].status_code == 503, answers[0].text
            assert answers[0].json()["error"]["kind"] == "unavailable"
