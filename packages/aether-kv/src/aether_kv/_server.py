"""The client-protocol server of one replica: authenticates connections with the cluster secret (over
mutual TLS with the cluster CA when it is given `tls`) and serves requests against the in-process
KVStore. Requests on one connection run concurrently; a bad request gets an error reply naming what was
wrong and changes nothing; the connection (and everyone else's) keeps being served.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ._errors import InvalidRequestError, KVError
from ._fanout import WatchFanout
from ._keepalive import keep_alive
from ._records import Compare, TxnOp
from ._store import KVStore
from ._tls import ReloadingTLS, accept_tls
from ._wire import (
    MAX_HANDSHAKE_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_STATUS_WAIT,
    FramedStream,
    decode,
    encode,
    error_body,
    events_message,
    server_handshake,
)

log = logging.getLogger("aether_kv.server")

HANDSHAKE_TIMEOUT = 5.0
MAX_IN_FLIGHT_PER_CONNECTION = 1024

Handler = Callable[[KVStore, dict[str, Any]], Awaitable[Any]]


def _field(request: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if name not in request:
        if default is ...:
            raise InvalidRequestError(f"{request.get('op')}: missing field {name!r}")
        return default
    value = request[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InvalidRequestError(
            f"{request.get('op')}.{name}: must be {expected}, got {type(value).__name__}"
        )
    return value


def _value(request: dict[str, Any]) -> bytes:
    return decode(_field(request, "value", str), bytes, f"{request.get('op')}.value")


def _ops(request: dict[str, Any], name: str) -> list[TxnOp]:
    raw = _field(request, name, list, [])
    return [decode(item, TxnOp, f"txn.{name}[{i}]") for i, item in enumerate(raw)]  # type: ignore[arg-type]


async def _get(store: KVStore, request: dict[str, Any]) -> Any:
    result = await store.get_with_revision(
        _field(request, "key", str), linearizable=_field(request, "linearizable", bool, False)
    )
    return encode(result)


async def _range(store: KVStore, request: dict[str, Any]) -> Any:
    result = await store.range(
        _field(request, "prefix", str),
        limit=_field(request, "limit", int, 0),
        linearizable=_field(request, "linearizable", bool, False),
    )
    return encode(result)


async def _put(store: KVStore, request: dict[str, Any]) -> Any:
    key = _field(request, "key", str)
    return encode(await store.put(key, _value(request), lease=_field(request, "lease", int, 0)))


async def _delete(store: KVStore, request: dict[str, Any]) -> Any:
    return encode(await store.delete(_field(request, "key", str)))


async def _delete_prefix(store: KVStore, request: dict[str, Any]) -> Any:
    return encode(await store.delete_prefix(_field(request, "prefix", str)))


async def _txn(store: KVStore, request: dict[str, Any]) -> Any:
    compares = [
        decode(item, Compare, f"txn.compares[{i}]")
        for i, item in enumerate(_field(request, "compares", list, []))
    ]
    return encode(await store.txn(compares, _ops(request, "success"), _ops(request, "failure")))


async def _lease_grant(store: KVStore, request: dict[str, Any]) -> Any:
    return encode(await store.lease_grant(_field(request, "ttl", (int, float))))


async def _lease_keepalive(store: KVStore, request: dict[str, Any]) -> Any:
    return encode(await store.lease_keepalive(_field(request, "lease", int)))


async def _lease_revoke(store: KVStore, request: dict[str, Any]) -> Any:
    return encode(await store.lease_revoke(_field(request, "lease", int)))


async def _barrier(store: KVStore, request: dict[str, Any]) -> Any:
    return {"revision": await store.barrier()}


async def _status(store: KVStore, request: dict[str, Any]) -> Any:
    """The status now, or with `wait_change` ({is_leader, term}) once it differs from that, or after
    `max_wait` seconds (at most MAX_STATUS_WAIT)."""
    if "wait_change" not in request:
        return encode(await store.status())
    known = _field(request, "wait_change", dict)
    is_leader, term = known.get("is_leader"), known.get("term")
    if not isinstance(is_leader, bool) or not isinstance(term, int) or isinstance(term, bool):
        raise InvalidRequestError("status.wait_change: must be {is_leader: boolean, term: integer}")
    max_wait = _field(request, "max_wait", (int, float))
    if not 0 <= max_wait <= MAX_STATUS_WAIT:
        raise InvalidRequestError(
            f"status.max_wait: must be 0 to {MAX_STATUS_WAIT:g} seconds, got {max_wait}"
        )
    return encode(await store.wait_status_change(is_leader, term, float(max_wait)))


async def _member_add(store: KVStore, request: dict[str, Any]) -> Any:
    await store.add_member(_field(request, "raft_address", str))
    return {}


async def _member_remove(store: KVStore, request: dict[str, Any]) -> Any:
    await store.remove_member(_field(request, "raft_address", str))
    return {}


HANDLERS: dict[str, Handler] = {
    "get": _get,
    "range": _range,
    "put": _put,
    "delete": _delete,
    "delete_prefix": _delete_prefix,
    "txn": _txn,
    "lease_grant": _lease_grant,
    "lease_keepalive": _lease_keepalive,
    "lease_revoke": _lease_revoke,
    "barrier": _barrier,
    "status": _status,
    "member_add": _member_add,
    "member_remove": _member_remove,
}
STREAMING_OPS = ("watch", "cancel")


def _is_request_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _ServedWatch:
    """A watch a connection serves, known from the moment its request is read (a cancel right behind it
    finds it, whichever of their tasks runs first). Its client's cancel ends it between two of its
    messages, never in the middle of one: a message cut short (its socket full: a client that reads
    slowly) left the rest of the connection's messages to be read as garbage, and the requests in flight
    on it unanswered."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.started = False  # (its task runs it; a second watch of the same id is refused)
        self.sending = False
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        if not self.sending:
            self.scope.cancel()

    async def send(self, sending: Awaitable[None]) -> None:
        """One of its messages (`sending`: the framed stream's send of it), whole, whatever cancel comes
        meanwhile (one that came before stops it before its first byte)."""
        self.sending = True
        try:
            await sending
        finally:
            self.sending = False


@attrs.define
class _Served:
    """What one replica's server serves now, for its status (`Status.clients`, `Status.watches`)."""

    clients: int = 0
    watches: int = 0

    def add_to(self, status: dict[str, Any]) -> dict[str, Any]:
        """An encoded `Status` with these figures."""
        return {**status, "clients": self.clients, "watches": self.watches}


class _Connection:
    def __init__(self, store: KVStore, framed: FramedStream, fanout: WatchFanout, served: _Served) -> None:
        self.store = store
        self.framed = framed
        self.fanout = fanout
        self.served = served
        self.watches: dict[int, _ServedWatch] = {}
        self.limiter = trio.CapacityLimiter(MAX_IN_FLIGHT_PER_CONNECTION)

    async def reply_error(self, request_id: Any, error: KVError) -> None:
        await self.framed.send({"id": request_id, "error": error_body(error)})

    async def serve(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    request = await self.framed.receive()
                except InvalidRequestError as error:  # (FrameTooLargeError too) garbage: said, then closed
                    await self._send_error_quietly(None, error)
                    break
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break  # the client reset its connection: no error of the replica's (in this nursery,
                    # it came out in a group past `_handle_connection`'s except, logged with a traceback)
                if request is None:
                    break
                await self.limiter.acquire_on_behalf_of(token := object())
                request_id = request.get("id")
                if (
                    request.get("op") == "watch"
                    and _is_request_id(request_id)
                    and request_id not in self.watches
                ):
                    self.watches[request_id] = _ServedWatch()
                nursery.start_soon(self.handle, request, token)
            nursery.cancel_scope.cancel()

    async def handle(self, request: dict[str, Any], token: object) -> None:
        request_id = request.get("id")
        try:
            op = request.get("op")
            if not _is_request_id(request_id):
                raise InvalidRequestError(f"request id must be an integer, got {request_id!r}")
            if op == "watch":
                await self.watch(request_id, request)
            elif op == "cancel":
                served = self.watches.pop(request_id, None)
                if served is not None:
                    served.cancel()
            elif isinstance(op, str) and op in HANDLERS:
                result = await HANDLERS[op](self.store, request)
                if op == "status":  # (the store knows its state; what the server serves, only here)
                    result = self.served.add_to(result)
                await self.framed.send({"id": request_id, "ok": result})
            else:
                known = ", ".join([*HANDLERS, *STREAMING_OPS])
                raise InvalidRequestError(f"unknown operation {op!r} (known: {known})")
        except KVError as error:
            await self._send_error_quietly(request_id, error)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.limiter.release_on_behalf_of(token)

    async def _send_error_quietly(self, request_id: Any, error: KVError) -> None:
        try:
            await self.reply_error(request_id, error)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def watch(self, request_id: int, request: dict[str, Any]) -> None:
        served = self.watches.setdefault(request_id, _ServedWatch())  # (made as its request was read)
        if served.started:
            raise InvalidRequestError(f"watch: request id {request_id} is a watch of this connection already")
        served.started = True
        self.served.watches += 1
        try:
            with served.scope:
                prefix = _field(request, "prefix", str)
                start = _field(request, "start_revision", int, 0)
                watch = self.store.watch(prefix, start)
                confirmation = {"id": request_id, "watching": {"start_revision": watch.next_revision}}
                await served.send(self.framed.send(confirmation))
                while not served.cancelled:
                    events = await watch.__anext__()
                    for body in self.fanout.bodies(prefix, events):
                        await served.send(self.framed.send_payload(events_message(request_id, body)))
                        if served.cancelled:
                            break
        finally:
            self.served.watches -= 1
            if self.watches.get(request_id) is served:
                del self.watches[request_id]


async def _handle_connection(
    store: KVStore,
    secret: str,
    tls: ReloadingTLS | None,
    fanout: WatchFanout,
    served: _Served,
    stream: trio.SocketStream,
) -> None:
    secured: trio.abc.Stream | None = stream
    keep_alive(stream)  # (a client node's machine that died hard: its connection is found and ended)
    try:
        secured = await accept_tls(stream, tls, timeout=HANDSHAKE_TIMEOUT)
        if secured is None:
            return
        # Before the secret is proved, a frame of a few KiB at most: a stranger holds no megabytes here.
        framed = FramedStream(secured, max_send=MAX_MESSAGE_BYTES, max_receive=MAX_HANDSHAKE_BYTES)
        if await server_handshake(framed, secret, store.address, timeout=HANDSHAKE_TIMEOUT):
            framed.max_receive = framed.max_frame
            served.clients += 1
            try:
                await _Connection(store, framed, fanout, served).serve()
            finally:
                served.clients -= 1
    except (trio.BrokenResourceError, trio.ClosedResourceError, InvalidRequestError):
        pass
    except Exception:  # a bug here must not take the server down for everyone else
        log.exception("client connection failed")
    finally:  # (with TLS, the TLS stream owns the connection; none: the handshake closed it)
        if secured is not None:
            await trio.aclose_forcefully(secured)


async def serve_clients(
    store: KVStore,
    secret: str,
    host: str,
    port: int,
    *,
    tls: ReloadingTLS | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the client protocol on host:port until cancelled; reports the bound (host, port). With
    `tls`, a client must first complete a TLS handshake with a certificate of the cluster CA."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    task_status.started((bound[0], bound[1]))
    fanout = WatchFanout()  # the watches of every connection share their events' encodings
    served = _Served()
    await trio.serve_listeners(
        lambda stream: _handle_connection(store, secret, tls, fanout, served, stream), listeners
    )
