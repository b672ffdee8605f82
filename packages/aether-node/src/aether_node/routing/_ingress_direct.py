"""The fast ingress's direct path, the worker's side: calls sent straight to local instances.

The node pushes a table (`_direct`: which (artifact, entry) may be decided here, their instances with the
balancing strategy, the tokens of the instances that will connect); local instances connect to the
worker's Unix socket (the host protocol's ATTACH) and serve invokes on that connection. A call whose route
is in the table and whose instances are all connected is balanced here (the invoker's `choose`, with this
worker's own turns and in-flight counts), sent as an INVOKE frame, timed out as the node would, and
counted for the node's metrics (`record`, sent in batches). The bytes pass through: the INVOKE frame is
built around the request's JSON body as it came (once it parsed), and a result is answered with the JSON
bytes of the instance's reply frame (`split_result`), neither decoded nor encoded again when they are
what the node would render (strict JSON: no NaN, no lone surrogate). Anything else returns False from
`try_call`: the worker sends it to the node. A call that never ran (the instance answered "stopped"), or
that may have run on an instance that died if its entry point is idempotent (`may_retry`, the invoker's
rule), is handed to the node with what is left of its timeout; a non-idempotent one is answered 503,
never resent.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aether_slice import protocol
from aether_slice.protocol import HostErrorKind, Kind, ProtocolError

from ..core._blueprint import Balancing
from ..core._coordinates import Coordinates
from ..core._error_kinds import ErrorKind, http_status
from ..core._errors import InvalidCoordinatesError, InvocationError
from ..runtime._slice_host import _call_error
from ._endpoints import Endpoint, choose, may_retry

if TYPE_CHECKING:
    from ._ingress_worker import HttpConnection, Worker, _Slot

# call records go to the node at most this long after the first of them (a timer only while there are
# some), when this many are waiting, and before any call the worker sends to the node (so that the node
# has counted every direct call that came before it)
METRICS_EVERY = 0.1
METRICS_BATCH = 512

_HEAD = protocol.HEADER
_REPLY_START = b'{"id":'  # a reply as the host encodes it: {"id":N,"ok":RESULT} (compact, in this order)
_REPLY_OK = b',"ok":'
# what the node would not render as the instance wrote it (not strict JSON; a lone surrogate's UTF-8 lead
# byte, which no other character starts with but Hangul and a few others: those take the long way too)
_NOT_VERBATIM = (b"NaN", b"Infinity", b"\xed")


def split_result(payload: bytes) -> tuple[int, bytes] | None:
    """(request id, the result's JSON bytes) of a successful reply frame that can be answered verbatim;
    None for any other frame (an error, another shape, a result the node would render otherwise)."""
    if not payload.startswith(_REPLY_START) or payload[-1:] != b"}":
        return None
    mark = payload.find(_REPLY_OK, 6, 32)
    if mark < 0:
        return None
    try:
        request_id = int(payload[6:mark])
    except ValueError:
        return None
    result = payload[mark + 6 : -1]
    for text in _NOT_VERBATIM:
        if text in result:
            return None
    return request_id, result


def split_frames(buffer: bytearray, max_frame: int) -> list[bytes]:
    """The whole frames' payloads at the start of `buffer`, removed from it. Raises ProtocolError for a
    frame over `max_frame` (the stream cannot be read on)."""
    frames: list[bytes] = []
    start, size = 0, len(buffer)
    while size - start >= 4:
        (length,) = _HEAD.unpack_from(buffer, start)
        if length > max_frame:
            raise ProtocolError(f"a frame of {length} bytes is over the limit of {max_frame}")
        end = start + 4 + length
        if end > size:
            break
        frames.append(bytes(buffer[start + 4 : end]))
        start = end
    del buffer[:start]
    return frames


class _Route:
    __slots__ = ("endpoints", "invoke_head", "labels", "strategy")

    def __init__(
        self, entry: str, strategy: Balancing, endpoints: tuple[Endpoint, ...], labels: dict[Any, str]
    ) -> None:
        self.strategy = strategy
        self.endpoints = endpoints
        self.labels = labels
        # an INVOKE frame's JSON up to its payload, with %d for the request id and %s for the timeout (the
        # instance caps the calls the entry point makes by it) (as protocol.encode writes
        # protocol.request(id, Kind.INVOKE, entry=entry, timeout=..., payload=...))
        entry_json = json.dumps(entry, ensure_ascii=False).encode("utf-8", "surrogatepass")
        self.invoke_head = (
            b'{"id":%%d,"op":"invoke","entry":%s,"timeout":%%s,"payload":' % entry_json.replace(b"%", b"%%")
        )


class _DirectCall:
    __slots__ = ("artifact", "conn", "deadline", "endpoint", "entry", "label", "payload", "slot", "started")

    def __init__(self, conn: HttpConnection, slot: _Slot, artifact: str, entry: str, payload: Any) -> None:
        self.conn, self.slot, self.artifact, self.entry, self.payload = conn, slot, artifact, entry, payload
        self.started = time.perf_counter()
        self.deadline = 0.0
        self.endpoint: Endpoint | None = None
        self.label = ""


class InstanceLink(asyncio.Protocol):
    """One instance's attached connection: its hello first, then replies to the invokes sent on it."""

    def __init__(self, router: DirectRouter) -> None:
        self.router = router
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.token: str | None = None
        self.target: tuple[str, int] | None = None  # once the table names its token
        self.calls: dict[int, _DirectCall] = {}
        self.ids = itertools.count(1)
        self.out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            for payload in split_frames(self.buffer, protocol.MAX_FRAME):
                if self.token is None:
                    self._hello(protocol.decode(payload))
                    continue
                verbatim = split_result(payload)
                if verbatim is not None:
                    call = self.calls.pop(verbatim[0], None)
                    if call is not None:
                        self.router.finish_verbatim(call, verbatim[1])
                    continue
                message = protocol.decode(payload)
                request_id = message.get("id")
                if not isinstance(request_id, int):
                    raise ProtocolError(f"a reply with the request id {request_id!r}")
                call = self.calls.pop(request_id, None)
                if call is not None:
                    self.router.finish(call, message)
        except ProtocolError:  # the instance's nonsense ends this connection (its calls: as if it died)
            self.close()

    def _hello(self, message: dict[str, Any]) -> None:
        try:
            token = protocol.token_of(message)
            protocol.check_version(message)
        except ProtocolError:
            self.close()
            return
        self.router.hello(self, token)

    def send(self, frame: bytes) -> None:
        if not self.out:  # one write per loop pass
            asyncio.get_running_loop().call_soon(self._flush)
        self.out.append(frame)

    def _flush(self) -> None:
        out, self.out = self.out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.router.disconnected(self)
        calls, self.calls = self.calls, {}
        for call in calls.values():
            self.router.lost(call)


class DirectRouter:
    """The worker's table and the calls it sent straight to instances."""

    def __init__(
        self,
        worker: Worker,
        render: Callable[[dict[str, Any]], bytes],
        render_result: Callable[[bytes], bytes],
    ) -> None:
        self.worker = worker
        self.render = render  # a reply as the node sends it ({"s", "r"} or {"s", "x"}) → HTTP
        self.render_result = render_result  # a result's JSON bytes → the HTTP 200 with them as its body
        self.node = ""
        self.timeout = 30.0
        self.timeout_json = b"30.0"
        self.routes: dict[tuple[str, str], _Route] = {}
        self.tokens: dict[str, tuple[str, int]] = {}
        self.links: dict[tuple[str, int], InstanceLink] = {}
        self.waiting: dict[str, InstanceLink] = {}  # connected with a token no table has named yet
        self.in_flight: dict[tuple[str, int], int] = collections.defaultdict(int)
        self.turns: dict[tuple[str, str], itertools.count[int]] = {}
        self.rng = random.Random()
        self.records: list[list[Any]] = []
        self._report: asyncio.Handle | None = None
        # (deadline, link, request id) of the calls sent, in the order sent: with one timeout for every
        # direct call that is deadline order, so one timer (at the first deadline) serves them all
        self.deadlines: collections.deque[tuple[float, InstanceLink, int]] = collections.deque()
        self._sweep: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ the table

    def update(self, table: dict[str, Any]) -> None:
        """Take a table from the node. Bad entries are left out (their calls go to the node)."""
        routes: dict[tuple[str, str], _Route] = {}
        for item in table.get("routes") or ():
            try:
                artifact_id, entry, strategy, instances = item
                endpoints, labels = [], {}
                for coordinates, instance, idempotent, label in instances:
                    endpoint = Endpoint(
                        coordinates=Coordinates.parse(coordinates),
                        entry=entry,
                        instance=int(instance),
                        node_id=str(table.get("node")),
                        idempotent=bool(idempotent),
                    )
                    endpoints.append(endpoint)
                    labels[endpoint.target] = str(label)
                route = _Route(str(entry), Balancing(strategy), tuple(endpoints), labels)
                routes[(artifact_id, entry)] = route
            except (TypeError, ValueError, InvalidCoordinatesError):
                continue
        self.routes = routes
        self.tokens = {
            str(token): (str(target[0]), int(target[1]))
            for token, target in (table.get("tokens") or {}).items()
        }
        self.node = str(table.get("node"))
        self.timeout = float(table.get("timeout") or 30.0)
        self.timeout_json = json.dumps(self.timeout).encode()
        for token in [token for token in self.waiting if token in self.tokens]:
            self.connected(self.waiting.pop(token), self.tokens[token])

    def hello(self, link: InstanceLink, token: str) -> None:
        """An instance connected with `token`; the table naming it may come a moment later (the node
        sends it before it asks the instance to attach, on another connection)."""
        link.token = token
        target = self.tokens.get(token)
        if target is None:
            self.waiting[token] = link
        else:
            self.connected(link, target)

    def connected(self, link: InstanceLink, target: tuple[str, int]) -> None:
        link.target = target
        old = self.links.get(link.target)
        self.links[link.target] = link
        if old is not None and old is not link:
            old.close()

    def disconnected(self, link: InstanceLink) -> None:
        if link.token is not None and self.waiting.get(link.token) is link:
            del self.waiting[link.token]
        if link.target is not None and self.links.get(link.target) is link:
            del self.links[link.target]

    # ------------------------------------------------------------ calls

    def try_call(
        self, conn: HttpConnection, slot: _Slot, artifact: str, entry: str, payload: Any, body: bytes | None
    ) -> bool:
        """Send the call straight to an instance if the table allows; False: the node must route it.
        `body`: the payload's JSON as UTF-8 bytes, passed on as it is (None: encode `payload`)."""
        route = self.routes.get((artifact, entry))
        if route is None:
            return False
        links = self.links
        for endpoint in route.endpoints:
            if endpoint.target not in links:
                return False
        turns = self.turns.get((artifact, entry))
        if turns is None:
            turns = self.turns[(artifact, entry)] = itertools.count()
        endpoint = choose(
            route.endpoints,
            route.strategy,
            local_node=self.node,
            in_flight=self.in_flight,
            turn=next(turns),
            rng=self.rng,
        )
        call = _DirectCall(conn, slot, artifact, entry, payload)
        call.endpoint, call.label = endpoint, route.labels[endpoint.target]
        link = links[endpoint.target]
        request_id = next(link.ids)
        frame = None
        if body is not None:
            data = route.invoke_head % (request_id, self.timeout_json) + body + b"}"
            if len(data) <= protocol.MAX_FRAME:
                frame = _HEAD.pack(len(data)) + data
        if frame is None:
            request = protocol.request(
                request_id, Kind.INVOKE, entry=entry, timeout=self.timeout, payload=payload
            )
            try:
                frame = protocol.encode(request)
            except ProtocolError as error:  # as the node's SliceHost.invoke says it
                message = f"{call.label}: the payload: {error}"
                self._answer(call, InvocationError(ErrorKind.BAD_REQUEST, message))
                return True
        loop = asyncio.get_running_loop()
        call.deadline = loop.time() + self.timeout
        deadlines = self.deadlines
        while deadlines and deadlines[0][2] not in deadlines[0][1].calls:  # answered already
            deadlines.popleft()
        deadlines.append((call.deadline, link, request_id))
        if self._sweep is None:
            self._sweep = loop.call_at(call.deadline, self._expire_due)
        link.calls[request_id] = call
        self.in_flight[endpoint.target] += 1
        link.send(frame)
        return True

    def finish_verbatim(self, call: _DirectCall, result: bytes) -> None:
        """The instance answered `result` (its JSON bytes, as the node would render them)."""
        self._done(call)
        self._record(call, None)
        call.conn.answer(call.slot, self.render_result(result))

    def finish(self, call: _DirectCall, reply: dict[str, Any]) -> None:
        self._done(call)
        if "error" not in reply:
            self._record(call, None)
            call.conn.answer(call.slot, self.render({"s": 200, "r": reply.get("ok")}))
            return
        failure = protocol.failure_of(reply)
        if failure.kind == HostErrorKind.STOPPED:  # it did not run: the node routes it again
            self._to_node(call)
            return
        self._answer(call, _call_error(failure))

    def _expire_due(self) -> None:
        """Time out the calls whose deadline passed; the timer then waits for the next one."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now, deadlines = loop.time(), self.deadlines
        while deadlines:
            deadline, link, request_id = deadlines[0]
            if request_id in link.calls and deadline > now:
                self._sweep = loop.call_at(deadline, self._expire_due)
                return
            deadlines.popleft()
            call = link.calls.pop(request_id, None)
            if call is not None:
                self._expire(call)

    def _expire(self, call: _DirectCall) -> None:
        self._done(call)
        message = f"{call.label}: {call.entry} did not answer within {self.timeout:.3g} s"
        self._answer(call, InvocationError(ErrorKind.TIMEOUT, message))

    def lost(self, call: _DirectCall) -> None:
        """Its instance's connection closed with the call in flight: it may have run."""
        self._done(call)
        assert call.endpoint is not None
        if may_retry(reached=True, idempotent=call.endpoint.idempotent):
            self._to_node(call)
            return
        message = f"{call.label}: the slice process died during invoke (its connection closed)"
        self._answer(call, InvocationError(ErrorKind.UNAVAILABLE, message))

    def _to_node(self, call: _DirectCall) -> None:
        if call.conn.closed:  # the client went away: nobody waits for the answer
            return
        remaining = call.deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            message = f"{call.artifact}/{call.entry}: no answer within {self.timeout:g} s"
            self._answer(call, InvocationError(ErrorKind.TIMEOUT, message))
            return
        query = b"timeout=%r" % min(remaining, 3600.0)
        self.worker.forward_payload(call.conn, call.slot, call.artifact, call.entry, call.payload, query)

    def _done(self, call: _DirectCall) -> None:
        assert call.endpoint is not None
        self.in_flight[call.endpoint.target] -= 1

    def _answer(self, call: _DirectCall, error: InvocationError) -> None:
        self._record(call, error.kind)
        call.conn.answer(call.slot, self.render({"s": http_status(error.kind), "x": error.to_wire()}))

    def fail_all(self, data: bytes) -> None:
        """The worker is stopping: answer every call in flight with `data`."""
        for link in list(self.links.values()):
            calls, link.calls = link.calls, {}
            for call in calls.values():
                call.conn.answer(call.slot, data)

    # ------------------------------------------------------------ metrics for the node

    def _record(self, call: _DirectCall, kind: str | None) -> None:
        self.records.append([call.artifact, call.entry, time.perf_counter() - call.started, kind])
        if len(self.records) >= METRICS_BATCH:
            self.report()
        elif self._report is None:
            self._report = asyncio.get_running_loop().call_later(METRICS_EVERY, self.report)

    def report(self) -> None:
        """Send the call records (and calls in flight per artifact) to the node."""
        if self._report is not None:
            self._report.cancel()
            self._report = None
        records, self.records = self.records, []
        in_flight: dict[str, int] = {}
        for (coordinates, _), count in self.in_flight.items():
            if count:
                artifact_id = coordinates.rsplit(":", 1)[0]
                in_flight[artifact_id] = in_flight.get(artifact_id, 0) + count
        self.worker.send_message({"m": records, "f": in_flight})
