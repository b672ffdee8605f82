"""Errors of aether-node.

    NodeError                   base of everything this package raises
    ├── InvalidCoordinatesError  a slice coordinate is malformed (the operator's input)
    ├── ResolutionError          the slice cannot be resolved or installed from the index; `kind` says
    │                            which: not_found, version_not_found, entry_point_missing,
    │                            index_unreachable, install_failed (the index's or the slice's fault)
    ├── SliceHostError           the slice's host process failed a step: import, start, crash, protocol
    │                            (the slice's fault); `kind` names the step
    ├── StepTimeoutError         a lifecycle step did not finish within its timeout
    └── InvocationError          a call could not be served; `kind`: no_endpoint, timeout, raised,
                                 bad_request, unavailable — each reaches the caller intact

Errors from lower layers (uv's output, subprocesses, pipes, the KV client) are translated into these at
the module that talks to them.
"""

from __future__ import annotations


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


class InvocationError(NodeError):
    """Raised when a call cannot be served. `kind` is one of no_endpoint, timeout, raised, bad_request,
    unavailable; `remote_type` names the slice's exception for kind "raised"."""

    def __init__(self, kind: str, message: str, remote_type: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.remote_type = remote_type
