"""Node-to-node calls: each node serves invocations of its own instances on its peer port, and keeps one
persistent, multiplexed connection to every other node it calls. Connections are authenticated with the
cluster secret (the same handshake as the KV client protocol).

Operations: `invoke` (the default); `stats`: the node's call statistics, for a dashboard on any node;
`usage`: its figures per slice for the leader's autoscaler (`observe/_slice_usage.py`); `versions`: its
calls per slice version during rollouts, for the leader's canary verdict. Metrics go node to node, never
through consensus. A call's error comes back as the remote raised it
(`InvocationError.to_wire`/`from_wire`: kind, message, the slice's exception type).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from aether_kv import (
    MAX_HANDSHAKE_BYTES,
    FramedStream,
    InvalidRequestError,
    KVError,
    ReloadingTLS,
    Replies,
    Reply,
    accept_tls,
    bound_unacknowledged,
    client_handshake,
    connect_tls,
    keep_alive,
    server_handshake,
)
from aether_slice import protocol
from aether_slice.protocol import ProtocolError

from ..core._error_kinds import ErrorKind
from ..core._errors import InvocationError
from ..core._off_loop import in_pieces, json_size_at_least, loads_yielding, run_sized
from ..core._text import shown
from ._connection_slots import ConnectionSlots
from ._peer_backoff import PeerBackoff

log = logging.getLogger("aether_node.peers")

MAX_FRAME = 16 * 1024 * 1024
# How much longer than the call's timeout a caller waits for the remote's answer: the remote's own
# timeout answer must arrive first, on a busy machine too.
REPLY_GRACE = 2.0
HANDSHAKE_TIMEOUT = 5.0  # for the TLS handshake of a new connection (the secret's has its own)

# (coordinates, instance, entry, payload, timeout, depth in its chain of slice-to-slice calls) → result;
# raises InvocationError
LocalInvoke = Callable[[str, int, str, Any, float, int], Awaitable[Any]]
LocalStats = Callable[[], Any]  # → JSON-able call statistics of this node
LocalUsage = Callable[[], Any]  # → JSON-able per-slice usage of this node (for the autoscaler)


class NotSentError(Exception):
    """The request never reached the peer: safe to send elsewhere, whatever the entry point."""


class LostInFlightError(Exception):
    """The peer went away after the request was sent: it may have run."""


async def serve_peers(
    secret: str,
    address: str,
    node_id: str,
    invoke: LocalInvoke,
    *,
    stats: LocalStats = list,
    usage: LocalUsage = dict,
    versions: LocalStats = dict,
    tls: ReloadingTLS | None = None,
    slots: ConnectionSlots | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the peer protocol on `address` until cancelled; with `tls`, over mutual TLS (a caller must
    present a certificate of the cluster CA) before the secret's handshake; with `slots`, at most their
    limit of connections at once."""
    host, _, port = address.rpartition(":")
    listeners: list[trio.abc.Listener[trio.SocketStream]] = list(
        await trio.open_tcp_listeners(int(port), host=host)
    )
    task_status.started()

    async def handle(stream: trio.SocketStream) -> None:
        # One connection's failure, whatever it is, ends that connection and never the server (a reset
        # inside the connection's nursery arrives as an ExceptionGroup: hence except*).
        keep_alive(stream)  # (a peer whose machine died hard: its connection, and slot, are given back)
        try:
            try:
                secured = await accept_tls(stream, tls, timeout=HANDSHAKE_TIMEOUT)
                if secured is not None:
                    async with secured:  # (TLS owns the connection: closing `stream` would not)
                        await _serve_connection(secured, secret, node_id, invoke, stats, usage, versions)
            except* (trio.BrokenResourceError, trio.ClosedResourceError, InvalidRequestError, OSError):
                pass  # the peer went away (a reset, a killed node) or does not speak the protocol
        except Exception:
            log.exception("peer connection from %s failed; closing it", _remote(stream))

    if slots is not None:
        listeners, handle = slots.listeners(listeners), slots.handler(handle)
    await trio.serve_listeners(handle, listeners)


def _remote(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "a peer"
    return f"{host}:{port}"


async def _serve_connection(
    stream: trio.abc.Stream,
    secret: str,
    node_id: str,
    invoke: LocalInvoke,
    stats: LocalStats,
    usage: LocalUsage,
    versions: LocalStats = dict,
) -> None:
    # before the secret is proved, a few KiB at most: a stranger holds no megabytes of this node's memory
    framed = FramedStream(
        stream, max_frame=MAX_FRAME, max_receive=MAX_HANDSHAKE_BYTES, loads_big=loads_yielding
    )
    if not await server_handshake(framed, secret, node_id):
        return
    framed.max_receive = MAX_FRAME
    async with trio.open_nursery() as nursery:
        while True:
            request = await framed.receive()
            if request is None:
                break
            nursery.start_soon(_serve_one, framed, request, invoke, stats, usage, versions)


def _invoke_arguments(request: dict[str, Any]) -> tuple[str, int, str, Any, float, int]:
    """The arguments of an invoke request; raises InvocationError (bad_request) if they are malformed."""
    try:
        depth = protocol.call_depth_of(request)
        instance = request.get("instance", 0)
        timeout = request.get("timeout") or 30.0
        if isinstance(instance, bool) or not isinstance(instance, int):
            raise ValueError(f"instance: expected an integer, got {shown(instance)}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
            raise ValueError(f"timeout: expected seconds in (0, 3600], got {shown(timeout)}")
        coordinates, entry = request.get("coordinates"), request.get("entry")
        if not isinstance(coordinates, str) or not isinstance(entry, str):
            raise ValueError("coordinates and entry must be strings")
    except (ValueError, ProtocolError) as error:
        raise InvocationError(ErrorKind.BAD_REQUEST, f"malformed invoke request: {error}") from None
    return coordinates, instance, entry, request.get("payload"), float(timeout), depth


async def _serve_one(
    framed: FramedStream,
    request: dict[str, Any],
    invoke: LocalInvoke,
    stats: LocalStats,
    usage: LocalUsage,
    versions: LocalStats = dict,
) -> None:
    reply: dict[str, Any] = {"id": request.get("id")}
    try:
        if request.get("op") == "stats":
            reply["ok"] = stats()
        elif request.get("op") == "usage":
            reply["ok"] = usage()
        elif request.get("op") == "versions":
            reply["ok"] = versions()
        else:
            reply["ok"] = await invoke(*_invoke_arguments(request))
    except InvocationError as error:
        reply["error"] = error.to_wire()
    except Exception as error:  # a bug here must cost one call, not the connection or the node
        log.exception("serving a peer's request failed")
        reply["error"] = InvocationError(
            ErrorKind.INTERNAL, f"the node failed to serve the call: {error!r}"
        ).to_wire()
    try:
        await _send(framed, reply, reply.get("ok"))
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


# (any JSON reads alike at the other end: the peer link's own encoder's text need not be matched)
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
_ENCODE_IN_PIECES = in_pieces(_ENCODE)


def _encode_big(message: dict[str, Any]) -> bytes:
    return _ENCODE_IN_PIECES(message).encode()


def _encode(message: dict[str, Any]) -> bytes:
    return _ENCODE(message).encode()


async def _send(framed: FramedStream, message: dict[str, Any], payload: Any) -> None:
    """Send `message`; if `payload` (its part that may be big) is, written in a worker thread, in pieces
    (`in_pieces`), so that the event loop keeps serving meanwhile."""
    encoded = await run_sized(json_size_at_least(payload), _encode, message, big=_encode_big)
    await framed.send_payload(encoded)


class _PeerConnection:
    def __init__(self, framed: FramedStream, address: str) -> None:
        self.framed = framed
        self.address = address
        self.replies: Replies[Reply] = Replies()
        self.closed = False

    async def close(self) -> None:
        self.closed = True
        self.replies.end()  # (the calls waiting: lost in flight, now)
        await trio.aclose_forcefully(self.framed.stream)

    async def read_loop(self) -> None:
        try:
            while True:
                message = await self.framed.receive()
                if message is None:
                    break
                self.replies.deliver(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError, InvalidRequestError, OSError):
            pass
        except Exception:  # (it runs in the node's nursery: whatever the peer sent, the node stays up)
            log.exception("reading from the peer at %s failed; closing the connection", self.address)
        finally:
            self.closed = True
            self.replies.end()
            await trio.aclose_forcefully(self.framed.stream)

    async def call(self, request: dict[str, Any], timeout: float) -> Any:
        """Send `request` and wait for its reply. The remote enforces `timeout` itself; this side waits
        longer (REPLY_GRACE), so that the caller gets the remote's own answer (its 504 says what timed
        out) rather than a timeout of its own."""
        waiter = Reply()
        request_id = self.replies.add(waiter)
        try:
            # A frame cut short by a cancellation would corrupt the stream for every other call on this
            # connection: the send is shielded, with a deadline; one that does not finish in time ends
            # the connection (the frame never arrived whole, so the call did not run).
            with trio.CancelScope(shield=True), trio.move_on_after(timeout) as sending:
                try:
                    await _send(self.framed, {"id": request_id, **request}, request.get("payload"))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    self.closed = True
                    raise NotSentError(f"connection to {self.address} is closed") from None
                except InvalidRequestError:  # over the frame limit: nothing was sent, the link serves on
                    raise InvocationError(
                        ErrorKind.BAD_REQUEST,
                        f"the call is over the {MAX_FRAME} bytes a call between nodes may take"
                        f" (to {self.address}): send a smaller payload",
                    ) from None
            if sending.cancelled_caught:
                await self.close()
                raise NotSentError(f"could not send the call to {self.address} within {timeout:g} s")
            with trio.move_on_after(timeout + REPLY_GRACE):
                await waiter.wait()
        finally:
            self.replies.discard(request_id)
        reply = waiter.reply
        if reply is None:
            if self.closed:
                raise LostInFlightError(f"connection to {self.address} dropped during the call")
            raise InvocationError(ErrorKind.TIMEOUT, f"no answer from {self.address} within {timeout:.3g} s")
        if "error" in reply:  # the remote's own error, kind, message and slice exception intact
            raise InvocationError.from_wire(reply["error"])
        return reply.get("ok")


class PeerClients:
    """One lazily opened connection per peer address; reopened when it breaks."""

    def __init__(
        self,
        nursery: trio.Nursery,
        secret: str,
        *,
        connect_timeout: float = 2.0,
        tls: ReloadingTLS | None = None,
    ) -> None:
        self._nursery = nursery
        self._secret = secret
        self._tls = tls
        self._connect_timeout = connect_timeout
        self._connections: dict[str, _PeerConnection] = {}
        self._locks: dict[str, trio.Lock] = {}
        self.backoff = PeerBackoff()  # the peers this node could not connect to lately

    async def drop_all_but(self, addresses: set[str]) -> list[str]:
        """Close the connections to peers not at `addresses` (nodes no longer registered: lost, or gone):
        their calls in flight end at once as lost in flight (an idempotent one is then tried elsewhere),
        instead of waiting out their timeout for a node declared lost. Returns the addresses dropped."""
        self.backoff.forget_all_but(addresses)  # (gone: nothing to wait for)
        dropped = [address for address in self._connections if address not in addresses]
        for address in dropped:
            connection = self._connections.pop(address)
            if not connection.closed:
                await connection.close()
        return dropped

    async def _connection(self, address: str) -> _PeerConnection:
        connection = self._connections.get(address)
        if connection is not None and not connection.closed:
            return connection
        asked = trio.current_time()
        async with self._locks.setdefault(address, trio.Lock()):
            connection = self._connections.get(address)
            if connection is not None and not connection.closed:
                return connection
            if self.backoff.failed_since(address, asked):  # (the attempt this call waited for failed)
                raise NotSentError(
                    f"cannot reach node at {address}: a connection failed while this call waited"
                )
            host, _, port = address.rpartition(":")
            try:
                with trio.fail_after(self._connect_timeout):
                    stream = await trio.open_tcp_stream(host, int(port))
                    bound_unacknowledged(stream)  # (a link cut mid-call ends, not its calls' timeouts)
                    secured: trio.abc.Stream = stream
                    try:
                        secured = await connect_tls(secured, self._tls, host)
                        framed = FramedStream(secured, max_frame=MAX_FRAME, loads_big=loads_yielding)
                        await client_handshake(framed, self._secret, address)
                    except BaseException:
                        await trio.aclose_forcefully(secured)
                        raise
            except (OSError, trio.TooSlowError, KVError, trio.BrokenResourceError) as error:
                wait = self.backoff.failed(address, trio.current_time())
                why = error or type(error).__name__
                log.info("cannot connect to %s (%s): calls go elsewhere for %g s", address, why, wait)
                raise NotSentError(f"cannot reach node at {address}: {error}") from None
            self.backoff.reached(address)
            connection = _PeerConnection(framed, address)
            self._connections[address] = connection
            self._nursery.start_soon(connection.read_loop)
            return connection

    async def invoke(
        self,
        address: str,
        coordinates: str,
        instance: int,
        entry: str,
        payload: Any,
        timeout: float,
        depth: int = 0,
    ) -> Any:
        """Call an instance on the node at `address`; `depth`: how many slice-to-slice calls led to this
        one (sent when not 0; a node of before depths ignores it)."""
        connection = await self._connection(address)
        request = {
            "op": "invoke",
            "coordinates": coordinates,
            "instance": instance,
            "entry": entry,
            "payload": payload,
            "timeout": timeout,
        }
        if depth:
            request["depth"] = depth
        return await connection.call(request, timeout)

    async def versions(self, address: str, timeout: float) -> Any:
        """The calls per slice version the node at `address` counted during rollouts (`VersionCalls`).
        Raises like `stats`."""
        connection = await self._connection(address)
        return await connection.call({"op": "versions"}, timeout)

    async def stats(self, address: str, timeout: float) -> Any:
        """The call statistics of the node at `address`. Raises NotSentError, LostInFlightError or
        InvocationError (timeout) like a call."""
        connection = await self._connection(address)
        return await connection.call({"op": "stats"}, timeout)

    async def usage(self, address: str, timeout: float) -> Any:
        """The per-slice usage of the node at `address` (`observe/_slice_usage.slice_usage`). Raises
        NotSentError, LostInFlightError or InvocationError (timeout) like a call."""
        connection = await self._connection(address)
        return await connection.call({"op": "usage"}, timeout)
