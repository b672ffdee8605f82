"""The template (`python -m aether_slice.host`), driven as a node drives it: with `--preload` it imports
the slice once, with the config of its environment, and every instance it forks uses that import; a
slice whose import starts a thread, leaves a file open or fails is not kept (each instance imports it,
and reports a failed import itself); an instance of another config is refused, not forked from an
import made for another."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from template_support import TIMEOUT, Connection, TemplateProcess

from aether_slice import host, protocol
from aether_slice.protocol import Kind

FAULTY = "org.aether:faulty"


class Template:
    """A template process (`template_support.TemplateProcess`) whose instances log to files of a
    directory."""

    def __init__(
        self,
        python: str,
        directory: Path,
        config: dict[str, Any],
        preload: str | None,
        reference: str | None = None,
    ) -> None:
        self.directory = directory
        env = dict(os.environ, PYTHONUNBUFFERED="1", AETHER_SLICE_CONFIG=json.dumps(config))
        self.log = directory / "template.log"
        self.template = TemplateProcess(python, self.log, env=env, preload=preload, reference=reference)
        self.process = self.template.process

    def fork(self, config: dict[str, Any], **fields: Any) -> Connection:
        """Ask for an instance of `config`: its connection (the template answers only if it refuses)."""
        with open(self.directory / f"{self.template.forks + 1}.log", "ab") as output:
            return self.template.fork(config, output.fileno(), **fields)

    def instance(self, config: dict[str, Any], **fields: Any) -> tuple[int, Connection]:
        """Fork an instance of `config` and take its connection, and its pid (it answers HEALTH before
        any LOAD)."""
        connection = self.fork(config, **fields)
        health = connection.request(Kind.HEALTH)
        assert "ok" in health, health
        return health["ok"]["pid"], connection

    def close(self) -> None:
        self.template.close()


@pytest.fixture
def template(slice_python: str, tmp_path: Path) -> Iterator[Callable[..., Template]]:
    started: list[Template] = []
    directory = tmp_path

    def start(config: dict[str, Any], preload: str | None = FAULTY, reference: str | None = None) -> Template:
        place = directory / str(len(started))
        place.mkdir()
        started.append(Template(slice_python, place, config, preload, reference))
        return started[-1]

    yield start
    for each in started:
        each.close()


def load(connection: Connection, config: dict[str, Any], instance: int = 0) -> dict[str, Any]:
    coordinates = f"{FAULTY}:1.0.0"
    return connection.request(
        Kind.LOAD, entry_point=FAULTY, coordinates=coordinates, instance=instance, config=config
    )


def imported(connection: Connection) -> dict[str, Any]:
    reply = connection.request(Kind.INVOKE, entry="imported", payload=None)
    assert "ok" in reply, reply
    return dict(reply["ok"])


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_a_preloading_template_imports_the_slice_once_with_its_config_for_every_instance(
    template: Callable[..., Template],
) -> None:
    config = {"mode": "ok", "n": 1}
    preloading = template(config)
    for number in (0, 1):
        pid, connection = preloading.instance(config)
        assert "ok" in load(connection, config, number)
        seen = imported(connection)
        assert seen["pid"] == preloading.process.pid != pid == seen["pid_now"]
        assert seen["config"] == seen["instance_config"] == config
        assert seen["instance"] == number
    plain = template(config, preload=None)  # as before: each instance imports the slice itself
    pid, connection = plain.instance(config)
    assert "ok" in load(connection, config)
    seen = imported(connection)
    assert seen["pid"] == seen["pid_now"] == pid
    assert seen["config"] == config


def test_the_warm_up_leaves_no_instance_its_stand_in_slice(template: Callable[..., Template]) -> None:
    """The template rehearses an instance's life before it forks (a stand-in slice loaded, started,
    invoked, stopped): no instance can load the stand-in, and the slice preloaded for real still loads."""
    config = {"mode": "ok"}
    preloading = template(config)
    _, connection = preloading.instance(config)
    stand_in = connection.request(
        Kind.LOAD, entry_point=host._REHEARSAL, coordinates="aether:warm-up:0", instance=0, config={}
    )
    assert stand_in["error"]["kind"] == "entry_point", stand_in
    _, connection = preloading.instance(config)
    assert "ok" in load(connection, config)
    assert imported(connection)["pid"] == preloading.process.pid  # (the real slice was preloaded)


def test_a_full_collection_in_an_instance_leaves_the_template_objects_shared(
    template: Callable[..., Template],
) -> None:
    """The template freezes its objects (`gc.freeze`) before it forks: a full garbage collection in an
    instance walks the instance's own objects only. It walked the template's too, writing into each, and
    so copied every page of the template's that holds one (~1,100 pages: 4 MiB, an instance's PSS
    tripled)."""
    for preload in (FAULTY, None):
        config = {"mode": "ok"}
        _, connection = template(config, preload=preload).instance(config)
        assert "ok" in load(connection, config)
        copies = connection.request(Kind.INVOKE, entry="collect", payload=None)
        print("COPIES", preload, copies)
        assert copies["ok"] < 200, (preload, copies)


def send_load_and_start(connection: Connection, config: dict[str, Any]) -> None:
    """LOAD and START in one write, as a node sends an activation right after the load."""
    coordinates = f"{FAULTY}:1.0.0"
    frames = protocol.encode(
        protocol.request(1, Kind.LOAD, entry_point=FAULTY, coordinates=coordinates, instance=0, config=config)
    ) + protocol.encode(protocol.request(2, Kind.START))
    connection.send(frames)


def load_and_start(connection: Connection, config: dict[str, Any]) -> list[dict[str, Any]]:
    """`send_load_and_start`: both answers."""
    send_load_and_start(connection, config)
    answers = [connection.receive(), connection.receive()]
    assert None not in answers, answers
    return sorted(answers, key=lambda answer: answer["id"])  # type: ignore[arg-type,return-value]


def test_a_start_right_behind_the_load_runs_the_start_hook_of_the_loaded_slice(
    template: Callable[..., Template],
) -> None:
    config = {"mode": "fail_start"}  # (its start hook raises: the answer shows that it ran)
    _, connection = template(config).instance(config)
    loaded, started = load_and_start(connection, config)
    assert "ok" in loaded, loaded
    assert started["error"]["kind"] == "raised", started
    assert "faulty: start failed on purpose" in started["error"]["message"]


def test_a_start_right_behind_a_load_that_failed_runs_no_start_hook(
    template: Callable[..., Template],
) -> None:
    """The slice's aether_entry_points raised: the load failed, and the START sent with it must not run
    the slice's start hook (its stop hook would never run): it is refused, the slice is not loaded."""
    config = {"mode": "no such mode"}  # (both hooks raise ValueError on it)
    _, connection = template(config).instance(config)
    loaded, started = load_and_start(connection, config)
    assert loaded["error"]["kind"] == "raised" and "unknown mode" in loaded["error"]["message"], loaded
    assert started["error"]["kind"] == "protocol", started
    assert "not loaded" in started["error"]["message"]


def test_a_template_given_the_entry_point_reference_imports_the_slice_without_reading_metadata(
    template: Callable[..., Template],
) -> None:
    """`--object module:attr` (the node read it from the slice's metadata): the template imports the
    slice from it and never imports `importlib.metadata` (~3 MiB whose page tables each fork copies)."""
    config = {"mode": "ok"}
    given = template(config, reference="org_aether_faulty")
    pid, connection = given.instance(config)
    assert "ok" in load(connection, config)
    seen = imported(connection)
    assert seen["pid"] == given.process.pid != pid  # imported once, by the template
    assert seen["metadata_read"] is False
    scanning = template(config)  # without it, the template scans the environment's entry points
    _, connection = scanning.instance(config)
    assert "ok" in load(connection, config)
    assert imported(connection)["metadata_read"] is True


def test_a_template_given_a_reference_that_does_not_import_falls_back_to_the_metadata(
    template: Callable[..., Template],
) -> None:
    """A reference that names nothing importable is not kept: the template starts again without a
    preload, and each instance finds the slice in the environment's metadata and imports it itself."""
    config = {"mode": "ok"}
    given = template(config, reference="no_such_module_here:plugin")
    pid, connection = given.instance(config)
    assert "ok" in load(connection, config)
    seen = imported(connection)
    assert seen["pid"] == seen["pid_now"] == pid
    assert "importing no_such_module_here:plugin failed" in given.log.read_text()


@pytest.mark.parametrize(
    ("mode", "said", "instance_threads"),
    [("thread_at_import", "started 1 thread(s)", 2), ("open_at_import", "left 1 file(s) open", 1)],
)
def test_a_slice_whose_import_starts_a_thread_or_opens_a_file_is_imported_by_each_instance_instead(
    template: Callable[..., Template], mode: str, said: str, instance_threads: int
) -> None:
    config = {"mode": mode}
    preloading = template(config)
    pid, connection = preloading.instance(config)
    assert "ok" in load(connection, config)
    seen = imported(connection)
    assert seen["pid"] == seen["pid_now"] == pid  # not the template's import
    assert seen["threads"] == instance_threads  # a thread its own import started
    assert threads(preloading.process.pid) == 1  # the template forks from a process of one thread
    assert said in preloading.log.read_text()


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("fail_import", "faulty: import failed on purpose"),
        # (it ended the template's import, and each instance's: "died during load" said nothing more)
        ("exit_at_import", "importing org_aether_faulty called sys.exit(5)"),
    ],
)
def test_a_slice_whose_import_fails_fails_the_load_of_each_instance(
    template: Callable[..., Template], mode: str, said: str
) -> None:
    config = {"mode": mode}
    preloading = template(config)
    for _ in range(2):
        _, connection = preloading.instance(config)
        failed = load(connection, config)
        assert failed["error"]["kind"] == "import", failed
        assert said in failed["error"]["message"], failed


def test_a_preloading_template_refuses_an_instance_of_another_config(
    template: Callable[..., Template],
) -> None:
    preloading = template({"mode": "ok"})
    connection = preloading.fork({"mode": "raise"})
    refused = preloading.template.refusal()
    assert (refused["id"], refused["error"]["kind"]) == (1, "protocol"), refused
    assert "another config" in refused["error"]["message"]
    assert connection.receive() is None  # no instance: the template let its connection go
    pid, connection = preloading.instance({"mode": "ok"})  # it still forks instances of its own
    assert "ok" in load(connection, {"mode": "ok"})
    assert imported(connection)["pid_now"] == pid


def test_an_instance_runs_on_uvloop_when_its_slice_environment_has_it(
    slice_host: Callable[..., Any], slice_python: str, slice_python_with_uvloop: str
) -> None:
    """uvloop is not the runtime's dependency: an instance runs on it when the slice's environment has it
    (the template warms up on the same loop before it forks), on asyncio's own loop otherwise."""
    for python, on_uvloop in ((slice_python_with_uvloop, True), (slice_python, False)):
        echo = slice_host("org.aether:echo", python=python)
        assert [echo.invoke("echo", n) for n in range(3)] == [0, 1, 2]
        mapped = Path(f"/proc/{echo.pid}/maps").read_text()
        assert ("uvloop" in mapped) is on_uvloop, python


def test_a_fork_carried_out_is_not_answered_load_brings_the_pid_and_exit_names_the_fork(
    template: Callable[..., Template],
) -> None:
    """Host protocol version 3: a FORK carried out is not answered (one message fewer per instance);
    the instance's answer to LOAD brings its pid and the version it speaks; its EXIT names its FORK."""
    config = {"mode": "ok"}
    preloading = template(config)
    connection = preloading.fork(config)
    loaded = load(connection, config)["ok"]
    assert (loaded["version"], protocol.VERSION) == (3, 3), loaded
    assert imported(connection)["pid_now"] == loaded["pid"]
    os.kill(loaded["pid"], signal.SIGKILL)
    event = preloading.template.events.receive()
    assert event == {"event": "exit", "pid": loaded["pid"], "code": -signal.SIGKILL, "fork": 1}, event


def test_the_template_refuses_a_fork_of_another_protocol_version_saying_both(
    template: Callable[..., Template],
) -> None:
    """A node of another version (or of version 2, which named none in its FORK) is refused with both
    versions named, and no instance is forked."""
    config = {"mode": "ok"}
    preloading = template(config)
    for number, version in ((1, 2), (2, None)):
        connection = preloading.fork(config, version=version)
        refused = preloading.template.refusal()
        assert (refused["id"], refused["error"]["kind"]) == (number, "protocol"), refused
        said = "2" if version == 2 else "2 or older (it names none)"
        assert (
            f"the node speaks host protocol version {said} and this slice's aether-slice version 3"
            in (refused["error"]["message"])
        )
        assert connection.receive() is None
    pid, connection = preloading.instance(config)  # one of its own version: forked
    assert load(connection, config)["ok"]["pid"] == pid


def test_forks_sent_together_become_each_the_instance_of_its_own_connection_and_output(
    template: Callable[..., Template],
) -> None:
    """The template reads all that the node has sent before it serves any of it (one read per FORK: a
    read ends where the next FORK's descriptors begin): FORKs sent together, with a refused one and a
    KILL among them, each become the instance of their own connection, writing to their own output."""
    config = {"mode": "ok"}
    preloading = template(config)
    connections = {number: preloading.fork(config) for number in range(1, 9)}
    refused = preloading.fork(config, version=2)  # FORK 9
    killed = preloading.fork(config)  # FORK 10
    preloading.template.control.sendall(protocol.encode(protocol.request(0, Kind.KILL, fork=10)))
    connections.update({number: preloading.fork(config) for number in range(11, 15)})
    assert preloading.template.refusal()["id"] == 9
    assert refused.receive() is None
    assert killed.receive() is None
    pids = set()
    for number, connection in connections.items():
        pids.add(load(connection, config, number)["ok"]["pid"])
        assert connection.request(Kind.INVOKE, entry="work", payload=number)["ok"] == "ok"
        assert imported(connection)["instance"] == number
    assert len(pids) == len(connections)
    for number in connections:
        assert f"faulty: work {number}\n" in (preloading.directory / f"{number}.log").read_text()


def test_the_template_kills_a_child_by_its_fork(template: Callable[..., Template]) -> None:
    """KILL names the FORK (the node does not know a child's pid before its answer to LOAD): the child's
    process group is killed, and its EXIT names the FORK."""
    config = {"mode": "ok"}
    preloading = template(config)
    pid, connection = preloading.instance(config)
    preloading.template.control.sendall(protocol.encode(protocol.request(0, Kind.KILL, fork=1)))
    event = preloading.template.events.receive()
    assert event == {"event": "exit", "pid": pid, "code": -signal.SIGKILL, "fork": 1}, event
    assert connection.receive() is None


def test_an_instance_takes_the_process_name_its_fork_request_gives_it(
    template: Callable[..., Template],
) -> None:
    """The node names each instance `{artifact}#{instance}`: what `ps` and `top` show of it (Linux keeps
    15 bytes of a name)."""
    config = {"mode": "ok"}
    preloading = template(config)
    for name, shown in (("faulty#3", "faulty#3"), ("a-long-artifact#12", "a-long-artifact")):
        pid, connection = preloading.instance(config, name=name)
        assert "ok" in load(connection, config)
        assert Path(f"/proc/{pid}/comm").read_text().strip() == shown
    unnamed, _ = preloading.instance(config)
    assert (
        Path(f"/proc/{unnamed}/comm").read_text() == Path(f"/proc/{preloading.process.pid}/comm").read_text()
    )


def test_an_instance_comes_before_the_node_for_the_oom_killer(template: Callable[..., Template]) -> None:
    """A host out of memory: the kernel kills a slice instance (the cluster replaces it), not the node
    that started the template (this test's process stands for it) nor its KV replica."""
    config = {"mode": "ok"}
    preloading = template(config)
    pid, connection = preloading.instance(config)
    assert "ok" in load(connection, config)
    for process in (pid, preloading.process.pid):
        assert int(Path(f"/proc/{process}/oom_score_adj").read_text()) == host.OOM_SCORE_ADJ
    assert int(Path("/proc/self/oom_score_adj").read_text()) < host.OOM_SCORE_ADJ


def test_an_instance_loop_ends_as_asyncio_runner_ends_without_waiting_for_executor_threads() -> None:
    """At an instance's end (its connection closed) the tasks a slice left are cancelled, their
    `finally` blocks run, and its async generators are closed, as `asyncio.Runner` does; but the end
    does not wait for a thread of the loop's default executor (the Runner's would, for ever, here): the
    instance then ends with `os._exit`, which ends it."""
    seen: list[str] = []
    blocker = threading.Event()

    async def instance() -> None:
        async def background() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                seen.append("task cancelled")

        async def numbers() -> AsyncIterator[int]:
            try:
                yield 1
                yield 2
            finally:
                seen.append("generator closed")

        left = asyncio.create_task(background())
        started = numbers()
        assert await anext(started) == 1
        asyncio.get_running_loop().run_in_executor(None, blocker.wait)
        await asyncio.sleep(0)
        assert not left.done()

    runner = threading.Thread(target=host._run, args=(instance(),), daemon=True)
    try:
        runner.start()
        runner.join(TIMEOUT)
        assert not runner.is_alive(), "the loop's end waited for the executor's thread"
    finally:
        blocker.set()
    assert sorted(seen) == ["generator closed", "task cancelled"]


def test_a_node_gone_without_reading_the_exit_events_ends_the_template_cleanly(
    template: Callable[..., Template],
) -> None:
    """The node closes its end of the template's socket with an exit event unread (it stopped midway):
    the template's next read fails (ECONNRESET), which means the node is gone: it ends its instances
    and exits, as at an orderly end of stream (it used to die of the exception, a traceback in its
    log)."""
    config = {"mode": "ok"}
    started = template(config)
    pid, _ = started.instance(config)
    os.kill(pid, signal.SIGKILL)
    control = started.template.control
    assert select.select([control], [], [], TIMEOUT)[0], "no exit event from the template"
    control.close()  # (the event unread)
    assert started.process.wait(TIMEOUT) == 0
    assert "Traceback" not in started.log.read_text()


def test_an_instance_whose_slice_calls_sys_exit_ends_with_the_slices_code(
    template: Callable[..., Template],
) -> None:
    """`sys.exit(7)` in the start hook: the instance exits 7 (it exited 70, the runtime's code for an error
    of its own: the node said "died during start (exit code 70)")."""
    config = {"mode": "exit_start"}
    preloading = template(config)
    connection = preloading.fork(config)
    loaded = load(connection, config)["ok"]
    connection.send(protocol.encode(protocol.request(2, Kind.START)))
    event = preloading.template.events.receive()
    assert event == {"event": "exit", "pid": loaded["pid"], "code": 7, "fork": 1}, event


def test_a_sync_start_hook_that_never_returns_holds_back_no_answer_to_the_load_before_it(
    template: Callable[..., Template],
) -> None:
    """LOAD and START in one write; the start hook blocks the loop in its own call: the LOAD's answer
    has gone out before it (the node then times the START out, not the load it already has)."""
    config = {"mode": "hang_start_sync"}
    _, connection = template(config).instance(config)
    send_load_and_start(connection, config)
    loaded = connection.receive()
    assert loaded is not None and loaded["id"] == 1 and "ok" in loaded, loaded
