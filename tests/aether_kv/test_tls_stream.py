"""The TLS stream of the peer and KV links (`aether_kv._tls_stream.TLSSocketStream`, OpenSSL's record
layer on the socket): what `accept_tls` and `connect_tls` give, data intact both ways at once with
frames far above the socket buffers, the context's checks, and how it ends (TLS's close, a cut
connection, a cancelled handshake, a closed stream). Real sockets on 127.0.0.1, in this process."""

from __future__ import annotations

import fcntl
import functools
import os
import socket
import struct
import termios
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from aether_kv import ReloadingTLS, accept_tls, client_identity, connect_tls
from aether_kv._tls_stream import TLSSocketStream
from support import wait_until

SECRET = "a cluster secret of 32 characters"


def _identity(directory: Path, name: str, secret: str = SECRET) -> ReloadingTLS:
    return client_identity(secret, directory, name=name, hosts=("127.0.0.1",))


Handler = Callable[[trio.abc.Stream], Awaitable[None]]


@asynccontextmanager
async def _server(tls: ReloadingTLS, handler: Handler, outcomes: list[object]) -> AsyncIterator[int]:
    """A mutual-TLS listener whose connections go to `handler`; what each handshake gave (the stream,
    None or the exception) goes into `outcomes`. Yields the port."""

    async def handle(stream: trio.SocketStream) -> None:
        try:
            secured = await accept_tls(stream, tls, timeout=5)
        except trio.BrokenResourceError as error:
            outcomes.append(error)
            return
        outcomes.append(secured)
        if secured is not None:
            async with secured:
                await handler(secured)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def _echo(stream: trio.abc.Stream) -> None:
    while data := await stream.receive_some():
        await stream.send_all(data)


async def _connect(port: int, tls: ReloadingTLS) -> trio.abc.Stream:
    return await connect_tls(await trio.open_tcp_stream("127.0.0.1", port), tls, "127.0.0.1")


async def test_both_ends_are_tls_socket_streams_of_tls_1_3_and_see_each_others_certificate(
    tmp_path: Path,
) -> None:
    server_tls, client_tls = _identity(tmp_path / "s", "server"), _identity(tmp_path / "c", "client")
    outcomes: list[object] = []
    async with _server(server_tls, _echo, outcomes) as port:
        client = await _connect(port, client_tls)
        async with client:
            assert isinstance(client, TLSSocketStream) and client.version() == "TLSv1.3"
            await client.send_all(b"hello")
            assert await client.receive_some() == b"hello"
            (server,) = outcomes
            assert isinstance(server, TLSSocketStream)
            assert dict(x[0] for x in client.getpeercert()["subject"])["commonName"] == "server"
            assert dict(x[0] for x in server.getpeercert()["subject"])["commonName"] == "client"


async def test_megabytes_cross_both_ways_at_once_intact(tmp_path: Path) -> None:
    """A sender and a receiver on one connection at the same time, each far above what the socket
    buffers hold (so both wait for the socket, in both directions), as the links' reader and senders do."""
    server_tls, client_tls = _identity(tmp_path / "s", "server"), _identity(tmp_path / "c", "client")
    payload = os.urandom(6 * 1024 * 1024 + 7)
    async with _server(server_tls, _echo, []) as port:
        client = await _connect(port, client_tls)
        received = bytearray()
        async with client, trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, memoryview(payload))
            while len(received) < len(payload):
                received += await client.receive_some(100_000)
        assert bytes(received) == payload


async def test_a_receive_takes_the_full_records_that_have_arrived_not_one_record_each(
    tmp_path: Path,
) -> None:
    """An SSL_read gives one record (16 KiB of plain text at most): a receive also takes the full
    records that have arrived behind the first, up to its size, so a large message costs one pass
    through trio per receive rather than per record; a record short of full ends the receive."""
    server_tls, client_tls = _identity(tmp_path / "s", "server"), _identity(tmp_path / "c", "client")
    message = os.urandom(4 * 16384 + 100)  # four full records and a short one

    async def send_and_hold(stream: trio.abc.Stream) -> None:
        await stream.send_all(message)
        await trio.sleep_forever()

    async with _server(server_tls, send_and_hold, []) as port:
        for size, expected in ((65536, [message[:65536], message[65536:]]), (100_000, [message])):
            client = await _connect(port, client_tls)
            async with client:
                assert isinstance(client, TLSSocketStream)
                at_least = len(message) + 5 * 22  # each record's header, content type and tag
                await wait_until(
                    lambda: _queued(client.socket) >= at_least,  # noqa: B023 (awaited here)
                    timeout=10,
                    what="the five records at the client's socket",
                )
                assert [await client.receive_some(size) for _ in expected] == expected


def _queued(sock: socket.socket) -> int:
    """Bytes that have arrived at `sock` and are not read yet."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, struct.pack("i", 0)))[0]


async def test_two_receivers_at_once_are_a_busy_resource(tmp_path: Path) -> None:
    server_tls, client_tls = _identity(tmp_path / "s", "server"), _identity(tmp_path / "c", "client")
    async with _server(server_tls, _echo, []) as port:
        client = await _connect(port, client_tls)
        async with client, trio.open_nursery() as nursery:
            nursery.start_soon(client.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await client.receive_some()
            nursery.cancel_scope.cancel()


async def test_the_contexts_checks_hold_a_stranger_is_refused_at_both_ends(tmp_path: Path) -> None:
    server_tls = _identity(tmp_path / "s", "server")
    stranger = _identity(tmp_path / "x", "stranger", secret="another cluster's secret, 32 chars")
    outcomes: list[object] = []
    async with _server(server_tls, _echo, outcomes) as port:
        with pytest.raises(trio.BrokenResourceError):  # the server's certificate is not its CA's
            await _connect(port, stranger)
        await wait_until(lambda: outcomes, timeout=10, what="the server's end of the failed handshake")
        assert len(outcomes) == 1 and isinstance(outcomes[0], trio.BrokenResourceError)
        plain = await trio.open_tcp_stream("127.0.0.1", port)  # no TLS at all: the server hangs up
        await plain.send_all(b"GET / HTTP/1.0\r\n\r\n")
        with pytest.raises(trio.BrokenResourceError):
            while await plain.receive_some():
                pass
        await plain.aclose()


async def test_a_close_is_an_end_of_stream_a_cut_connection_an_error(tmp_path: Path) -> None:
    server_tls, client_tls = _identity(tmp_path / "s", "server"), _identity(tmp_path / "c", "client")
    cut = trio.Event()

    async def close_or_cut(stream: trio.abc.Stream) -> None:
        if await stream.receive_some() == b"cut":
            assert isinstance(stream, TLSSocketStream)
            stream._sock.close()  # the socket gone without TLS's close (a killed process)
            cut.set()
        # else: the server's `async with` closes it: TLS's close_notify, then the socket

    async with _server(server_tls, close_or_cut, []) as port:
        closed = await _connect(port, client_tls)
        await closed.send_all(b"close")
        assert await closed.receive_some() == b""
        await closed.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await closed.send_all(b"after")
        killed = await _connect(port, client_tls)
        await killed.send_all(b"cut")
        await cut.wait()
        with pytest.raises(trio.BrokenResourceError):
            await killed.receive_some()
        await killed.aclose()


async def test_a_handshake_that_does_not_finish_in_time_closes_the_connection(tmp_path: Path) -> None:
    server_tls = _identity(tmp_path / "s", "server")
    outcomes: list[object] = []

    async def handle(stream: trio.SocketStream) -> None:
        outcomes.append(await accept_tls(stream, server_tls, timeout=0.2))

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        silent = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
        with trio.fail_after(10):  # the server gives up, closes, and this end sees the end
            assert await silent.receive_some() == b""
        assert outcomes == [None]
        await silent.aclose()
        nursery.cancel_scope.cancel()


async def test_wrapped_then_handshaken_the_ends_agree_alpn_and_each_sees_the_others_address(
    tmp_path: Path,
) -> None:
    """The server's two steps (`wrap_unhandshaken` where it accepts, `do_handshake` in the connection's
    own task): the socket's addresses are readable before and after; ALPN as the contexts agree it."""
    server_tls, client_tls = _identity(tmp_path / "s", "server"), _identity(tmp_path / "c", "client")
    server_context, client_context = server_tls.server(), client_tls.client()
    server_context.set_alpn_protocols(["http/1.1"])
    client_context.set_alpn_protocols(["h2", "http/1.1"])
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        plain = await trio.open_tcp_stream("127.0.0.1", listener.socket.getsockname()[1])
        client_address = plain.socket.getsockname()
        server = TLSSocketStream.wrap_unhandshaken(await listener.accept(), server_context, server_side=True)
        assert server.socket.getpeername() == client_address
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            client = await TLSSocketStream.wrap(plain, client_context, server_hostname="127.0.0.1")
        async with client, server:
            assert server.selected_alpn_protocol() == client.selected_alpn_protocol() == "http/1.1"
            assert server.socket.getpeername() == client.socket.getsockname() == client_address
            assert server.socket.getsockname() == client.socket.getpeername()
            await client.send_all(b"hello")
            assert await server.receive_some() == b"hello"


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.0\r\n\r\n"], ids=["nothing", "plain text"])
async def test_a_connection_reset_before_its_handshake_is_a_broken_resource(
    tmp_path: Path, sent: bytes
) -> None:
    """A client gone (a TCP reset) before the server wraps its connection: trio.BrokenResourceError, as
    for a handshake that fails, not the socket's or OpenSSL's own error."""
    server_tls = _identity(tmp_path / "s", "server")
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        client = trio.socket.socket()
        await client.connect(listener.socket.getsockname())
        await client.send(sent)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset
        stream = await listener.accept()
        await wait_until(lambda: _reset_seen(stream.socket), timeout=10, what="the reset at the server")
        with pytest.raises(trio.BrokenResourceError):
            await accept_tls(stream, server_tls, timeout=5)


def _reset_seen(sock: trio.socket.SocketType) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return True
    return False
