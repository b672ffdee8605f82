"""Unit tests for the linearizability checker used by the integration suite.

A checker that never fails proves nothing, so these tests pin down both
directions: known-bad histories are rejected with a message naming the key, and
histories produced by really executing operations on a dict are accepted however
their intervals overlap.
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from integration.linearizability import CheckResult, Operation, check_linearizable

# ------------------------------------------------------------------------ helpers


def put(
    key: str, value: str, t0: float, t1: float | None, *, client: int = 0, unknown: bool = False
) -> Operation:
    return Operation(
        client=client,
        kind="put",
        key=key,
        value=value,
        invoked=t0,
        returned=t1,
        unknown=unknown or t1 is None,
    )


def get(key: str, result: str | None, t0: float, t1: float, *, client: int = 0) -> Operation:
    return Operation(client=client, kind="get", key=key, invoked=t0, returned=t1, result=result)


def cas(
    key: str,
    expected: str | None,
    value: str,
    result: bool,
    t0: float,
    t1: float,
    *,
    client: int = 0,
) -> Operation:
    return Operation(
        client=client,
        kind="cas",
        key=key,
        value=value,
        expected=expected,
        invoked=t0,
        returned=t1,
        result=result,
    )


def assert_fails(result: CheckResult, key: str) -> None:
    assert not result.ok, result.message
    assert repr(key) in result.message, result.message


# ------------------------------------------------------------------- passing cases


def test_empty_history_is_linearizable() -> None:
    assert check_linearizable([]).ok


def test_sequential_history_passes() -> None:
    history = [
        get("k", None, 0, 1),
        put("k", "a", 2, 3),
        get("k", "a", 4, 5),
        cas("k", "a", "b", True, 6, 7),
        cas("k", "a", "c", False, 8, 9),
        get("k", "b", 10, 11),
        cas("k", None, "x", False, 12, 13),
    ]
    result = check_linearizable(history)
    assert result.ok, result.message
    assert result.explored >= len(history)


@pytest.mark.parametrize("read", [None, "a"])
def test_get_overlapping_put_may_see_either_value(read: str | None) -> None:
    history = [put("k", "a", 0, 10, client=1), get("k", read, 2, 3, client=2)]
    assert check_linearizable(history).ok


@pytest.mark.parametrize("final", ["a", "b"])
def test_overlapping_puts_may_take_effect_in_either_order(final: str) -> None:
    history = [
        put("k", "a", 0, 5, client=1),
        put("k", "b", 1, 4, client=2),
        get("k", final, 6, 7, client=3),
    ]
    assert check_linearizable(history).ok


def test_touching_intervals_count_as_concurrent() -> None:
    # The get starts exactly when the put returns; coarse clocks cannot order them.
    assert check_linearizable([put("k", "a", 0, 1), get("k", None, 1, 2)]).ok


def test_unknown_put_whose_value_is_read_later_passes() -> None:
    history = [
        put("k", "a", 0, 1),
        put("k", "b", 2, None, client=1),  # timed out: may have applied
        get("k", "b", 10, 11, client=2),
    ]
    assert check_linearizable(history).ok


def test_unknown_put_whose_value_is_never_read_passes() -> None:
    history = [
        put("k", "a", 0, 1),
        put("k", "b", 2, None, client=1),
        get("k", "a", 10, 11, client=2),
        get("k", "a", 12, 13, client=2),
    ]
    assert check_linearizable(history).ok


def test_timed_out_op_with_return_time_may_apply_after_the_timeout() -> None:
    # The client gave up at t=3 but the write landed later: still linearizable.
    timed_out = Operation(client=1, kind="put", key="k", value="b", invoked=2, returned=3, unknown=True)
    history = [put("k", "a", 0, 1), timed_out, get("k", "a", 4, 5), get("k", "b", 6, 7)]
    assert check_linearizable(history).ok


def test_unknown_cas_chain_passes() -> None:
    unknown_cas = [
        Operation(
            client=1,
            kind="cas",
            key="k",
            expected=None,
            value="a",
            invoked=0,
            returned=None,
            unknown=True,
        ),
        Operation(
            client=2,
            kind="cas",
            key="k",
            expected="a",
            value="b",
            invoked=0,
            returned=None,
            unknown=True,
        ),
    ]
    assert check_linearizable([*unknown_cas, get("k", "b", 5, 6)]).ok
    assert check_linearizable([*unknown_cas, get("k", None, 5, 6)]).ok


def test_keys_are_independent() -> None:
    history = [
        put("x", "1", 0, 1),
        put("y", "1", 0, 1),
        get("x", "1", 2, 3),
        get("y", "1", 2, 3),
        put("y", "2", 4, 5),
        get("x", "1", 6, 7),
    ]
    assert check_linearizable(history).ok


# ------------------------------------------------------------------- failing cases


def test_stale_read_after_completed_put_fails() -> None:
    result = check_linearizable([put("k", "a", 0, 1), get("k", None, 2, 3)])
    assert_fails(result, "k")
    assert "get('k') -> absent" in result.message


def test_cas_cannot_succeed_twice_from_the_same_expected_value() -> None:
    history = [
        cas("k", None, "a", True, 0, 5, client=1),
        cas("k", None, "b", True, 1, 6, client=2),
    ]
    assert_fails(check_linearizable(history), "k")


def test_failed_cas_when_it_must_have_matched_fails() -> None:
    history = [put("k", "a", 0, 1), cas("k", "a", "b", False, 2, 3)]
    assert_fails(check_linearizable(history), "k")


def test_lost_write_fails() -> None:
    history = [
        put("k", "a", 0, 1),
        put("k", "b", 2, 3),
        get("k", "a", 4, 5),  # b returned before this started: it was lost
    ]
    result = check_linearizable(history)
    assert_fails(result, "k")
    assert "get('k') -> 'a'" in result.message
    assert "register holds 'b'" in result.message


def test_unknown_put_read_then_older_value_read_fails() -> None:
    history = [
        put("k", "a", 0, 1),
        put("k", "b", 2, None, client=1),
        get("k", "b", 3, 4, client=2),
        get("k", "a", 5, 6, client=2),  # b was observed, so a is stale now
    ]
    assert_fails(check_linearizable(history), "k")


def test_reading_a_value_nobody_wrote_fails() -> None:
    result = check_linearizable([put("k", "a", 0, 1), get("k", "ghost", 0.5, 3)])
    assert_fails(result, "k")
    assert "'ghost'" in result.message


def test_failure_names_only_the_failing_key() -> None:
    history = [
        put("good", "1", 0, 1),
        get("good", "1", 2, 3),
        put("bad", "1", 0, 1),
        get("bad", None, 2, 3),
    ]
    result = check_linearizable(history)
    assert_fails(result, "bad")
    assert "'good'" not in result.message


def test_operation_validation() -> None:
    with pytest.raises(ValueError):
        Operation(client=0, kind="delete", key="k", invoked=0, returned=1)
    with pytest.raises(ValueError):
        Operation(client=0, kind="get", key="k", invoked=2, returned=1)
    with pytest.raises(ValueError):
        Operation(client=0, kind="cas", key="k", value="v", invoked=0, returned=1, result=None)


# ------------------------------------------------------------------- scalability


def synthetic_history(
    n_ops: int,
    *,
    n_clients: int,
    keys: int,
    seed: int,
    unknown_rate: float = 0.0,
) -> list[Operation]:
    """A realistic linearizable history: clients issue calls back to back, each call
    takes effect at a random instant inside its interval, and results come from
    executing the calls on a dict in the order of those instants."""
    rng = random.Random(seed)
    clock = [0.0] * n_clients
    planned = []
    for n in range(n_ops):
        client = n % n_clients
        invoked = clock[client] + rng.uniform(0.0, 0.5)
        returned = invoked + rng.uniform(0.1, 3.0)
        clock[client] = returned
        planned.append((rng.uniform(invoked, returned), client, invoked, returned))
    planned.sort()

    store: dict[str, str] = {}
    history = []
    for _point, client, invoked, returned in planned:
        key = f"k{rng.randrange(keys)}"
        kind = rng.choice(["put", "get", "get", "cas"])
        value = rng.choice("abcde")
        expected = rng.choice([None, *"abcde"])
        result: str | bool | None = None
        if kind == "put":
            store[key] = value
        elif kind == "get":
            result = store.get(key)
        else:
            result = store.get(key) == expected
            if result:
                store[key] = value
        unknown = rng.random() < unknown_rate
        history.append(
            Operation(
                client=client,
                kind=kind,
                key=key,
                value=value,
                expected=expected,
                invoked=invoked,
                returned=None if unknown else returned,
                result=result,
                unknown=unknown,
            )
        )
    return history


def test_two_thousand_ops_ten_clients_stays_small() -> None:
    history = synthetic_history(2000, n_clients=10, keys=5, seed=1, unknown_rate=0.02)
    result = check_linearizable(history)
    assert result.ok, result.message
    # Counted in search states, not seconds: catches an accidental exponential blow-up.
    assert result.explored < 50_000, result.explored


def test_many_unread_unknown_writes_do_not_blow_up() -> None:
    # 30 timed-out writes that never took effect hang around for the whole history;
    # a naive search would try every subset of them before each read.
    history = [put("k", "a", 0, 1)]
    history += [put("k", f"u{n}", 2, None, client=n + 1) for n in range(30)]
    history += [get("k", "a", 10 + 2 * n, 11 + 2 * n) for n in range(200)]
    result = check_linearizable(history)
    assert result.ok, result.message
    assert result.explored < 20_000, result.explored
    bad = check_linearizable([*history, get("k", None, 1000, 1001)])
    assert_fails(bad, "k")
    assert bad.explored < 20_000, bad.explored


# ---------------------------------------------------------------------- properties

KEYS = ["x", "y"]
VALUES = ["a", "b", "c"]
NEVER_WRITTEN = "never-written"


@st.composite
def executed_histories(draw: st.DrawFn, *, sequential: bool) -> list[Operation]:
    """Execute random calls one by one on a dict. Call n takes effect at t=10n; its
    interval contains that instant, widened at random so neighbours overlap (unless
    ``sequential``). Some calls lose their outcome: either they were applied and the
    client never heard back, or they were never applied at all."""
    store: dict[str, str] = {}
    history = []
    for n in range(draw(st.integers(0, 30))):
        kind = draw(st.sampled_from(["put", "get", "cas"]))
        key = draw(st.sampled_from(KEYS))
        value = draw(st.sampled_from(VALUES))
        expected = draw(st.sampled_from([None, *VALUES]))
        if sequential:
            invoked, returned, fate = 10 * n - 1, 10 * n + 1, "known"
        else:
            invoked = 10 * n - draw(st.integers(0, 35))
            returned = 10 * n + draw(st.integers(0, 35))
            fate = draw(st.sampled_from(["known"] * 4 + ["applied", "dropped"]))

        result: str | bool | None = None
        if fate != "dropped":
            if kind == "put":
                store[key] = value
            elif kind == "get":
                result = store.get(key)
            else:
                result = store.get(key) == expected
                if result:
                    store[key] = value
        unknown = fate != "known"
        if unknown:
            # A timed-out call may still report when the client gave up.
            returned = draw(st.sampled_from([None, returned]))
        history.append(
            Operation(
                client=n % 10,
                kind=kind,
                key=key,
                value=value,
                expected=expected,
                invoked=invoked,
                returned=returned,
                result=None if unknown else result,
                unknown=unknown,
            )
        )
    return history


@settings(max_examples=300, deadline=None)
@given(executed_histories(sequential=False))
def test_executed_histories_are_linearizable(history: list[Operation]) -> None:
    result = check_linearizable(history)
    assert result.ok, result.message


@settings(max_examples=200, deadline=None)
@given(executed_histories(sequential=True), st.data())
def test_reading_a_never_written_value_in_a_sequential_history_fails(
    history: list[Operation], data: st.DataObject
) -> None:
    assert check_linearizable(history).ok
    gets = [n for n, op in enumerate(history) if op.kind == "get"]
    if not gets:
        return
    n = data.draw(st.sampled_from(gets))
    history[n] = get(history[n].key, NEVER_WRITTEN, history[n].invoked, history[n].returned)
    result = check_linearizable(history)
    assert_fails(result, history[n].key)
    assert repr(NEVER_WRITTEN) in result.message


def brute_force_linearizable(history: list[Operation]) -> bool:
    """Reference oracle: try every subset of unknown ops and every order of the
    resulting calls that respects real time, executing each order on a dict."""
    known = [op for op in history if not op.is_unknown]
    unknown = [op for op in history if op.is_unknown]

    def legal(order: tuple[Operation, ...]) -> bool:
        store: dict[str, str | None] = {}
        for n, op in enumerate(order):
            # Real time: nothing placed later may have returned before op was invoked.
            if any(not later.is_unknown and later.returned < op.invoked for later in order[n + 1 :]):
                return False
            current = store.get(op.key)
            if op.kind == "put":
                store[op.key] = op.value
            elif op.kind == "get":
                if not op.is_unknown and op.result != current:
                    return False
            else:
                matches = current == op.expected
                if not op.is_unknown and matches != op.result:
                    return False
                if matches:
                    store[op.key] = op.value
        return True

    for size in range(len(unknown) + 1):
        for taken in itertools.combinations(unknown, size):
            if any(legal(order) for order in itertools.permutations([*known, *taken])):
                return True
    return False


@st.composite
def arbitrary_histories(draw: st.DrawFn) -> list[Operation]:
    """Small histories with made-up results and intervals: mostly not linearizable."""
    history = []
    for n in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["put", "get", "cas"]))
        invoked = draw(st.integers(0, 8))
        returned = invoked + draw(st.integers(0, 4))
        unknown = draw(st.integers(0, 4)) == 0
        if kind == "get":
            result = draw(st.sampled_from([None, "a", "b"]))
        elif kind == "cas":
            result = draw(st.booleans())
        else:
            result = None
        history.append(
            Operation(
                client=n,
                kind=kind,
                key=draw(st.sampled_from(KEYS)),
                value=draw(st.sampled_from(["a", "b"])),
                expected=draw(st.sampled_from([None, "a", "b"])),
                invoked=invoked,
                returned=draw(st.sampled_from([None, returned])) if unknown else returned,
                result=result,
                unknown=unknown,
            )
        )
    return history


@settings(max_examples=500, deadline=None)
@given(arbitrary_histories())
def test_checker_agrees_with_brute_force(history: list[Operation]) -> None:
    result = check_linearizable(history)
    assert result.ok == brute_force_linearizable(history), result.message
