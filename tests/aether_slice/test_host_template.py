"""The template (`python -m aether_slice.host`), driven as a node drives it: with `--preload` it imports
the slice once, with the config of its environment, and every instance it forks uses that import; a
slice whose import starts a thread, leaves a file open or fails is not kept (each instance imports it,
and reports a failed import itself); an instance of another config is refused, not forked from an
import made for another."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aether_slice import protocol
from aether_slice.protocol import Kind

FAULTY = "org.aether:faulty"
TIMEOUT = 10.0


class Connection:
    """The host protocol's frames over a file descriptor (a socket, or the template's stdin/stdout
    pipes), each read bounded by TIMEOUT."""

    def __init__(self, read_fd: int, write_fd: int | None = None) -> None:
        self.read_fd = read_fd
        self.write_fd = read_fd if write_fd is None else write_fd
        self.frames = protocol.FrameDecoder()
        self.ids = 0

    def receive(self) -> dict[str, Any]:
        while (message := self.frames.next()) is None:
            assert select.select([self.read_fd], [], [], TIMEOUT)[0], "no answer in time"
            chunk = os.read(self.read_fd, 65536)
            assert chunk, "the other side closed the connection"
            self.frames.feed(chunk)
        return message

    def send(self, message: dict[str, Any]) -> None:
        data = memoryview(protocol.encode(message))
        while data:
            data = data[os.write(self.write_fd, data) :]

    def request(self, op: Kind, **fields: Any) -> dict[str, Any]:
        self.ids += 1
        self.send(protocol.request(self.ids, op, **fields))
        reply = self.receive()
        assert reply["id"] == self.ids
        return reply


class Template:
    """A template process and the Unix socket its instances connect to."""

    def __init__(self, python: str, directory: Path, config: dict[str, Any], preload: str | None) -> None:
        self.directory = directory
        self.path = str(directory / "h.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(8)
        self.listener.settimeout(TIMEOUT)
        env = dict(os.environ, PYTHONUNBUFFERED="1", AETHER_SLICE_CONFIG=json.dumps(config))
        self.log = directory / "template.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [python, "-m", "aether_slice.host", *(["--preload", preload] if preload else [])],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
            )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.pipe = Connection(self.process.stdout.fileno(), self.process.stdin.fileno())
        self.sockets: list[socket.socket] = []
        self.forks = 0

    def fork(self, config: dict[str, Any]) -> dict[str, Any]:
        """The template's answer to a FORK of an instance of `config`."""
        self.forks += 1
        log_path = str(self.directory / f"{self.forks}.log")
        token = f"t{self.forks}"
        self.pipe.send(
            protocol.request(
                self.forks, Kind.FORK, socket=self.path, token=token, log_path=log_path, config=config
            )
        )
        while "event" in (reply := self.pipe.receive()):
            pass
        return reply

    def instance(self, config: dict[str, Any]) -> tuple[int, Connection]:
        """Fork an instance of `config` and take its connection (after its hello)."""
        reply = self.fork(config)
        assert "ok" in reply, reply
        sock, _ = self.listener.accept()
        self.sockets.append(sock)
        connection = Connection(sock.fileno())
        assert protocol.token_of(connection.receive()) == f"t{self.forks}"
        return reply["ok"]["pid"], connection

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        for sock in self.sockets:
            sock.close()
        self.process.stdin.close()  # the template kills its children and exits
        self.process.wait(TIMEOUT)
        self.process.stdout.close()
        self.listener.close()


@pytest.fixture
def template(slice_python: str) -> Iterator[Callable[..., Template]]:
    started: list[Template] = []
    directory = Path(tempfile.mkdtemp(prefix="tpl-"))  # (short: a socket path is at most 108 bytes)

    def start(config: dict[str, Any], preload: str | None = FAULTY) -> Template:
        place = directory / str(len(started))
        place.mkdir()
        started.append(Template(slice_python, place, config, preload))
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


def test_a_slice_whose_import_fails_fails_the_load_of_each_instance(
    template: Callable[..., Template],
) -> None:
    config = {"mode": "fail_import"}
    preloading = template(config)
    for _ in range(2):
        _, connection = preloading.instance(config)
        failed = load(connection, config)
        assert failed["error"]["kind"] == "import", failed
        assert "faulty: import failed on purpose" in failed["error"]["message"]


def test_a_preloading_template_refuses_an_instance_of_another_config(
    template: Callable[..., Template],
) -> None:
    preloading = template({"mode": "ok"})
    refused = preloading.fork({"mode": "raise"})
    assert refused["error"]["kind"] == "protocol", refused
    assert "another config" in refused["error"]["message"]
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
