"""What a KV failure means to a request: the one translation of aether_kv's errors (UnavailableError,
OutcomeUnknownError, ConnectionLostError, LeaseNotFoundError, ...) into the node's RequestError, for the
code that answers requests (the command handlers, the agent lease).

Every KV error there means the same to the caller: the cluster's store cannot serve the request now
(503 `unavailable`; retry later, re-reading first if it was a write), but one: a request the store
refuses as malformed or too large (`InvalidRequestError`) is the caller's (400 `bad_request`).
Services that retry on their own (the deployment manager, the registration) handle KV errors themselves
and never answer a request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import attrs

from aether_kv import InvalidRequestError, KVError, RaftConfig

from ._error_kinds import ErrorKind
from ._errors import RequestError, exception_leaves

STORE_NOT_AVAILABLE = "the cluster's store is not available"

_RAFT = attrs.fields(RaftConfig)
# How long the store may go without a leader once it has lost one (the node's replicas run aether-kv's
# default timing): a leader cut off from the others steps down after the leader fallback timeout, then an
# election, and one more if the first splits the vote. A request that can be resent safely keeps trying
# for this long before it answers `unavailable` (6 s).
FAILOVER_TIME: float = _RAFT.leader_fallback_timeout.default + 2 * _RAFT.election_max.default


def store_error(error: KVError, doing: str = STORE_NOT_AVAILABLE) -> RequestError:
    """The request's error for a KV failure: `unavailable`, saying what could not be done and why; but
    `bad_request` for a request the store refuses as such (over its size limits): no retry can help."""
    if isinstance(error, InvalidRequestError):
        return RequestError(ErrorKind.BAD_REQUEST, f"{doing}: the store refuses it: {error.message}")
    return RequestError(ErrorKind.UNAVAILABLE, f"{doing}: {error.message}")


@contextmanager
def store_errors(
    doing: str = STORE_NOT_AVAILABLE, *, passing: tuple[type[KVError], ...] = ()
) -> Iterator[None]:
    """Raise `store_error` for a KV error inside the block, except for the types in `passing` (which the
    block's caller handles itself, e.g. CompactedError for a read of history)."""
    try:
        yield
    except KVError as error:
        if isinstance(error, passing):
            raise
        raise store_error(error, doing) from None


def kv_errors_in(error: BaseException) -> list[KVError] | None:
    """The KV errors `error` is made of, if that is all it is made of: itself, or the errors of a
    (nested) exception group, such as a nursery raises when its tasks' KV calls fail; None if it holds
    anything else. Pure."""
    leaves = exception_leaves(error)
    if all(isinstance(leaf, KVError) for leaf in leaves):
        return [leaf for leaf in leaves if isinstance(leaf, KVError)]
    return None
