"""ATTACH: a slice instance (a real slice host process) opens a second connection to a Unix socket it is
told, says hello there with the token, and serves invokes on it (the fast ingress's worker calls local
instances that way); after STOP that connection answers "stopped"; a socket nobody listens on is a clear
error that leaves the instance serving; a closed attached connection does not end the instance."""

from __future__ import annotations

import functools
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aether_slice import protocol
from aether_slice.protocol import Kind
from aether_slice.testing import SliceHostError, SliceInstance

SliceHost = Callable[..., SliceInstance]


@pytest.fixture
def host(slice_host: SliceHost, slice_python: str) -> SliceHost:
    return functools.partial(slice_host, python=slice_python)


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    directory = tempfile.mkdtemp(prefix="attach-")  # (short: a socket path is at most 108 bytes)
    path = str(Path(directory) / "a.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(4)
    sock.settimeout(10)
    yield sock, path
    sock.close()
    Path(path).unlink(missing_ok=True)
    Path(directory).rmdir()


class Attached:
    """The listening side of one attached connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames = protocol.FrameDecoder()
        self.ids = 0

    def receive(self) -> dict[str, Any]:
        while (message := self.frames.next()) is None:
            chunk = self.sock.recv(65536)
            assert chunk, "the instance closed the attached connection"
            self.frames.feed(chunk)
        return message

    def request(self, op: Kind, **fields: Any) -> dict[str, Any]:
        self.ids += 1
        self.sock.sendall(protocol.encode(protocol.request(self.ids, op, **fields)))
        reply = self.receive()
        assert reply["id"] == self.ids
        return reply


def attach(instance: SliceInstance, listener: tuple[socket.socket, str], token: str) -> Attached:
    sock, path = listener
    assert instance._request(Kind.ATTACH, socket=path, token=token) == {}
    connection, _ = sock.accept()
    connection.settimeout(10)
    attached = Attached(connection)
    hello = attached.receive()
    assert protocol.token_of(hello) == token
    protocol.check_version(hello)
    return attached


def test_an_attached_connection_serves_invokes_until_the_instance_stops(
    host: SliceHost, listener: tuple[socket.socket, str]
) -> None:
    echo = host("org.aether:echo")
    attached = attach(echo, listener, "token-1")
    assert attached.request(Kind.INVOKE, entry="echo", payload={"n": 1, "text": "é"}) == {
        "id": 1,
        "ok": {"n": 1, "text": "é"},
    }
    no_entry = attached.request(Kind.INVOKE, entry="shout", payload=None)
    assert protocol.failure_of(no_entry).kind == protocol.HostErrorKind.NO_ENTRY
    # invokes only: the lifecycle stays on the node's connection
    health = attached.request(Kind.HEALTH)
    assert protocol.failure_of(health).kind == protocol.HostErrorKind.PROTOCOL
    assert echo.invoke("echo", [2]) == [2]  # the node's connection serves on

    echo.stop()
    stopped = attached.request(Kind.INVOKE, entry="echo", payload=[3])
    assert protocol.failure_of(stopped).kind == protocol.HostErrorKind.STOPPED
    echo.start()  # started again: the attached connection serves again
    assert attached.request(Kind.INVOKE, entry="echo", payload=[4])["ok"] == [4]
    attached.sock.close()


def test_a_closed_attached_connection_leaves_the_instance_serving(
    host: SliceHost, listener: tuple[socket.socket, str]
) -> None:
    echo = host("org.aether:echo")
    first = attach(echo, listener, "token-a")
    second = attach(echo, listener, "token-b")  # several may be attached (a restarted worker)
    first.sock.close()
    assert second.request(Kind.INVOKE, entry="echo", payload="b")["ok"] == "b"
    assert echo.invoke("echo", "main") == "main"
    second.sock.close()
    assert echo.invoke("echo", "still") == "still"


def test_attaching_to_a_socket_nobody_listens_on_is_an_error_that_changes_nothing(
    host: SliceHost, tmp_path: Path
) -> None:
    echo = host("org.aether:echo")
    missing = tempfile.mkdtemp(prefix="attach-") + "/nobody.sock"
    with pytest.raises(SliceHostError) as raised:
        echo._request(Kind.ATTACH, socket=missing, token="t")
    assert raised.value.kind == protocol.HostErrorKind.PROTOCOL
    assert "nobody.sock" in str(raised.value)
    assert echo.invoke("echo", 1) == 1
    Path(missing).parent.rmdir()


def test_requests_sent_in_one_write_are_each_answered_sync_async_and_failing_alike(
    host: SliceHost, listener: tuple[socket.socket, str]
) -> None:
    """A sync entry point is called as the requests are read and its answer joins the others of that
    read in one write; an async one is answered when it is done; every call gets its own answer."""
    busy = host("org.aether:busy")
    attached = attach(busy, listener, "token-batch")
    requests = {
        1: protocol.request(1, Kind.INVOKE, entry="nap", payload={"ms": 20}),  # async
        2: protocol.request(2, Kind.INVOKE, entry="burn", payload={"ms": 1}),  # sync
        3: protocol.request(3, Kind.INVOKE, entry="burn", payload={"ms": -1}),  # sync, raises
        4: protocol.request(4, Kind.INVOKE, entry="shout", payload=None),
        5: protocol.request(5, Kind.HEALTH),  # not on an attached connection
        6: protocol.request(6, Kind.INVOKE, entry="info", payload=None),
    }
    attached.sock.sendall(b"".join(protocol.encode(request) for request in requests.values()))
    replies = {}
    while len(replies) < len(requests):
        reply = attached.receive()
        assert reply["id"] not in replies
        replies[reply["id"]] = reply
    assert replies[1]["ok"]["napped_ms"] == 20.0
    assert replies[2]["ok"]["burned_ms"] == 1.0
    assert (replies[3]["error"]["kind"], replies[3]["error"]["type"]) == ("raised", "ValueError")
    assert replies[4]["error"]["kind"] == "no_entry"
    assert replies[5]["error"]["kind"] == protocol.HostErrorKind.PROTOCOL
    assert replies[6]["ok"]["pid"] == busy.pid
    assert attached.request(Kind.INVOKE, entry="burn", payload={"ms": 1})["ok"]["burned_ms"] == 1.0
