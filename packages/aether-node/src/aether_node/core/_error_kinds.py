"""The error vocabulary: every kind of error an answer can carry, on every wire (the ingress and the
management API's JSON `{"error": {"kind", "message", "type"}}`, the peer protocol, a slice's `call`
replies), and the HTTP status a node answers each with (a 503 with `Retry-After`).

Standard library only: `aether_node.client` re-exports these for the CLI and the MCP service, which map
each kind to an exit code (`aether_cli/_common.py`) and to an MCP answer (`aether_mcp/_errors.py`); a test
(`tests/test_error_kinds.py`) checks every table has every kind. A kind is a `str` on the wire: a peer or
node of another version may send one this module does not know (it answers 500).
"""

from __future__ import annotations

import enum


class ErrorKind(enum.StrEnum):
    """Why a request or a call failed. Each member's value is its wire name."""

    BAD_REQUEST = "bad_request"  # the request or its input is malformed or refused: the caller's fault
    UNAUTHENTICATED = "unauthenticated"  # no API key, or one the cluster does not know
    FORBIDDEN = "forbidden"  # the API key's role is too weak for the operation
    NOT_FOUND = "not_found"  # no such blueprint, node, or metrics (management API)
    NO_ENDPOINT = "no_endpoint"  # no ACTIVE instance of the slice, or no such entry point
    CONFLICT = "conflict"  # the operation contradicts the cluster's state (a registered node, a held lease)
    RAISED = "raised"  # the slice raised (its exception type travels as `type`)
    BAD_RESULT = "bad_result"  # the slice returned what JSON cannot carry (NaN, a set, over 16 MiB)
    INTERNAL = "internal"  # the node failed to serve a call (a bug): the call is lost, the node serves on
    UNAVAILABLE = "unavailable"  # the store, an instance or its node is not available now; may be retried
    GONE = "gone"  # peer protocol: the instance is not (or no longer) ACTIVE there, the call never ran
    TIMEOUT = "timeout"  # no answer within the call's timeout
    # The API client's own: never in a node's answer.
    UNREACHABLE = "unreachable"  # no node could be reached: the request reached none
    NO_ANSWER = "no_answer"  # a node got the request and did not answer: it may have run
    ERROR = "error"  # an error answer that is not the API's JSON (another server, a proxy)


# The status a node answers each kind with; None: never a node's HTTP answer (the client's own kinds).
HTTP_STATUS: dict[ErrorKind, int | None] = {
    ErrorKind.BAD_REQUEST: 400,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.NO_ENDPOINT: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.RAISED: 500,
    ErrorKind.BAD_RESULT: 502,  # the node is the slice's gateway, and the slice's answer is not one
    ErrorKind.INTERNAL: 500,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.GONE: 503,  # (the invoker answers it as unavailable once no other instance is left)
    ErrorKind.TIMEOUT: 504,
    ErrorKind.UNREACHABLE: None,
    ErrorKind.NO_ANSWER: None,
    ErrorKind.ERROR: None,
}


# Every 503 answer (`unavailable`: a slice with no ACTIVE instance now, the store between leaders, a node
# stopping) carries `Retry-After: RETRY_AFTER` (seconds): it is worth trying again, soon.
RETRY_AFTER = 1


def http_status(kind: str) -> int:
    """The HTTP status for an error of `kind`; 500 for a kind this node does not know."""
    return HTTP_STATUS.get(kind) or 500  # type: ignore[call-overload]
