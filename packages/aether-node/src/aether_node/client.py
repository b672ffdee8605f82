"""The management API's client and its typed models: what the `aether` CLI and the MCP service import.

Imports nothing server-side (no trio, no KV, no slice runtime): the standard library and attrs only, so
the CLI starts fast and runs anywhere; and at import, neither urllib.request nor http.client nor a model
(each group of models is built when first asked for). `ApiClient` fails over across several node URLs.

Resending (docs/ARCHITECTURE.md): a request that certainly never reached a node (the connection
could not be made) goes to the next node. A request that may have been received (the connection was made,
then no answer came in time, or the connection dropped) is resent only if the operation is idempotent:
every GET, and the management operations that are idempotent by construction (apply, validate and
diff a blueprint, delete one, roll one back to a named revision, scale a slice, cordon, drain or
uncordon a node, set the reconciliation policy, rebalance, take or release the agent lease; the changes
among them are sent "as of" the revision read just before, `_guarded`, so that a late copy run by a node
that was frozen never lands over a later change). An invoke is
resent only if the cluster says the entry point is idempotent (its slice declares it so); when that is
unknown it is not resent, and `NoAnswerError` says what happened. An invoke carries its timeout to the
node, and the client waits longer than that, so the node's own 504 answer (with what it knows) reaches
the caller. A read (GET) that a node answers `unavailable` (its store is between leaders) goes to the
next node and round again for up to READ_PATIENCE, as long as a node retries a write itself.

Errors: every error the client raises has a `kind` from `ErrorKind`, the one vocabulary of error kinds
(re-exported here from the node's core with `HTTP_STATUS`, the status a node answers each with): the
node's own kind for an `ApiError`, `unreachable` and `no_answer` for the client's own.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import re
import sys
import time
import types
import typing
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import attrs

from .core._error_kinds import HTTP_STATUS as HTTP_STATUS
from .core._error_kinds import ErrorKind as ErrorKind
from .core._strict_json import parse_strict_json as parse_strict_json
from .core._text import plural
from .core._text import visible as visible

T = TypeVar("T")

DEFAULT_CALL_TIMEOUT = 30.0  # seconds a node gives an invoke through the API unless told otherwise
MAX_CALL_TIMEOUT = 3600.0  # the longest call timeout a node accepts
# How long a read answered `unavailable` is tried again: a node's own FAILOVER_TIME (its store's leader
# fallback and two elections), for which it retries a write itself.
READ_PATIENCE = 6.0
MAX_LOG_LINES = 10_000  # the most last lines of an instance's log a node gives at once
MAX_EVENTS = 1000  # the most recent events a node gives at once (`limit` of the event routes)
# A node whose management API checks no API keys (open: dev mode, no key configured or created) says so
# on every answer with this header; a client that sent a key learns that nothing checked it.
ACCESS_HEADER, OPEN_ACCESS = "Aether-Access", "open"
# The KV revision a client read just before it sent a change: the change does not land over a later one.
SINCE_HEADER = "Aether-Since-Revision"
# A followed stream with nothing for this long is a node gone (killed, paused, cut off): the node sends an
# empty line every 5 s on a followed log (`api/_slice_logs.HEARTBEAT`) and a comment every 15 s on an
# idle event stream (`api/_management.KEEPALIVE`); three of them missed is not a slow moment.
LOG_STREAM_IDLE = 15.0
EVENT_STREAM_IDLE = 45.0


# ---------------------------------------------------------------- models

# The models are defined in six private modules (`core/_models_*.py`, by subject), each imported when one
# of its names is first asked for (`client.ClusterStatus`, `from aether_node.client import NodeInfo`): a
# command builds only the attrs classes it reads. Building all 32 at import cost every `aether` command
# ~20 ms of CPU (benchmarks/README.md, "CLI"). The client's own code reads them as `_models.NAME`.
_MODEL_MODULES = {
    name: module
    for module, names in (
        ("_models_cluster", "NodeInfo ClusterStatus KeptForRollback"),
        ("_models_events", "EVENT_KINDS ClusterEvent"),
        ("_models_access", "ApiKeyInfo CreatedApiKey AgentLease"),
        (
            "_models_slices",
            "InstanceInfo RolloutInfo PauseInfo RetryInfo SliceStatus SliceTarget EntryInfo CallStats"
            " ClusterCalls InstanceLogs LogLine AutoscaleDecision AutoscaleStatus",
        ),
        (
            "_models_blueprints",
            "ApplyResult SliceSummary BlueprintInfo BlueprintRevision NodePlacement SliceChange BlueprintDiff"
            " BlueprintStatus LostNodeInfo BlueprintPolicy ReconcilePolicyInfo",
        ),
        ("_models_views", "Overview Description"),
    )
    for name in names.split()
}

if typing.TYPE_CHECKING:  # the same names, for type checkers and editors
    from .core._models_access import AgentLease as AgentLease
    from .core._models_access import ApiKeyInfo as ApiKeyInfo
    from .core._models_access import CreatedApiKey as CreatedApiKey
    from .core._models_blueprints import ApplyResult as ApplyResult
    from .core._models_blueprints import BlueprintDiff as BlueprintDiff
    from .core._models_blueprints import BlueprintInfo as BlueprintInfo
    from .core._models_blueprints import BlueprintPolicy as BlueprintPolicy
    from .core._models_blueprints import BlueprintRevision as BlueprintRevision
    from .core._models_blueprints import BlueprintStatus as BlueprintStatus
    from .core._models_blueprints import LostNodeInfo as LostNodeInfo
    from .core._models_blueprints import NodePlacement as NodePlacement
    from .core._models_blueprints import ReconcilePolicyInfo as ReconcilePolicyInfo
    from .core._models_blueprints import SliceChange as SliceChange
    from .core._models_blueprints import SliceSummary as SliceSummary
    from .core._models_cluster import ClusterStatus as ClusterStatus
    from .core._models_cluster import KeptForRollback as KeptForRollback
    from .core._models_cluster import NodeInfo as NodeInfo
    from .core._models_events import EVENT_KINDS as EVENT_KINDS
    from .core._models_events import ClusterEvent as ClusterEvent
    from .core._models_slices import AutoscaleDecision as AutoscaleDecision
    from .core._models_slices import AutoscaleStatus as AutoscaleStatus
    from .core._models_slices import CallStats as CallStats
    from .core._models_slices import ClusterCalls as ClusterCalls
    from .core._models_slices import EntryInfo as EntryInfo
    from .core._models_slices import InstanceInfo as InstanceInfo
    from .core._models_slices import InstanceLogs as InstanceLogs
    from .core._models_slices import LogLine as LogLine
    from .core._models_slices import PauseInfo as PauseInfo
    from .core._models_slices import RetryInfo as RetryInfo
    from .core._models_slices import RolloutInfo as RolloutInfo
    from .core._models_slices import SliceStatus as SliceStatus
    from .core._models_slices import SliceTarget as SliceTarget
    from .core._models_views import Description as Description
    from .core._models_views import Overview as Overview


def unknown_keys(given: Iterable[str], taken: Iterable[str], what: str = "key") -> str | None:
    """What is wrong with the keys of `given` that are not `taken`, as the node says it of a request's
    keys ("instance: unknown key (did you mean 'instances'? expected: instances)"); None if none is. For
    the MCP service's tool arguments. (Imported when first asked for: difflib is no start-up cost.)"""
    from .core._table_problems import unknown_keys as said

    return said(given, taken, what)


def _model(name: str) -> Any:
    """Model (or constant) `name` from its module, imported now if it was not; kept as a global of this
    module from then on."""
    # __import__, not importlib.import_module: only the import statement's machinery reports to
    # `python -X importtime`, which benchmarks/cli_bench.py and the start-up tests read
    module = __import__(f"{__package__}.core.{_MODEL_MODULES[name]}", fromlist=[name])
    value = globals()[name] = getattr(module, name)
    return value


class _Models:
    """`_models.NAME`: a model for this module's own code (a module's `__getattr__` serves other modules
    only, not its own global names)."""

    def __getattr__(self, name: str) -> Any:
        return _model(name)


_models = _Models()


class Convergence:
    """Judges a blueprint's progress from its successive statuses, for `aether blueprint apply --wait` and
    the MCP tool: it cannot converge (failures, and nothing in transition for `patience` seconds) or ran
    out of time. Pure: the caller passes the time."""

    def __init__(self, name: str, *, timeout: float, now: float, patience: float = 3.0) -> None:
        self.name = name
        self.timeout = timeout
        self.deadline = now + timeout
        self.patience = patience
        self._stuck_since: float | None = None

    def problem(self, status: BlueprintStatus, now: float) -> str | None:
        """Why waiting is over though `status` has not converged (a sentence), or None to keep waiting."""
        stuck = status.stuck_failures
        self._stuck_since = (self._stuck_since or now) if stuck else None
        if self._stuck_since is not None and now - self._stuck_since > self.patience:
            return f"blueprint {self.name!r} cannot converge:\n  " + "\n  ".join(stuck)
        if now > self.deadline:
            lines = status.failures or status.waiting
            detail = ("\n  " + "\n  ".join(lines)) if lines else ""
            return f"blueprint {self.name!r} did not converge within {self.timeout:g} s{detail}"
        return None


class DrainWatch:
    """Judges a drain from the node's successive readings, for `aether node drain --wait` and the MCP
    tool: done when the node is DRAINED; over if the drain ended otherwise (uncordoned, the node gone) or
    ran out of time. Pure: the caller passes the node (None: not among the cluster's nodes) and the time."""

    def __init__(self, node_id: str, *, timeout: float, now: float) -> None:
        self.node_id = node_id
        self.timeout = timeout
        self.deadline = now + timeout

    def progress(self, node: NodeInfo) -> str:
        """What the drain waits for, one line."""
        return node.waiting or f"{plural(node.instances, 'instance')} left on {node.node_id}"

    def problem(self, node: NodeInfo | None, now: float) -> str | None:
        """Why waiting is over though `node` is not DRAINED (a sentence), or None."""
        if node is None:
            return f"{self.node_id} left the cluster before it was DRAINED"
        if node.state == "DRAINED":
            return None
        if node.state != "DRAINING":
            return f"the drain of {self.node_id} ended before it was DRAINED: the node is {node.state}"
        if now >= self.deadline:
            return (
                f"{self.node_id} is not DRAINED after {self.timeout:g} s ({self.progress(node)}); the drain"
                f" goes on: `aether node uncordon {self.node_id}` ends it"
            )
        return None


DESCRIBE_KINDS = ("blueprint", "slice", "node")


# The models hold only str, int, float, bool, `X | None`, tuples (`tuple[X, ...]` or fixed), lists, dicts
# and other models, so a few lines of attrs introspection (de)serialise them exactly as a cattrs converter
# would (tests/aether_node/test_client.py compares the two for every model of this module). Importing
# cattrs would be most of this module's import time, paid by every `aether` command: ~0.01 s with
# bytecode cached, ~0.09 s of CPU without.


def to_json(record: object) -> Any:
    """A model, or JSON-able data holding models, as plain JSON-able data (tuples become lists); a
    model's `JSON_PROPERTIES` come with its fields (read back, they are left out: `from_json` ignores
    keys it does not know)."""
    names = _JSON_NAMES.get(type(record))
    if names is None and attrs.has(type(record)):
        names = _json_names(type(record))
    if names is not None:
        return {name: to_json(getattr(record, name)) for name in names}
    if isinstance(record, list | tuple):
        return [to_json(item) for item in record]
    if isinstance(record, dict):
        return {to_json(key): to_json(value) for key, value in record.items()}
    if isinstance(record, enum.Enum):
        return to_json(record.value)
    return record


_JSON_NAMES: dict[type, tuple[str, ...]] = {}  # model → what `to_json` writes of it, worked out once


def _json_names(cls: type) -> tuple[str, ...]:
    """A model's fields, then what it works out from them for a reader (`JSON_PROPERTIES`: `converged`)."""
    names = (*(f.name for f in attrs.fields(cls)), *getattr(cls, "JSON_PROPERTIES", ()))
    _JSON_NAMES[cls] = names
    return names


def from_json(data: object, cls: type[T]) -> T:
    """Model `cls` from the API's JSON. Unknown keys are ignored (an older client reads a newer node's
    answers); a missing or malformed field raises TypeError naming the model."""
    try:
        return typing.cast(T, _structure(data, cls))
    except (TypeError, ValueError, AttributeError) as error:
        raise TypeError(f"cannot read {cls.__name__} from {data!r:.200}: {error}") from None


def _structure(data: Any, hint: Any) -> Any:
    if attrs.has(hint):
        if not isinstance(data, dict):
            raise TypeError(f"expected an object for {hint.__name__}, got {type(data).__name__}")
        fields = attrs.fields(attrs.resolve_types(hint))
        return hint(**{f.name: _structure(data[f.name], f.type) for f in fields if f.name in data})
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return tuple(_structure(value, args[0]) for value in data)
    if origin is tuple:
        values = tuple(data)
        if len(values) != len(args):
            raise ValueError(f"expected {len(args)} items, got {len(values)}")
        return tuple(_structure(value, arg) for value, arg in zip(values, args, strict=True))
    if origin is list:
        return [_structure(value, args[0]) for value in data]
    if origin is dict:
        return {_structure(key, args[0]): _structure(value, args[1]) for key, value in data.items()}
    if origin is types.UnionType or origin is typing.Union:
        if data is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _structure(data, inner)
    if hint in (str, int, float, bool):
        return hint(data)
    return data


def __getattr__(name: str) -> Any:
    if name in _MODEL_MODULES:
        return _model(name)
    if name == "converter":  # the cattrs converter this module once used; built only if asked for
        import cattrs

        globals()["converter"] = converter = cattrs.Converter()
        return converter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODEL_MODULES})


# ---------------------------------------------------------------- errors


class ApiError(Exception):
    """The cluster answered with an error. `kind` is the API's error kind (an `ErrorKind` value, or one a
    node of another version sent; `error` if the answer was not the API's JSON); `status` the HTTP status."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


class ClusterUnreachableError(Exception):
    """No node of the cluster could be reached: the request was received by none of them."""

    kind = ErrorKind.UNREACHABLE


class NoAnswerError(Exception):
    """A node received (or may have received) the request and gave no answer: it did not answer in time,
    or the connection dropped. The operation may have run there; it was not resent because it is not
    known to be idempotent. The message says which node, how long it waited and why it was not resent."""

    kind = ErrorKind.NO_ANSWER


class _Attempt:
    """One request to one node: whether its connection was made (until then, it certainly reached no
    node)."""

    def __init__(self) -> None:
        self.connected = False

    def __call__(self) -> None:
        self.connected = True


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What a request that got no answer raises: OSError (urllib's URLError is one) and, once http.client
    is loaded (by urllib, or for one of its errors on a malformed answer), its HTTPException. A function so
    that catching them imports nothing."""
    http_client = sys.modules.get("http.client")
    return (OSError,) if http_client is None else (OSError, http_client.HTTPException)


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None) or error
    ssl = sys.modules.get("ssl")  # loaded if the error is one of its: nothing imported here
    if ssl is not None and isinstance(reason, ssl.SSLCertVerificationError):
        return _untrusted(reason.verify_code, reason.verify_message)
    if ssl is not None and isinstance(reason, ssl.SSLError) and reason.reason == "WRONG_VERSION_NUMBER":
        return f"{PLAIN_HTTP} (SSL: WRONG_VERSION_NUMBER): give its URL as http://"
    return str(reason or type(error).__name__)


# What an https:// URL to a plain-HTTP port (a `--dev-mode` or `--no-tls` node) is told
PLAIN_HTTP = "it answers in plain HTTP, not HTTPS"


_NOT_THE_CA = {18, 19, 20, 21}  # OpenSSL: self-signed, in the chain, unknown or unverifiable issuer
_HOSTNAME_MISMATCH = 62


def _untrusted(code: int, message: str) -> str:
    """A node certificate the client refused, and what to do (OpenSSL says only what it found)."""
    found = f"CERTIFICATE_VERIFY_FAILED: {message}"
    if code in _NOT_THE_CA:
        return (
            f"its certificate is not from the CA this client trusts ({found}): give the cluster's CA"
            " certificate (ca.pem from any node's data_dir/tls/) with --ca-file, AETHER_CA_FILE or the"
            " context (`aether context add NAME URL --ca-file ca.pem`)"
        )
    if code == _HOSTNAME_MISMATCH:
        return (
            f"its certificate does not name the address dialled ({found}): dial an address of the node's"
            " configuration, or add this one to the node's tls_hosts"
        )
    return f"its certificate is not trusted ({found})"


def _timed_out(error: BaseException) -> bool:
    return isinstance(error, TimeoutError) or isinstance(getattr(error, "reason", None), TimeoutError)


def _api_error(status: int, reason: str, raw: bytes) -> ApiError:
    """The error a node answered: the API's JSON error (kind, message), else its text or HTTP reason."""
    try:
        detail = json.loads(raw)["error"]
        kind, message = str(detail.get("kind", ErrorKind.ERROR)), str(detail.get("message", raw))
    except (ValueError, KeyError, TypeError):
        kind, message = ErrorKind.ERROR, raw.decode(errors="replace").strip() or _status_said(status, reason)
    return ApiError(status, kind, message)


def _status_said(status: int, reason: str) -> str:
    """An answer with no text of its own, in words: its status and what the status means (the node's
    HTTP server answers a request line or headers over its limits, a 100,000-character name, with a bare
    431: the message was empty, and the CLI printed `aether: error: ` and nothing)."""
    import http

    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    said = str(reason).strip() or phrase or "no reason given"
    hint = " (a name, path or parameter too long?)" if status in (414, 431) else ""
    return f"the node answered HTTP {status} {said}, with no message{hint}"


# ---------------------------------------------------------------- the client


class ApiClient:
    """Synchronous client of the management API, failing over across `urls` in order.

    Standard library HTTP: a command-line tool should start fast, and httpx would import trio and h2
    where the node's dependencies are installed. Requests and followed streams go through urllib
    (`core/_urllib_http.py`), imported on the first request."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        ca_cert: str | None = None,
        read_patience: float = READ_PATIENCE,
        on_unchecked_key: Callable[[str], None] | None = None,
    ) -> None:
        """`ca_cert`: the PEM of the cluster CA, which an HTTPS node's certificate must be issued by
        (else the system's trusted CAs). `read_patience`: how long a read (GET) answered `unavailable`
        (the cluster's store has no leader: an election) keeps going to the nodes again.
        `on_unchecked_key(url)`: called once, the first time a node answers that it checks no API keys
        (`ACCESS_HEADER`) while this client sends one (a mistyped key, or a keyed context pointed at an
        open dev cluster, would otherwise go unnoticed)."""
        self.urls = [u.rstrip("/") for u in urls]
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._on_unchecked_key = on_unchecked_key if api_key else None
        self._timeout = timeout
        self._read_patience = read_patience
        self._good = 0
        self._ca_cert = ca_cert

    def close(self) -> None:
        """Nothing is kept open between requests."""

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _prepared(
        self,
        url: str,
        params: dict[str, Any] | None,
        body: bytes | None,
        extra: Mapping[str, str] | None = None,
    ) -> tuple[str, dict[str, str]]:
        """The full URL (a malformed one is a ValueError before any I/O) and the headers of a request."""
        check_url(url)
        full = url + (("?" + urlencode(params)) if params else "")
        headers = {**self._headers, **(extra or {})}
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        return full, headers

    def _exchange(
        self,
        method: str,
        url: str,
        path: str,
        params: dict[str, Any] | None,
        body: bytes | None,
        timeout: float,
        attempt: _Attempt,
        extra: Mapping[str, str],
    ) -> bytes:
        """The body of node `url`'s answer; ApiError for a status that is not 2xx (after redirects)."""
        from .core import _urllib_http

        full, headers = self._prepared(url + path, params, body, extra)
        answer = _urllib_http.exchange(method, full, headers, body, timeout, self._ca_cert, attempt, url)
        status, reason, data, answer_headers = answer
        self._note_access(url, answer_headers)
        if not 200 <= status < 300:
            raise _api_error(status, reason, data)
        return data

    def _open_stream(self, url: str, path: str, params: dict[str, Any], idle: float) -> Any:
        """A streamed answer of node `url`, to read as it comes (through urllib)."""
        from .core import _urllib_http

        full, headers = self._prepared(url + path, params, None)
        try:
            response = _urllib_http.open_url("GET", full, headers, None, idle, self._ca_cert, _Attempt(), url)
        except _urllib_http.HTTPError as error:
            self._note_access(url, error.headers)
            raise _api_error(error.code, str(error.reason), error.read()) from None
        self._note_access(url, response.headers)
        return response

    def _note_access(self, url: str, headers: Mapping[str, str]) -> None:
        """Tell `on_unchecked_key`, once, that node `url` checks no API keys though this client sends one."""
        if self._on_unchecked_key is not None and headers.get(ACCESS_HEADER) == OPEN_ACCESS:
            told, self._on_unchecked_key = self._on_unchecked_key, None
            told(url)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        json_body: Any = None,
        idempotent: bool | Callable[[], str | None] | None = None,
        timeout: float | None = None,
        what: str = "",
        since: int | None = None,
    ) -> Any:
        """Send to the nodes in turn until one answers. A request that reached no node goes to the next;
        one that may have been received goes to the next only if `idempotent` (default: for GET only)
        says so: True, or a function that answers None (resend) or why not (a phrase). `since`: sent as
        SINCE_HEADER."""
        extra = {SINCE_HEADER: str(since)} if since is not None else {}
        body = (
            content
            if content is not None
            else (json.dumps(json_body).encode() if json_body is not None else None)
        )
        if method == "POST" and body is None:
            body = b""
        if idempotent is None:
            idempotent = method == "GET"
        timeout = timeout or self._timeout
        if method != "GET":
            return self._send(method, path, params, body, idempotent, timeout, what, extra)
        # A read that a node answers `unavailable` (its store is between leaders) goes to the next node,
        # and round again after a pause, for up to read_patience: the node retries a write itself for as
        # long (its FAILOVER_TIME), so an election reaches neither a read nor a write as an error.
        # A round asks each node once: the rest of it skips the nodes that answered `unavailable` (a node
        # that does not answer costs the whole timeout each time it is asked), and it ends once every
        # node has answered so or not at all.
        give_up = time.monotonic() + self._read_patience
        pause = 0.1
        while True:
            answered: set[int] = set()
            unavailable: ApiError | None = None
            while not answered or len(answered) < len(self.urls):  # (no node at all: `_send` says so)
                try:
                    return self._send(method, path, params, body, idempotent, timeout, what, extra, answered)
                except ApiError as error:
                    if error.kind != ErrorKind.UNAVAILABLE:
                        raise
                    unavailable = error
                    answered.add(self._good)  # (`_send` points `_good` at the node that answered)
                    self._good = (self._good + 1) % len(self.urls)
                except (NoAnswerError, ClusterUnreachableError):
                    if unavailable is None:
                        raise
                    break  # the others did not answer: the answer is the one that came
            assert unavailable is not None
            if time.monotonic() + pause > give_up:
                raise unavailable
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def _send(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        body: bytes | None,
        idempotent: bool | Callable[[], str | None],
        timeout: float,
        what: str,
        extra: Mapping[str, str],
        skip: Collection[int] = (),
    ) -> Any:
        """One round over the nodes, from the last that answered (see `_request`), but those in `skip`
        (indexes in `urls`)."""
        errors = []
        answered_none = False
        turn = [*range(self._good, len(self.urls)), *range(self._good)]
        for position in (i for i in turn if i not in skip):
            url = self.urls[position]
            attempt = _Attempt()
            try:
                data = self._exchange(method, url, path, params, body, timeout, attempt, extra)
            except ApiError as error:
                if answered_none and method == "DELETE" and error.status == 404:
                    return None  # gone: perhaps by the attempt that got no answer
                self._good = position
                raise
            except _transport_errors() as error:
                if not attempt.connected:
                    errors.append(f"{url}: {_reason(error)}")
                    continue
                # later requests (e.g. the question whether to resend) go to the next node first
                self._good = (position + 1) % len(self.urls)
                if idempotent is True:
                    why_not = None
                elif callable(idempotent):
                    why_not = idempotent()
                else:
                    why_not = f"{what or method + ' ' + path} is not idempotent"
                happened = (
                    f"{url} did not answer within {timeout:g} s"
                    if _timed_out(error)
                    else f"{url} dropped the connection after the request was sent ({_reason(error)})"
                    + _https_hint(url, error)
                )
                if why_not is not None:
                    raise NoAnswerError(
                        f"{happened}; {what or method + ' ' + path} may have run there;"
                        f" not resent because {why_not}"
                    ) from None
                errors.append(happened)
                answered_none = True
                continue
            self._good = position
            return json.loads(data) if data else None
        if answered_none:
            raise NoAnswerError("no node answered: " + "; ".join(errors))
        raise ClusterUnreachableError("cannot reach the cluster: " + "; ".join(errors))

    def current_revision(self) -> int:
        """The cluster's KV revision now (linearizable): what a change is sent "as of" (SINCE_HEADER)."""
        return int(self._request("GET", "/api/v1/revision")["revision"])

    def _guarded(self, method: str, path: str, *, resend: bool = True, **request: Any) -> Any:
        """`_request` of a change "as of" the KV revision read just before it (SINCE_HEADER), resent if it
        goes unanswered (unless not `resend`): a copy of it that a frozen node runs later finds its target
        changed after that revision and is refused, or found done; it never lands over a later change.
        A node too old to say its revision gets the change without one (resent as before)."""
        try:
            since = self.current_revision()
        except ApiError as error:
            if error.status != 404:
                raise
            since = None
        return self._request(method, path, idempotent=resend, since=since, **request)

    # blueprints
    def apply_blueprint(self, toml_text: str, source: str = "blueprint.toml") -> ApplyResult:
        # resent: the same text makes the same blueprint, and never lands over a later change
        data = self._guarded(
            "POST", "/api/v1/blueprints", content=toml_text.encode(), params={"source": source}
        )
        return from_json(data, _models.ApplyResult)

    def validate_blueprint(self, toml_text: str, source: str = "blueprint.toml") -> BlueprintInfo:
        data = self._request(
            "POST",
            "/api/v1/blueprints/validate",
            content=toml_text.encode(),
            params={"source": source},
            idempotent=True,  # changes nothing
        )
        return from_json(data, _models.BlueprintInfo)

    def list_blueprints(self) -> list[BlueprintInfo]:
        return [from_json(item, _models.BlueprintInfo) for item in self._request("GET", "/api/v1/blueprints")]

    def get_blueprint(self, name: str) -> BlueprintInfo:
        return from_json(self._request("GET", f"/api/v1/blueprints/{_segment(name)}"), _models.BlueprintInfo)

    def delete_blueprint(self, name: str) -> None:
        self._guarded("DELETE", f"/api/v1/blueprints/{_segment(name)}")

    def blueprint_status(self, name: str) -> BlueprintStatus:
        return from_json(
            self._request("GET", f"/api/v1/blueprints/{_segment(name)}/status"), _models.BlueprintStatus
        )

    # slices
    def list_slices(self) -> list[InstanceInfo]:
        return [from_json(item, _models.InstanceInfo) for item in self._request("GET", "/api/v1/slices")]

    def slice_status(self, artifact: str) -> SliceStatus:
        return from_json(self._request("GET", f"/api/v1/slices/{_segment(artifact)}"), _models.SliceStatus)

    def entry_points(self, artifact: str) -> list[EntryInfo]:
        """The entry points of a slice (group:artifact) that ACTIVE instances serve, and which are
        idempotent."""
        data = self._request("GET", f"/api/v1/slices/{_segment(artifact)}/entries")
        return [from_json(item, _models.EntryInfo) for item in data]

    def invoke(self, artifact: str, entry: str, payload: Any = None, *, timeout: float | None = None) -> Any:
        """Call `entry` of a slice with `payload` (JSON-able); its JSON result. The node gives the call
        `timeout` seconds (default DEFAULT_CALL_TIMEOUT) and answers 504 (ApiError) when it runs out;
        this client waits longer than that. A node that received the call and gave no answer raises
        NoAnswerError, unless the entry point is idempotent: then the call goes to the next node."""
        call_timeout = DEFAULT_CALL_TIMEOUT if timeout is None else float(timeout)
        if not 0 < call_timeout <= MAX_CALL_TIMEOUT:
            raise ValueError(f"timeout: must be in (0, {MAX_CALL_TIMEOUT:g}] seconds, got {call_timeout:g}")
        what = f"the call of {artifact}/{entry}"

        def resend_refused() -> str | None:
            try:
                entries = {e.name: e.idempotent for e in self.entry_points(artifact)}
            except (ApiError, ClusterUnreachableError, NoAnswerError, TypeError) as error:
                return f"whether {artifact}/{entry} is idempotent is unknown ({error})"
            if entry not in entries:
                return f"whether {artifact}/{entry} is idempotent is unknown (no ACTIVE instance serves it)"
            return None if entries[entry] else f"{artifact}/{entry} is not idempotent"

        return self._request(
            "POST",
            f"/api/v1/slices/{_segment(artifact)}/invoke/{_segment(entry)}",
            json_body=payload,
            params={"timeout": f"{call_timeout:g}"},
            idempotent=resend_refused,
            timeout=max(self._timeout, call_timeout + max(5.0, call_timeout / 10)),
            what=what,
        )

    # cluster
    def cluster_status(self) -> ClusterStatus:
        return from_json(self._request("GET", "/api/v1/cluster"), _models.ClusterStatus)

    def nodes(self) -> list[NodeInfo]:
        return [from_json(item, _models.NodeInfo) for item in self._request("GET", "/api/v1/nodes")]

    def forget_node(self, node_id: str) -> None:
        """Stop expecting a node that is gone for good (its absence no longer makes the cluster unhealthy);
        a registered node cannot be forgotten (ApiError conflict)."""
        self._request("DELETE", f"/api/v1/nodes/{_segment(node_id)}", idempotent=True)

    def overview(self) -> Overview:
        return from_json(self._request("GET", "/api/v1/overview"), _models.Overview)

    def calls(self) -> ClusterCalls:
        return from_json(self._request("GET", "/api/v1/calls"), _models.ClusterCalls)

    def events(
        self,
        limit: int = 50,
        *,
        kind: str | Sequence[str] | None = None,
        slice: str | None = None,
        node: str | None = None,
        since: int | None = None,
    ) -> list[ClusterEvent]:
        """The last `limit` events that match the filters: `kind` (one of EVENT_KINDS, or several),
        `slice` (group:artifact or group:artifact:version: instance events of that slice), `node` (events
        about that node, including moves away from it); with `since` (a revision), the first `limit`
        after it instead: read on from the last event's revision to miss none and see none twice."""
        params = _event_params(limit, kind, slice, node, since)
        data = self._request("GET", "/api/v1/events", params=params)
        return [from_json(item, _models.ClusterEvent) for item in data]

    def slice_logs(
        self, artifact: str, *, instance: int | None = None, node: str | None = None, lines: int = 100
    ) -> list[InstanceLogs]:
        """The last `lines` lines of each instance of a slice (group:artifact), or of instance `instance`,
        or of those on node `node`; fetched by the node asked from the nodes that run them."""
        params = _log_params(instance, node, lines)
        data = self._request("GET", f"/api/v1/slices/{_segment(artifact)}/logs", params=params)
        return [from_json(item, _models.InstanceLogs) for item in data]

    def follow_slice_logs(
        self, artifact: str, *, instance: int | None = None, node: str | None = None, lines: int = 10
    ) -> Iterator[LogLine]:
        """The last `lines` lines of the chosen instances, then each new line as it is written, until
        every chosen instance has gone away (or the caller stops). Lines of different instances
        interleave in the order they arrive."""
        params = {**_log_params(instance, node, lines), "follow": "1"}
        for raw in self._stream(f"/api/v1/slices/{_segment(artifact)}/logs", params, idle=LOG_STREAM_IDLE):
            if raw.strip():
                yield from_json(json.loads(raw), _models.LogLine)

    def describe(self, kind: str, name: str, *, limit: int = 20) -> Description:
        """One blueprint, slice (group:artifact) or node with its status and its last `limit` events:
        composed here from the status and events routes."""
        if kind not in DESCRIBE_KINDS:
            raise ValueError(f"kind: expected one of {', '.join(DESCRIBE_KINDS)}, got {kind!r}")
        status: Any
        if kind == "blueprint":
            status = self.blueprint_status(name)
            mine = self.events(1000, kind=["blueprint_applied", "blueprint_deleted"])
            own = [e for e in mine if e.subject == name]
            found = {e.revision: e for e in own[-limit:]}
            for item in status.slices:
                found |= {e.revision: e for e in self.events(limit, slice=item.artifact)}
            events = [found[revision] for revision in sorted(found)][-limit:]
        elif kind == "slice":
            status = self.slice_status(name)
            events = self.events(limit, slice=name)
        else:
            nodes = self.nodes()
            status = next((n for n in nodes if n.node_id == name), None)
            if status is None:
                known = ", ".join(n.node_id for n in nodes) or "none"
                raise ApiError(404, ErrorKind.NOT_FOUND, f"no registered node {name!r} (registered: {known})")
            events = self.events(limit, node=name)
        return _models.Description(kind=kind, name=name, events=tuple(events), **{kind: status})

    def blueprint_history(self, name: str) -> list[BlueprintRevision]:
        data = self._request("GET", f"/api/v1/blueprints/{_segment(name)}/history")
        return [from_json(item, _models.BlueprintRevision) for item in data]

    def rollback_blueprint(self, name: str, to: int | None = None) -> ApplyResult:
        """Apply an earlier revision again, as a new revision (the previous one if `to` is None). Resent
        only with `to` (rolling back twice to "the previous" would go back two revisions)."""
        path = f"/api/v1/blueprints/{_segment(name)}/rollback"
        if to is None:
            data = self._guarded("POST", path, resend=False)
        else:
            data = self._guarded("POST", path, params={"to": str(to)})
        return from_json(data, _models.ApplyResult)

    def diff_blueprint(self, toml_text: str, source: str = "blueprint.toml") -> BlueprintDiff:
        data = self._request(
            "POST",
            "/api/v1/blueprints/diff",
            content=toml_text.encode(),
            params={"source": source},
            idempotent=True,  # changes nothing
        )
        return from_json(data, _models.BlueprintDiff)

    def scale_slice(self, artifact: str, instances: int) -> ApplyResult:
        """A new revision of the blueprint that holds the slice, with `instances` instances of it."""
        # resent: the same count again makes no new revision, and never lands over a later change
        data = self._guarded(
            "POST", f"/api/v1/slices/{_segment(artifact)}/scale", json_body={"instances": instances}
        )
        return from_json(data, _models.ApplyResult)

    def autoscale_status(self, artifact: str | None = None) -> list[AutoscaleStatus]:
        """Every autoscaled slice, or the one named (group:artifact)."""
        path = "/api/v1/autoscale" + (f"/{_segment(artifact)}" if artifact else "")
        data = self._request("GET", path)
        return [from_json(item, _models.AutoscaleStatus) for item in (data if artifact is None else [data])]

    def autoscale_set(self, artifact: str, settings: dict[str, float | int | None]) -> AutoscaleStatus:
        """Change a slice's bounds or targets at run time (`min`, `max`, `cpu`, `p99_ms`, ...)."""
        data = self._guarded("POST", f"/api/v1/autoscale/{_segment(artifact)}/set", json_body=settings)
        return from_json(data, _models.AutoscaleStatus)

    def autoscale_operation(self, artifact: str, operation: str) -> AutoscaleStatus:
        """`operation`: pause or resume."""
        data = self._guarded("POST", f"/api/v1/autoscale/{_segment(artifact)}/{operation}")
        return from_json(data, _models.AutoscaleStatus)

    def pause_operation(self, artifact: str, operation: str) -> PauseInfo:
        """`pause` or `resume` the rolling update of a slice (resent: a second pause changes nothing, and
        neither lands over a later change)."""
        data = self._guarded("POST", f"/api/v1/slices/{_segment(artifact)}/{_segment(operation)}")
        return from_json(data, _models.PauseInfo)

    def retry_slice(self, artifact: str) -> RetryInfo:
        """Let go of a slice's failures now: the nodes they keep out are tried again at once (resent: a
        late copy lets go of no failure recorded after the revision read before it)."""
        data = self._guarded("POST", f"/api/v1/slices/{_segment(artifact)}/retry")
        return from_json(data, _models.RetryInfo)

    def reconcile_policy(self) -> ReconcilePolicyInfo:
        return from_json(self._request("GET", "/api/v1/cluster/policy"), _models.ReconcilePolicyInfo)

    def set_reconcile_policy(self, settings: dict[str, str | float | int | None]) -> ReconcilePolicyInfo:
        """Change the cluster's policy: `preset`, `rebalance_delay_s`, `max_moves` (None: unchanged; a
        preset given drops the values set before that are not given again)."""
        data = self._guarded("POST", "/api/v1/cluster/policy", json_body=settings)
        return from_json(data, _models.ReconcilePolicyInfo)

    def rebalance(self) -> ReconcilePolicyInfo:
        """End the rebalance delay of every lost node now: their instances are replaced."""
        return from_json(self._guarded("POST", "/api/v1/cluster/rebalance"), ReconcilePolicyInfo)

    def rollout_command(self, artifact: str, operation: str) -> RolloutInfo:
        """`promote` or `abort` the canary or blue-green rollout of a slice. Not resent (a second promote
        of a rollout that moved on is refused); sent "as of" the revision read before it all the same, so
        that a late copy never commands the rollout that came after it."""
        data = self._guarded(
            "POST", f"/api/v1/slices/{_segment(artifact)}/{_segment(operation)}", resend=False
        )
        return from_json(data, _models.RolloutInfo)

    def node_operation(self, node_id: str, operation: str, *, force: bool = False) -> NodeInfo:
        """`operation`: cordon, uncordon, drain, stop or restart (resent: none lands over a later change;
        a stop or restart is refused once the node registered again after the revision read before it).
        A stop or restart that would leave the KV store without a majority of its replicas up (counting
        nodes leaving or asked to stop already as gone) is refused (ApiError conflict) unless `force`.
        A stop or restart goes to another node than the one it stops, if the client knows another: that
        node would drop the connection as it stops, and the resend find it gone (no answer to tell)."""
        if operation in ("stop", "restart"):
            self._not_through(node_id)
        data = self._guarded(
            "POST",
            f"/api/v1/nodes/{_segment(node_id)}/{_segment(operation)}",
            params={"force": "1"} if force else None,
        )
        return from_json(data, _models.NodeInfo)

    def _not_through(self, node_id: str) -> None:
        """Make the next request go first to a node other than `node_id`, if this client has the address of
        another (the registered nodes' management addresses, read once more)."""
        if len(self.urls) < 2:
            return
        address = next((n.management for n in self.nodes() if n.node_id == node_id), None)
        if address is not None and urlsplit(self.urls[self._good]).netloc == address:
            self._good = (self._good + 1) % len(self.urls)

    # named API keys (admin only)
    def create_key(self, name: str, role: str) -> CreatedApiKey:
        """A new key; its secret is in the answer only. Not resent: a resend after a lost answer would
        meet the key it created (conflict), its secret lost."""
        body = {"name": name, "role": role}
        return from_json(self._request("POST", "/api/v1/keys", json_body=body), _models.CreatedApiKey)

    def list_keys(self) -> list[ApiKeyInfo]:
        return [from_json(item, _models.ApiKeyInfo) for item in self._request("GET", "/api/v1/keys")]

    def revoke_key(self, name: str) -> None:
        """Every node refuses the key from the moment its copy of the keys has the change (resent: a late
        copy never revokes a key of the same name made after it)."""
        self._guarded("DELETE", f"/api/v1/keys/{_segment(name)}")

    # backup and restore of the cluster's desired state (admin only)
    def backup(self) -> dict[str, Any]:
        """The blueprints, their revisions and the named API keys, read at one revision (JSON)."""
        return self._request("GET", "/api/v1/cluster/backup")

    def restore(self, backup: dict[str, Any]) -> dict[str, Any]:
        """Write a backup into a cluster that has no blueprint, revision or named key yet."""
        return self._request("POST", "/api/v1/cluster/restore", json_body=backup)

    # the agent lease (one AI agent at a time; see aether_mcp)
    def agent_lease(self) -> AgentLease | None:
        data = self._request("GET", "/api/v1/agent-lease")
        return None if data is None else from_json(data, _models.AgentLease)

    def acquire_agent_lease(self, holder: str, token: str, ttl: float) -> AgentLease:
        data = self._request(  # idempotent: the same token takes or renews the same lease
            "POST",
            "/api/v1/agent-lease",
            json_body={"holder": holder, "token": token, "ttl": ttl},
            idempotent=True,
        )
        return from_json(data, _models.AgentLease)

    def release_agent_lease(self, token: str) -> bool:
        data = self._request(
            "POST", "/api/v1/agent-lease/release", json_body={"token": token}, idempotent=True
        )
        return bool(data and data.get("released"))

    def follow_events(
        self,
        limit: int = 20,
        *,
        kind: str | Sequence[str] | None = None,
        slice: str | None = None,
        node: str | None = None,
        since: int | None = None,
    ) -> Iterator[ClusterEvent]:
        """Recent events (with `since`, every one after that revision instead), then every new one as it
        happens (server-sent events); until interrupted. Filters as in `events`."""
        params = _event_params(limit, kind, slice, node, since)
        for line in self._stream("/api/v1/events/stream", params, idle=EVENT_STREAM_IDLE):
            if line.startswith("data: "):
                yield from_json(json.loads(line[6:]), _models.ClusterEvent)

    def _stream(self, path: str, params: dict[str, Any], *, idle: float) -> Iterator[str]:
        """The lines of a streamed answer (it lasts as long as the stream), from the first node that can
        be reached. Raises NoAnswerError if that node breaks the stream off (it died: the answer ends
        mid-way) or sends nothing for `idle` seconds (its keep-alives included)."""
        import http.client  # a stream goes through urllib, which has loaded it

        errors = []
        for url in self.urls:
            try:
                response = self._open_stream(url, path, params, idle)
            except _transport_errors() as error:
                errors.append(f"{url}: {getattr(error, 'reason', None) or error}")
                continue
            with response:
                # read1, not line iteration: iterating a chunked answer cut off by a dead node just ends,
                # as if the stream were over; read1 raises IncompleteRead
                rest = b""
                try:
                    while chunk := response.read1(65536):
                        *lines, rest = (rest + chunk).split(b"\n")
                        for raw in lines:
                            yield raw.decode(errors="replace").rstrip("\r")
                except _transport_errors() as error:
                    if _timed_out(error):
                        raise NoAnswerError(
                            f"{url} sent nothing for {idle:g} s, not even its keep-alive: the node is down,"
                            " paused or cut off; the stream stops here"
                        ) from None
                    why = (
                        "its answer ended mid-way (the node stopped?)"
                        if isinstance(error, http.client.IncompleteRead)
                        else _reason(error)
                    )
                    raise NoAnswerError(f"{url} broke the stream off: {why}") from None
                if rest:
                    yield rest.decode(errors="replace").rstrip("\r")
            return
        raise ClusterUnreachableError("cannot reach the cluster: " + "; ".join(errors))


AUTOSCALE_SETTINGS = ("min", "max", "cpu", "p99_ms", "calls_per_second", "in_flight")


def autoscale_settings(**given: float | int | None) -> dict[str, float | int | None]:
    """The body of `ApiClient.autoscale_set` from what a caller gave (None: not given). Raises ValueError
    naming the settings when nothing is given, or when a name is not one of them."""
    unknown = sorted(set(given) - set(AUTOSCALE_SETTINGS))
    if unknown:
        raise ValueError(f"not an autoscale setting: {', '.join(unknown)}")
    if all(value is None for value in given.values()):
        raise ValueError(
            "nothing to set: give --min, --max, --cpu, --p99-ms, --calls-per-second or --in-flight"
        )
    return {name: given.get(name) for name in AUTOSCALE_SETTINGS}


def _https_hint(url: str, error: BaseException) -> str:
    """A plain-HTTP request to a node whose management API speaks HTTPS is reset without an answer: say
    so (a URL given without a scheme is taken as http://). Pure."""
    reason = getattr(error, "reason", None) or error
    if url.startswith("http://") and isinstance(reason, ConnectionResetError):
        return f": if the node speaks HTTPS (TLS on, the default off --dev-mode), give https://{url[7:]}"
    return ""


def _event_params(
    limit: int,
    kind: str | Sequence[str] | None,
    slice: str | None,
    node: str | None,
    since: int | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    if since is not None:
        params["since"] = since
    if kind:
        params["kind"] = kind if isinstance(kind, str) else ",".join(kind)
    if slice:
        params["slice"] = slice
    if node:
        params["node"] = node
    return params


def _log_params(instance: int | None, node: str | None, lines: int) -> dict[str, Any]:
    params: dict[str, Any] = {"lines": lines}
    if instance is not None:
        params["instance"] = instance
    if node:
        params["node"] = node
    return params


def check_url(url: str) -> None:
    """Reject a malformed cluster URL before any network I/O (a bad argument, not an unreachable cluster)."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url}: not a usable cluster URL (expected http:// or https://)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a malformed port)
        host = parts.hostname or ""
        if not host:
            raise ValueError("no host")
        if ":" in host or host.replace(".", "").isdigit():  # an IPv6 or IPv4 address
            ipaddress.ip_address(host)
        elif not re.fullmatch(r"[\w.-]+", host):  # a name: "not a url" would otherwise pass as one
            raise ValueError(f"the host {host!r} is not a host name")
    except ValueError as error:
        raise ValueError(f"{url}: not a usable cluster URL ({error})") from None


def _segment(value: str) -> str:
    """One URL path segment: a name can never reach another route ("demo?x", "../cluster", ""). A name
    with "/" is refused here: no node, blueprint, slice, entry point or key is named so, and the server
    reads "%2F" as "/", so it would answer a bare 404 (which a client takes for another server's)."""
    if not value:
        raise ValueError("a name must not be empty")
    if "/" in value:
        raise ValueError(
            f"{value!r}: a name cannot hold '/'"
            " (no node, blueprint, slice, entry point or API key is named so)"
        )
    if value in (".", ".."):  # a URL's path takes them for "here" and "up": another route, or a bare 404
        raise ValueError(
            f"{value!r} is not a name (no node, blueprint, slice, entry point or API key is named so)"
        )
    return quote(value, safe="")


def parse_urls(value: str | Sequence[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    urls = []
    for item in (i.strip() for i in items):
        if item:
            urls.append(item if "://" in item else f"http://{item}")
    return urls
