"""A chain of slice-to-slice calls, on the instance's side (`aether_slice.host.Host`, in this process, its
frames written to a list): an INVOKE's `depth` and `timeout` reach what its entry point runs (sync or
async); a call the entry point makes is one deeper and gets no more than the time left; one past
`MAX_CALL_DEPTH`, or made with no time left, fails at once and sends nothing. The node's own refusal of a
call too deep, and a chain through real processes, are in tests/integration/test_call_chains.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aether_slice import EntryPoint, SliceCallError, protocol
from aether_slice import host as host_module
from aether_slice.protocol import MAX_CALL_DEPTH, Kind


def decoded(frames: list[bytes]) -> list[dict[str, Any]]:
    decoder = protocol.FrameDecoder()
    for frame in frames:
        decoder.feed(frame)
    return list(iter(decoder.next, None))


def make_host(frames: list[bytes], **entries: Any) -> host_module.Host:
    host = host_module.Host(write=frames.append)
    host.entries = {name: EntryPoint(name=name, function=function) for name, function in entries.items()}
    return host


async def until(condition: Any, what: str, timeout: float = 10.0) -> None:
    """Wait, on the running loop, until `condition()` holds (AssertionError naming `what` at the deadline)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        await asyncio.sleep(0.001)


def invoke(host: host_module.Host, entry: str, **fields: Any) -> list[bytes]:
    replies: list[bytes] = []
    host.serve(protocol.request(1, Kind.INVOKE, entry=entry, payload=None, **fields), replies)
    return replies


def test_an_invoke_tells_a_sync_entry_point_its_depth_and_deadline() -> None:
    async def scenario() -> None:
        frames: list[bytes] = []

        def seen(payload: Any) -> list[Any]:
            serving = host_module._serving.get()
            return [0, None] if serving is None else [serving.depth, serving.deadline]

        host = make_host(frames, seen=seen)
        now = asyncio.get_running_loop().time()
        (answer,) = decoded(invoke(host, "seen", depth=5, timeout=2.0))
        depth, deadline = answer["ok"]
        assert depth == 5 and now + 1.5 < deadline <= asyncio.get_running_loop().time() + 2.0
        (outside,) = decoded(invoke(host, "seen"))  # a call from outside, no timeout said
        assert outside["ok"] == [0, None]
        assert host_module._serving.get() is None  # the call's, not the host's

    asyncio.run(scenario())


def test_a_call_is_one_deeper_and_gets_no_more_than_the_time_left() -> None:
    async def scenario() -> None:
        frames: list[bytes] = []

        async def forward(payload: Any) -> Any:
            return await host.call("org.example:next", "go", payload, 60.0)

        host = make_host(frames, forward=forward)
        assert invoke(host, "forward", depth=3, timeout=2.0) == []  # async: answered later
        await until(lambda: frames, "the call to the next slice")
        (call,) = decoded(frames)
        assert (call["op"], call["artifact"], call["depth"]) == ("call", "org.example:next", 4)
        assert 0 < call["timeout"] <= 2.0
        host.serve(protocol.reply(call["id"], "done"), [])
        await until(lambda: len(frames) == 2, "the answer to the invoke")
        assert decoded(frames[1:]) == [{"id": 1, "ok": "done"}]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("fields", "kind", "words"),
    [
        pytest.param({"depth": MAX_CALL_DEPTH}, "bad_request", f"at most {MAX_CALL_DEPTH}", id="too-deep"),
        pytest.param({"timeout": 0.001}, "timeout", "no time left", id="no-time-left"),
    ],
)
def test_a_call_too_deep_or_with_no_time_left_fails_at_once_and_sends_nothing(
    fields: dict[str, Any], kind: str, words: str
) -> None:
    async def scenario() -> None:
        frames: list[bytes] = []

        async def forward(payload: Any) -> Any:
            await asyncio.sleep(0.01)  # (past a deadline of 1 ms)
            try:
                return await host.call("org.example:next", "go", payload, 60.0)
            except SliceCallError as error:
                return {"kind": error.kind, "message": error.message}

        host = make_host(frames, forward=forward)
        invoke(host, "forward", **fields)
        await until(lambda: frames, "the answer to the invoke")
        (answer,) = decoded(frames)  # the answer only: no CALL went out
        assert answer["ok"]["kind"] == kind and words in answer["ok"]["message"], answer

    asyncio.run(scenario())


def test_an_invoke_with_a_depth_that_is_not_a_count_is_refused() -> None:
    async def scenario() -> None:
        host = make_host([], seen=lambda payload: "ran")
        for depth in (-1, "3", True, 1.5):
            (answer,) = decoded(invoke(host, "seen", depth=depth))
            assert answer["error"]["kind"] == protocol.HostErrorKind.PROTOCOL, answer

    asyncio.run(scenario())


def test_too_deep_says_which_call_and_the_limit() -> None:
    assert protocol.too_deep(MAX_CALL_DEPTH, "org.example:a", "go") is None
    why = protocol.too_deep(MAX_CALL_DEPTH + 1, "org.example:a", "go")
    assert why is not None and "org.example:a/go" in why and f"call {MAX_CALL_DEPTH + 1}" in why


def test_a_task_started_by_an_answered_call_calls_on_with_its_depth_but_no_deadline() -> None:
    """A worker an entry point starts (a batcher, a flusher) outlives the call: its later calls are not
    refused for the call's spent time, but stay one deeper than it (a loop through tasks stays bounded)."""

    async def scenario() -> None:
        frames: list[bytes] = []
        outcomes: list[Any] = []

        async def later() -> None:
            await asyncio.sleep(0.2)  # past the 0.1 s of the call that started it
            outcomes.append(await host.call("org.example:next", "go", None, 5.0))

        def start_worker(payload: Any) -> str:
            asyncio.get_running_loop().create_task(later())
            return "started"

        host = make_host(frames, start=start_worker)
        (answer,) = decoded(invoke(host, "start", depth=7, timeout=0.1))
        assert answer["ok"] == "started"
        await until(lambda: frames, "the worker's call")
        (call,) = decoded(frames)
        assert (call["depth"], call["timeout"]) == (8, 5.0)
        host.serve(protocol.reply(call["id"], "done"), [])
        await until(lambda: outcomes, "the worker's call answered")
        assert outcomes == ["done"]

    asyncio.run(scenario())


@pytest.mark.parametrize("timeout", [0, -1.0, True, float("nan"), 7200])
def test_a_call_with_a_timeout_that_is_not_seconds_is_refused_and_sends_nothing(timeout: Any) -> None:
    async def scenario() -> None:
        frames: list[bytes] = []
        host = make_host(frames)
        with pytest.raises(SliceCallError) as refused:
            await host.call("org.example:next", "go", None, timeout)
        assert refused.value.kind == "bad_request" and "timeout" in refused.value.message
        assert frames == []

    asyncio.run(scenario())
