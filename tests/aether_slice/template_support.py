"""A real template (`python -m aether_slice.host`) driven frame by frame as a node drives it: its stdin
and stdout are a Unix socket of the test's, and each FORK hands the child its end of a new socket pair
and an output descriptor (SCM_RIGHTS), for the tests that look at the template and its instances from
the node's side."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from aether_slice import protocol
from aether_slice.protocol import Kind

TIMEOUT = 10.0


class Connection:
    """The host protocol's frames over a socket, each read bounded by TIMEOUT."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames = protocol.FrameDecoder()
        self.ids = 0

    def receive(self) -> dict[str, Any] | None:
        """The next message; None once the other side closed the connection."""
        while (message := self.frames.next()) is None:
            assert select.select([self.sock], [], [], TIMEOUT)[0], "no answer in time"
            chunk = self.sock.recv(65536)
            if not chunk:
                self.frames.end()
                return None
            self.frames.feed(chunk)
        return message

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, op: Kind, **fields: Any) -> dict[str, Any]:
        self.ids += 1
        self.send(protocol.encode(protocol.request(self.ids, op, **fields)))
        reply = self.receive()
        assert reply is not None and reply["id"] == self.ids, reply
        return reply


class TemplateProcess:
    """The template process and the test's end of its socket. `log` receives the template's stderr."""

    def __init__(
        self,
        python: str,
        log: Path,
        *,
        env: dict[str, str] | None = None,
        preload: str | None = None,
        reference: str | None = None,
    ) -> None:
        """`preload`: the entry point the template imports before forking (`--preload`), from its object
        reference `reference` if given (`--object`), else found in the environment's metadata."""
        arguments = ["--preload", preload] if preload else []
        if preload and reference:
            arguments += ["--object", reference]
        self.control, theirs = socket.socketpair()
        with theirs, open(log, "ab") as stderr:
            self.process = subprocess.Popen(
                [python, "-m", "aether_slice.host", *arguments],
                stdin=theirs,
                stdout=theirs,
                stderr=stderr,
                env=env,
                start_new_session=True,
            )
        self.events = Connection(self.control)
        self.connections: list[socket.socket] = []
        self.forks = 0

    def fork(self, config: dict[str, Any], output: int, **fields: Any) -> Connection:
        """Ask for an instance of `config` (and `fields`: its name, or another `version`) writing to
        `output`: the test's end of the instance's connection. The template answers only a FORK it
        refuses (`refusal`); the instance's pid comes with its answer to LOAD (or HEALTH)."""
        self.forks += 1
        ours, theirs = socket.socketpair()
        self.connections.append(ours)
        with theirs:
            fields = {k: v for k, v in {"version": protocol.VERSION, **fields}.items() if v is not None}
            frame = protocol.encode(protocol.request(self.forks, Kind.FORK, config=config, **fields))
            socket.send_fds(self.control, [frame], [theirs.fileno(), output])
        return Connection(ours)

    def refusal(self) -> dict[str, Any]:
        """The template's next message but exit events: its answer to a FORK it refused."""
        while True:
            message = self.events.receive()
            assert message is not None, "the template closed its socket"
            if "event" not in message:
                return message

    def close(self) -> None:
        for sock in self.connections:
            sock.close()
        self.control.close()  # the template kills its children and exits
        try:
            self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
