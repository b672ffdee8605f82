"""The pure parts of slice logs: reading a log's last lines and what follows them, parsing a request, and
choosing the instances it names (with errors that say what exists). The serving is tested end to end in
tests/integration/test_cli_logs_describe.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from aether_node.api._slice_logs import LogRequest, SliceLogs, choose, read_from, read_tail, split_lines
from aether_node.client import InstanceInfo
from aether_node.core._errors import RequestError

LINES = st.lists(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=30),
    max_size=60,
)


@given(LINES, st.integers(1, 80), st.booleans())
def test_read_tail_is_the_last_complete_lines(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str], count: int, partial: bool
) -> None:
    path = tmp_path_factory.mktemp("log") / "x.log"
    complete = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(complete + (b"half a line" if partial else b""))
    tail, offset = read_tail(path, count)
    assert tail == lines[-count:]
    assert offset == len(complete)  # following starts after the last complete line


def test_read_tail_reads_back_over_blocks(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_bytes(b"".join(b"%06d %s\n" % (n, b"x" * 200) for n in range(2000)))
    tail, offset = read_tail(path, 500)
    assert [line[:6] for line in tail] == [f"{n:06d}" for n in range(1500, 2000)]
    assert offset == path.stat().st_size


def test_no_file_yet_is_no_lines(tmp_path: Path) -> None:
    assert read_tail(tmp_path / "none.log", 10) == ([], 0)
    assert read_from(tmp_path / "none.log", 5) == (b"", 0)


def test_read_from_goes_on_and_starts_over_after_a_cut(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"one\ntw")
    data, offset = read_from(path, 4)
    assert (data, offset) == (b"tw", 6)
    path.write_bytes(b"new\n")  # cut shorter than where we were
    assert read_from(path, offset) == (b"new\n", 4)


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
        ({"lines": "many"}, "lines: expected an integer, got 'many'"),
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


async def test_following_sends_new_lines_and_ends_with_the_instance(tmp_path: Path) -> None:
    """The local follower over a real file: the tail, then each line as it is completed, then the lines
    written just before the instance ended, and no more."""
    path = tmp_path / "x.log"
    path.write_bytes(b"old 1\nold 2\n")
    running = True
    logs = SliceLogs("node-1", handlers=None, log_path=lambda key: path, running=lambda key: running)  # type: ignore[arg-type]
    sent: list[str] = []
    grown = trio.Event()

    async def send(chunk: bytes) -> None:
        sent.append(json.loads(chunk)["line"])
        grown.set()

    async with trio.open_nursery() as nursery:
        done = trio.Event()

        async def follow() -> None:
            await logs._follow_local(instance("node-1", 0), 1, send)
            done.set()

        nursery.start_soon(follow)
        with trio.fail_after(10):
            while sent != ["old 2"]:
                await grown.wait()
                grown = trio.Event()
            with path.open("ab") as file:
                file.write(b"new ")
                file.flush()
                file.write(b"line\nlast\n")
            while sent != ["old 2", "new line", "last"]:
                await grown.wait()
                grown = trio.Event()
            with path.open("ab") as file:
                file.write(b"dying words\n")
            running = False
            await done.wait()
    assert sent == ["old 2", "new line", "last", "dying words"]
