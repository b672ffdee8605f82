"""An instance makes its event loop only when something needs one (`Host.serve_before_loop`): the LOAD of
a preloaded slice, START and STOP of a slice without hooks for them, and HEALTH are answered without one;
the first message that needs one (an invoke, a hook) is served on it, first, in the order the node sent
it. Seen from outside, in a real template's real instances: an asyncio loop holds an epoll descriptor."""

from __future__ import annotations

import os
import select
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from template_support import TIMEOUT, Connection, TemplateProcess

from aether_slice import protocol
from aether_slice.protocol import Kind

ECHO = "org.aether:echo"
LOOPY = "test:loopy"
# A slice whose sync start hook starts a task on the running loop (as asyncio.create_task would): its START
# must be served on the instance's loop.
LOOPY_SLICE = """
import asyncio
from aether_slice import EntryPoint, hookimpl

TASKS = []


@hookimpl
def aether_start(context):
    TASKS.append(asyncio.get_running_loop().create_task(asyncio.sleep(3600)))


@hookimpl
def aether_entry_points(context):
    return [EntryPoint(name="tasks", function=lambda payload: len(TASKS))]
"""

LOOP_AT_LOAD = "test:loop-at-load"
# A slice whose aether_entry_points asks for the event loop (as aiohttp.ClientSession() does), the running
# one or the current one, as its config says.
LOOP_AT_LOAD_SLICE = """
import asyncio
from aether_slice import EntryPoint, hookimpl


@hookimpl
def aether_entry_points(context):
    getattr(asyncio, context.config["ask"])()
    return [EntryPoint(name="echo", function=lambda payload: payload)]
"""

SLOW = "test:slow"
# A slice whose load says it is under way (its pid, on the FIFO loading.fifo beside it) and goes on when told
# (on go.fifo): the test does something meanwhile.
SLOW_SLICE = """
import os
from aether_slice import EntryPoint, hookimpl

HERE = os.path.dirname(os.path.abspath(__file__))


@hookimpl
def aether_entry_points(context):
    with open(os.path.join(HERE, "loading.fifo"), "w") as loading:
        loading.write(str(os.getpid()))
    with open(os.path.join(HERE, "go.fifo")) as go:
        go.read()
    return [EntryPoint(name="echo", function=lambda payload: payload)]
"""


def has_a_loop(pid: int) -> bool:
    """Whether process `pid` holds an epoll instance (an asyncio loop's selector, uvloop's too)."""
    fds = Path(f"/proc/{pid}/fd")
    return any(os.readlink(fds / fd) == "anon_inode:[eventpoll]" for fd in os.listdir(fds))


def load(entry_point: str, request_id: int, config: dict[str, Any] | None = None) -> dict[str, Any]:
    coordinates = f"{entry_point}:1.0.0"
    return protocol.request(
        request_id,
        Kind.LOAD,
        entry_point=entry_point,
        coordinates=coordinates,
        instance=0,
        config=config or {},
    )


def exchange(connection: Connection, *requests: dict[str, Any]) -> list[dict[str, Any]]:
    """Send `requests` in one write; their answers, in the requests' order (a HEALTH served on the loop
    is answered by a task: after the sync invokes that came with it)."""
    connection.send(b"".join(protocol.encode(request) for request in requests))
    answers = {}
    for _ in requests:
        answer = connection.receive()
        assert answer is not None and answer["id"] not in answers, answer
        answers[answer["id"]] = answer
    return [answers[request["id"]] for request in requests]


class Templates:
    def __init__(self, python: str, directory: Path) -> None:
        self.python, self.directory, self.started = python, directory, []

    def start(self, preload: str | None, reference: str | None = None) -> TemplateProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(self.directory))
        log = self.directory / f"template-{len(self.started)}.log"
        self.started.append(TemplateProcess(self.python, log, env=env, preload=preload, reference=reference))
        return self.started[-1]

    def fork(self, template: TemplateProcess, **fields: Any) -> Connection:
        with open(self.directory / f"instance-{template.forks + 1}.log", "ab") as output:
            return template.fork({}, output.fileno(), **fields)

    def instance(
        self, preload: str | None = ECHO, reference: str | None = None
    ) -> tuple[TemplateProcess, Connection]:
        """A new template (preloading `preload`) and the connection of an instance forked from it."""
        template = self.start(preload, reference)
        return template, self.fork(template)


@pytest.fixture
def templates(slice_python: str, tmp_path: Path) -> Iterator[Templates]:
    (tmp_path / "loopy_slice.py").write_text(LOOPY_SLICE)
    (tmp_path / "slow_slice.py").write_text(SLOW_SLICE)
    (tmp_path / "loop_at_load_slice.py").write_text(LOOP_AT_LOAD_SLICE)
    made = Templates(slice_python, tmp_path)
    yield made
    for template in made.started:
        template.close()


def exit_code(template: TemplateProcess, pid: int) -> int:
    while True:
        event = template.events.receive()
        assert event is not None, "the template closed its socket"
        if event.get("event") == "exit" and event.get("pid") == pid:
            return int(event["code"])


def test_a_loaded_and_started_instance_answers_before_it_makes_a_loop_and_makes_one_for_its_first_call(
    templates: Templates,
) -> None:
    _template, connection = templates.instance(ECHO)
    loaded, started = exchange(connection, load(ECHO, 1), protocol.request(2, Kind.START))
    assert started == {"id": 2, "ok": {}}, started
    pid = loaded["ok"]["pid"]
    health = connection.request(Kind.HEALTH)
    assert health["ok"]["pid"] == pid
    assert not has_a_loop(pid)
    call = protocol.request(10, Kind.INVOKE, entry="echo", payload={"n": 1})
    answers = exchange(connection, call, protocol.request(11, Kind.HEALTH), {**call, "id": 12})
    assert [a.get("ok") for a in answers] == [{"n": 1}, answers[1]["ok"], {"n": 1}], answers
    assert has_a_loop(pid)


def test_what_the_node_sends_together_is_answered_in_order_across_the_loop_s_start(
    templates: Templates,
) -> None:
    """LOAD, START and HEALTH before the loop, then an invoke (held, served first on the loop), then what
    came in the same read behind it, then a STOP: each answered, in order, and the instance ends when
    its connection closes."""
    template, connection = templates.instance(ECHO)
    answers = exchange(
        connection,
        load(ECHO, 1),
        protocol.request(2, Kind.START),
        protocol.request(3, Kind.HEALTH),
        protocol.request(4, Kind.INVOKE, entry="echo", payload="a"),
        protocol.request(5, Kind.INVOKE, entry="echo", payload="b"),
        protocol.request(6, Kind.INVOKE, entry="nothing", payload=None),
        protocol.request(7, Kind.STOP),
    )
    assert [a.get("ok") for a in answers[3:5]] == ["a", "b"]
    assert answers[5]["error"]["kind"] == "no_entry", answers[5]
    assert answers[6] == {"id": 7, "ok": {}}
    pid = answers[0]["ok"]["pid"]
    connection.sock.close()
    assert exit_code(template, pid) == 0


def test_an_instance_started_and_stopped_without_hooks_never_makes_a_loop(templates: Templates) -> None:
    template, connection = templates.instance(ECHO)
    answers = exchange(
        connection, load(ECHO, 1), protocol.request(2, Kind.START), protocol.request(3, Kind.STOP)
    )
    assert answers[2] == {"id": 3, "ok": {}}
    pid = answers[0]["ok"]["pid"]
    assert not has_a_loop(pid)
    connection.sock.close()
    assert exit_code(template, pid) == 0


def test_a_start_hook_runs_on_the_instance_s_loop(templates: Templates) -> None:
    """A sync start hook may use the running loop (start a task): its START is served on the loop."""
    _template, connection = templates.instance(LOOPY, "loopy_slice")
    loaded, started, tasks = exchange(
        connection,
        load(LOOPY, 1),
        protocol.request(2, Kind.START),
        protocol.request(3, Kind.INVOKE, entry="tasks", payload=None),
    )
    assert started == {"id": 2, "ok": {}}, started
    assert tasks["ok"] == 1
    assert has_a_loop(loaded["ok"]["pid"])


def test_a_slice_not_preloaded_is_loaded_on_the_instance_s_loop(templates: Templates) -> None:
    """Its import runs in the instance, at LOAD: on the loop, as its code may look for one."""
    _template, connection = templates.instance(None)
    (loaded,) = exchange(connection, load(ECHO, 1))
    assert "ok" in loaded, loaded
    assert has_a_loop(loaded["ok"]["pid"])


def test_an_instance_ends_when_its_connection_closes_or_breaks_before_its_loop(
    templates: Templates,
) -> None:
    template = templates.start(ECHO)
    closed = templates.fork(template)
    pid = closed.request(Kind.HEALTH)["ok"]["pid"]
    closed.sock.close()
    assert exit_code(template, pid) == 0
    broken = templates.fork(template)
    pid = broken.request(Kind.HEALTH)["ok"]["pid"]
    body = b"not json"
    broken.send(protocol.HEADER.pack(len(body)) + body)
    assert broken.receive() is None  # it closed its end
    assert exit_code(template, pid) == 0
    log = (templates.directory / f"instance-{template.forks}.log").read_text()
    assert "the node sent what the protocol does not allow" in log, log


def test_an_instance_the_node_gave_up_on_during_its_load_ends_quietly(templates: Templates) -> None:
    """The node closes the connection while a preloaded slice's LOAD runs (it gave up on it): the answers
    to that LOAD and to the START behind it find it closed, and the instance ends as it would on its loop:
    exit code 0, no traceback in its log, no "start failed"."""
    directory = templates.directory
    os.mkfifo(directory / "loading.fifo")
    os.mkfifo(directory / "go.fifo")
    loading = os.open(directory / "loading.fifo", os.O_RDONLY | os.O_NONBLOCK)
    try:
        template, connection = templates.instance(SLOW, "slow_slice")
        connection.send(protocol.encode(load(SLOW, 1)) + protocol.encode(protocol.request(2, Kind.START)))
        assert select.select([loading], [], [], TIMEOUT)[0], "the instance did not start its load"
        pid = int(os.read(loading, 64))
    finally:
        os.close(loading)
    connection.sock.close()
    with open(directory / "go.fifo", "w") as go:  # (the instance waits for it: opened at once)
        go.write("go")
    assert exit_code(template, pid) == 0
    log = (directory / f"instance-{template.forks}.log").read_text()
    assert log == "", log


def test_a_template_with_uvloop_serves_before_and_on_its_loop(
    slice_python_with_uvloop: str, tmp_path: Path
) -> None:
    made = Templates(slice_python_with_uvloop, tmp_path)
    try:
        template, connection = made.instance(ECHO)
        answers = exchange(
            connection,
            load(ECHO, 1),
            protocol.request(2, Kind.START),
            protocol.request(3, Kind.INVOKE, entry="echo", payload=[1]),
        )
        assert answers[2]["ok"] == [1]
        assert has_a_loop(answers[0]["ok"]["pid"])
    finally:
        for template in made.started:
            template.close()


@pytest.mark.parametrize("ask", ["get_running_loop", "get_event_loop"])
def test_a_preloaded_slice_asking_for_the_loop_as_it_loads_fails_its_load_saying_why(
    templates: Templates, ask: str
) -> None:
    """Its aether_entry_points runs before the loop: the running loop is not there, and no other loop is
    made for it that would never run (its futures would fail at the first call); the load says so."""
    _template, connection = templates.instance(LOOP_AT_LOAD, "loop_at_load_slice")
    (loaded,) = exchange(connection, load(LOOP_AT_LOAD, 1, {"ask": ask}))
    assert loaded["error"]["kind"] == "entry_point", loaded
    assert (
        "it runs before the instance's event loop; make what needs the loop in aether_start"
        in (loaded["error"]["message"])
    ), loaded


def test_an_instance_under_a_memory_limit_makes_its_loop_to_start(templates: Templates) -> None:
    """A FORK that names a memory cgroup (here one the child cannot join: it says so and goes on): the
    instance is started on its loop, so that a limit its loop does not fit in fails its activation."""
    template = templates.start(ECHO)
    connection = templates.fork(template, cgroup=str(templates.directory / "no-such-cgroup"))
    (loaded,) = exchange(connection, load(ECHO, 1))
    assert not has_a_loop(loaded["ok"]["pid"])
    (started,) = exchange(connection, protocol.request(2, Kind.START))
    assert started == {"id": 2, "ok": {}}, started
    assert has_a_loop(loaded["ok"]["pid"])


@pytest.mark.parametrize("cut", [0, 1, 4, -1, "after", "after+2"])
def test_the_order_holds_when_a_read_ends_anywhere_around_the_held_message(
    templates: Templates, cut: int | str
) -> None:
    """LOAD, START and HEALTH, then two invokes and a STOP, the bytes cut in two writes at `cut` bytes into
    the first invoke (the held message; "after": at its end, "after+2": into the next frame): the first
    three are answered before the rest is sent, then the rest, every answer once and right."""
    _template, connection = templates.instance(ECHO)
    requests = [
        load(ECHO, 1),
        protocol.request(2, Kind.START),
        protocol.request(3, Kind.HEALTH),
        protocol.request(4, Kind.INVOKE, entry="echo", payload="a"),
        protocol.request(5, Kind.INVOKE, entry="echo", payload="b"),
        protocol.request(6, Kind.STOP),
    ]
    frames = [protocol.encode(request) for request in requests]
    held = len(frames[3])
    offset = {"after": held, "after+2": held + 2, -1: held - 1}.get(cut, cut)
    data = b"".join(frames)
    at = len(b"".join(frames[:3])) + int(offset)
    connection.send(data[:at])
    first = [connection.receive() for _ in range(3)]
    assert [a["id"] if a else None for a in first] == [1, 2, 3], first
    connection.send(data[at:])
    rest = {a["id"]: a for a in (connection.receive() for _ in range(3)) if a is not None}
    assert [rest[4].get("ok"), rest[5].get("ok"), rest[6].get("ok")] == ["a", "b", {}], rest


def test_an_instance_whose_connection_ends_mid_frame_before_its_loop_ends_quietly(
    templates: Templates,
) -> None:
    template, connection = templates.instance(ECHO)
    pid = connection.request(Kind.HEALTH)["ok"]["pid"]
    connection.send(protocol.encode(load(ECHO, 2))[:7])
    connection.sock.close()
    assert exit_code(template, pid) == 0
    log = (templates.directory / f"instance-{template.forks}.log").read_text()
    assert "Traceback" not in log, log
