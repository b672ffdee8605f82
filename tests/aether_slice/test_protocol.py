"""The slice host protocol (`aether_slice.protocol`): frames and messages round-trip however the bytes
are split; a frame cut short, over the limit, not JSON or not an object, and a message of no known kind
or of another version, are refused with an error that says which. Then the runner itself
(`python -m aether_slice.host`, a real template and instance) on such input: it answers an unknown
operation with a protocol error and goes on, and ends the connection on a broken frame; and the
`slice_host` fixture refuses to send what is over the limit, leaving its instance serving."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from template_support import TemplateProcess

from aether_slice import EntryPoint, SliceCallError, protocol
from aether_slice import host as host_module
from aether_slice.host import Host
from aether_slice.protocol import HEADER, MAX_FRAME, FrameDecoder, Kind, ProtocolError
from aether_slice.testing import SliceHostError
from support import wait_until_sync

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)  # (JSON has neither: encode refuses them)
    | st.text(),  # lone surrogates included
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=20,
)
messages = st.dictionaries(st.text(), json_values, max_size=6)


def frame_of(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def decode_all(data: bytes, cuts: list[int], *, max_frame: int = MAX_FRAME) -> list[dict[str, Any]]:
    """Feed `data` to a decoder in pieces split at `cuts`, taking every message as it becomes whole."""
    decoder = FrameDecoder(max_frame=max_frame)
    found = []
    bounds = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    for start, end in itertools.pairwise(bounds):
        decoder.feed(data[start:end])
        while (message := decoder.next()) is not None:
            found.append(message)
    decoder.end()
    return found


# ------------------------------------------------------------------ frames


@settings(max_examples=100, deadline=None)
@given(st.lists(messages, max_size=4), st.lists(st.integers(min_value=0), max_size=6))
def test_messages_round_trip_however_the_stream_is_split(sent: list[dict[str, Any]], cuts: list[int]) -> None:
    data = b"".join(protocol.encode(message) for message in sent)
    assert decode_all(data, cuts) == sent


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(sorted(protocol.REQUESTS)),
    st.one_of(st.integers(), st.text()),
    st.dictionaries(st.sampled_from(["entry", "payload", "config", "artifact"]), json_values),
)
def test_every_request_round_trips_and_keeps_its_kind(kind: Kind, request_id: Any, fields: dict) -> None:
    [decoded] = decode_all(protocol.encode(protocol.request(request_id, kind, **fields)), [])
    assert decoded == {"id": request_id, "op": str(kind), **fields}
    assert protocol.kind_of(decoded) is kind


@given(json_values, st.text(), st.one_of(st.none(), st.text()), st.one_of(st.none(), st.text()))
def test_replies_and_errors_round_trip(
    result: Any, message: str, detail: str | None, remote_type: str | None
) -> None:
    [ok] = decode_all(protocol.encode(protocol.reply(7, result)), [])
    assert protocol.kind_of(ok) is Kind.REPLY and ok["ok"] == result
    sent = protocol.error_reply("c3", "raised", message, detail=detail, type=remote_type)
    [error] = decode_all(protocol.encode(sent), [])
    assert protocol.kind_of(error) is Kind.ERROR and error["id"] == "c3"
    assert protocol.failure_of(error) == protocol.Failure(
        kind="raised", message=message, detail=detail, type=remote_type
    )


def test_a_stream_that_ends_inside_a_frame_is_refused() -> None:
    whole = protocol.encode({"id": 1, "op": "start"})
    for cut in (2, HEADER.size, len(whole) - 1):  # inside the length, after it, one byte short
        decoder = FrameDecoder()
        decoder.feed(whole[:cut])
        assert decoder.next() is None
        with pytest.raises(ProtocolError, match=rf"ended in the middle of a frame \({cut} bytes of it\)"):
            decoder.end()


def test_a_frame_over_the_limit_is_refused_from_its_length_alone() -> None:
    decoder = FrameDecoder(max_frame=100)
    decoder.feed(HEADER.pack(101))  # nothing of the payload needs to come
    with pytest.raises(ProtocolError, match="a frame of 101 bytes is over the limit of 100"):
        decoder.next()
    decoder = FrameDecoder()
    decoder.feed(HEADER.pack(2**32 - 1))
    with pytest.raises(ProtocolError, match=f"over the limit of {MAX_FRAME}"):
        decoder.next()
    assert decode_all(frame_of(b"{" + b" " * 98 + b"}"), [], max_frame=100) == [{}]  # at the limit


def test_a_message_over_the_limit_or_not_json_is_not_encoded() -> None:
    with pytest.raises(ProtocolError, match=r"a frame of \d+ bytes is over the limit of 64"):
        protocol.encode({"payload": "x" * 64}, max_frame=64)
    with pytest.raises(ProtocolError, match=r"the message is not JSON: .*object"):
        protocol.encode({"payload": object()})
    with pytest.raises(ProtocolError, match="not JSON"):
        protocol.encode({"payload": {1j: 1}})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_not_encoded(value: float) -> None:
    """JSON has no NaN or Infinity (Python's encoder would write them as NaN and Infinity, which no
    other reader and no HTTP answer of the node takes): refused like anything else that is not JSON."""
    with pytest.raises(ProtocolError) as refused:
        protocol.encode({"id": 1, "ok": {"x": [1.5, value]}})
    assert (
        str(refused.value) == "the message is not JSON: it holds NaN or Infinity, which JSON has no value for"
    )


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        pytest.param(b"{nope", r"a frame is not valid JSON \(UTF-8\): Expecting property", id="bad-json"),
        pytest.param(b'{"a": "\xff"}', r"not valid JSON \(UTF-8\): 'utf-8' codec", id="bad-utf8"),
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b"[1, 2]", "a frame must hold a JSON object, got list", id="list"),
        pytest.param(b'"op"', "a frame must hold a JSON object, got str", id="string"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "not valid JSON", id="too-deep"),
    ],
)
def test_a_frame_that_is_not_a_json_object_is_refused_and_the_stream_goes_on(
    payload: bytes, error: str
) -> None:
    decoder = FrameDecoder()
    decoder.feed(frame_of(payload) + protocol.encode({"id": 2, "ok": None}))
    with pytest.raises(ProtocolError, match=error):
        decoder.next()
    assert decoder.next() == {"id": 2, "ok": None}  # the frame's length kept the stream in step
    decoder.end()


# ------------------------------------------------------------------ kinds and versions


def test_each_message_has_its_kind() -> None:
    assert protocol.kind_of(protocol.hello("t", 1)) is Kind.HELLO
    assert protocol.kind_of(protocol.exit_event(5, -9, 1)) is Kind.EXIT
    assert protocol.kind_of(protocol.reply(1, None)) is Kind.REPLY
    assert protocol.kind_of(protocol.error_reply(1, "no_entry", "none")) is Kind.ERROR
    assert protocol.kind_of({"id": 1, "op": "invoke", "entry": "echo"}) is Kind.INVOKE


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (
            {"id": 1, "op": "frobnicate"},
            r"unknown operation 'frobnicate' \(known: attach, call, fork, health, invoke, kill,",
        ),
        ({"id": 1, "op": 3}, "unknown operation 3"),
        ({"id": 1, "op": "reply"}, "unknown operation 'reply'"),  # a kind, but no operation
        ({"id": 1, "answer": 42}, r"a message of no known kind \(its keys: answer, id\)"),
        ({}, r"no known kind \(its keys: none\)"),
    ],
)
def test_a_message_of_no_known_kind_is_refused(message: dict[str, Any], error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        protocol.kind_of(message)


def test_a_hello_or_load_answer_of_another_version_is_refused_and_one_without_a_version_is_older() -> None:
    hello = protocol.hello("secret", 12)
    assert hello["version"] == protocol.VERSION
    assert protocol.token_of(hello) == "secret"
    protocol.check_version(hello)
    loaded = protocol.loaded([{"name": "echo", "idempotent": True}], 12)
    assert loaded == {"entry_points": [{"name": "echo", "idempotent": True}], "pid": 12, "version": 3}
    protocol.check_version(loaded)
    fork = protocol.fork(3, {"a": 1}, "echo#3")
    assert fork == {"id": 3, "op": "fork", "config": {"a": 1}, "version": 3, "name": "echo#3"}
    assert protocol.refuse_fork_of_another_version(fork) is None
    # version 1 named a socket, a token and a log path in FORK; version 2's template answered FORK
    assert protocol.VERSION == 3
    for old, unnamed, version in (
        ({"hello": "secret", "pid": 12}, 1, 1),
        ({"pid": 12}, 1, 1),
        ({"version": 2}, 1, 2),
        ({"entry_points": [], "pid": 12}, 2, 2),  # a version 2 instance's answer to LOAD
    ):
        said = f"speaks host protocol version {version} and this side version {protocol.VERSION}"
        with pytest.raises(ProtocolError, match=said):
            protocol.check_version(old, unnamed=unnamed)
    for not_a_hello in (None, {"id": 1, "op": "start"}, {"hello": 5}):
        with pytest.raises(ProtocolError, match="first message must be its hello"):
            protocol.token_of(not_a_hello)


def test_an_error_is_read_leniently_and_says_the_exception_type_once() -> None:
    failure = protocol.failure_of({"id": 1, "error": {"message": "boom", "type": "KeyError"}})
    assert (failure.kind, failure.text) == ("raised", "KeyError: boom")
    assert protocol.failure_of({"error": {"message": "KeyError: boom", "type": "KeyError"}}).text == (
        "KeyError: boom"
    )
    assert protocol.failure_of({"error": "odd"}, default_kind="unavailable") == protocol.Failure(
        kind="unavailable", message="odd"
    )
    assert protocol.describe_exit(3) == "exit code 3"
    assert protocol.describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert protocol.describe_exit(-200) == "killed by signal 200"


# ------------------------------------------------------------------ the runner on such input


def test_the_runner_answers_a_result_it_cannot_send_with_bad_result() -> None:
    """A result over the frame limit, or not JSON: the node gets an error for that request, and the
    instance goes on (it used to send the frame, and the node closed the instance's connection)."""

    async def exchange() -> list[dict[str, Any]]:
        written = FrameDecoder()
        host = Host(written.feed)
        host.entries = {
            "big": EntryPoint(name="big", function=lambda _: "x" * MAX_FRAME),
            "odd": EntryPoint(name="odd", function=lambda _: {1, 2}),
            "fine": EntryPoint(name="fine", function=lambda payload: payload),
        }
        for number, entry in enumerate(("big", "odd", "fine"), 1):
            assert host.take(protocol.encode(protocol.request(number, Kind.INVOKE, entry=entry, payload=1)))
        await asyncio.gather(*host.tasks)
        return sorted(iter(written.next, None), key=lambda message: message["id"])

    big, odd, fine = asyncio.run(exchange())
    assert big["error"]["kind"] == odd["error"]["kind"] == "bad_result"
    assert f"over the limit of {MAX_FRAME}" in big["error"]["message"]
    assert "not JSON" in odd["error"]["message"] and "set" in odd["error"]["message"]
    assert fine == {"id": 3, "ok": 1}


def test_a_result_holding_nan_or_infinity_is_a_bad_result_naming_its_entry_point() -> None:
    """It used to be sent as `NaN`: the node then answered a plain 500 and the fixture returned nan."""

    async def later(value: float) -> Any:
        await asyncio.sleep(0)
        return {"values": [value]}

    async def exchange() -> list[dict[str, Any]]:
        written = FrameDecoder()
        host = Host(written.feed)
        host.entries = {
            "nan": EntryPoint(name="nan", function=lambda _: math.nan),  # answered at once
            "inf": EntryPoint(name="inf", function=lambda _: later(-math.inf)),  # by a task
        }
        for number, entry in enumerate(("nan", "inf"), 1):
            assert host.take(protocol.encode(protocol.request(number, Kind.INVOKE, entry=entry, payload=1)))
        await asyncio.gather(*host.tasks)
        return sorted(iter(written.next, None), key=lambda message: message["id"])

    nan, inf = asyncio.run(exchange())
    why = "cannot be sent: the message is not JSON: it holds NaN or Infinity, which JSON has no value for"
    assert nan["error"] == {"kind": "bad_result", "message": f"the result of entry point 'nan' {why}"}
    assert inf["error"] == {"kind": "bad_result", "message": f"the result of entry point 'inf' {why}"}


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def test_a_result_nested_too_deeply_for_json_is_a_bad_result_and_the_instance_lives_on() -> None:
    """The JSON writer's recursion limit raised RecursionError (a RuntimeError, not the TypeError or
    ValueError caught): it ended the slice process (exit code 70), the instance restarted."""

    async def exchange() -> list[dict[str, Any]]:
        written = FrameDecoder()
        host = Host(written.feed)
        host.entries = {
            "deep": EntryPoint(name="deep", function=lambda _: _nested(5000)),
            "fine": EntryPoint(name="fine", function=lambda payload: payload),
        }
        for number, entry in enumerate(("deep", "fine"), 1):
            assert host.take(protocol.encode(protocol.request(number, Kind.INVOKE, entry=entry, payload=1)))
        await asyncio.gather(*host.tasks)
        return sorted(iter(written.next, None), key=lambda message: message["id"])

    deep, fine = asyncio.run(exchange())
    assert deep["error"] == {
        "kind": "bad_result",
        "message": "the result of entry point 'deep' cannot be sent: the message is not JSON: it is nested"
        " too deeply to be written",
    }
    assert fine == {"id": 2, "ok": 1}


def test_a_call_to_another_slice_with_a_payload_json_cannot_carry_is_refused_before_it_is_sent() -> None:
    """As the node refuses such a payload (`bad_request`): a SliceCallError for the slice to handle, not
    a ProtocolError out of `context.call`."""

    async def exchange() -> tuple[SliceCallError, bytes]:
        written = bytearray()
        host = Host(written.extend)
        with pytest.raises(SliceCallError) as refused:
            await host.call("org.aether:echo", "echo", {"x": math.nan}, 1.0)
        return refused.value, bytes(written)

    error, written = asyncio.run(exchange())
    assert (error.kind, error.message) == (
        "bad_request",
        "call to org.aether:echo/echo: the payload: the message is not JSON: it holds NaN or Infinity,"
        " which JSON has no value for",
    )
    assert written == b""  # nothing sent


class _Runner:
    """A real template (`python -m aether_slice.host`) and one instance it forked, connected to this
    test as to a node: the node's part, spoken frame by frame."""

    def __init__(self, directory: Path) -> None:
        self.log_path = directory / "i.log"
        self.template = TemplateProcess(sys.executable, directory / "template.log")
        with open(self.log_path, "ab") as output:
            self.connection = self.template.fork({}, output.fileno())
        self.pid = self.connection.request(Kind.HEALTH)["ok"]["pid"]

    def from_template(self) -> dict[str, Any]:
        message = self.template.events.receive()
        assert message is not None, "the template closed its socket"
        return message

    def send(self, data: bytes) -> None:
        self.connection.send(data)

    def receive(self) -> dict[str, Any] | None:
        """The instance's next message; None once it closed the connection."""
        return self.connection.receive()

    def close(self) -> None:
        self.template.close()


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[_Runner]:
    started = _Runner(tmp_path)
    try:
        yield started
    finally:
        started.close()


def test_the_instance_refuses_an_unknown_operation(runner: _Runner) -> None:
    runner.send(protocol.encode({"id": 1, "op": "frobnicate"}))
    answer = runner.receive()
    assert answer is not None and answer["id"] == 1
    assert answer["error"]["kind"] == "protocol"
    assert "unknown operation 'frobnicate'" in answer["error"]["message"]
    runner.send(protocol.encode({"id": 2, "op": "fork"}))  # a template's operation, not an instance's
    answer = runner.receive()
    assert answer is not None and "does not answer a fork message" in answer["error"]["message"]
    runner.send(protocol.encode(protocol.request(3, Kind.HEALTH)))
    answer = runner.receive()
    assert answer is not None and answer["ok"]["pid"] == runner.pid  # still serving


def test_the_runner_ends_its_connection_on_a_broken_frame(runner: _Runner) -> None:
    runner.send(frame_of(b"{nope"))
    assert runner.receive() is None  # it closed the connection: to its node, it is gone
    event = runner.from_template()
    assert protocol.kind_of(event) is Kind.EXIT and event["pid"] == runner.pid
    assert event["code"] == 0  # it ended, it did not crash
    logged = runner.log_path.read_text()
    assert "the node sent what the protocol does not allow: a frame is not valid JSON" in logged
    assert "Traceback" not in logged


def test_the_fixture_refuses_a_payload_over_the_limit_and_its_instance_serves_on(
    slice_host: Any, slice_python: str
) -> None:
    echo = slice_host("org.aether:echo", python=slice_python)
    with pytest.raises(SliceHostError) as refused:
        echo.invoke("echo", "x" * MAX_FRAME)
    assert refused.value.kind == "protocol"
    assert f"over the limit of {MAX_FRAME}" in refused.value.message
    assert echo.invoke("echo", {"small": json.dumps([1])}) == {"small": "[1]"}


# x86_64's select and pselect6, aarch64's pselect6: their fifth argument is the timeout (a pointer)
_SELECT_CALLS = {"x86_64": {23, 270}, "aarch64": {72}}


def _waiting_in_select(pid: int) -> list[str] | None:
    """The blocked system call of `pid` (/proc/PID/syscall: number, six arguments, sp, pc) if it is a
    select; None while it runs or does anything else."""
    fields = Path(f"/proc/{pid}/syscall").read_text().split()
    calls = _SELECT_CALLS.get(os.uname().machine, set())
    if len(fields) >= 6 and fields[0].isdigit() and int(fields[0]) in calls:
        return fields
    return None


def test_an_idle_template_waits_without_a_timer_and_still_reports_a_killed_instance(runner: _Runner) -> None:
    """The template waits for the node or a child's end (SIGCHLD), not on a timer: blocked in select
    with no timeout. An instance killed meanwhile is reported (its SIGCHLD wakes the template), and the
    instance itself was not left the template's SIGCHLD handler."""
    if os.uname().machine not in _SELECT_CALLS:
        pytest.skip(f"which system call is select on {os.uname().machine} is not known here")
    assert runner.connection.request(Kind.HEALTH)["ok"]["pid"] == runner.pid  # the instance runs
    waiting = wait_until_sync(
        lambda: _waiting_in_select(runner.template.process.pid),
        timeout=10,
        what="the template to wait in select",
    )
    assert int(waiting[5], 16) == 0, f"the template's select has a timeout: {waiting}"
    caught = int(Path(f"/proc/{runner.pid}/status").read_text().split("SigCgt:")[1].split()[0], 16)
    assert not caught & (1 << (signal.SIGCHLD - 1)), "the instance inherited the template's SIGCHLD handler"
    os.kill(runner.pid, signal.SIGKILL)
    event = runner.from_template()
    assert protocol.kind_of(event) is Kind.EXIT and event["pid"] == runner.pid
    assert event["code"] == -signal.SIGKILL


def test_an_entry_points_exception_is_logged_with_its_traceback_now_and_then(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Its caller gets the message alone ("KeyError: 'key'"): the file and line were nowhere on a cluster.
    Logged (the instance's log is its stderr) once per entry point and exception type every
    RAISED_LOG_EVERY seconds, with how many were not."""
    now = [0.0]

    def lookup(payload: Any) -> Any:
        return {}[payload]

    async def later(payload: Any) -> Any:
        await asyncio.sleep(0)
        raise ValueError(payload)

    async def exchange() -> None:
        host = Host(lambda frame: None)
        host.entries = {
            "lookup": EntryPoint(name="lookup", function=lookup),
            "later": EntryPoint(name="later", function=later),
        }
        for number, (entry, at) in enumerate(
            [("lookup", 0.0), ("lookup", 1.0), ("later", 1.0), ("lookup", 11.0)]
        ):
            now[0] = at
            assert host.take(protocol.encode(protocol.request(number, Kind.INVOKE, entry=entry, payload="k")))
            await asyncio.gather(*host.tasks)

    raised_log = host_module.RaisedLog(clock=lambda: now[0])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(host_module, "_raised_log", raised_log)
        asyncio.run(exchange())
    logged = capsys.readouterr().err
    assert logged.count("aether_slice.host: entry point 'lookup' raised:\n") == 1
    assert "aether_slice.host: entry point 'lookup' raised (1 more since the last one logged):\n" in logged
    assert "aether_slice.host: entry point 'later' raised:\n" in logged
    assert "in lookup\n    return {}[payload]\n" in logged and "KeyError: 'k'" in logged  # file, line, error
    assert "raise ValueError(payload)" in logged
