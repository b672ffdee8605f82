"""`EndpointOrder` (pure): a KV client goes round its endpoints from the one it last used, passes over one
that failed for a time that doubles while it keeps failing, forgets that once it connects, and still tries
every endpoint when all are being passed over."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aether_kv._endpoint_order import PASS_OVER_MAX, PASS_OVER_START, EndpointOrder

ENDPOINTS = ("a:1", "b:2", "c:3")


def test_it_goes_round_from_the_endpoint_last_used() -> None:
    order = EndpointOrder(ENDPOINTS)
    assert order.candidates(0.0) == ["a:1", "b:2", "c:3"]
    order.connected("b:2")
    assert order.candidates(0.0) == ["b:2", "c:3", "a:1"]
    order.move_on()  # (its connection ended)
    assert order.candidates(0.0) == ["c:3", "a:1", "b:2"]


def test_a_failed_endpoint_is_passed_over_for_a_time_that_doubles_and_forgotten_once_it_connects() -> None:
    order = EndpointOrder(ENDPOINTS)
    order.failed("a:1", 10.0)
    assert order.candidates(10.0) == ["b:2", "c:3", "a:1"]
    order.connected("b:2")
    order.move_on()  # (b's connection ended: c, then a, which is still passed over)
    assert order.candidates(10.5) == ["c:3", "b:2", "a:1"]
    assert order.candidates(10.0 + PASS_OVER_START) == ["c:3", "a:1", "b:2"]  # (due again)
    order.failed("a:1", 20.0)
    assert order.candidates(20.0 + PASS_OVER_START)[-1] == "a:1"  # (twice in a row: twice as long)
    assert order.candidates(20.0 + 2 * PASS_OVER_START)[-1] != "a:1"
    order.connected("a:1")
    order.failed("a:1", 30.0)
    order.connected("c:3")
    # its failures were forgotten: passed over 1 s again, not 4 (a third failure in a row)
    assert order.candidates(30.0 + PASS_OVER_START) == ["c:3", "a:1", "b:2"]


def test_when_every_endpoint_is_passed_over_all_are_tried_the_soonest_due_first() -> None:
    order = EndpointOrder(ENDPOINTS)
    for _ in range(3):
        order.failed("c:3", 0.0)  # (4 s)
    order.failed("a:1", 0.0)
    order.failed("b:2", 0.0)
    order.failed("b:2", 0.0)  # (2 s)
    assert order.candidates(0.5) == ["a:1", "b:2", "c:3"]


def test_an_endpoint_that_never_stops_failing_is_put_back_at_most_the_longest_time() -> None:
    """(Counted without a cap, the 1,025th failure in a row raised OverflowError: 2.0 ** 1024.)"""
    order = EndpointOrder(ENDPOINTS)
    for _ in range(10_000):
        order.failed("a:1", 0.0)
    order.connected("c:3")  # (the round: c, a, b, once a is due)
    assert order.candidates(PASS_OVER_MAX - 0.1) == ["c:3", "b:2", "a:1"]
    assert order.candidates(PASS_OVER_MAX) == ["c:3", "a:1", "b:2"]


@settings(deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ENDPOINTS), st.floats(0, 1_000)), max_size=40))
def test_every_endpoint_is_always_a_candidate_and_a_pass_over_is_bounded(
    failures: list[tuple[str, float]],
) -> None:
    order = EndpointOrder(ENDPOINTS)
    latest = 0.0
    for endpoint, at in failures:
        order.failed(endpoint, at)
        latest = max(latest, at)
        assert sorted(order.candidates(at)) == sorted(ENDPOINTS)
    assert order.candidates(latest + PASS_OVER_MAX)[0] == ENDPOINTS[order.next % 3]
