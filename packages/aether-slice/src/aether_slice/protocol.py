"""The slice host protocol: the one definition of what a node, its slice processes and the `slice_host`
test fixture say to each other. Pure: frames and messages in, frames and messages out; no sockets, no
processes, no event loop. Standard library only: it runs inside every slice's virtualenv.

Frame: a 4-byte big-endian length, then that many bytes of UTF-8 JSON holding one object; at most
`MAX_FRAME` (16 MiB) unless a link says otherwise (the fast ingress's link, which reuses these frames,
allows more). `encode` refuses to build a frame over the limit, or of what is not JSON (NaN and the
infinities included), and `FrameDecoder` refuses to read one over the limit, both with `ProtocolError`;
so does every malformed frame (cut short, not JSON, not an object).

Messages (`Kind` names each; `kind_of` tells which one a message is, or raises ProtocolError):

    HELLO    instance → ingress worker, first on an attached connection {"hello": token, "pid", "version"}
    LOAD     node → instance          {"id": int, "op": "load", "entry_point", "coordinates", "instance",
                                       "config"} → REPLY {"entry_points": [{"name", "idempotent"}], "pid",
                                       "version"}: the instance's pid and the version it speaks come
                                       with its first answer (the template does not answer a FORK)
    START    node → instance          {"id", "op": "start"}: the aether_start hook → REPLY {}
    STOP     node → instance          {"id", "op": "stop"}: the aether_stop hook → REPLY {}
    INVOKE   node → instance          {"id", "op": "invoke", "entry", "payload"[, "timeout"][, "depth"]}
                                       → REPLY the result. `timeout`: the seconds the caller waits (a
                                       call the entry point makes to another slice gets no more than
                                       what is left of them); `depth`: how many slice-to-slice calls
                                       led to this one (absent: 0, a call from outside)
    HEALTH   node → instance          {"id", "op": "health"} → REPLY {"pid", "max_rss_kib", "cpu_s"}
    CALL     instance → node          {"id": "c<n>", "op": "call", "artifact", "entry", "payload",
                                       "timeout"[, "depth"]}: a slice calling another slice through the
                                       cluster; `depth` is the INVOKE's it serves + 1 (absent: 1). A
                                       call deeper than `MAX_CALL_DEPTH` is refused, by the instance
                                       and by the node: a slice calling itself, directly or through
                                       others, would otherwise call on until every node ran short
    FORK     node → template          {"id", "op": "fork", "config", "version"[, "name"][, "cgroup"]},
                                       sent with two
                                       descriptors
                                       (SCM_RIGHTS, `FORK_FDS`): the instance's end of its connection to
                                       the node (a connected Unix stream socket: no HELLO on it) and its
                                       stdout and stderr (the node's pipe into the instance's log); the
                                       child takes `name` as its process name (Linux: 15 bytes) and
                                       joins the memory cgroup at `cgroup` (a directory in cgroupfs:
                                       its memory limit) before anything else
                                       → no answer if it forked; ERROR "protocol" if it refused: a FORK
                                       of another version, or (a template that imported the slice,
                                       --preload) an instance of another config
    KILL     node → template          {"id", "op": "kill", "fork": the FORK's id}: SIGKILL that child's
                                       process group (one whose pid the node does not know yet: its LOAD
                                       unanswered) → no answer (its EXIT follows)
    ATTACH   node → instance          {"id", "op": "attach", "socket", "token"}: open a second connection
                                       to that Unix socket (the node's ingress worker), say HELLO there
                                       with the token, and serve INVOKE on it too → REPLY {} once sent.
                                       After STOP an attached connection answers INVOKE with the ERROR
                                       kind "stopped" (the call did not run: its caller routes it again).
    REPLY    the side asked           {"id", "ok": result}
    ERROR    the side asked           {"id", "error": {"kind", "message"[, "detail"][, "type"]}}
    EXIT     template → node          {"event": "exit", "pid", "code", "fork": the FORK's id} (code < 0:
                                       killed by that signal)

Every request but FORK and KILL gets exactly one REPLY or ERROR with its id (a FORK only an ERROR, if
refused). The error kinds a slice process answers with
are `HostErrorKind`; the node answers a CALL with the kinds of its own error vocabulary.

`VERSION` is the protocol's version, carried by HELLO, by FORK and by an instance's answer to LOAD; a
peer speaking another version is refused (the template refuses a FORK of another version, the node an
answer to LOAD of another). A message without one is version 1: the runners before versions were
named spoke it. Version 2: FORK passes the instance its connection and its output as descriptors
(version 1 named a socket path, a token and a log path, and the instance connected and said HELLO).
Version 3: the template answers FORK only to refuse it; the instance's pid and version come with its
answer to LOAD, EXIT names the FORK, and KILL ends a child by its FORK (a version 2 template answered
FORK with the pid and the version, and its instances answered LOAD without them).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import signal
import struct
from collections.abc import Callable
from typing import Any

VERSION = 3
FORK_FDS = 2  # the descriptors a FORK carries: the instance's connection, then its output
HEADER = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024
#: The most slice-to-slice calls one call from outside may lead to, one behind the other (see CALL).
MAX_CALL_DEPTH = 32
#: The most calls to other slices one instance may have in flight through its node (CALLs not answered
#: yet); one more is answered at once with an `unavailable` error, never sent.
MAX_CALLS_IN_FLIGHT = 1000

# one encoder for every frame (json.dumps would build an encoder per call). Text goes as UTF-8, not
# escaped (a frame of non-ASCII text stays a third of the size); a lone surrogate, which JSON text may
# carry, is passed through ("surrogatepass", as json.loads reads bytes). Strict: NaN and the infinities
# are not JSON (Python would write them as NaN and Infinity, which no other JSON reader, and no HTTP
# answer of the node, takes), so a message holding one is refused like any other that is not JSON.
encode_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_NOT_FINITE = "Out of range float values are not JSON compliant"  # what the encoder says of them


class ProtocolError(Exception):
    """A frame or a message breaks the protocol: over the size limit, cut short, not JSON, not an object,
    of no known kind, or from another version. Raised by this module; whose fault it is depends on the
    side that sent it (the reader's caller says, e.g. "the slice process sent ...")."""


class Kind(enum.StrEnum):
    """What a message is. The requests' kinds are their "op" values on the wire."""

    HELLO = "hello"
    LOAD = "load"
    START = "start"
    STOP = "stop"
    INVOKE = "invoke"
    HEALTH = "health"
    CALL = "call"
    FORK = "fork"
    KILL = "kill"
    ATTACH = "attach"
    REPLY = "reply"
    ERROR = "error"
    EXIT = "exit"


REQUESTS = frozenset(
    {Kind.LOAD, Kind.START, Kind.STOP, Kind.INVOKE, Kind.HEALTH, Kind.CALL, Kind.FORK, Kind.KILL, Kind.ATTACH}
)
_OPS = {str(kind): kind for kind in REQUESTS}


class HostErrorKind(enum.StrEnum):
    """The kinds of error a slice process answers a request with."""

    RAISED = "raised"  # an entry point or hook raised; "type" names the exception, "detail" the traceback
    NO_ENTRY = "no_entry"  # no such entry point
    BAD_RESULT = "bad_result"  # the result is not JSON (NaN, Infinity are not), or over the frame limit
    ENTRY_POINT = "entry_point"  # the slice is not installed, or aether_entry_points is wrong
    IMPORT = "import"  # importing the slice failed
    PROTOCOL = "protocol"  # a request this runner does not understand
    STOPPED = "stopped"  # an invoke on an attached connection after STOP: it did not run


# ------------------------------------------------------------------ frames


def encode(
    message: dict[str, Any], *, max_frame: int = MAX_FRAME, json_text: Callable[[Any], str] = encode_json
) -> bytes:
    """One frame holding `message`. Raises ProtocolError if it is not JSON (NaN and the infinities are
    not) or over `max_frame` bytes. `json_text`: what writes the JSON, `encode_json` or one that writes
    the same text (a node writes a big message in pieces, to let other threads run meanwhile)."""
    try:
        payload = json_text(message).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError) as error:
        why = str(error)
        if why.startswith(_NOT_FINITE):
            why = "it holds NaN or Infinity, which JSON has no value for"
        raise ProtocolError(f"the message is not JSON: {why}") from None
    except RecursionError:  # (a RuntimeError: it ended the slice process that wrote the answer)
        raise ProtocolError("the message is not JSON: it is nested too deeply to be written") from None
    if len(payload) > max_frame:
        raise ProtocolError(f"a frame of {len(payload)} bytes is over the limit of {max_frame}")
    return HEADER.pack(len(payload)) + payload


def decode(payload: bytes | bytearray, *, json_value: Callable[[str], Any] = json.loads) -> dict[str, Any]:
    """The message in one frame's payload (without its length). Raises ProtocolError. `json_value`: what
    reads the JSON, `json.loads` or one that gives the same values."""
    try:
        message = json_value(payload.decode("utf-8", "surrogatepass"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:  # (too deeply nested)
        raise ProtocolError(f"a frame is not valid JSON (UTF-8): {error}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"a frame must hold a JSON object, got {type(message).__name__}")
    return message


class FrameDecoder:
    """Frames out of a byte stream, fed as it arrives (no I/O: the caller reads and feeds).

    `feed` the bytes read, then take messages with `next` until it returns None; at end of stream call
    `end`, which raises if a frame was cut short. After a ProtocolError about a frame's size the stream
    cannot be read on; after one about a frame's content (not JSON, not an object) it can.
    """

    __slots__ = ("_buffer", "_start", "max_frame")

    def __init__(self, *, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._start = 0  # where the unread bytes begin: consumed frames are dropped once per feed

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._start:
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data

    def next(self) -> dict[str, Any] | None:
        """The next whole frame's message, or None until more bytes are fed. Raises ProtocolError."""
        payload = self.next_payload()
        return None if payload is None else decode(payload)

    def next_payload(self) -> bytearray | None:
        """The next whole frame's payload, not decoded (`decode` it: a reader may do so in another
        thread), or None until more bytes are fed. Raises ProtocolError for a frame over the limit."""
        buffer, start = self._buffer, self._start
        if len(buffer) - start < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(buffer, start)
        if size > self.max_frame:
            raise ProtocolError(f"a frame of {size} bytes is over the limit of {self.max_frame}")
        end = start + HEADER.size + size
        if len(buffer) < end:
            return None
        self._start = end
        return buffer[start + HEADER.size : end]

    @property
    def buffered(self) -> int:
        """How many bytes are held that no message has been taken from."""
        return len(self._buffer) - self._start

    def end(self) -> None:
        """The stream ended: raises ProtocolError if it ended in the middle of a frame."""
        if self.buffered:
            raise ProtocolError(f"the stream ended in the middle of a frame ({self.buffered} bytes of it)")


# ------------------------------------------------------------------ messages


def kind_of(message: dict[str, Any]) -> Kind:
    """What `message` is (see the table above). Raises ProtocolError for one of no known kind."""
    op = message.get("op")
    if op is not None:
        kind = _OPS.get(op) if isinstance(op, str) else None
        if kind is None:
            known = ", ".join(sorted(_OPS))
            raise ProtocolError(f"unknown operation {op!r} (known: {known})")
        return kind
    if "ok" in message:
        return Kind.REPLY
    if "error" in message:
        return Kind.ERROR
    if "hello" in message:
        return Kind.HELLO
    if message.get("event") == "exit":
        return Kind.EXIT
    raise ProtocolError(f"a message of no known kind (its keys: {', '.join(sorted(message)) or 'none'})")


def request(request_id: int | str, op: Kind, **fields: Any) -> dict[str, Any]:
    """A request: {"id", "op", **fields}."""
    return {"id": request_id, "op": op, **fields}


def reply(request_id: Any, result: Any) -> dict[str, Any]:
    """The answer to a request that succeeded."""
    return {"id": request_id, "ok": result}


def error_reply(
    request_id: Any, kind: str, message: str, *, detail: str | None = None, type: str | None = None
) -> dict[str, Any]:
    """The answer to a request that failed; `type` names the exception a slice raised."""
    body: dict[str, str] = {"kind": str(kind), "message": message}
    if detail is not None:
        body["detail"] = detail
    if type is not None:
        body["type"] = type
    return {"id": request_id, "error": body}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Failure:
    """An ERROR message's error, read leniently (a missing field gets a default)."""

    kind: str
    message: str
    detail: str | None = None
    type: str | None = None

    @property
    def text(self) -> str:
        """The message, prefixed with the exception's type unless it starts with it already."""
        if self.type and not self.message.startswith(self.type):
            return f"{self.type}: {self.message}"
        return self.message


def failure_of(message: dict[str, Any], *, default_kind: str = HostErrorKind.RAISED) -> Failure:
    """The error an ERROR message carries."""
    body = message.get("error")
    if not isinstance(body, dict):
        body = {"message": str(body)}
    remote_type = body.get("type")
    detail = body.get("detail")
    return Failure(
        kind=str(body.get("kind") or default_kind),
        message=str(body.get("message", "failed")),
        detail=None if detail is None else str(detail),
        type=None if remote_type is None else str(remote_type),
    )


def call_depth_of(message: dict[str, Any], *, absent: int = 0) -> int:
    """The `depth` of an INVOKE or a CALL (`absent` if it has none); raises ProtocolError if it is not a
    count."""
    depth = message.get("depth", absent)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ProtocolError(f"depth: expected a count of calls, got {depth!r}")
    return depth


def too_deep(depth: int, artifact: str, entry: str) -> str | None:
    """Why a call of `entry` of `artifact` at `depth` is refused (None: it is not too deep)."""
    if depth <= MAX_CALL_DEPTH:
        return None
    return (
        f"call to {artifact}/{entry} refused: it would be call {depth} in a chain of slice-to-slice calls"
        f" (at most {MAX_CALL_DEPTH}); does a slice call itself, directly or through others?"
    )


def hello(token: str, pid: int) -> dict[str, Any]:
    """An instance's first message on its node's socket."""
    return {"hello": token, "pid": pid, "version": VERSION}


def token_of(message: dict[str, Any] | None) -> str:
    """The token of an instance's HELLO. Raises ProtocolError if the message is no HELLO."""
    if message is None or "op" in message or not isinstance(message.get("hello"), str):
        raise ProtocolError("an instance's first message must be its hello, with its token")
    return message["hello"]


def check_version(message: dict[str, Any], *, unnamed: int = 1) -> None:
    """Raises ProtocolError if a HELLO, an instance's answer to LOAD, or a FORK is of another version of
    the protocol than this side's; `unnamed` is the version of a message that names none (a HELLO
    without one is version 1; an answer to LOAD without one, version 2)."""
    version = message.get("version", unnamed)
    if version != VERSION:
        raise ProtocolError(
            f"the slice process speaks host protocol version {version!r} and this side version {VERSION}:"
            " run the slice with the aether-slice of its node"
        )


def fork(
    request_id: int, config: dict[str, Any], name: str | None = None, cgroup: str | None = None
) -> dict[str, Any]:
    """The node's FORK (sent with the child's two descriptors), naming the version the node speaks."""
    fields: dict[str, Any] = {"config": config, "version": VERSION}
    if name is not None:
        fields["name"] = name
    if cgroup is not None:
        fields["cgroup"] = cgroup
    return request(request_id, Kind.FORK, **fields)


def refuse_fork_of_another_version(request: dict[str, Any]) -> str | None:
    """Why a template refuses `request` (a FORK) for its version, or None if it speaks this one."""
    version = request.get("version")
    if version == VERSION:
        return None
    if version is None:
        version = "2 or older (it names none)"
    return (
        f"the node speaks host protocol version {version} and this slice's aether-slice version {VERSION}:"
        " run the slice with the aether-slice of its node"
    )


def loaded(entry_points: list[dict[str, Any]], pid: int) -> dict[str, Any]:
    """An instance's answer to LOAD: its entry points, its pid and the version it speaks."""
    return {"entry_points": entry_points, "pid": pid, "version": VERSION}


def exit_event(pid: int, code: int, fork_id: Any = None) -> dict[str, Any]:
    """The template's word that a child it forked (for FORK `fork_id`) ended (code < 0: killed by that
    signal)."""
    return {"event": "exit", "pid": pid, "code": code, "fork": fork_id}


def describe_exit(code: int) -> str:
    """An EXIT event's code in words: "exit code 3", "killed by SIGKILL"."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
