"""The fast ingress's direct path, pure parts: the retry rule the invoker and the worker share, the
worker's reading of the node's routing table (a bad entry is left out: its calls go to the node), and the
bytes it passes through (an INVOKE frame around the request's body, a reply's result answered as it is)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aether_node.core._blueprint import Balancing
from aether_node.routing._endpoints import may_retry
from aether_node.routing._ingress_direct import DirectRouter, split_frames, split_result
from aether_node.routing._ingress_worker import render_reply, render_result
from aether_slice import protocol
from aether_slice.protocol import Kind, ProtocolError


def test_a_call_that_never_ran_may_always_go_elsewhere_one_that_may_have_run_only_if_idempotent() -> None:
    assert may_retry(reached=False, idempotent=False)
    assert may_retry(reached=False, idempotent=True)
    assert may_retry(reached=True, idempotent=True)
    assert not may_retry(reached=True, idempotent=False)


def router() -> DirectRouter:
    return DirectRouter(None, lambda reply: b"", lambda result: b"")  # type: ignore[arg-type]


def test_the_worker_reads_the_nodes_table() -> None:
    direct = router()
    direct.update(
        {
            "node": "n1",
            "timeout": 7.5,
            "routes": [
                ["org.aether:echo", "echo", "power_of_two", [["org.aether:echo:1.0.0", 2, True, "echo#2"]]],
            ],
            "tokens": {"secret": ["org.aether:echo:1.0.0", 2]},
        }
    )
    route = direct.routes[("org.aether:echo", "echo")]
    assert route.strategy is Balancing.POWER_OF_TWO
    (endpoint,) = route.endpoints
    assert (endpoint.node_id, endpoint.target, endpoint.idempotent) == (
        "n1",
        ("org.aether:echo:1.0.0", 2),
        True,
    )
    assert route.labels == {("org.aether:echo:1.0.0", 2): "echo#2"}
    assert direct.tokens == {"secret": ("org.aether:echo:1.0.0", 2)}
    assert direct.timeout == 7.5


def test_a_bad_route_in_the_table_is_left_out_and_the_others_kept() -> None:
    direct = router()
    good = ["org.aether:echo", "echo", "round_robin", [["org.aether:echo:1.0.0", 1, True, "echo#1"]]]
    direct.update(
        {
            "node": "n1",
            "routes": [
                ["org.aether:echo", "info", "no_such_strategy", [["org.aether:echo:1.0.0", 1, True, "x"]]],
                ["org.aether:echo", "other", "round_robin", [["not coordinates", 1, True, "x"]]],
                ["too", "short"],
                good,
            ],
        }
    )
    assert list(direct.routes) == [("org.aether:echo", "echo")]
    assert direct.tokens == {}
    assert direct.timeout == 30.0


def _json(floats: st.SearchStrategy[float]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | floats | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )


JSON = _json(st.floats(allow_nan=False, allow_infinity=False))
PYTHON_JSON = _json(st.floats())  # with NaN and Infinity, which Python's json writes and reads


def loose_reply(request_id: int, result: Any) -> bytes:
    """A reply frame's payload as a host that does not refuse NaN and Infinity would write it (this
    version's answers `bad_result` instead; another version's may not)."""
    reply = json.dumps(protocol.reply(request_id, result), ensure_ascii=False, separators=(",", ":"))
    return reply.encode("utf-8", "surrogatepass")


@given(result=PYTHON_JSON, request_id=st.integers(min_value=1, max_value=2**53))
def test_a_result_passed_through_is_answered_exactly_as_the_decoded_reply_would_be(
    result: Any, request_id: int
) -> None:
    payload = loose_reply(request_id, result)
    verbatim = split_result(payload)
    expected = render_reply({"s": 200, "r": protocol.decode(payload)["ok"]})
    if verbatim is None:  # the long way: what the node would not render as written (NaN, a surrogate...)
        return
    assert verbatim[0] == request_id
    assert render_result(verbatim[1]) == expected


def test_a_plain_result_is_passed_through() -> None:
    payload = protocol.encode(protocol.reply(7, {"a": [1, "é", None]}))[4:]
    assert split_result(payload) == (7, '{"a":[1,"é",null]}'.encode())


@pytest.mark.parametrize("result", [math.nan, [math.inf], {"x": -math.inf}, "\ud800", "text NaN"])
def test_a_result_the_node_would_not_render_as_written_takes_the_long_way(result: Any) -> None:
    assert split_result(loose_reply(3, result)) is None


@pytest.mark.parametrize("result", [math.nan, [math.inf], {"x": -math.inf}])
def test_a_result_with_nan_or_infinity_is_answered_as_a_bad_result_not_a_bare_500(result: Any) -> None:
    """What the long way renders for such a reply of a host of another version."""
    answer = render_reply({"s": 200, "r": protocol.decode(loose_reply(3, result))["ok"]})
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert json.loads(body) == {
        "error": {
            "kind": "bad_result",
            "message": "the result cannot be answered: Out of range float values are not JSON compliant",
        }
    }


@pytest.mark.parametrize(
    "message",
    [protocol.error_reply(3, "raised", "boom"), {"ok": 1, "id": 3}, {"id": "c1", "ok": 1}, {"id": 3}],
)
def test_frames_of_other_shapes_are_decoded(message: dict[str, Any]) -> None:
    assert split_result(protocol.encode(message)[4:]) is None


@given(payload=JSON, entry=st.text(min_size=1), request_id=st.integers(min_value=1, max_value=2**53))
def test_an_invoke_frame_around_the_body_is_the_frame_the_payload_would_encode_to(
    payload: Any, entry: str, request_id: int
) -> None:
    direct = router()
    route = ["a:b", entry, "round_robin", [["a:b:1", 1, True, "b#1"]]]
    direct.update({"node": "n1", "routes": [route], "timeout": 12.5})
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    spliced = direct.routes[("a:b", entry)].invoke_head % (request_id, direct.timeout_json) + body + b"}"
    # (the timeout travels with it: the instance caps the calls the entry point makes by it)
    expected = protocol.request(request_id, Kind.INVOKE, entry=entry, timeout=12.5, payload=payload)
    assert spliced == protocol.encode(expected)[4:]


def test_frames_are_split_off_the_buffer_and_a_partial_one_is_kept() -> None:
    frames = [protocol.encode({"id": n, "ok": n}) for n in range(3)]
    buffer = bytearray(b"".join(frames) + frames[0][:5])
    assert split_frames(buffer, protocol.MAX_FRAME) == [f[4:] for f in frames]
    assert buffer == frames[0][:5]
    with pytest.raises(ProtocolError, match="over the limit"):
        split_frames(bytearray(b"\xff\xff\xff\xff"), protocol.MAX_FRAME)
