"""The node's request errors: KV failures become `unavailable` in one place (`core/_kv_errors.py`), and an
error's kind, message and slice exception type survive every wire (`RequestError.to_wire`/`from_wire`)."""

from __future__ import annotations

import pytest

from aether_kv import (
    CompactedError,
    ConnectionLostError,
    KVError,
    LeaseNotFoundError,
    OutcomeUnknownError,
    UnavailableError,
)
from aether_node.core._error_kinds import ErrorKind, http_status
from aether_node.core._errors import InvocationError, RequestError
from aether_node.core._kv_errors import store_errors

KV_ERRORS = [UnavailableError, OutcomeUnknownError, ConnectionLostError, LeaseNotFoundError, CompactedError]


@pytest.mark.parametrize("error_type", KV_ERRORS)
def test_every_kv_error_is_the_store_not_available(error_type: type[KVError]) -> None:
    with pytest.raises(RequestError) as raised, store_errors():
        raise error_type("no leader")
    assert raised.value.kind is ErrorKind.UNAVAILABLE
    assert raised.value.message == "the cluster's store is not available: no leader"
    assert http_status(raised.value.kind) == 503


def test_the_message_says_what_could_not_be_done() -> None:
    expected = r"^could not store the blueprint: timed out$"
    with pytest.raises(RequestError, match=expected), store_errors("could not store the blueprint"):
        raise OutcomeUnknownError("timed out")


def test_a_kv_error_the_caller_handles_passes_through() -> None:
    with pytest.raises(CompactedError), store_errors(passing=(CompactedError,)):
        raise CompactedError("compacted", compact_revision=7)
    with pytest.raises(RequestError), store_errors(passing=(CompactedError,)):
        raise UnavailableError("no leader")


def test_other_errors_are_left_alone() -> None:
    with pytest.raises(RequestError) as raised, store_errors():
        raise RequestError(ErrorKind.NOT_FOUND, "no blueprint named 'x'")
    assert raised.value.kind is ErrorKind.NOT_FOUND
    with pytest.raises(ValueError), store_errors():
        raise ValueError("a bug")


def test_a_known_kind_becomes_the_enum_member_an_unknown_one_stays_as_sent() -> None:
    assert RequestError("bad_request", "x").kind is ErrorKind.BAD_REQUEST
    newer = RequestError("something_new", "x")
    assert newer.kind == "something_new" and http_status(newer.kind) == 500


@pytest.mark.parametrize(
    "error",
    [
        InvocationError(ErrorKind.RAISED, "ValueError: no", remote_type="ValueError"),
        InvocationError(ErrorKind.TIMEOUT, "org.aether:echo:1.0.0#1: echo did not answer within 1 s"),
        InvocationError("something_new", "from a newer node"),
    ],
)
def test_an_error_crosses_the_wire_intact(error: InvocationError) -> None:
    wire = error.to_wire()
    back = InvocationError.from_wire(wire)
    assert type(back) is InvocationError
    assert (back.kind, back.message, back.remote_type) == (error.kind, error.message, error.remote_type)
    assert ("type" in wire) == (error.remote_type is not None)  # no "type": null in an HTTP answer


def test_a_peer_reply_without_a_kind_is_an_internal_error() -> None:
    back = InvocationError.from_wire({"message": "?"})
    assert back.kind is ErrorKind.INTERNAL and http_status(back.kind) == 500
