"""The network client of the client protocol, for other processes (nodes, CLI tools).

One connection at a time, to the first endpoint that answers; on a connection failure, or when its
endpoint makes no progress (a request unanswered in time, "no leader here", a server-side timeout), it
moves on to the next endpoint. Reads and requests that certainly did not reach a replica are retried
within the request deadline; a write whose connection dropped after it was sent raises
OutcomeUnknownError. A read (get, range, status, barrier) changes nothing, so its outcome is never
unknown: one that got no answer in time raises UnavailableError (safe to retry). Watches resume by
themselves after a reconnect from the last revision they delivered, so every event arrives once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import attrs
import trio

from ._endpoint_order import EndpointOrder
from ._errors import (
    AuthenticationError,
    ConnectionLostError,
    DiskFullError,
    InvalidRequestError,
    KVError,
    NoQuorumError,
    OutcomeUnknownError,
    UnavailableError,
)
from ._nursery import open_service_nursery
from ._records import (
    Compare,
    DeleteResult,
    Event,
    GetResult,
    KeyValue,
    LeaseResult,
    PutResult,
    RangeResult,
    RevokeResult,
    Status,
    TxnOp,
    TxnResult,
)
from ._replies import Replies, Reply
from ._tls import ReloadingTLS, connect_tls
from ._wire import (
    MAX_MESSAGE_BYTES,
    MAX_STATUS_WAIT,
    FramedStream,
    client_handshake,
    decode,
    decode_events,
    encode,
    encode_txn_op,
    error_from_body,
)

DEFAULT_REQUEST_TIMEOUT = 5.0
DEFAULT_CONNECT_TIMEOUT = 2.0
# Requests that change nothing (a barrier goes through the log, but as a no-op): one that times out is
# "unavailable", never "outcome unknown".
_READS = frozenset({"get", "range", "status", "barrier"})
_BACKOFF_START = 0.02
_BACKOFF_MAX = 0.5
# Watch messages a watch may hold that its consumer has not taken. A consumer that falls this far behind
# (or was abandoned without `aclose`) is detached: it resubscribes from its last revision once it reads
# again, and nothing builds up without bound in the meantime.
WATCH_BUFFER = 1024


class _NotSent(Exception):
    """The connection broke before the request left: safe to retry anywhere."""


class _Dropped(Exception):
    """The connection broke after the request left: the outcome is unknown."""


@attrs.define
class _Attempt:
    """One try of a request. `sent`: it may have reached the server (wholly: a cancelled send may have
    delivered it), so unless an answer came back its outcome is unknown. Not before its first byte is
    written: one that timed out waiting for its turn on a full socket was not sent."""

    sent: bool = False

    def writing(self) -> None:
        self.sent = True


_DROPPED = object()


class _ClientConnection:
    def __init__(self, framed: FramedStream, endpoint: str, nursery: trio.Nursery | None = None) -> None:
        self.framed = framed
        self.endpoint = endpoint
        self.nursery = nursery  # for cancelling a detached watch on the server
        self.replies: Replies[Reply] = Replies()
        self.watches: dict[int, trio.MemorySendChannel[Any]] = {}
        self.dropped: list[int] = []  # watches collected without `aclose`: cancelled at the next request
        self.closed = False

    async def read_loop(self) -> None:
        try:
            while True:
                message = await self.framed.receive()
                if message is None:
                    break
                self._dispatch(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError, InvalidRequestError, OSError):
            pass
        finally:
            self.closed = True
            self.replies.end()
            for channel in self.watches.values():
                try:
                    channel.send_nowait(_DROPPED)
                except (trio.WouldBlock, trio.BrokenResourceError):
                    pass
                channel.close()  # (a watch that had no room for _DROPPED resubscribes at the end)
            self.watches.clear()
            await trio.aclose_forcefully(self.framed.stream)

    def _dispatch(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        channel = self.watches.get(request_id)  # type: ignore[arg-type]
        if channel is not None:
            try:
                channel.send_nowait(message)
            except (trio.WouldBlock, trio.BrokenResourceError):
                self._detach(request_id)  # type: ignore[arg-type]
            return
        self.replies.deliver(message)

    async def send(self, message: dict[str, Any], attempt: _Attempt | None = None) -> None:
        if self.closed:
            raise _NotSent()
        try:
            await self.framed.send(message, writing=attempt.writing if attempt is not None else None)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            raise _NotSent() from None
        finally:
            # Broken, or cancelled with part of a frame written: unusable now, and closed (its watches
            # resume elsewhere). Cancelled while it waited for another message to go out (a full socket),
            # or refused as too large: nothing was written, and the connection goes on.
            if self.framed.broken and not self.closed:
                self.closed = True
                if self.nursery is not None:
                    self.nursery.start_soon(self.close)

    async def request(self, message: dict[str, Any], attempt: _Attempt | None = None) -> Any:
        while self.dropped:
            self.forget_watch(self.dropped.pop())
        waiter = Reply()
        request_id = self.replies.add(waiter)
        attempt = attempt if attempt is not None else _Attempt()
        try:
            try:
                await self.send({"id": request_id, **message}, attempt)
            except _NotSent:
                attempt.sent = False  # a partial frame is never applied
                raise
            reply = await waiter.wait()
        finally:
            self.replies.discard(request_id)
        if reply is None:
            raise _Dropped()
        if "error" in reply:
            raise error_from_body(reply["error"])
        return reply.get("ok")

    async def close(self) -> None:
        self.closed = True
        await trio.aclose_forcefully(self.framed.stream)

    def forget_watch(self, request_id: int) -> None:
        """Stop delivering to a watch and cancel it on the server, if it is still registered here."""
        if request_id in self.watches:
            self._detach(request_id)

    def _detach(self, request_id: int) -> None:
        """Stop delivering to a watch whose consumer fell behind (its buffer is full), is gone or closed
        it: it ends its channel (a consumer still reading resubscribes from its last revision) and the
        server is told to stop sending, by a task of the client's own (nothing here waits for it)."""
        channel = self.watches.pop(request_id)
        channel.close()
        if self.nursery is not None and not self.closed:
            self.nursery.start_soon(self._cancel_watch, request_id)

    async def _cancel_watch(self, request_id: int) -> None:
        try:
            await self.send({"id": request_id, "op": "cancel"})
        except _NotSent:
            pass


def _read_unanswered(what: str) -> UnavailableError:
    """A read that got no answer in time: unavailable (it changed nothing), never "outcome unknown"."""
    return UnavailableError(f"{what}; a read changes nothing, so it is safe to retry")


class _Refusals:
    """What the endpoints answered one request that they could not take: each endpoint's last refusal,
    and the replicas it named as full if that was why (a replica names only its own disk: `_raft.
    translate_fail_reason`). A follower whose disk is full refuses a write ("another replica can take
    it"), which is true unless every replica is full: when every endpoint that answered refused for want
    of its own room, no replica can take the write until space is freed, and the client says so
    (DiskFullError) instead of "unavailable" (never for a request an earlier attempt may have applied:
    that stays "outcome unknown"). Likewise for a want of quorum (NoQuorumError): a replica cut off from
    the others says so while another endpoint may still reach a majority, so the client asks the next;
    once it is back at an endpoint that said so (the client connects to the endpoints in turn, passing
    those it cannot reach) and none said otherwise, no endpoint it can reach has a majority."""

    def __init__(self) -> None:
        # endpoint → the full replicas its last refusal named (empty: it refused for another reason)
        self._named: dict[str, tuple[str, ...]] = {}
        self._no_quorum: dict[str, NoQuorumError] = {}  # endpoint → its last refusal, if for want of quorum

    def answered(self, endpoint: str, error: UnavailableError) -> NoQuorumError | None:
        """Note the refusal; the NoQuorumError to raise if `endpoint` said so before in this request and no
        endpoint has refused since for another reason (a leader change: worth the wait)."""
        self._named[endpoint] = error.replicas if not isinstance(error, NoQuorumError) else ()
        if not isinstance(error, NoQuorumError):
            self._no_quorum.clear()
            return None
        again = endpoint in self._no_quorum
        self._no_quorum[endpoint] = error
        return error if again else None

    def all_full(self, endpoints: Sequence[str] = ()) -> DiskFullError | None:
        """DiskFullError naming the full replicas if every endpoint that answered (at least one, and each
        of `endpoints`) last refused for want of room; None otherwise."""
        named = self._named
        if not named or not all(named.values()) or not set(endpoints) <= named.keys():
            return None
        replicas = tuple(sorted({replica for full in named.values() for replica in full}))
        return DiskFullError(
            f"not applied: the disk of KV replica {' and '.join(replicas)} is full, and every replica"
            " that answered has no room to take the request; free space in the data directory there,"
            " then retry",
            replicas=replicas,
        )


class KVClient:
    """Client-protocol API with the same operations as `KVStore`. Create with `open_client`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        endpoints: Sequence[str],
        secret: str,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        tls: ReloadingTLS | None = None,
    ) -> None:
        if not endpoints:
            raise InvalidRequestError("no endpoints given: pass at least one host:port")
        self._nursery = nursery
        self.endpoints = tuple(endpoints)
        self._secret = secret
        self._tls = tls
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self._order = EndpointOrder(self.endpoints)
        self._connection: _ClientConnection | None = None
        self._connect_lock = trio.Lock()

    @property
    def endpoint(self) -> str | None:
        """The endpoint of the live connection, if any."""
        return self._connection.endpoint if self._connection and not self._connection.closed else None

    # ------------------------------------------------------------ connections

    async def _connect(self) -> _ClientConnection:
        async with self._connect_lock:
            if self._connection is not None and not self._connection.closed:
                return self._connection
            errors = []
            for endpoint in self._order.candidates(trio.current_time()):
                try:
                    connection = await self._open(endpoint)
                except AuthenticationError:
                    raise
                except (OSError, trio.BrokenResourceError, InvalidRequestError, trio.TooSlowError) as error:
                    errors.append(f"{endpoint}: {error or type(error).__name__}")
                    self._order.failed(endpoint, trio.current_time())
                    continue
                self._order.connected(endpoint)
                self._connection = connection
                self._nursery.start_soon(connection.read_loop)
                return connection
            raise ConnectionLostError("cannot reach any aether-kv endpoint: " + "; ".join(errors))

    @property
    def endpoint_connect_timeout(self) -> float:
        """How long one endpoint may take to connect (TCP, TLS, the secret's handshake): at most half the
        request timeout, so a request still has time for the next endpoint. A paused replica's kernel
        accepts the connection and nothing answers: with a request timeout under the connect timeout,
        every request would spend all its time there and the client would never move on."""
        return min(self.connect_timeout, self.request_timeout / 2)

    async def _open(self, endpoint: str) -> _ClientConnection:
        host, _, port = endpoint.rpartition(":")
        with trio.fail_after(self.endpoint_connect_timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, int(port))
            try:
                stream = await connect_tls(stream, self._tls, host)  # (TLS owns the connection)
                framed = FramedStream(stream, max_receive=MAX_MESSAGE_BYTES)
                await client_handshake(framed, self._secret, endpoint)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        return _ClientConnection(framed, endpoint, self._nursery)

    def _drop(self, connection: _ClientConnection) -> None:
        if self._connection is connection:
            self._connection = None
            self._order.move_on()
        self._nursery.start_soon(connection.close)

    def _retire(self, connection: _ClientConnection) -> None:
        """The endpoint made no progress: new requests go to the next endpoint (it is passed over for a
        while); the connection closes once the requests already on it have had their time (its watches
        then resume elsewhere)."""
        if self._connection is connection:
            self._connection = None
            self._order.failed(connection.endpoint, trio.current_time())
            self._nursery.start_soon(self._close_later, connection)

    async def _close_later(self, connection: _ClientConnection) -> None:
        await trio.sleep(self.request_timeout)
        await connection.close()

    async def _call(self, message: dict[str, Any], *, idempotent: bool, wait: float = 0.0) -> Any:
        """Send one request, failing over and retrying what is safe to retry, within request_timeout.

        It says "not applied" (UnavailableError, ConnectionLostError) only if no attempt may have reached
        a server without an answer; otherwise the outcome is unknown (OutcomeUnknownError). A read has no
        outcome to be unknown: one that timed out is UnavailableError.

        `wait`: the server may hold the request that long before it answers (a status wait; sent as
        `max_wait`). It comes on top of the request timeout, so an answer is still due within the request
        timeout of the wait's end."""
        deadline = trio.current_time() + self.request_timeout + wait
        backoff = _BACKOFF_START
        last_error: KVError | None = None
        maybe_applied = False  # an attempt reached a server (maybe) and no answer came back
        refusals = _Refusals()
        held, attempt_started, first = 0.0, 0.0, True
        while True:
            # Only the first attempt asks the server to hold the request; if it failed before the wait
            # was over (a refused connection, a dropped one), the rest of the wait is given back: a dead
            # endpoint is given up within request_timeout, and a retry asks for the status as it is.
            deadline -= max(0.0, held - (trio.current_time() - attempt_started))
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                if not maybe_applied and isinstance(last_error, UnavailableError | ConnectionLostError):
                    raise refusals.all_full() or last_error
                earlier = f" (an earlier attempt: {last_error.message})" if last_error else ""
                if message["op"] in _READS:
                    raise _read_unanswered(
                        f"{message['op']} got no answer within {self.request_timeout:g} s{earlier}"
                    )
                raise OutcomeUnknownError(
                    f"{message['op']} timed out after {self.request_timeout:g} s:"
                    f" it may or may not have been applied{earlier}"
                )
            attempt = _Attempt()
            connection: _ClientConnection | None = None
            held, first = (min(wait, remaining) if first else 0.0), False  # the server's part of the time
            attempt_started = trio.current_time()
            answering = remaining - held
            # A request that may be resent gets half the time left (at least 2 s) per endpoint, so an
            # endpoint that stopped answering leaves time to ask another one.
            attempt_timeout = held + (max(answering / 2, min(answering, 2.0)) if idempotent else answering)
            request = {**message, "max_wait": held} if wait else message
            try:
                with trio.fail_after(attempt_timeout):
                    connection = await self._connect()
                    return await connection.request(request, attempt)
            except trio.TooSlowError:
                maybe_applied = maybe_applied or attempt.sent
                if connection is not None:
                    if connection.closed:
                        self._drop(connection)
                    else:  # no answer, or not even its turn to be written: no progress there
                        self._retire(connection)
                if not attempt.sent and last_error is None:
                    last_error = UnavailableError(
                        f"{message['op']} could not be sent within {self.request_timeout:g} s (no endpoint"
                        " took it: connecting, or waiting for its turn on a connection that made no progress)"
                    )
                continue  # retried, or the deadline check above raises
            except OutcomeUnknownError:  # the server's own deadline passed, or its leader changed
                assert connection is not None
                self._retire(connection)
                if message["op"] not in _READS:
                    raise
                # A read changes nothing: asked again (here or elsewhere) while the deadline allows. A
                # leader change fails the reads in flight at once; the next attempt finds the new leader.
                last_error = _read_unanswered(
                    f"{message['op']} got no answer: {connection.endpoint} gave up on it (its own"
                    " deadline, or a leader change)"
                )
            except ConnectionLostError as error:
                last_error = error
            except _NotSent:
                last_error = ConnectionLostError("connection lost before the request was sent")
                assert connection is not None
                self._drop(connection)
            except _Dropped:
                assert connection is not None
                maybe_applied = True
                self._drop(connection)
                if not idempotent:
                    raise OutcomeUnknownError(
                        f"connection to {connection.endpoint} dropped after {message['op']} was sent:"
                        " it may or may not have been applied"
                    ) from None
                last_error = ConnectionLostError(f"connection to {connection.endpoint} dropped")
            except DiskFullError:  # every endpoint forwards to the same full leader: say so at once
                raise
            except UnavailableError as error:  # e.g. no leader known there: ask another endpoint
                assert connection is not None
                last_error = error
                cut_off = refusals.answered(connection.endpoint, error)
                full = None if maybe_applied else refusals.all_full(self.endpoints)
                if full is not None:  # every endpoint said so: no need to wait for the deadline
                    raise full from None
                if cut_off is not None and not maybe_applied:  # every endpoint reached says so
                    raise cut_off from None
                self._retire(connection)
            await trio.sleep(min(backoff, max(0.0, deadline - trio.current_time())))
            backoff = min(backoff * 2, _BACKOFF_MAX)

    # ------------------------------------------------------------ operations

    async def get(self, key: str, *, linearizable: bool = False) -> KeyValue | None:
        return (await self.get_with_revision(key, linearizable=linearizable)).kv

    async def get_with_revision(self, key: str, *, linearizable: bool = False) -> GetResult:
        reply = await self._call({"op": "get", "key": key, "linearizable": linearizable}, idempotent=True)
        return decode(reply, GetResult, "get reply")

    async def range(self, prefix: str, *, limit: int = 0, linearizable: bool = False) -> RangeResult:
        request = {"op": "range", "prefix": prefix, "limit": limit, "linearizable": linearizable}
        return decode(await self._call(request, idempotent=True), RangeResult, "range reply")

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> PutResult:
        request = {"op": "put", "key": key, "value": encode(value), "lease": lease}
        return decode(await self._call(request, idempotent=False), PutResult, "put reply")

    async def delete(self, key: str) -> DeleteResult:
        reply = await self._call({"op": "delete", "key": key}, idempotent=False)
        return decode(reply, DeleteResult, "delete reply")

    async def delete_prefix(self, prefix: str) -> DeleteResult:
        reply = await self._call({"op": "delete_prefix", "prefix": prefix}, idempotent=False)
        return decode(reply, DeleteResult, "delete_prefix reply")

    async def txn(
        self,
        compares: Sequence[Compare] = (),
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        request = {
            "op": "txn",
            "compares": [encode(c) for c in compares],
            "success": [encode_txn_op(op) for op in success],
            "failure": [encode_txn_op(op) for op in failure],
        }
        return decode(await self._call(request, idempotent=False), TxnResult, "txn reply")

    async def lease_grant(self, ttl: float) -> LeaseResult:
        reply = await self._call({"op": "lease_grant", "ttl": ttl}, idempotent=False)
        return decode(reply, LeaseResult, "lease_grant reply")

    async def lease_keepalive(self, lease: int) -> LeaseResult:
        reply = await self._call({"op": "lease_keepalive", "lease": lease}, idempotent=True)
        return decode(reply, LeaseResult, "lease_keepalive reply")

    async def lease_revoke(self, lease: int) -> RevokeResult:
        reply = await self._call({"op": "lease_revoke", "lease": lease}, idempotent=True)
        return decode(reply, RevokeResult, "lease_revoke reply")

    async def barrier(self) -> int:
        return int((await self._call({"op": "barrier"}, idempotent=True))["revision"])

    async def status(self) -> Status:
        return decode(await self._call({"op": "status"}, idempotent=True), Status, "status reply")

    async def wait_status_change(self, is_leader: bool, term: int, max_wait: float) -> Status:
        """The endpoint's status once its leadership or term differs from the given, or after
        `max_wait` s (at most MAX_STATUS_WAIT). The wait is not counted against
        `request_timeout`: an endpoint that makes no progress is noticed within `request_timeout` of
        its end."""
        request = {"op": "status", "wait_change": {"is_leader": is_leader, "term": term}}
        wait = max(0.0, min(max_wait, MAX_STATUS_WAIT))
        return decode(await self._call(request, idempotent=True, wait=wait), Status, "status reply")

    async def add_member(self, raft_address: str) -> None:
        await self._call({"op": "member_add", "raft_address": raft_address}, idempotent=False)

    async def remove_member(self, raft_address: str) -> None:
        await self._call({"op": "member_remove", "raft_address": raft_address}, idempotent=False)

    async def raw(self, message: dict[str, Any]) -> Any:
        """Send an arbitrary request (for tools and tests of the server's input checking)."""
        return await self._call(message, idempotent=False)

    def watch_backlog(self) -> int:
        """Watch messages this client has received but its watches have not taken yet (for metrics)."""
        connection = self._connection
        if connection is None:
            return 0
        return sum(channel.statistics().current_buffer_used for channel in connection.watches.values())

    def watch(self, prefix: str, start_revision: int = 0) -> ClientWatch:
        """Like `KVStore.watch`, over the network; survives reconnects without loss or repeats."""
        return ClientWatch(self, prefix, start_revision)

    async def aclose(self) -> None:
        if self._connection is not None:
            await self._connection.close()


class ClientWatch:
    """Async iterator of event batches; resumes after a reconnect from the last delivered revision."""

    def __init__(self, client: KVClient, prefix: str, start_revision: int) -> None:
        self._client = client
        self.prefix = prefix
        self.next_revision = start_revision
        self._connection: _ClientConnection | None = None
        self._receive: trio.MemoryReceiveChannel[Any] | None = None
        self._id = 0
        self._closed = False
        self.reconnects = 0

    def __aiter__(self) -> ClientWatch:
        return self

    def __del__(self) -> None:
        # Dropped without `aclose` (its consumer's task cancelled and gone): its channel closed, the
        # connection's next event for it finds no reader and cancels it on the server (`_dispatch`);
        # on a prefix that stays quiet, the connection's next request does (`dropped`: a finalizer may
        # run anywhere in the event loop, so it only notes the id). Left open, the server went on
        # encoding and sending its events for nobody until its buffer filled: 1,024 batches later.
        # (`aclose` is still the way to end a watch.)
        receive = getattr(self, "_receive", None)
        if receive is not None:
            with suppress(Exception):  # (at the interpreter's exit, say)
                receive.close()
                connection = self._connection
                if connection is not None and not getattr(self, "_closed", True):
                    connection.dropped.append(self._id)

    async def _subscribe(self) -> None:
        """Subscribe (again) from `next_revision`; StopAsyncIteration if `aclose` ends it meanwhile."""
        backoff = _BACKOFF_START
        while not self._closed:
            connection: _ClientConnection | None = None
            try:
                connection = await self._client._connect()
                send, receive = trio.open_memory_channel[Any](WATCH_BUFFER)
                # (the pair an `aclose` meanwhile forgets: ids are per connection)
                self._connection, self._id = connection, connection.replies.next_id()
                connection.watches[self._id] = send
                try:
                    first = await self._confirm(connection, receive)
                except BaseException:
                    # Refused, dropped or cancelled before it was confirmed (a cache that ends as its node
                    # stops leading): not left registered, or its events would pile up for nobody.
                    connection.forget_watch(self._id)
                    raise
                self.next_revision = int(first["watching"]["start_revision"])
                self._receive = receive
                return
            except (ConnectionLostError, _NotSent):
                if self._closed:  # (its channel closed by `aclose`: not the connection's failure)
                    break
                if connection is not None:
                    self._client._drop(connection)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
        raise StopAsyncIteration

    async def _confirm(
        self, connection: _ClientConnection, receive: trio.MemoryReceiveChannel[Any]
    ) -> dict[str, Any]:
        """Send the subscription; the server's confirmation."""
        await connection.send(
            {"id": self._id, "op": "watch", "prefix": self.prefix, "start_revision": self.next_revision}
        )
        try:
            first = await receive.receive()
        except trio.EndOfChannel:
            raise _NotSent() from None
        if first is _DROPPED:
            raise _NotSent()
        if "error" in first:
            raise error_from_body(first["error"])
        return first

    async def __anext__(self) -> list[Event]:
        while True:
            if self._receive is None:
                await self._subscribe()  # (StopAsyncIteration once closed)
                if self._closed:  # (closed by another task while it subscribed)
                    await self.aclose()
                    raise StopAsyncIteration
            assert self._receive is not None
            try:
                message = await self._receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                message = _DROPPED  # detached: it fell too far behind; resubscribe from next_revision
            if self._closed:  # (closed by another task while this one waited)
                raise StopAsyncIteration
            if message is _DROPPED:
                self._receive = None
                self.reconnects += 1
                continue
            if "error" in message:  # (the server's watch has ended: nothing more comes for it)
                if self._connection is not None:
                    self._connection.watches.pop(self._id, None)
                self._receive = None
                raise error_from_body(message["error"])
            events = decode_events(message["events"])
            if not events:
                continue
            self.next_revision = events[-1].revision + 1
            return events

    async def aclose(self) -> None:
        """Stop watching: nothing more is delivered; the client's own task tells the server. It waits for
        nothing and is not cancelled, so the `finally` of a cancelled task calls it as it is (it used to
        send the cancel itself: its callers shielded it and bounded the wait, and one cancelled while a
        full socket held up the send marked the whole connection closed)."""
        self._closed = True
        connection, receive, self._receive = self._connection, self._receive, None
        if receive is not None:
            receive.close()
        if connection is not None:
            connection.forget_watch(self._id)
        await trio.lowlevel.cancel_shielded_checkpoint()


@asynccontextmanager
async def open_client(
    endpoints: Sequence[str],
    secret: str,
    *,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    tls: ReloadingTLS | None = None,
) -> AsyncIterator[KVClient]:
    """A connected-on-demand client; its background reader runs in this context's nursery. With `tls`
    it speaks mutual TLS (its certificate from `tls.client()`, the replicas' checked against the CA)."""
    async with open_service_nursery() as nursery:
        client = KVClient(
            nursery,
            endpoints,
            secret,
            request_timeout=request_timeout,
            connect_timeout=connect_timeout,
            tls=tls,
        )
        try:
            yield client
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()
