"""Slice logs in the management API: parsing a request, choosing the instances it names (with errors that
say what exists), and the local follower over a real instance log fed through its pipe. Reading and
rotating the files: test_instance_log.py; the serving end to end: tests/integration/
test_cli_logs_describe.py."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest
import trio

from aether_node import client
from aether_node.api import _management, _slice_logs
from aether_node.api._slice_logs import LogRequest, SliceLogs, choose, split_lines
from aether_node.client import InstanceInfo
from aether_node.core._errors import RequestError
from aether_node.runtime._instance_log import InstanceLog, LogLimits, LogTail
from support import wait_until


def test_split_lines_keeps_the_incomplete_rest() -> None:
    assert split_lines(b"a\r\nb\nc") == (["a", "b"], b"c")
    assert split_lines(b"\xff\n") == (["\ufffd"], b"")


def test_request_parse_checks_each_value() -> None:
    asked = LogRequest.parse("g:a", {"instance": "2", "node": "node-1", "lines": "5", "follow": "1"})
    assert (asked.instance, asked.node, asked.lines, asked.follow) == (2, "node-1", 5, True)
    assert asked.for_node("node-2") == {"node": "node-2", "lines": "5", "instance": "2", "follow": "1"}
    assert LogRequest.parse("g:a", {}).lines == 100
    for params, said in (
        ({"lines": "0"}, "lines: must be between 1 and 10000, got 0"),
        ({"lines": "many"}, 'lines: expected an integer, got "many"'),
        ({"instance": "-1"}, "instance: must be ≥ 0, got -1"),
    ):
        with pytest.raises(RequestError) as raised:
            LogRequest.parse("g:a", params)
        assert (raised.value.kind, raised.value.message) == ("bad_request", said)


def instance(node: str, number: int) -> InstanceInfo:
    return InstanceInfo(node_id=node, artifact="g:a:1.0.0", instance=number, state="ACTIVE")


def test_choose_names_what_exists_when_nothing_matches() -> None:
    there = [instance("node-1", 0), instance("node-2", 1)]
    assert choose("g:a", there, LogRequest(artifact="g:a")) == there
    assert choose("g:a", there, LogRequest(artifact="g:a", node="node-2")) == there[1:]
    wanted = r"^g:a has no instance 1 on node node-1; its instances: node-1/0, node-2/1$"
    with pytest.raises(RequestError, match=wanted):
        choose("g:a", there, LogRequest(artifact="g:a", instance=1, node="node-1"))
    with pytest.raises(RequestError, match=r"^g:a has no instance on node node-3; its instances: "):
        choose("g:a", there, LogRequest(artifact="g:a", node="node-3"))
    with pytest.raises(RequestError, match=r"^no instance of g:a exists in the cluster"):
        choose("g:a", [], LogRequest(artifact="g:a"))


async def test_following_sends_the_tail_then_each_line_and_ends_with_the_instance(tmp_path: Path) -> None:
    """The local follower over a real instance log: the tail from the files, then each line as it is
    completed (pushed through the log's pipe by a real process), then the last words of the process and
    its unterminated last line, and the end when the process is gone."""
    log = InstanceLog(tmp_path / "x.log", LogLimits(max_bytes=1_000_000, keep=2))
    (tmp_path / "x.log").write_bytes(b"old 1\nold 2\n")
    logs = SliceLogs("node-1", handlers=None, log_of=lambda key: log)  # type: ignore[arg-type]
    sent: list[str] = []
    grown = trio.Event()

    async def send(chunk: bytes) -> None:
        sent.append(json.loads(chunk)["line"])
        grown.set()

    read_end, write_end = log.open_pipe()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.drain, read_end)
        done = trio.Event()

        async def follow() -> None:
            await logs._follow_local(instance("node-1", 0), 1, send)
            done.set()

        nursery.start_soon(follow)
        with trio.fail_after(20):
            while sent != ["old 2"]:
                await grown.wait()
                grown = trio.Event()
            script = "print('new', end=' ', flush=True); print('line'); print('last', end='')"
            try:  # the process's end of the pipe, as an instance has it
                process = await trio.run_process([sys.executable, "-c", script], stdout=write_end, check=True)
            finally:
                os.close(write_end)
            assert process.returncode == 0
            await done.wait()
    assert sent == ["old 2", "new line", "last"]
    assert (tmp_path / "x.log").read_bytes() == b"old 1\nold 2\nnew line\nlast"


async def test_following_reads_the_tail_on_a_worker_thread(tmp_path: Path) -> None:
    """A follower's tail is read back off the event loop: an instance's files may hold 80 MiB of one
    endless line (a progress bar), and reading that on the event loop (quadratically, too) stalled the
    node for seconds: its lease expired, it was declared lost and its instances were removed. The read
    here waits until the event loop has run again; on the event loop it would wait in vain."""
    entered, released = threading.Event(), threading.Event()
    waited: list[bool] = []

    class GatedTail(LogTail):
        def lines(self, count: int) -> list[str]:
            entered.set()
            waited.append(released.wait(timeout=20))
            return super().lines(count)

    class GatedLog(InstanceLog):
        def open_tail(self) -> LogTail:
            return GatedTail(files=super().open_tail().files)

    log = GatedLog(tmp_path / "x.log")
    (tmp_path / "x.log").write_bytes(b"old 1\nold 2\n")
    logs = SliceLogs("node-1", handlers=None, log_of=lambda key: log)  # type: ignore[arg-type]
    sent: list[str] = []

    async def send(chunk: bytes) -> None:
        sent.append(json.loads(chunk)["line"])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(logs._follow_local, instance("node-1", 0), 1, send)
        await wait_until(entered.is_set, timeout=20, what="the follower reads its tail")
        released.set()
    assert waited == [True], "the tail was read on the event loop, which could not run meanwhile"
    assert sent == ["old 2"]  # nobody writes the log: the follower ends after its tail


async def test_a_follower_that_goes_away_while_its_tail_is_sent_leaves_no_subscription(
    tmp_path: Path,
) -> None:
    """The client goes away (its follower is cancelled) while the tail's lines are being sent: the
    follower's subscription is closed, and the log's next write lets it go (it kept a channel that
    filled with every chunk written until it counted as fallen behind)."""
    log = InstanceLog(tmp_path / "x.log", LogLimits(max_bytes=1_000_000, keep=2))
    (tmp_path / "x.log").write_bytes(b"old 1\n")
    logs = SliceLogs("node-1", handlers=None, log_of=lambda key: log)  # type: ignore[arg-type]
    sending = trio.Event()

    async def send(chunk: bytes) -> None:  # a client that reads nothing more
        sending.set()
        await trio.sleep_forever()

    read_end, write_end = log.open_pipe()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.drain, read_end)
        async with trio.open_nursery() as following:
            following.start_soon(logs._follow_local, instance("node-1", 0), 1, send)
            with trio.fail_after(20):
                await sending.wait()
            following.cancel_scope.cancel()
        os.write(write_end, b"new\n")
        await wait_until(lambda: log.path.read_bytes() == b"old 1\nnew\n", timeout=20, what="the write")
        assert not log._followers, "the follower that went away is still subscribed"
        os.close(write_end)


def test_one_endless_line_across_every_file_is_no_complete_line(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.with_name("x.log.2").write_bytes(b"a\n" + b"y" * 300_000)
    path.with_name("x.log.1").write_bytes(b"y" * 300_000)
    path.write_bytes(b"y" * 300_000)
    assert LogTail.open(path, keep=2).lines(5) == ["a"]
    assert LogTail.open(path, keep=1).lines(5) == []


def test_a_client_waits_three_keep_alives_before_it_calls_a_stream_dead() -> None:
    assert client.LOG_STREAM_IDLE == 3 * _slice_logs.HEARTBEAT == _slice_logs.PEER_SILENCE
    assert client.EVENT_STREAM_IDLE == 3 * _management.KEEPALIVE
