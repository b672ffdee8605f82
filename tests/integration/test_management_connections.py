"""The management API's connections on a real node, plain and HTTPS: a client that half-closes its
connection (it sends a request, or nothing, or part of one, then shuts down its write side) gets the
answer to a complete request and then the connection closed, at once: nothing is left in CLOSE-WAIT on
the node (hundreds of such connections held as many sockets and file descriptors for the keep-alive
timeout). An idle keep-alive connection is closed after a bound."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from cli_support import CliCluster, cli_cluster, wait_until

pytestmark = [pytest.mark.integration]

REQUEST = b"GET /api/v1/cluster HTTP/1.1\r\nHost: node\r\n\r\n"
EACH = 150  # connections of each kind
CLOSE_WAIT = "08"  # the state's number in /proc/net/tcp
T = TypeVar("T")
DEADLINE = 30.0  # seconds for the node to close them (it takes milliseconds; 40 s and more before)


@pytest.fixture(
    scope="module", params=["http", pytest.param("https", marks=pytest.mark.long)]
)  # (https: `nox -s long`)
def node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliCluster]:
    """One dev-mode node without keys (the API is open), plain or with TLS; an empty index."""
    directory = tmp_path_factory.mktemp(request.param)
    index = directory / "index"
    index.mkdir()
    with cli_cluster(
        directory, index, nodes=1, node_env={"AETHER_API_KEYS": None}, tls=request.param == "https"
    ) as running:
        yield running


def close_waits(port: int) -> int:
    """The node's sockets on `port` in CLOSE-WAIT (the peer closed, the node has not), from /proc."""
    found = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == CLOSE_WAIT and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found += 1
    return found


class Client:
    """A client's connection, plain: `half_close` is TCP's shutdown of the write side."""

    def __init__(self, raw: socket.socket) -> None:
        self.raw = raw

    def sendall(self, data: bytes) -> None:
        self.raw.sendall(data)

    def recv(self, size: int) -> bytes:
        return self.raw.recv(size)

    def half_close(self) -> None:
        self.raw.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.raw.close()


class TLSClient(Client):
    """A client's connection over TLS, driven through memory buffers, so that `half_close` sends TLS's
    close (close_notify: TLS 1.3 lets the other side go on sending) without reading anything (an
    `ssl.SSLSocket` reads the answer as it waits for the node's close, and fails on it)."""

    def __init__(self, raw: socket.socket, context: ssl.SSLContext) -> None:
        super().__init__(raw)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing)
        self._run(self.tls.do_handshake)

    def _run(self, operation: Callable[..., T], *args: Any) -> T:
        while True:
            try:
                result = operation(*args)
            except ssl.SSLWantReadError:
                self._flush()
                data = self.raw.recv(65536)
                if data:
                    self.incoming.write(data)
                else:
                    self.incoming.write_eof()
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        if data := self.outgoing.read():  # (nothing to send after a half-close: no send at all)
            self.raw.sendall(data)

    def sendall(self, data: bytes) -> None:
        self._run(self.tls.write, data)

    def recv(self, size: int) -> bytes:
        return self._run(self.tls.read, size)

    def half_close(self) -> None:
        with contextlib.suppress(ssl.SSLWantReadError):  # sent; the node's close is not awaited
            self.tls.unwrap()
        self._flush()

    def cut(self) -> None:
        """TCP's shutdown of the write side, without TLS's close: to TLS, a cut connection."""
        self.raw.shutdown(socket.SHUT_WR)


def connect(node: CliCluster) -> Client:
    host, port = node.local.nodes[0].management.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=DEADLINE)
    if not node.local.tls:
        return Client(raw)
    context = ssl.create_default_context(cafile=str(node.local.ca_file))
    context.check_hostname = False
    return TLSClient(raw, context)


def read_to_end(sock: Client) -> bytes:
    """All the node sends until it closes the connection (a reset counts as closed)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, ssl.SSLError):  # (a cut TLS connection ends so)
        pass
    return data


def read_response(sock: Client) -> bytes:
    """One whole answer (headers and a body of its content-length), the connection left open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def port_of(node: CliCluster) -> int:
    return int(node.local.nodes[0].management.rsplit(":", 1)[1])


def test_half_closed_connections_are_answered_and_closed_at_once(node: CliCluster) -> None:
    port = port_of(node)
    whole, empty, partial, cut = [], [], [], []
    try:
        for _ in range(EACH):
            sock = connect(node)
            sock.sendall(REQUEST)
            sock.half_close()
            whole.append(sock)
            sock = connect(node)
            sock.half_close()
            empty.append(sock)
            sock = connect(node)
            sock.sendall(REQUEST[:20])
            sock.half_close()
            partial.append(sock)
            if node.local.tls:  # TCP's half-close under TLS: a cut connection (no answer can be sent)
                sock = connect(node)
                sock.sendall(REQUEST)
                assert isinstance(sock, TLSClient)
                sock.cut()
                cut.append(sock)
        wait_until(
            lambda: close_waits(port),
            until=lambda count: count == 0,
            timeout=DEADLINE,
            what=f"no socket of the node's port {port} in CLOSE-WAIT",
            interval=0.1,
        )
        answers = [read_to_end(sock) for sock in whole]
        assert all(a.startswith(b"HTTP/1.1 200 ") and b'"healthy"' in a for a in answers), answers[:3]
        assert all(read_to_end(sock) == b"" for sock in empty)
        assert all(not read_to_end(sock).startswith(b"HTTP/1.1 200") for sock in partial)
        for sock in cut:
            read_to_end(sock)  # closed by the node (else: TimeoutError)
    finally:
        for sock in whole + empty + partial + cut:
            sock.close()


def test_an_idle_keep_alive_connection_is_closed_after_a_bound(node: CliCluster) -> None:
    idle = connect(node)
    try:
        idle.sendall(REQUEST)
        assert read_response(idle).startswith(b"HTTP/1.1 200 ")
        assert read_to_end(idle) == b""  # the node closed it, within the deadline (else: TimeoutError)
    finally:
        idle.close()
