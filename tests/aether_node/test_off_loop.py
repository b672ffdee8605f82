"""Big JSON off the event loop (`core/_off_loop.py`): written in pieces and read with hooks in Python, the
same text and the same values as in one call; small work stays where it is."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from aether_node.core import _off_loop as off_loop
from aether_node.core._off_loop import BIG, PIECE, in_pieces, json_size_at_least, loads_yielding, run_sized
from aether_slice import protocol

ENCODERS = {
    "host protocol": protocol.encode_json,
    "ingress": json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode,
    "peer link": json.JSONEncoder(separators=(",", ":")).encode,
}

BIG_VALUES = {
    "a long list of numbers": [1.5, 2, -3] * (BIG // 4),
    "an object of many members": {f"k{i}": [i, "é" * 3, None, True] for i in range(BIG // 16)},
    "a big list inside a small object": {"id": 1, "payload": [{"n": i, "s": "x" * 40} for i in range(8000)]},
    "numbers as keys": {i: "v" for i in range(3 * PIECE + 1)} | {"tail": ["x" * 300_000]},
    "a long string": "ü" * (2 * BIG),
    "empty pieces": [[], {}, ""] * (BIG // 3) + [[1] * (BIG // 2)],
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=30,
)


@pytest.mark.parametrize("encoder", ENCODERS.values(), ids=ENCODERS.keys())
@pytest.mark.parametrize("value", BIG_VALUES.values(), ids=BIG_VALUES.keys())
def test_a_big_value_in_pieces_is_the_same_text(encoder, value) -> None:  # type: ignore[no-untyped-def]
    assert json_size_at_least(value) >= BIG
    assert in_pieces(encoder)(value) == encoder(value)


@settings(max_examples=300)
@given(json_values)
def test_any_value_in_small_pieces_is_the_same_text(value: object) -> None:
    """With a threshold of 16 bytes and pieces of 2 items, any value is cut up everywhere it can be."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(off_loop, "BIG", 16)
        patch.setattr(off_loop, "PIECE", 2)
        assert in_pieces(protocol.encode_json)(value) == protocol.encode_json(value)


def test_what_cannot_be_written_fails_alike_in_pieces() -> None:
    value = [1.0] * BIG + [float("nan")]
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        in_pieces(protocol.encode_json)(value)
    with pytest.raises(protocol.ProtocolError, match="NaN or Infinity"):
        protocol.encode({"payload": value}, json_text=in_pieces(protocol.encode_json))


@pytest.mark.parametrize("value", BIG_VALUES.values(), ids=BIG_VALUES.keys())
def test_read_with_hooks_is_the_same_value(value) -> None:  # type: ignore[no-untyped-def]
    text = json.dumps(value)
    assert loads_yielding(text) == json.loads(text)


def test_json_size_is_a_lower_bound_that_reaches_the_limit() -> None:
    assert json_size_at_least({"a": 1}) < 20
    assert json_size_at_least(["x" * 100] * (BIG // 100)) >= BIG
    assert json_size_at_least([{"a": [1] * 100}] * (BIG // 100)) >= BIG


async def test_small_work_stays_on_the_loop_and_big_work_goes_to_a_thread() -> None:
    def where() -> str:
        return threading.current_thread().name

    here = threading.current_thread().name
    assert await run_sized(BIG - 1, where) == here
    assert await run_sized(BIG, where) != here


async def turns_while(write: Callable[[object], str], value: object) -> int:
    """How many times a task of the loop got to run while a worker thread was inside `write(value)`:
    the runs of its turns between the thread's own marks on each side of the call (a thread that waits
    for a core or for the GIL before it begins, on a busy machine, adds none; nor does how fast the turns
    of one run go)."""
    stamps: list[float] = []
    window: list[float] = []
    done = trio.Event()

    def timed_write(value: object) -> None:
        window.append(time.perf_counter())
        write(value)
        window.append(time.perf_counter())

    async def count() -> None:
        while not done.is_set():
            stamps.append(time.perf_counter())
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(count)
        await trio.to_thread.run_sync(timed_write, value)
        done.set()
    began, ended = window
    inside = [stamp for stamp in stamps if began < stamp < ended]
    # The turns come in runs, one each time the loop's thread got the GIL back: count the runs (a gap
    # of a millisecond between two turns is a wait, not a turn's own work).
    return sum(1 for before, after in zip([began, *inside], inside, strict=False) if after - before > 0.001)


async def test_the_loop_runs_while_a_thread_writes_a_big_value_in_pieces() -> None:
    """One C call holds the GIL to its end, and the loop's task waits (it may run at the call's edges,
    where the thread can let go of the GIL); in pieces it runs all along (counted, not timed: 1 against
    ~55 on an idle machine). On a busy one the loop's thread may also be descheduled in the middle of a
    run at an edge, which splits it in two (a CI run counted 4 for the one call): a few more are allowed,
    far from what the pieces give."""
    value = [[1.5] * PIECE for _ in range(400)]
    in_one_call = await turns_while(protocol.encode_json, value)
    in_pieces_runs = await turns_while(in_pieces(protocol.encode_json), value)
    assert in_one_call <= 6
    assert in_pieces_runs > max(10, 2 * in_one_call)
