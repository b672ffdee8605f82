"""One slice instance run outside a node, for a slice author's tests: the client side of the host
protocol, blocking, standard library only. Owns the template and instance processes it starts and
nothing else (no cluster, no KV, no installs: the slice and aether-slice must be installed for the
interpreter it runs them with, this one by default).

It runs the very runner a node runs (`python -m aether_slice.host`): a template process, asked over its
stdin/stdout (a Unix socket) to fork one instance, handing it the end of a socket pair and its log file;
the instance then speaks the host protocol on that connection (`aether_slice.protocol`, which the
node's side, `aether_node`'s `_slice_host.py`, speaks too).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import protocol
from ._context import SliceCallError
from .protocol import Kind, ProtocolError

CallHandler = Callable[[Any], Any]


class SliceHostError(Exception):
    """The slice instance answered a request with an error, or could not answer it. `kind` says which:

    - from the slice: "raised" (an entry point or hook raised; `remote_type` names the exception, `detail`
      holds the traceback's tail), "no_entry" (no such entry point), "bad_result" (the result is not JSON:
      NaN or Infinity, a set, ...; or over 16 MiB), "entry_point" (not installed, or `aether_entry_points`
      is wrong), "import" (importing it failed);
    - from this runner: "crashed" (the process died), "timeout" (no answer in time), "protocol".
    """

    def __init__(
        self, kind: str, message: str, detail: str | None = None, remote_type: str | None = None
    ) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.detail = detail
        self.remote_type = remote_type


_FORK_ID = 1  # the id of the one FORK the fixture sends each template
_NO_WORD = "its connection closed"  # what an instance's end is when its template said nothing of it


class _Frames:
    """The protocol's frames read from a file descriptor against a deadline."""

    def __init__(self, fd: int, what: str) -> None:
        self.fd = fd
        self.what = what
        self.decoder = protocol.FrameDecoder()

    def receive(self, deadline: float) -> dict[str, Any]:
        while True:
            try:
                message = self.decoder.next()
            except ProtocolError as error:
                raise SliceHostError("protocol", f"{self.what} sent {error}") from None
            if message is not None:
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                raise SliceHostError("timeout", f"{self.what} did not answer in time")
            try:
                chunk = os.read(self.fd, 65536)
            except ConnectionResetError:  # (it ended with what we sent unread)
                chunk = b""
            if not chunk:
                raise SliceHostError("crashed", f"{self.what} closed its end")
            self.decoder.feed(chunk)


def _frame(message: dict[str, Any]) -> bytes:
    """One frame; a message over the limit (or not JSON) is the test's error (SliceHostError)."""
    try:
        return protocol.encode(message)
    except ProtocolError as error:
        raise SliceHostError("protocol", f"cannot send it to the slice: {error}") from None


def coordinates_of(artifact: str, version: str | None, python: str = sys.executable) -> str:
    """`group:artifact:version` for `group:artifact`; the version defaults to that of the distribution
    `{group}.{artifact}` installed for `python`, or 0.0.0 when there is none. Raises ValueError."""
    parts = artifact.split(":")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"slice {artifact!r}: expected group:artifact, e.g. org.example:hello")
    if version is None:
        version = _installed_version(f"{parts[0]}.{parts[1]}", python) or "0.0.0"
    return f"{artifact}:{version}"


def _installed_version(distribution: str, python: str) -> str | None:
    if python == sys.executable:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            return None
    script = "import importlib.metadata as m, sys\ntry: print(m.version(sys.argv[1]))\nexcept Exception: pass"
    try:
        found = subprocess.run(
            [python, "-c", script, distribution], capture_output=True, text=True, check=False
        )
    except OSError:  # no such interpreter: starting the host will say so
        return None
    return found.stdout.strip() or None


class SliceInstance:
    """One loaded (and, unless asked otherwise, started) instance of a slice in its own process."""

    def __init__(
        self,
        artifact: str,
        *,
        config: Mapping[str, Any] | None = None,
        version: str | None = None,
        instance: int = 1,
        calls: Mapping[str, CallHandler] | None = None,
        start: bool = True,
        timeout: float = 10.0,
        log_dir: Path | None = None,
        python: str = sys.executable,
    ) -> None:
        """Start a template, fork the instance, load the slice `artifact` ("group:artifact") and run its
        `aether_start` hook (unless `start=False`). Calls the slice makes to other slices are answered
        by `calls`, keyed "group:artifact/entry" (a handler raising SliceCallError answers with that
        error); any other call gets a `no_endpoint` error. Raises SliceHostError, and then leaves no
        process behind."""
        self.artifact = artifact
        self.coordinates = coordinates_of(artifact, version, python)
        self.instance = instance
        self.config = dict(config or {})
        self.python = python
        self.timeout = timeout
        self.handlers = dict(calls or {})
        self.calls: list[tuple[str, str, Any]] = []  # every call the slice made: (artifact, entry, payload)
        self.entry_points: dict[str, bool] = {}  # name → idempotent
        self.started = False
        self.exit_reason: str | None = None  # how the instance ended, once it has
        self._ids = 0
        self._owned_dir = log_dir is None
        self.directory = Path(tempfile.mkdtemp(prefix="aether-slice-")) if log_dir is None else log_dir
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = f"{artifact.replace(':', '.')}-{instance}"
        taken = 1
        while (self.directory / f"{stem}.log").exists():  # a second instance like it in the same test
            taken += 1
            stem = f"{artifact.replace(':', '.')}-{instance}-{taken}"
        self.log_path = self.directory / f"{stem}.log"
        self._template_log = self.directory / f"{stem}-template.log"
        self.pid: int | None = None
        self._template: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None  # our end of the template's stdin and stdout
        self._socket: socket.socket | None = None  # our end of the instance's connection
        try:
            self._spawn()
            reply = self._load()
            self.entry_points = {e["name"]: bool(e["idempotent"]) for e in reply["entry_points"]}
            if start:
                self.start()
        except BaseException:
            self.close(stop=False)
            raise

    # ------------------------------------------------------------ processes

    def _spawn(self) -> None:
        # As a node runs it: the template imports the slice once, with the instance's config. It does not
        # answer the FORK (unless it refuses it): the instance's pid comes with its answer to LOAD.
        env = dict(os.environ, PYTHONUNBUFFERED="1", AETHER_SLICE_CONFIG=json.dumps(self.config))
        control, theirs = socket.socketpair()
        ours, instance_end = socket.socketpair()
        self._control, self._socket = control, ours
        try:
            with (
                theirs,
                instance_end,
                open(self._template_log, "ab") as log,
                open(self.log_path, "ab") as output,
            ):
                self._template = subprocess.Popen(
                    [self.python, "-m", "aether_slice.host", "--preload", self.artifact],
                    stdin=theirs,
                    stdout=theirs,
                    stderr=log,
                    env=env,
                    start_new_session=True,  # a Ctrl-C in the terminal is pytest's, not the slice's
                )
                self._template_frames = _Frames(control.fileno(), "the slice template process")
                request = _frame(protocol.fork(_FORK_ID, self.config))
                socket.send_fds(control, [request], [instance_end.fileno(), output.fileno()])
        except OSError as error:
            raise self._not_started(str(error)) from None
        self._frames = _Frames(ours.fileno(), f"{self.coordinates}#{self.instance}")

    def _not_started(self, why: str) -> SliceHostError:
        output_lines = self._template_log.read_text(errors="replace").strip().splitlines()[-10:]
        return SliceHostError(
            "crashed",
            f"the slice host `{self.python} -m aether_slice.host` did not start ({why}); its output:\n"
            + ("\n".join(output_lines) or "(none)"),
        )

    def _log_tail(self, lines: int = 20) -> str:
        text = self.log
        return "log: " + ("\n".join(text.strip().splitlines()[-lines:]) or "(empty)")

    @property
    def log(self) -> str:
        """What the instance printed and logged so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def _exit_reason(self) -> str:
        """How the instance ended, as its template saw it (waits up to 2 s for the template to reap it)."""
        deadline = time.monotonic() + 2.0
        with contextlib.suppress(SliceHostError):
            while True:
                event = self._template_frames.receive(deadline)
                if event.get("event") == Kind.EXIT and event.get("fork") == _FORK_ID:
                    return protocol.describe_exit(int(event["code"]))
                if "error" in event and event.get("id") == _FORK_ID:
                    return f"the slice template refused to fork: {protocol.failure_of(event).text}"
        return _NO_WORD

    # ------------------------------------------------------------ protocol

    def _request(self, op: Kind, timeout: float | None = None, **fields: Any) -> Any:
        if self._socket is None or self.exit_reason is not None:
            why = self.exit_reason or "it was closed"
            raise SliceHostError("crashed", f"{self.coordinates}: the instance is gone ({why})")
        self._ids += 1
        request_id = self._ids
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        frame = _frame(protocol.request(request_id, op, **fields))
        try:
            self._socket.sendall(frame)
            while True:
                message = self._frames.receive(deadline)
                if message.get("op") == Kind.CALL:
                    self._socket.sendall(self._answer_call(message))
                elif message.get("id") == request_id:
                    break
        except (SliceHostError, OSError) as error:
            kind = error.kind if isinstance(error, SliceHostError) else "crashed"
            if kind == "protocol":
                raise
            if kind == "timeout":
                raise SliceHostError(
                    "timeout",
                    f"{self.coordinates}: {op} did not answer within "
                    f"{self.timeout if timeout is None else timeout:g} s",
                ) from None
            if self.exit_reason is None:
                self.exit_reason = self._exit_reason()
            self.started = False  # no aether_stop for a dead instance
            raise SliceHostError(
                "crashed",
                f"{self.coordinates}: the slice process died during {op} ({self.exit_reason}); "
                + self._log_tail(),
            ) from None
        if "error" in message:
            failure = protocol.failure_of(message)
            raise SliceHostError(failure.kind, failure.message, failure.detail, failure.type)
        return message.get("ok")

    def _answer_call(self, message: dict[str, Any]) -> bytes:
        """The frame answering the slice's call: the handler's result, or its error; a result JSON cannot
        carry (NaN, a set, over 16 MiB) is "bad_result", as the cluster answers one of a slice's."""
        answer = self._call_answer(message)
        try:
            return protocol.encode(answer)
        except ProtocolError as error:
            artifact, entry = message.get("artifact"), message.get("entry")
            why = f"the result of the handler of {artifact}/{entry} cannot be sent: {error}"
            return _frame(protocol.error_reply(answer["id"], protocol.HostErrorKind.BAD_RESULT, why))

    def _call_answer(self, message: dict[str, Any]) -> dict[str, Any]:
        artifact, entry, payload = (
            str(message.get("artifact")),
            str(message.get("entry")),
            message.get("payload"),
        )
        self.calls.append((artifact, entry, payload))
        handler = self.handlers.get(f"{artifact}/{entry}")
        call_id = message.get("id")
        if handler is None:
            known = ", ".join(sorted(self.handlers)) or "none"
            return protocol.error_reply(
                call_id,
                "no_endpoint",
                f"no handler for {artifact}/{entry} in slice_host(calls=...) (it has: {known})",
            )
        try:
            return protocol.reply(call_id, handler(payload))
        except SliceCallError as error:
            return protocol.error_reply(call_id, error.kind, error.message, type=error.remote_type)
        except Exception as error:
            return protocol.error_reply(
                call_id, protocol.HostErrorKind.RAISED, str(error), type=type(error).__qualname__
            )

    def _load(self) -> dict[str, Any]:
        """LOAD, and the instance's pid and protocol version from its answer."""
        try:
            reply = self._request(
                Kind.LOAD,
                entry_point=self.artifact,
                coordinates=self.coordinates,
                instance=self.instance,
                config=self.config,
            )
            try:
                protocol.check_version(reply, unnamed=2)
            except ProtocolError as error:
                raise SliceHostError("protocol", str(error)) from None
            self.pid = int(reply["pid"])
            return dict(reply)
        except SliceHostError as error:
            template = self._template
            if error.kind == "crashed" and self.exit_reason == _NO_WORD and template is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):  # the template itself is gone?
                    raise self._not_started(f"it exited with code {template.wait(2.0)}") from None
            if error.kind != protocol.HostErrorKind.ENTRY_POINT or not error.message.startswith(
                "no entry point"
            ):
                raise
            raise SliceHostError(
                error.kind,
                f"{error.message}: no distribution installed in {self.python}'s environment declares "
                f"the slice {self.artifact}; install the slice project there first (`uv run pytest` in "
                "the project does; otherwise `pip install -e .`), and check that its entry point in "
                '[project.entry-points."aether.slices"] of its pyproject.toml is named exactly '
                f"{self.artifact!r}",
            ) from None

    # ------------------------------------------------------------ what a test calls

    def start(self) -> None:
        """Run the slice's `aether_start` hook (done on creation unless `start=False`)."""
        self._request(Kind.START)
        self.started = True

    def invoke(self, entry: str, payload: Any = None, *, timeout: float | None = None) -> Any:
        """Call an entry point with a JSON-able payload, as a node would; its JSON result (the payload and
        the result go through JSON on the way). Raises SliceHostError."""
        return self._request(Kind.INVOKE, timeout, entry=entry, payload=payload)

    def stop(self) -> None:
        """Run the slice's `aether_stop` hook."""
        self.started = False
        self._request(Kind.STOP)

    def health(self) -> dict[str, Any]:
        """The instance's pid, peak memory (KiB) and CPU seconds."""
        return dict(self._request(Kind.HEALTH))

    def close(self, *, stop: bool = True) -> None:
        """Run `aether_stop` if the instance was started (and `stop`), then end both processes (the
        instance exits when its socket closes; SIGKILL after 3 s). Raises what `aether_stop` raised, after
        the processes are gone."""
        try:
            if stop and self.started and self._socket is not None:
                self.stop()
        finally:
            self._end_processes()

    def _end_processes(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        # The template SIGKILLs its children when its socket closes; were it killed, they would die with
        # it (they ask the kernel for that), so nothing is left either way.
        if self._control is not None:
            self._control.close()  # the template kills its children and exits
            self._control = None
        template, self._template = self._template, None
        if template is not None:
            try:
                template.wait(3.0)
            except subprocess.TimeoutExpired:
                template.kill()
                template.wait()
        if self._owned_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SliceInstance:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
