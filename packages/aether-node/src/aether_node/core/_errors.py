"""Errors of aether-node.

    NodeError                   base of everything this package raises
    ├── InvalidCoordinatesError  a slice coordinate is malformed (the operator's input)
    ├── ResolutionError          the slice cannot be resolved or installed from the index; `kind` says
    │                            which: not_found, version_not_found, entry_point_missing,
    │                            index_unreachable, install_failed (the index's or the slice's fault)
    ├── SliceHostError           the slice's host process failed a step: import, start, crash, protocol
    │                            (the slice's fault); `kind` names the step
    ├── StepTimeoutError         a lifecycle step did not finish within its timeout
    └── RequestError             a request (a management operation, a call) cannot be served; its `kind`
        │                        (an ErrorKind, `_error_kinds.py`) picks the answer: HTTP status, CLI
        │                        exit code, MCP error
        └── InvocationError      a call to a slice could not be served: no_endpoint, timeout, raised,
            │                    bad_request, unavailable, ... — kind, message and the slice's exception
            │                    type reach the caller intact, across nodes (`to_wire`, `from_wire`)
            └── NoEndpointError  the call found no endpoint to go to: no_endpoint (a slice nothing
                                 knows, an entry point it lacks) or unavailable (a deployed slice with no
                                 ACTIVE instance now); it reached no instance

Errors from lower layers (uv's output, subprocesses, pipes) are translated into these at the module that
talks to them; the KV client's, for requests, in one place (`_kv_errors.py`).
"""

from __future__ import annotations

from typing import Any, Self

from ._error_kinds import ErrorKind
from ._text import carried


class NodeError(Exception):
    """Base class of aether-node's errors."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidCoordinatesError(NodeError):
    """Raised when `group:artifact:version` is malformed. The operator's input; nothing was changed."""


class ResolutionError(NodeError):
    """Raised when a slice cannot be resolved or installed from the configured index."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class SliceHostError(NodeError):
    """Raised when a slice host process fails a step (import, start, stop) or dies. The slice's fault."""

    def __init__(
        self, kind: str, message: str, detail: str | None = None, remote_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.detail = detail
        self.remote_type = remote_type


class StepTimeoutError(NodeError):
    """Raised when a lifecycle step exceeds its configured timeout."""


_KNOWN = frozenset(ErrorKind)


class RequestError(NodeError):
    """Raised when a request cannot be served: bad input (the caller's fault), something missing or in
    the way, or the store not available now. `kind` is an ErrorKind (or the wire name of one this node
    does not know, from a peer of another version); `remote_type` names a slice's exception (kind
    "raised"); `override` names the query parameter that makes the same request go through all the same
    (`force`: a node stop or restart refused for the KV store's majority), which the management API
    answers beside the message (the dashboard offers it as a second action); no other protocol carries
    it."""

    def __init__(
        self,
        kind: ErrorKind | str,
        message: str,
        remote_type: str | None = None,
        *,
        override: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind | str = kind if kind not in _KNOWN else ErrorKind(kind)
        self.remote_type = remote_type
        self.override = override

    def to_wire(self) -> dict[str, Any]:
        """`{"kind", "message"[, "type"]}`: the error as every protocol carries it (HTTP, peer, slice), its
        texts as UTF-8 can carry them (`_text.carried`: a slice's message may hold a lone surrogate)."""
        wire = {"kind": str(self.kind), "message": self.message}
        if self.remote_type is not None:
            wire["type"] = self.remote_type
        return carried(wire)

    @classmethod
    def from_wire(cls, error: dict[str, Any]) -> Self:
        """The error a peer or a slice host sent (`to_wire`'s form), as it was raised there."""
        remote_type = error.get("type")
        return cls(
            str(error.get("kind", ErrorKind.INTERNAL)),
            str(error.get("message", "")),
            None if remote_type is None else str(remote_type),
        )


class InvocationError(RequestError):
    """Raised when a call to a slice cannot be served (any node may raise it, for a call to any node)."""


class NoEndpointError(InvocationError):
    """Raised by the invoker for a call that found no endpoint to go to, before any attempt: kind
    `no_endpoint` (a slice nothing knows, an entry point its instances lack: the caller's fault) or
    `unavailable` (a deployed slice with no ACTIVE instance now: nobody's, it passes). Its artifact id and
    entry point are what the caller named, which may be anything (the metrics make no labels of them)."""


def exception_leaves(error: BaseException) -> list[BaseException]:
    """The errors `error` is made of: itself, or every error inside it, however nested, if it is an
    exception group (what a nursery raises when its tasks fail). Pure."""
    if not isinstance(error, BaseExceptionGroup):
        return [error]
    return [leaf for item in error.exceptions for leaf in exception_leaves(item)]
