"""Slice host processes: the one module that talks to them.

Per installed slice version and config, a *template* process (`python -m aether_slice.host` in the
slice's virtualenv) has imported the slice once; each instance is a child forked from it on request. The
node talks to a template over one Unix stream socket (its stdin and stdout) and hands it, with each FORK,
the two descriptors the child keeps: its end of a socket pair whose other end is the node's connection
to the instance, and its stdout and stderr (the write end of the instance log's pipe). The instance
then speaks the host protocol on that connection (`aether_slice.protocol`: frames, messages, version).
The template answers a FORK only to refuse it: the instance's pid and protocol version come with its
answer to LOAD (one message fewer per instance for the template to write and the node to read); until
then the node names the child by its FORK's id (the template's EXIT events and KILL do too).
This module spawns templates, forks instances, serves the calls slices make to other slices, and
notices an instance's death at once (its connection closes).
"""

from __future__ import annotations

import array
import contextlib
import functools
import itertools
import json
import logging
import math
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import trio

from aether_kv import Replies
from aether_slice import protocol
from aether_slice.protocol import Kind, ProtocolError

from ..core._error_kinds import ErrorKind
from ..core._errors import InvocationError, SliceHostError, StepTimeoutError
from ..core._off_loop import in_pieces, json_size_at_least, loads_yielding, run_sized
from ._broadcast import Broadcast
from ._installer import InstalledSlice, entry_point_reference
from ._memory_cgroup import InstanceCgroup
from ._processes import ChildProcess, spawn

log = logging.getLogger("aether_node.slice_host")

# A slice's call of another: (artifact id, entry, payload, timeout, depth in its chain of calls) → result.
CallHandler = Callable[[str, str, Any, float, int], Awaitable[Any]]
HELD_OPEN_GRACE = 0.5  # s an ended instance's connection may stay open before the node closes it
# Calls to other slices one instance may have in flight through its node (`protocol.MAX_CALLS_IN_FLIGHT`);
# one more is refused at once (`unavailable`). Each is a task on the node: a slice firing calls without
# waiting for their answers (a gather of thousands, a loop of background tasks: the call depth does not
# bound those) would otherwise grow the node's memory and fill its loop until its lease lapses.
MAX_CALLS_IN_FLIGHT = protocol.MAX_CALLS_IN_FLIGHT
# Refusals of such calls queued for an instance that does not read them: past this, its connection ends
# (the slice's nonsense ends that slice, never the node's memory).
MAX_UNREAD_REFUSALS = 4 << 20

_READ_SIZE = 65536


_ENCODE_IN_PIECES = in_pieces(protocol.encode_json)


async def encode_frame(message: dict[str, Any], size: int, *, max_frame: int = protocol.MAX_FRAME) -> bytes:
    """`protocol.encode(message)`; one whose big part (a payload, a result) is about `size` bytes, BIG or
    more, is written in a worker thread, in pieces, so that the event loop keeps serving meanwhile. Raises
    as `protocol.encode`."""
    encode = functools.partial(protocol.encode, max_frame=max_frame)
    return await run_sized(size, encode, message, big=functools.partial(encode, json_text=_ENCODE_IN_PIECES))


_decode_yielding = functools.partial(protocol.decode, json_value=loads_yielding)


class _Call:
    """One request waiting for its reply: the caller parks until the reader hands the reply over (None if
    the instance died first, or if the expiry task found it overdue: then `timed_out`)."""

    __slots__ = ("deadline", "done", "probe", "reply", "task", "timed_out")

    def __init__(self, deadline: float, *, probe: bool = False) -> None:
        self.deadline = deadline
        self.probe = probe  # a health check's: its timing out is no caller giving up on work
        self.done = False
        self.timed_out = False
        self.reply: dict[str, Any] | None = None
        self.task: trio.lowlevel.Task | None = None

    def expire(self) -> None:
        if not self.done:
            self.timed_out = True
            self.resolve(None)

    def resolve(self, reply: dict[str, Any] | None) -> None:
        if self.done:
            return
        self.done, self.reply = True, reply
        if self.task is not None:
            task, self.task = self.task, None
            trio.lowlevel.reschedule(task)

    async def wait(self) -> dict[str, Any] | None:
        """The reply. Cancellable: then the reply, if it still comes, is dropped."""
        if self.done:
            await trio.lowlevel.checkpoint()
            return self.reply
        self.task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        return self.reply


class _Connection:
    """The host protocol's frames (`aether_slice.protocol`) on a connected Unix socket: an instance's, or
    the fast ingress's link to its worker.

    This is the node's data path, so it is lean: `send` writes straight to the non-blocking socket from
    the caller (no lock, no scheduler pass); only what the socket cannot take at once is left, in order,
    for the writer task. `receive` is for one reader task; it parses every frame a read brought before
    reading again, and after a short read it waits for the socket instead of trying a read that would
    find nothing.
    """

    def __init__(self, stream: trio.SocketStream, *, max_frame: int = protocol.MAX_FRAME) -> None:
        self.stream = stream
        self.max_frame = max_frame
        self._fd = stream.socket.fileno()
        self._closed = False
        self._broken: OSError | None = None
        self._in = protocol.FrameDecoder(max_frame=max_frame)
        self._drained = False
        self._out = bytearray()  # bytes `send` could not write yet, from _out_start on
        self._out_start = 0
        self._flush = trio.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the socket (wakes the reader and the writer). The fd is never touched afterwards."""
        if not self._closed:
            self._closed = True
            self._flush.set()
            self.stream.socket.close()

    # ------------------------------------------------------------ out

    @property
    def unwritten(self) -> int:
        """Bytes queued for the instance that its socket did not take yet (it is not reading them)."""
        return len(self._out) - self._out_start

    def send(self, message: dict[str, Any]) -> None:
        """Queue one frame, writing as much as the socket takes now. Raises ProtocolError if the message
        cannot be framed (nothing is sent then), trio.BrokenResourceError or trio.ClosedResourceError if
        the connection is gone."""
        self.write(protocol.encode(message, max_frame=self.max_frame))

    async def send_sized(self, message: dict[str, Any], size: int) -> None:
        """`send` of a message whose big part is about `size` bytes (`encode_frame`)."""
        self.write(await encode_frame(message, size, max_frame=self.max_frame))

    def write(self, data: bytes) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the connection to the instance is closed")
        if self._broken is not None:
            raise trio.BrokenResourceError(f"the connection to the instance broke: {self._broken}")
        if self._out:  # the writer task holds earlier bytes: keep the order
            self._out += data
            return
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            self._broken = error
            raise trio.BrokenResourceError(f"the connection to the instance broke: {error}") from None
        if sent < len(data):
            self._out += memoryview(data)[sent:]
            self._flush.set()

    async def write_loop(self) -> None:
        """The writer task: writes what `send` could not, as the socket drains. Ends when closed/broken."""
        while not self._closed and self._broken is None:
            await self._flush.wait()
            self._flush = trio.Event()
            while self._out and not self._closed:
                try:
                    await trio.lowlevel.wait_writable(self._fd)
                except trio.ClosedResourceError:
                    return
                if self._closed:
                    return
                try:
                    with memoryview(self._out) as view, view[self._out_start :] as rest:
                        sent = os.write(self._fd, rest)
                except BlockingIOError:
                    continue
                except OSError as error:
                    self._broken = error
                    return
                self._out_start += sent
                if self._out_start * 2 >= len(self._out):  # drop what is written, in amortised O(1)
                    del self._out[: self._out_start]
                    self._out_start = 0

    # ------------------------------------------------------------ in

    async def receive(self) -> dict[str, Any] | None:
        """The next frame, or None at a clean end of stream. Raises ProtocolError on garbage,
        trio.ClosedResourceError once closed, trio.BrokenResourceError if the socket failed."""
        frames = self._in
        while (payload := frames.next_payload()) is None:
            if not await self._read():
                frames.end()
                return None
        return await run_sized(len(payload), protocol.decode, payload, big=_decode_yielding)

    async def _read(self) -> bool:
        """Read what the socket has (waiting for it if needed); False at end of stream."""
        while True:
            if self._drained and not self._closed:
                await trio.lowlevel.wait_readable(self._fd)  # raises ClosedResourceError if closed
            if self._closed:  # (checked before every use of the fd: its number may be reused once closed)
                raise trio.ClosedResourceError("the connection to the instance is closed")
            try:
                chunk = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                self._drained = True
                continue
            except OSError as error:
                raise trio.BrokenResourceError(f"the connection to the instance broke: {error}") from None
            self._drained = len(chunk) < _READ_SIZE
            if not self._drained:
                await trio.lowlevel.checkpoint()  # a flood must not starve the other tasks
            self._in.feed(chunk)
            return bool(chunk)


class SliceTemplate:
    """The fork server of one installed slice version and one config: it imports the slice once, with that
    config in `AETHER_SLICE_CONFIG` (as an instance would), and forks instances of that config only."""

    def __init__(self, installed: InstalledSlice, log_path: Path, config: Mapping[str, Any]) -> None:
        self.installed = installed
        self.log_path = log_path
        self.config = dict(config)
        self.process: ChildProcess | None = None
        self.control: trio.socket.SocketType | None = None  # the template's stdin and stdout
        self.ends: dict[int, str] = {}  # FORK id → how its child ended, or why there was none
        self.exited = trio.Event()
        self._ends_changed = trio.Event()
        self._lock = trio.Lock()
        self._fork_ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._on_end: dict[int, Callable[[], None]] = {}  # fork id → its host's word that it ended
        self.users = 0  # instances of the node's forked (or being forked) from it (SliceStore counts)
        self.idle_since = trio.current_time()  # when `users` last fell to 0

    @property
    def alive(self) -> bool:
        return self.process is not None and not self.exited.is_set()

    async def start(self, nursery: trio.Nursery) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"))
        }
        env.update(
            PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", AETHER_SLICE_CONFIG=json.dumps(self.config)
        )
        preload = ["--preload", self.installed.coordinates.artifact_id]
        reference = await trio.to_thread.run_sync(entry_point_reference, self.installed)
        if reference is not None:  # the template need not read the environment's metadata for it
            preload += ["--object", reference]
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with theirs, open(self.log_path, "ab") as log_file:
                self.process = spawn(
                    [str(self.installed.python), "-m", "aether_slice.host", *preload],
                    stdin=theirs.fileno(),
                    stdout=theirs.fileno(),
                    stderr=log_file,
                    env=env,
                    cwd=self.installed.venv,
                    new_session=True,  # the node's Ctrl-C is not the slice's
                )
        except BaseException:
            ours.close()
            raise
        self.control = trio.socket.from_stdlib_socket(ours)
        self._nursery = nursery
        nursery.start_soon(self._read_loop)

    async def _read_loop(self) -> None:
        assert self.process is not None and self.control is not None
        frames = protocol.FrameDecoder()
        try:
            while True:
                message = frames.next()
                if message is None:
                    chunk = await self.control.recv(_READ_SIZE)
                    if not chunk:
                        break
                    frames.feed(chunk)
                    continue
                if message.get("event") == Kind.EXIT:
                    self._ended(message.get("fork"), protocol.describe_exit(int(message["code"])))
                elif "error" in message:  # a FORK refused
                    why = f"the slice template refused to fork: {protocol.failure_of(message).text}"
                    self._ended(message.get("id"), why)
                # (an answer that says it forked is a version 2 template's: its child's answer to LOAD,
                # which names no version, is refused)
        except (OSError, trio.ClosedResourceError):
            pass
        except ProtocolError as error:
            log.error("the slice template of %s broke the host protocol: %s", self.log_path, error)
        except Exception:  # it runs in the node's nursery: a template's nonsense ends the template only
            log.exception("the slice template of %s sent what it must not", self.log_path)
        finally:
            self.exited.set()
            self._ends_changed.set()
            self.control.close()  # (a template still running exits when its socket closes)
            await self.process.stop(1)

    def _ended(self, fork_id: Any, reason: str) -> None:
        if isinstance(fork_id, int):
            self.ends[fork_id] = reason
            changed, self._ends_changed = self._ends_changed, trio.Event()
            changed.set()
            tell = self._on_end.pop(fork_id, None)
            if tell is not None:
                tell()

    def on_end(self, fork_id: int, tell: Callable[[], None] | None) -> None:
        """Call `tell()` when the child of FORK `fork_id` ends (at once if it has); None: no longer."""
        if tell is None:
            self._on_end.pop(fork_id, None)
        elif fork_id in self.ends:
            tell()
        else:
            self._on_end[fork_id] = tell

    async def fork(
        self, config: Mapping[str, Any], name: str, fds: tuple[int, int], cgroup: str | None = None
    ) -> int:
        """Ask for an instance of `config`, named `name` (its process name), that keeps `fds` (its
        connection, its output: the template takes copies of them) and joins the memory cgroup at `cgroup`
        (None: none); the FORK's id, which names the child until its answer to LOAD gives its pid. No
        answer is awaited: a refusal is how the child "ended" (`exit_reason`), and its connection then
        closes. Raises SliceHostError if the template is gone."""
        assert self.control is not None
        fork_id = next(self._fork_ids)
        frame = protocol.encode(protocol.fork(fork_id, dict(config), name, cgroup))
        try:
            async with self._lock:  # one frame at a time on the socket
                await self._send(frame, fds)
        except (OSError, trio.ClosedResourceError):
            raise SliceHostError("template", f"the slice template process died ({self.log_path})") from None
        return fork_id

    def kill(self, fork_id: int) -> None:
        """SIGKILL the child of FORK `fork_id` through the template (for a child whose pid the node does
        not know yet); its EXIT follows. Nothing if the template is gone (its children went with it)."""
        if self._nursery is not None and self.alive:
            self._nursery.start_soon(self._send_kill, fork_id)

    async def _send_kill(self, fork_id: int) -> None:
        frame = protocol.encode(protocol.request(0, Kind.KILL, fork=fork_id))
        try:
            async with self._lock:
                await self._send(frame, ())
        except (OSError, trio.ClosedResourceError):
            pass

    async def _send(self, frame: bytes, fds: tuple[int, ...]) -> None:
        """`frame` with `fds` attached to its first bytes (the rest, if the socket took only part)."""
        assert self.control is not None
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        sent = await self.control.sendmsg([frame], ancillary)
        while sent < len(frame):
            sent += await self.control.send(memoryview(frame)[sent:])

    async def exit_reason(self, fork_id: int, timeout: float) -> str | None:
        """How the child of FORK `fork_id` ended ("exit code 3", "killed by SIGKILL", or the template's
        refusal to fork it), once the template has said (None if not in time)."""
        with trio.move_on_after(timeout):
            while fork_id not in self.ends and not self.exited.is_set():
                await self._ends_changed.wait()
        return self.ends.pop(fork_id, None)

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop(2)


class SliceHost:
    """One instance: a child of its template, connected through the node's Unix socket."""

    def __init__(
        self, template: SliceTemplate, connection: _Connection, fork_id: int, label: str, log_path: Path
    ) -> None:
        self.template = template
        self.connection = connection
        self.fork_id = fork_id
        self.pid: int | None = None  # from its answer to LOAD (`loaded`)
        self.label = label
        self.log_path = log_path
        self.exited = Broadcast()
        self.exit_reason = ""
        self.last_heard = trio.current_time()  # when the instance last sent anything (health checks)
        self.gave_up_at: float | None = None  # when a request to it last timed out (health checks)
        self.probe_missed_at: float | None = None  # when a health check of it last went unanswered
        self._killed_because = ""  # why the node killed it (a failed health check), for exit_reason
        self.cgroup: InstanceCgroup | None = None  # its memory cgroup, if it was given one
        self.hard_limited = False  # it is in `cgroup` (seen once loaded): the kernel holds its memory
        self._replies: Replies[_Call] = Replies()
        self.calls_in_flight = 0  # calls of this instance to other slices the node serves now
        self._refusals_unread = 0  # bytes of refusals of its calls queued since it last read everything
        # The expiry task sleeps in this scope until the earliest deadline of a pending call (or longer:
        # it is not moved later when calls end), so that a call needs no cancel scope of its own.
        self._timer = trio.CancelScope()

    @classmethod
    async def spawn(
        cls,
        nursery: trio.Nursery,
        template: SliceTemplate,
        *,
        label: str,
        name: str,
        config: dict[str, Any],
        output: int,
        log_path: Path,
        on_call: CallHandler,
        cgroup: InstanceCgroup | None = None,
    ) -> SliceHost:
        """Fork an instance from `template`, connected to this node by a socket pair, with `output` (the
        write end of the pipe into its log, `log_path`) as its stdout and stderr, `name` as its process
        name, and in `cgroup` (its memory limit; removed once it has ended). The caller keeps its own
        `output` and closes it. Requests may be sent at once (the instance reads them once it runs); its
        first, LOAD, is answered with its pid (`loaded`)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with theirs:
                where = str(cgroup.path) if cgroup is not None else None
                fork_id = await template.fork(config, name, (theirs.fileno(), output), where)
        except BaseException:
            ours.close()
            raise
        connection = _Connection(trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
        host = cls(template, connection, fork_id, label, log_path)
        host.cgroup = cgroup
        nursery.start_soon(host._read_loop, nursery, on_call)
        nursery.start_soon(connection.write_loop)
        nursery.start_soon(host._expire_loop)
        template.on_end(fork_id, lambda: nursery.start_soon(host._end_if_held_open))
        return host

    async def _end_if_held_open(self) -> None:
        """The template says the instance's process ended. Its connection closes with it, unless a process
        it started (`os.fork`, multiprocessing) holds the socket: then calls to it would wait for their
        timeouts and health checks (tens of seconds) for an instance that is gone. After a moment for the
        replies already sent to be read, what is left of its process group is killed and the connection
        closed: the instance ended as any that died."""
        with trio.move_on_after(HELD_OPEN_GRACE):
            await self.exited.wait()
        if self.exited.is_set():
            return
        log.warning(
            "%s: the slice process ended, but a process it started holds its connection open: killing them",
            self.label,
        )
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)  # (the group outlives its leader while a member lives)
        self.connection.close()

    # ------------------------------------------------------------ protocol

    async def _read_loop(self, nursery: trio.Nursery, on_call: CallHandler) -> None:
        try:
            while True:
                message = await self.connection.receive()
                if message is None:
                    break
                self.last_heard = trio.current_time()
                if message.get("op") == Kind.CALL:
                    if self.calls_in_flight >= MAX_CALLS_IN_FLIGHT:
                        self._refuse_call(message)
                        continue
                    self.calls_in_flight += 1
                    nursery.start_soon(self._serve_call, message, on_call)
                    continue
                self._replies.deliver(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except ProtocolError as error:  # the slice's nonsense ends that slice's connection only
            log.warning("%s: the slice process broke the host protocol: %s", self.label, error)
        except Exception:  # it runs in the node's nursery: a slice's nonsense ends that slice only
            log.exception("%s: reading from the slice process failed; closing its connection", self.label)
        finally:
            self.connection.close()
            with trio.CancelScope(shield=True):
                ended = await self.template.exit_reason(self.fork_id, timeout=2.0)
            self.template.on_end(self.fork_id, None)
            reason = ended or "its connection closed"
            if self.cgroup is not None:
                # (not only once it was seen in its cgroup after LOAD: one the kernel ended during LOAD,
                # under a limit too small for the slice to start in, says so too; one that never joined
                # has no kills counted there)
                if self.cgroup.oom_kills():
                    self._killed_because = self._killed_because or (
                        f"memory: the kernel ended it at the {self.cgroup.limit_mib} MiB its slice declares"
                        " ([slices.resources] memory_mib)"
                    )
                self.cgroup.kill_all()  # (what it started and left running, escaped its group too)
                self.cgroup.remove()  # (one it cannot remove yet goes later: `MemoryCgroups`)
            self.exit_reason = f"{self._killed_because}; {reason}" if self._killed_because else reason
            self.exited.set()
            self._timer.cancel()
            self._replies.end()

    async def _expire_loop(self) -> None:
        """Answers overdue calls with a timeout (their callers raise StepTimeoutError); ends with the host."""
        while not self.exited.is_set():
            now = trio.current_time()
            earliest = math.inf
            for request_id, call in self._replies.pending():
                if call.deadline <= now:
                    self._replies.discard(request_id)
                    call.expire()
                    if call.probe:
                        self.probe_missed_at = now
                    else:
                        self.gave_up_at = now
                else:
                    earliest = min(earliest, call.deadline)
            self._timer = trio.CancelScope(deadline=earliest)
            with self._timer:
                await trio.sleep_forever()

    def _refuse_call(self, message: dict[str, Any]) -> None:
        """Answer a call past MAX_CALLS_IN_FLIGHT at once, unsent (the slice's `context.call` raises it).
        Raises ProtocolError (its connection ends) if the instance reads none of its refusals: more than
        MAX_UNREAD_REFUSALS of them queued since its connection last took everything it was sent (what
        else is queued for it, its calls' answers and the calls it serves, does not count)."""
        if self.connection.unwritten == 0:
            self._refusals_unread = 0
        if self._refusals_unread > MAX_UNREAD_REFUSALS:
            raise ProtocolError(
                f"it sent calls past the {MAX_CALLS_IN_FLIGHT} in flight an instance may have and did not"
                f" read the refusals ({self._refusals_unread} bytes of them unread)"
            )
        why = (
            f"call to {str(message.get('artifact'))[:200]}/{str(message.get('entry'))[:200]} not sent:"
            f" {self.label} has {MAX_CALLS_IN_FLIGHT} calls to other slices in flight already, the most an"
            " instance may; wait for some of them to answer"
        )
        try:
            frame = protocol.encode(
                _error_reply(message.get("id"), InvocationError(ErrorKind.UNAVAILABLE, why))
            )
        except ProtocolError:  # (an id that does not encode: the slice's own nonsense, left unanswered)
            return
        self.connection.write(frame)
        self._refusals_unread += len(frame)

    async def _serve_call(self, message: dict[str, Any], on_call: CallHandler) -> None:
        try:
            await self._serve_call_counted(message, on_call)
        finally:
            self.calls_in_flight -= 1

    async def _serve_call_counted(self, message: dict[str, Any], on_call: CallHandler) -> None:
        call_id = message.get("id")
        try:
            timeout = message.get("timeout") or 10.0
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
                raise InvocationError(
                    ErrorKind.BAD_REQUEST, f"timeout: expected seconds in (0, 3600]: {timeout!r}"
                )
            artifact, entry = str(message.get("artifact")), str(message.get("entry"))
            try:
                # (an instance of before depths sends none: 1; a call is never less deep than 1)
                depth = max(1, protocol.call_depth_of(message, absent=1))
            except ProtocolError as error:
                raise InvocationError(ErrorKind.BAD_REQUEST, str(error)) from None
            too_deep = protocol.too_deep(depth, artifact, entry)
            if too_deep is not None:  # (an instance refuses it itself: this one did not)
                raise InvocationError(ErrorKind.BAD_REQUEST, too_deep)
            reply = protocol.reply(
                call_id, await on_call(artifact, entry, message.get("payload"), float(timeout), depth)
            )
        except InvocationError as error:  # kind, message and the other slice's exception type, intact
            reply = _error_reply(call_id, error)
        except Exception as error:  # a bug here must cost one call, never the node
            log.exception("%s: serving a call of the slice failed", self.label)
            reply = _error_reply(
                call_id,
                InvocationError(ErrorKind.INTERNAL, f"the node failed to route the call: {error!r}"),
            )
        try:
            try:
                await self.connection.send_sized(reply, json_size_at_least(reply.get("ok")))
            except ProtocolError as error:  # a result the slice cannot be sent
                self.connection.send(
                    _error_reply(call_id, InvocationError(ErrorKind.INTERNAL, f"the result: {error}"))
                )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def request(self, op: Kind, timeout: float, **fields: Any) -> Any:
        """One request to the host; raises SliceHostError (failed, died, cannot be sent) or
        StepTimeoutError."""
        try:
            reply = await self._exchange(op, timeout, fields)
        except ProtocolError as error:
            raise SliceHostError(protocol.HostErrorKind.PROTOCOL, f"{self.label}: {op}: {error}") from None
        return _result(reply)

    def send_ahead(self, op: Kind, **fields: Any) -> Ahead:
        """Send a request now, whose reply `result_of` awaits later: requests sent one behind another
        are on their way together (the host serves them in order). Its deadline starts when its result
        is awaited. Raises SliceHostError if it cannot be framed; a process that is gone (or goes before
        it answers) is the result's error."""
        call = _Call(math.inf)
        request_id = self._replies.add(call)  # (answered None at once if the process is gone)
        try:
            self.connection.send(protocol.request(request_id, op, **fields))
        except ProtocolError as error:
            self._replies.discard(request_id)
            raise SliceHostError(protocol.HostErrorKind.PROTOCOL, f"{self.label}: {op}: {error}") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._replies.discard(request_id)
            call.resolve(None)  # (the reader sees the end and says why)
        return Ahead(op, request_id, call)

    async def result_of(self, ahead: Ahead, timeout: float) -> Any:
        """The result of a request sent ahead, waiting at most `timeout` from now; raises as `request`."""
        call = ahead.call
        call.deadline = trio.current_time() + timeout
        if call.deadline < self._timer.deadline:
            self._timer.deadline = call.deadline
        try:
            return _result(await self._wait(ahead.op, timeout, call))
        finally:
            self._replies.discard(ahead.request_id)

    async def invoke(self, entry: str, payload: Any, timeout: float, depth: int = 0) -> Any:
        """Call an entry point; errors are InvocationErrors: the slice's own (`_call_error`), timeout, or
        unavailable (the process died). `depth`: how many slice-to-slice calls led to this one (the
        instance passes it on, one deeper, with the calls the entry point makes; and the time left of
        `timeout`)."""
        fields = {"entry": entry, "payload": payload, "timeout": timeout}
        if depth:
            fields["depth"] = depth
        try:
            reply = await self._exchange(Kind.INVOKE, timeout, fields)
        except ProtocolError as error:  # a payload that cannot be framed: the caller's
            raise InvocationError(ErrorKind.BAD_REQUEST, f"{self.label}: the payload: {error}") from None
        except StepTimeoutError:
            message = f"{self.label}: {entry} did not answer within {timeout:.3g} s"
            raise InvocationError(ErrorKind.TIMEOUT, message + self._blocked()) from None
        except SliceHostError as error:  # (crashed: the only one _exchange raises)
            raise InvocationError(ErrorKind.UNAVAILABLE, error.message) from None
        if "error" in reply:
            raise _call_error(protocol.failure_of(reply))
        return reply.get("ok")

    def _blocked(self) -> str:
        """Why a call may have timed out through no fault of its own, in words: the instance has left a
        health check unanswered since it last sent anything (its loop is blocked: an entry point
        waiting in sync code holds every call of its instance); "" if not."""
        missed = self.probe_missed_at
        if missed is None or missed < self.last_heard:
            return ""
        quiet = trio.current_time() - self.last_heard
        return (
            f" (the instance has answered nothing, a health check neither, for {quiet:.0f} s: its loop is"
            " blocked, by this call or another; a sync entry point that waits holds every call of its"
            " instance: make it async, or run the wait in asyncio.to_thread)"
        )

    async def _exchange(self, op: Kind, timeout: float, fields: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for its reply (which may be an error reply); raises SliceHostError
        (crashed: the process is gone or died meanwhile), StepTimeoutError, or ProtocolError (the request
        cannot be framed: nothing was sent)."""
        if self.exited.is_set():
            raise SliceHostError("crashed", f"{self.label}: the slice process is gone ({self.exit_reason})")
        size = json_size_at_least(fields["payload"]) if "payload" in fields else 0
        call = _Call(trio.current_time() + timeout, probe=op is Kind.HEALTH)
        request_id = self._replies.add(call)
        if call.deadline < self._timer.deadline:
            self._timer.deadline = call.deadline
        try:
            try:
                await self.connection.send_sized(protocol.request(request_id, op, **fields), size)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.exited.wait()
                raise SliceHostError(
                    "crashed", f"{self.label}: the slice process died ({self.exit_reason})"
                ) from None
            return await self._wait(op, timeout, call)
        finally:
            self._replies.discard(request_id)

    async def _wait(self, op: Kind, timeout: float, call: _Call) -> dict[str, Any]:
        """The reply `call` waits for; raises StepTimeoutError, or SliceHostError (crashed) if the process
        ended first."""
        reply = await call.wait()
        if call.timed_out:
            raise StepTimeoutError(f"{self.label}: {op} did not finish within {timeout:g} s")
        if reply is None:
            await self.exited.wait()  # (its reason, once the reader has seen the end)
            raise SliceHostError(
                "crashed", f"{self.label}: the slice process died during {op} ({self.exit_reason})"
            )
        return reply

    def loaded(self, result: Any) -> None:
        """Take the pid from the instance's answer to LOAD, checking the protocol version it speaks;
        raises SliceHostError (protocol) if it speaks another (an answer without one is version 2's)."""
        try:
            if not isinstance(result, dict):
                raise ProtocolError(f"an answer to {Kind.LOAD} must be an object, got {result!r}")
            protocol.check_version(result, unnamed=2)
            pid = result.get("pid")
            if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
                raise ProtocolError(f"an answer to {Kind.LOAD} must name the instance's pid, got {pid!r}")
        except ProtocolError as error:
            raise SliceHostError(protocol.HostErrorKind.PROTOCOL, f"{self.label}: {error}") from None
        self.pid = pid

    # ------------------------------------------------------------ ending

    async def close(self, grace: float = 3.0) -> None:
        """Close the instance's socket (it exits at once), give it `grace` s, then SIGKILL its process
        group: the instance if it lingers (stopped or hung: it never reads the closed socket; its
        connection's end alone does not mean the process ended) and whatever it started that is still
        running (a slice's own subprocesses end with its instance). Shielded."""
        with trio.CancelScope(shield=True):
            self.connection.close()
            with trio.move_on_after(grace):
                await self.exited.wait()
            self.kill()
            await self.exited.wait()

    def given_up_on(self) -> bool:
        """Whether a request to the instance timed out and it has sent nothing since: whatever it computes
        now, nobody waits for it (health checks no longer take its CPU use for work)."""
        return self.gave_up_at is not None and self.gave_up_at >= self.last_heard

    def kill(self, because: str = "") -> None:
        """SIGKILL the instance's process group (it leads its own session, and its children are in it);
        `because` goes before the exit's description in `exit_reason`."""
        if because and not self._killed_because:
            self._killed_because = because
        if self.pid is None:  # (its LOAD unanswered: the template knows its pid)
            self.template.kill(self.fork_id)
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # (the group is gone: nothing of it is left)
            pass


class Ahead:
    """A request sent ahead of the wait for its reply (`SliceHost.send_ahead`)."""

    __slots__ = ("call", "op", "request_id")

    def __init__(self, op: Kind, request_id: int, call: _Call) -> None:
        self.op = op
        self.request_id = request_id
        self.call = call


def _result(reply: dict[str, Any]) -> Any:
    """A host's reply to a request: its result, or SliceHostError with the host's error."""
    if "error" in reply:
        failure = protocol.failure_of(reply)
        raise SliceHostError(failure.kind, failure.text, failure.detail, failure.type)
    return reply.get("ok")


def _call_error(failure: protocol.Failure) -> InvocationError:
    """A slice host's error reply to a call, as the call's error: what the slice raised (its exception
    type as `remote_type`), a result that cannot be sent (not JSON, NaN included, or over the frame
    limit: `bad_result`, as the `slice_host` fixture says), no such entry point; anything else the host
    says (a protocol error) leaves the call unavailable."""
    if failure.kind == protocol.HostErrorKind.RAISED:
        return InvocationError(ErrorKind.RAISED, failure.text, remote_type=failure.type)
    if failure.kind == protocol.HostErrorKind.BAD_RESULT:
        return InvocationError(ErrorKind.BAD_RESULT, failure.text)
    if failure.kind == protocol.HostErrorKind.NO_ENTRY:
        return InvocationError(ErrorKind.NO_ENDPOINT, failure.text)
    return InvocationError(ErrorKind.UNAVAILABLE, failure.text)


def _error_reply(call_id: Any, error: InvocationError) -> dict[str, Any]:
    """The answer to a slice's call that failed, in the node's error vocabulary."""
    return protocol.error_reply(call_id, error.kind, error.message, type=error.remote_type)
