"""A TLS connection as a trio stream, with OpenSSL's record layer on the socket itself (a non-blocking
`ssl.SSLSocket`) instead of trio's `SSLStream` (the record layer driven from Python through memory
BIOs). Owns the I/O of one wrapped connection; must not choose certificates or check them beyond what
its SSL context says (that is `_tls.py`'s job).

Why: on the peer and KV client links every frame is one `send_all` and one `receive_some` at each end,
and `SSLStream` spends tens of µs of Python per operation around OpenSSL (its locks, the copies in and
out of its BIOs, one more pass of its loop per record). Here a send is one `SSL_write` to the socket
and a receive one `SSL_read` from it, as a plain `trio.SocketStream` does with `send` and `recv`; trio
only waits for the socket to be readable or writable. An `SSL_read` gives one record (16 KiB at
most): a receive whose record was full also takes the records that have arrived behind it, so a large
message costs a pass through trio per receive, not per record. The node's HTTPS (hypercorn, on the
ingress and the management API) runs on it too, for the same reason.

As with `SSLStream`: one task may send while another receives (the peer and KV links do: one reader,
senders under a lock); two concurrent sends, or two concurrent receives, raise trio.BusyResourceError.
TLS 1.3 can make a read write (the answer to a key update): each wait for the socket is taken under a
lock per direction, so such a rare wait queues behind the other task's instead of clashing with it. A
TLS error or an end of the connection without TLS's close (`close_notify`) raises
trio.BrokenResourceError; a TLS close reads as the end of the stream (b"").
"""

from __future__ import annotations

import socket as stdlib_socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")

RECEIVE_SIZE = 65536  # what `receive_some()` asks for without a size (a TLS record is at most 16 KiB)
_SEND_SIZE = 256 * 1024  # at most this much per SSL_write: one send never holds the loop for long
_MAX_RECORD = 16384  # the most plain text one TLS record carries, so one SSL_read gives


class TLSSocketStream(trio.abc.Stream):
    """TLS over a socket, the record layer in OpenSSL. Made by `wrap`, which does the handshake, or by
    `wrap_unhandshaken` then `do_handshake` (a server that accepts in one task and shakes hands in the
    connection's own)."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._sock = sock
        self._readable = trio.Lock()
        self._writable = trio.Lock()
        self._sending = self._receiving = False

    @classmethod
    async def wrap(
        cls,
        stream: trio.SocketStream,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
    ) -> TLSSocketStream:
        """TLS on `stream`'s connection, once the handshake is done (its certificate checks are the
        context's). The returned stream owns the connection from the start: `stream` is left without
        a socket (closing it does nothing). Raises trio.BrokenResourceError if the handshake fails;
        then, or cancelled, it closes the connection first."""
        self = cls.wrap_unhandshaken(
            stream, context, server_side=server_side, server_hostname=server_hostname
        )
        await self.do_handshake()
        return self

    @classmethod
    def wrap_unhandshaken(
        cls,
        stream: trio.SocketStream,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
    ) -> TLSSocketStream:
        """TLS on `stream`'s connection, the handshake not begun: `do_handshake` does it (a send or a
        receive would too, unchecked for time). Owns the connection from the start, as `wrap`'s does.
        Does no I/O but a look at the socket; raises trio.BrokenResourceError (the connection closed)
        if the connection is already gone."""
        raw = stream.socket
        plain = stdlib_socket.socket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        plain.setblocking(False)
        try:
            sock = context.wrap_socket(
                plain,
                server_side=server_side,
                server_hostname=server_hostname,
                do_handshake_on_connect=False,
                suppress_ragged_eofs=False,  # a cut connection is an error, as with trio's SSLStream
            )
        except (ssl.SSLError, OSError) as error:  # (it asks for the peer's address: reset by now)
            plain.close()
            raise trio.BrokenResourceError(f"TLS connection failed: {error}") from error
        except BaseException:
            plain.close()
            raise
        return cls(sock)

    async def do_handshake(self) -> None:
        """TLS's handshake (the context's certificate checks). Raises trio.BrokenResourceError if it
        fails; then, or cancelled (a caller's deadline), it closes the connection first."""
        try:
            await self._io(self._sock.do_handshake)
        except BaseException:
            self._close()
            raise

    async def _io(self, operation: Callable[..., T], *args: Any) -> T:
        """Run a non-blocking TLS operation until it completes, waiting for the socket as OpenSSL asks.
        OpenSSL's and the socket's errors become trio.BrokenResourceError."""
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            if self._sock.fileno() == -1:
                raise trio.ClosedResourceError("the TLS stream was closed")
            try:
                result = operation(*args)
            except ssl.SSLWantReadError:
                waited = True
                await self._wait(self._readable, trio.lowlevel.wait_readable)
            except ssl.SSLWantWriteError:
                waited = True
                await self._wait(self._writable, trio.lowlevel.wait_writable)
            except (ssl.SSLError, OSError) as error:
                if self._sock.fileno() == -1:
                    raise trio.ClosedResourceError("the TLS stream was closed") from None
                raise trio.BrokenResourceError(f"TLS connection failed: {error}") from error
            else:
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return result

    async def _wait(self, lock: trio.Lock, wait: Callable[[ssl.SSLSocket], Awaitable[None]]) -> None:
        # The lock is taken without a checkpoint when it is free (nearly always), so the usual wait
        # costs what a plain socket's does.
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            await wait(self._sock)
        finally:
            lock.release()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            with memoryview(data) as view, view.cast("B") as octets:
                if not octets:
                    await trio.lowlevel.checkpoint()
                    return
                sent = 0
                while sent < len(octets):
                    sent += await self._io(self._sock.send, octets[sent : sent + _SEND_SIZE])
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        await self._wait(self._writable, trio.lowlevel.wait_writable)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = RECEIVE_SIZE if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            data = await self._io(self._sock.recv, size)
            if len(data) == _MAX_RECORD < size:
                return self._more_records(data, size)
            return data
        finally:
            self._receiving = False

    def _more_records(self, data: bytes, size: int) -> bytes:
        """`data` (a full record) and the records that have arrived behind it, up to `size` bytes: an
        SSL_read gives one record (16 KiB), so a large message would otherwise take one pass through trio
        per record. A record short of full ends the message (or what has come of it): no read after it,
        so a small message costs no extra read. Errors are left to the next receive."""
        pieces, total = [data], len(data)
        while total < size:
            try:
                more = self._sock.recv(size - total)
            except (ssl.SSLError, OSError):  # (SSLWantReadError: no more yet)
                break
            if not more:
                break
            pieces.append(more)
            total += len(more)
            if len(more) < _MAX_RECORD:
                break
        return b"".join(pieces)

    async def aclose(self) -> None:
        """Send TLS's close (if the socket takes it now; never waits) and close the connection."""
        self._close()
        await trio.lowlevel.checkpoint()

    def _close(self) -> None:
        if self._sock.fileno() == -1:
            return
        try:
            self._sock.unwrap()  # sends close_notify; does not wait for the other end's
        except (ssl.SSLError, OSError, ValueError):
            pass  # not handshaken, the other end gone, or (nearly always) its close not here yet
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()

    def getpeercert(self, binary_form: bool = False) -> Any:
        """The other end's certificate, as `ssl.SSLSocket.getpeercert` gives it."""
        return self._sock.getpeercert(binary_form)

    def version(self) -> str | None:
        """The TLS version agreed (`TLSv1.3`)."""
        return self._sock.version()

    def selected_alpn_protocol(self) -> str | None:
        """The protocol agreed by ALPN during the handshake (`http/1.1`), or None."""
        return self._sock.selected_alpn_protocol()

    @property
    def socket(self) -> ssl.SSLSocket:
        """The connection's socket, for its addresses (`getpeername`, `getsockname`) and options; a read
        or a write on it directly would break the stream."""
        return self._sock
