"""The client protocol's wire format: length-prefixed JSON frames, the secret handshake, and the codec
between records and JSON (one cattrs converter). No sockets are opened here; `FramedStream` wraps any
trio stream.

Frame: 4-byte big-endian length, then that many bytes of UTF-8 JSON (an object). Bytes (values) travel as
base64 strings. A message longer than one frame (a range over many keys, a watch batch of large values)
goes as several frames: the high bit of the length says "more of this message follows", and the
receiver joins the pieces before decoding, up to its own limit for a whole message.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import secrets
import struct
from collections.abc import Callable
from typing import Any, TypeVar

import cattrs
import trio
from cattrs.strategies import configure_tagged_union

from ._errors import (
    ERRORS_BY_CODE,
    AuthenticationError,
    CompactedError,
    InvalidRequestError,
    KVError,
    UnavailableError,
)
from ._records import (
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    DeletePrefix,
    DeleteResult,
    Event,
    EventKind,
    Get,
    GetResult,
    KeyValue,
    Put,
    PutResult,
    Range,
    RangeResult,
    TxnOp,
    TxnOpResult,
)

T = TypeVar("T")
PROTOCOL = "aether-kv/1"
MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # an answer of the KV, in frames of at most MAX_FRAME_BYTES
MAX_HANDSHAKE_BYTES = 4096  # the largest message before the other end has proved the secret (a proof: ~90 B)
MAX_STATUS_WAIT = 60.0  # the longest a status request may wait for a change of leadership or term
_HEADER = struct.Struct(">I")
_MORE = 0x8000_0000  # in a frame's length: the message goes on in the next frame


class FrameTooLargeError(InvalidRequestError):
    """A frame or a message over its limit; the connection cannot be resynchronised."""


DECODE_IN_THREAD = 256 * 1024  # a message of this many bytes or more is decoded in a worker thread


_encode_json = json.JSONEncoder(separators=(",", ":")).encode  # (one encoder: json.dumps makes one per call)


def _encode_message(message: dict[str, Any]) -> bytes:
    return _encode_json(message).encode()


def _decode_message(payload: bytes, loads: Callable[[str], Any] = json.loads) -> dict[str, Any]:
    """The object in one message's payload. Raises InvalidRequestError."""
    try:
        message = loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidRequestError(f"frame is not valid JSON (UTF-8): {error}") from None
    except RecursionError:
        raise InvalidRequestError("frame is nested too deeply") from None
    if not isinstance(message, dict):
        raise InvalidRequestError(f"frame must be a JSON object, got {type(message).__name__}")
    return message


class FramedStream:
    """JSON objects over a trio stream. `send` is safe to call from several tasks at once.

    A frame holds at most `max_frame` bytes; a message over that goes as several frames. `max_send` and
    `max_receive` bound a whole message each way (both `max_frame` unless said: one frame, as before
    messages could span frames). The KV server sends answers up to MAX_MESSAGE_BYTES and its client
    receives them; requests stay within one frame."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        max_frame: int = MAX_FRAME_BYTES,
        max_send: int | None = None,
        max_receive: int | None = None,
        loads_big: Callable[[str], Any] = json.loads,
    ) -> None:
        """`loads_big` reads a message of DECODE_IN_THREAD bytes or more, in a worker thread: one that
        gives `json.loads`'s values while letting the event loop's thread run (one call of the json
        module's C parser holds the GIL to its end)."""
        self.loads_big = loads_big
        self.stream = stream
        self.max_frame = max_frame
        self.max_send = max_frame if max_send is None else max_send
        self.max_receive = max_frame if max_receive is None else max_receive
        self._buffer = bytearray()
        self._send_lock = trio.Lock()
        self.broken = False  # a message was cut short (cancelled or failed while written): unusable now

    async def send(self, message: dict[str, Any], *, writing: Callable[[], None] | None = None) -> None:
        """Send one object. Raises FrameTooLargeError, sending nothing, if it is over `max_send` (the
        other end would drop the connection, and the request would look unanswered). `writing` is
        called as its first byte is about to go: before that, nothing of it was written."""
        await self.send_payload(_encode_message(message), writing=writing)

    async def send_payload(self, payload: bytes, *, writing: Callable[[], None] | None = None) -> None:
        """Send one object already encoded as JSON (UTF-8): `send` without the encoding, for a message
        built from shared pieces (a watch's events, `events_message`)."""
        if len(payload) > self.max_send:
            raise FrameTooLargeError(
                f"the message is {len(payload)} bytes, over the limit of {self.max_send} bytes"
                " (a range that large: ask for fewer keys with a narrower prefix or a limit)"
            )
        async with self._send_lock:  # (cancelled while it waits here: nothing written, still usable)
            await trio.lowlevel.checkpoint_if_cancelled()  # (nor cancelled as it got the lock)
            if self.broken:
                raise trio.BrokenResourceError("an earlier message on this connection was cut short")
            if writing is not None:
                writing()
            try:
                if len(payload) <= self.max_frame:
                    await self.stream.send_all(_HEADER.pack(len(payload)) + payload)
                    return
                view = memoryview(payload)
                for start in range(0, len(payload), self.max_frame):
                    piece = view[start : start + self.max_frame]
                    more = _MORE if start + self.max_frame < len(payload) else 0
                    await self.stream.send_all(_HEADER.pack(len(piece) | more) + piece)
            except BaseException:
                self.broken = True  # (part of a frame may be out: the other end would misread what follows)
                raise

    async def receive(self) -> dict[str, Any] | None:
        """The next object, or None at a clean end of stream. Raises InvalidRequestError on garbage."""
        payload = await self._read_message()
        if payload is None:
            return None
        if len(payload) >= DECODE_IN_THREAD:  # (~10 ms of parsing and more: the loop keeps serving)
            return await trio.to_thread.run_sync(_decode_message, payload, self.loads_big)
        return _decode_message(payload)

    async def _read_message(self) -> bytes | None:
        """The payload of the next message, its frames joined; None at a clean end of stream."""
        pieces: list[bytes] = []
        total = 0
        while True:
            header = await self._read_exactly(_HEADER.size)
            if header is None:
                if pieces:
                    raise InvalidRequestError("connection closed in the middle of a message")
                return None
            (word,) = _HEADER.unpack(header)
            size, more = word & ~_MORE, bool(word & _MORE)
            if more and size == 0:  # no sender cuts an empty piece; endless ones would only grow `pieces`
                raise InvalidRequestError("an empty piece of a message in frames")
            if size > self.max_frame:
                raise FrameTooLargeError(f"frame of {size} bytes is over the limit of {self.max_frame} bytes")
            total += size
            if total > self.max_receive:
                raise FrameTooLargeError(
                    f"a message of more than {self.max_receive} bytes (the limit) is arriving"
                )
            payload = await self._read_exactly(size)
            if payload is None:
                raise InvalidRequestError("connection closed in the middle of a frame")
            if not more:
                return payload if not pieces else b"".join([*pieces, payload])
            pieces.append(payload)

    async def _read_exactly(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            chunk = await self.stream.receive_some(max(65536, size - len(self._buffer)))
            if not chunk:
                if self._buffer:
                    raise InvalidRequestError("connection closed in the middle of a frame")
                return None
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def aclose(self) -> None:
        await self.stream.aclose()


# ------------------------------------------------------------------ handshake


def new_nonce() -> str:
    return secrets.token_hex(16)


def proof(secret: str, nonce: str) -> str:
    return hmac.new(secret.encode(), f"{PROTOCOL}:{nonce}".encode(), hashlib.sha256).hexdigest()


def proof_ok(secret: str, nonce: str, candidate: object) -> bool:
    return isinstance(candidate, str) and hmac.compare_digest(proof(secret, nonce), candidate)


async def server_handshake(
    framed: FramedStream, secret: str, server_name: str, *, timeout: float = 5.0
) -> bool:
    """Challenge a new connection for an HMAC proof of the cluster secret; answer ok or an error.
    Returns whether the peer proved it knows the secret."""
    nonce = new_nonce()
    await framed.send({"hello": PROTOCOL, "nonce": nonce})
    answer = None
    with trio.move_on_after(timeout):
        try:
            answer = await framed.receive()
        except FrameTooLargeError as error:  # before the proof, only small frames
            await framed.send({"id": None, "error": error_body(error)})
            return False
    if answer is None:
        return False
    if not proof_ok(secret, nonce, answer.get("auth")):
        error = AuthenticationError("wrong or missing cluster secret; connection refused")
        await framed.send({"id": None, "error": error_body(error)})
        return False
    await framed.send({"ok": {"server": server_name}})
    return True


async def client_handshake(framed: FramedStream, secret: str, endpoint: str) -> None:
    """Answer a server's challenge; raises AuthenticationError if the secret is refused."""
    hello = await framed.receive()
    if hello is None or "nonce" not in hello:
        raise InvalidRequestError(f"{endpoint} does not speak {PROTOCOL}")
    await framed.send({"auth": proof(secret, str(hello["nonce"]))})
    answer = await framed.receive()
    if answer is None or "error" in answer:
        error = error_from_body(answer["error"]) if answer else None
        if isinstance(error, AuthenticationError) or answer is None:
            raise AuthenticationError(f"{endpoint} refused the cluster secret: check --secret-file")
        raise error or InvalidRequestError("handshake failed")


# ------------------------------------------------------------------ codec

converter = cattrs.Converter()
converter.register_unstructure_hook(bytes, lambda b: base64.b64encode(b).decode("ascii"))


def _structure_bytes(value: object, _type: object) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequestError(f"expected a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("not valid base64") from None


converter.register_structure_hook(bytes, _structure_bytes)


def _strict(kind: type, *accepted: type) -> None:
    """JSON types must match exactly: no "7" for 7, no true for 1, no null for a string."""
    allowed = accepted or (kind,)

    def structure(value: object, _type: object) -> object:
        if isinstance(value, bool) and bool not in allowed:
            raise InvalidRequestError(f"expected {kind.__name__}, got a boolean")
        if not isinstance(value, allowed):
            raise InvalidRequestError(f"expected {kind.__name__}, got {type(value).__name__}")
        return kind(value)  # type: ignore[call-arg]

    converter.register_structure_hook(kind, structure)


_strict(str)
_strict(int)
_strict(bool)
_strict(float, int, float)


def _structure_enum(value: object, cls: type[enum.Enum]) -> enum.Enum:
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(repr(member.value) for member in cls)
        raise InvalidRequestError(f"expected one of {choices}, got {value!r}") from None


# StrEnum before str in the MRO: enums are checked against their members, not taken as any string.
converter.register_structure_hook(enum.StrEnum, _structure_enum)

_OP_NAMES: dict[type, str] = {
    Get: "get",
    Range: "range",
    Put: "put",
    Delete: "delete",
    DeletePrefix: "delete_prefix",
}
_RESULT_NAMES: dict[type, str] = {
    GetResult: "get",
    RangeResult: "range",
    PutResult: "put",
    DeleteResult: "delete",
}
configure_tagged_union(TxnOp, converter, tag_generator=lambda cls: _OP_NAMES[cls], tag_name="op")
configure_tagged_union(
    TxnOpResult,
    converter,
    tag_generator=lambda cls: _RESULT_NAMES[cls],
    tag_name="type",
)


def _unstructure_compare(compare: Compare) -> dict[str, Any]:
    operand = compare.operand
    if isinstance(operand, bytes):
        operand = base64.b64encode(operand).decode("ascii")
    return {"key": compare.key, "target": str(compare.target), "op": str(compare.op), "operand": operand}


def _structure_compare(data: object, _type: object) -> Compare:
    if not isinstance(data, dict):
        raise InvalidRequestError(f"a compare must be an object, got {type(data).__name__}")
    unknown = set(data) - {"key", "target", "op", "operand"}
    if unknown:
        raise InvalidRequestError(f"unknown compare field(s): {', '.join(sorted(unknown))}")
    try:
        target = CompareTarget(data.get("target"))
    except ValueError:
        choices = ", ".join(t.value for t in CompareTarget)
        raise InvalidRequestError(f"target: must be one of {choices}, got {data.get('target')!r}") from None
    try:
        op = CompareOp(data.get("op", "=="))
    except ValueError:
        choices = ", ".join(o.value for o in CompareOp)
        raise InvalidRequestError(f"op: must be one of {choices}, got {data.get('op')!r}") from None
    operand = data.get("operand", True)
    if target is CompareTarget.VALUE:
        operand = _structure_bytes(operand, bytes)
    return Compare(key=data.get("key"), target=target, op=op, operand=operand)  # type: ignore[arg-type]


converter.register_unstructure_hook(Compare, _unstructure_compare)
converter.register_structure_hook(Compare, _structure_compare)


def encode(record: object) -> Any:
    return converter.unstructure(record)


def encode_txn_op(op: TxnOp) -> Any:
    """A txn operation with its "op" tag (the tag is only added when the union type is named)."""
    return converter.unstructure(op, TxnOp)  # type: ignore[arg-type]


def decode(data: object, cls: type[T], where: str) -> T:
    """JSON → record; any mismatch becomes InvalidRequestError naming `where`."""
    try:
        return converter.structure(data, cls)
    except InvalidRequestError as error:
        raise InvalidRequestError(f"{where}: {error.message}") from None
    except KeyError as error:
        if isinstance(data, dict) and error.args[0] not in data.values():
            raise InvalidRequestError(f"{where}: missing field {error.args[0]!r}") from None
        names = ", ".join(_OP_NAMES.values())
        raise InvalidRequestError(
            f"{where}: unknown op {error.args[0]!r} (expected one of {names})"
        ) from None
    except (cattrs.BaseValidationError, ValueError, TypeError) as error:
        raise InvalidRequestError(f"{where}: {_describe(error)}") from None


def _format_exception(error: BaseException, type_: object) -> str:
    if isinstance(error, KVError):
        return error.message
    return cattrs.v.format_exception(error, type_)


def _describe(error: BaseException) -> str:
    if isinstance(error, cattrs.BaseValidationError):
        notes = cattrs.transform_error(error, format_exception=_format_exception)
        return "; ".join(notes) if notes else str(error)
    return str(error)


def encode_events(events: list[Event]) -> list[Any]:
    return converter.unstructure(events)


_escape = json.encoder.encode_basestring_ascii  # (what json.dumps does to a str, in C)
_KEY_VALUE_JSON = '{"key":%s,"value":"%s","create_revision":%d,"mod_revision":%d,"version":%d,"lease":%d}'


def encode_event(event: Event) -> bytes:
    """One watch event as JSON bytes: what `encode_events` makes of it, written directly (~4x as fast
    as through the converter and json.dumps), so a replica can encode an event once and splice the
    bytes into the message of every watch that sees it (`events_message`)."""
    prev = "null" if event.prev is None else _key_value_json(event.prev)
    return (
        f'{{"kind":"{event.kind.value}","kv":{_key_value_json(event.kv)},"prev":{prev},'
        f'"revision":{event.revision:d}}}'
    ).encode("ascii")


def _key_value_json(kv: KeyValue) -> str:
    return _KEY_VALUE_JSON % (
        _escape(kv.key),
        base64.b64encode(kv.value).decode("ascii"),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease,
    )


def events_message(request_id: int, events: bytes) -> bytes:
    """A watch's message of events, `events` being their `encode_event`s joined by commas: the same JSON
    as `{"id": request_id, "events": encode_events(...)}`, with only the small header per watch."""
    return b'{"id":%d,"events":[%b]}' % (request_id, events)


def decode_events(data: object) -> list[Event]:
    """Watch events from their JSON. Well-formed ones (what a replica sends: every node decodes every
    change it watches) are built directly, ~1.8x as fast as through the converter; anything else goes
    through the converter, which decodes it the same way or says what is wrong."""
    try:
        return [_plain_event(item) for item in data]  # type: ignore[attr-defined]
    except Exception:  # (not only a list of well-formed events: the converter's answer is the answer)
        return decode(data, list[Event], "events")


_EVENT_KINDS = {kind.value: kind for kind in EventKind}


def _plain_event(item: Any) -> Event:
    """The event `item` is, if every field has exactly its JSON type; raises otherwise (any error)."""
    prev, revision = item["prev"], item["revision"]
    if type(revision) is not int:
        raise TypeError("revision")
    return Event(
        kind=_EVENT_KINDS[item["kind"]],
        kv=_plain_key_value(item["kv"]),
        prev=None if prev is None else _plain_key_value(prev),
        revision=revision,
    )


def _plain_key_value(item: Any) -> KeyValue:
    key, value, lease = item["key"], item["value"], item.get("lease", 0)
    created, modified, version = item["create_revision"], item["mod_revision"], item["version"]
    if type(key) is not str or type(value) is not str:
        raise TypeError("key or value")
    if type(created) is not int or type(modified) is not int or type(version) is not int:
        raise TypeError("revisions")
    if type(lease) is not int:
        raise TypeError("lease")
    return KeyValue(
        key=key,
        value=base64.b64decode(value, validate=True),
        create_revision=created,
        mod_revision=modified,
        version=version,
        lease=lease,
    )


def error_body(error: KVError) -> dict[str, Any]:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    compact_revision = getattr(error, "compact_revision", None)
    if compact_revision is not None:
        body["compact_revision"] = compact_revision
    replicas = getattr(error, "replicas", None)
    if replicas:
        body["replicas"] = list(replicas)
    return body


def error_from_body(body: object) -> KVError:
    if not isinstance(body, dict):
        return KVError(f"malformed error from server: {body!r}")
    cls = ERRORS_BY_CODE.get(str(body.get("code")), KVError)
    message = str(body.get("message", "unknown error"))
    if cls is CompactedError:
        revision = body.get("compact_revision")
        return CompactedError(message, compact_revision=revision if isinstance(revision, int) else 0)
    if issubclass(cls, UnavailableError):  # DiskFullError too
        replicas = body.get("replicas")
        return cls(message, replicas=tuple(map(str, replicas)) if isinstance(replicas, list) else ())
    return cls(message)
