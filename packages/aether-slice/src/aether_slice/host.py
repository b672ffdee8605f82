"""The slice host runner. Standard library + pluggy only (asyncio, not trio, so that it imposes nothing on
the slice's dependencies).

`python -m aether_slice.host [--preload NAME [--object MODULE:ATTR]]` runs a *template* in the slice's
own virtualenv: it imports the runtime once and forks one child per slice instance when the node asks (a
fork costs ~1 ms; a fresh interpreter ~100 ms). Whatever does not depend on the instance is done once, in
the template, so that each child inherits it instead of doing it again: logging set up, the parent-death
call looked up, an instance's life rehearsed with a stand-in slice (`_warm_up`: what an instance runs,
quickened and built once), and with `--preload` the slice itself imported and registered with pluggy
(with the config of the environment's `AETHER_SLICE_CONFIG`, so a template serves instances of that
config only; a slice whose import fails or starts threads is not kept: the template starts again without
it, and each instance imports the slice itself, as without `--preload`). With `--object` (the entry
point's object reference, which the node read from the slice's metadata) the slice is imported from it;
otherwise the environment's entry points are scanned, once (`importlib.metadata`: ~3 MiB more in the
template, whose page tables every fork copies). The template's stdin and stdout are one Unix stream
socket to the node: each FORK request comes with two descriptors, the child's connection to the node (a
socket pair's end: nothing to connect to, no token to show) and its stdout and stderr (the node's pipe
into the instance's log). The child speaks the host protocol on its connection (`aether_slice.protocol`:
its frames, messages and version): on the blocking socket until a message needs an event loop
(`Host.serve_before_loop`), then on one, uvloop if the slice's environment has it (the runtime itself
needs only the standard library). A child exits when its connection closes; children and template ask the
kernel to kill them when their parent dies, so nothing outlives the node.

Node → host: load, start, stop, invoke, health, attach (each with an integer "id"; one reply each;
load, start and stop served in order, each before the next message: see `Host.serve`).
Host → node: call (id "c<n>"), for a slice calling another slice through the cluster.
An attach opens a second connection (to the node's ingress worker), which serves invokes only
(`Attached`); the instance ends with its node's connection, not with an attached one.
"""

from __future__ import annotations

import _signal
import array
import asyncio
import collections
import contextlib
import contextvars
import ctypes
import gc
import importlib
import inspect
import json
import logging
import os
import resource
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import pluggy

from . import ENTRY_POINT_GROUP, hookspecs, protocol
from ._context import EntryPoint, SliceCallError, SliceContext
from ._fork import Forker
from .protocol import Kind, ProtocolError

PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1
_READ_SIZE = 65536
_MAX_MESSAGE = 65536  # of an exception's message in an error reply: its frame must stay under the limit
_MAX_FDS = 8  # descriptors one read of the template's socket takes: a FORK's (the kernel ends a read there)
_MAX_READS = 64  # reads of the node's socket served together by the template (64 FORKs at most)


class HostError(Exception):
    def __init__(self, kind: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.detail = detail


_prctl: Callable[[int, Any], int] | None = None


def _die_with_parent() -> None:
    """Ask the kernel for SIGKILL when the parent dies. libc's prctl is looked up once, in the template:
    its children call it without loading anything."""
    global _prctl
    if _prctl is None:
        try:
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):  # not Linux: stdin EOF still ends us
            _prctl = _no_prctl
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the node died before we could ask
        os._exit(1)


def _no_prctl(option: int, value: Any) -> int:
    return 0


def _name_process(name: str) -> None:
    """Name this process as `ps` and `top` show it (Linux keeps 15 bytes; after `_die_with_parent`)."""
    if _prctl is not None:
        _prctl(PR_SET_NAME, name.encode()[:15])


class Host(asyncio.Protocol):
    """The slice's side of one connection, as the asyncio protocol of its transport: what one read
    brings is served as it arrives (`data_received`), with no task woken per read."""

    def __init__(self, write: Callable[[bytes], object] | None = None) -> None:
        self._write: Callable[[bytes], object] = write or _unconnected
        self._frames = protocol.FrameDecoder()
        self._ended: asyncio.Future[None] | None = None
        self._transport: asyncio.BaseTransport | None = None
        self.plugins: pluggy.PluginManager | None = None
        self.context: SliceContext | None = None
        self.entries: dict[str, EntryPoint] = {}
        self.pending_calls: dict[str, asyncio.Future[Any]] = {}
        self.call_ids = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopped = False  # the aether_stop hook ran: attached connections refuse invokes
        self._held: dict[str, Any] | None = None  # read before the loop, served first on it
        # Make the loop to start, hook or not (an instance under a hard memory limit: a limit its loop
        # does not fit in must fail its activation, not its first call).
        self.loop_to_start = False

    # ------------------------------------------------------------ the connection

    async def serve_on(self, sock: socket.socket) -> None:
        """Serve the connection on `sock` (connected) until it closes: the other side closed it or died,
        or sent what the protocol does not allow. Raises what serving it raised unexpectedly."""
        loop = asyncio.get_running_loop()
        self._ended = loop.create_future()
        transport, _ = await loop.connect_accepted_socket(lambda: self, sock=sock)
        try:
            await self._ended
        finally:
            transport.close()

    def serve_before_loop(self, sock: socket.socket) -> bool:
        """Serve the connection on `sock` (connected, blocking) without an event loop for as long as
        what comes needs none: the LOAD of a preloaded slice, START and STOP when the slice has no hook
        for them, HEALTH. The first message that needs one (an invoke, an attach, a hook) is held for
        `serve_on`, which serves it first. An instance that is loaded and started but not yet called
        has made no loop (which costs ~0.3 ms of CPU and ~250 copied pages): a blueprint's instances
        are ACTIVE sooner, and an idle one is smaller. False if the connection ended (closed by the
        node, or broken by what it sent): the instance ends."""
        gone = False

        def write(data: bytes) -> None:
            # As a transport's write: a connection the node closed meanwhile (it gave up on a LOAD) ends
            # the instance, quietly, where an exception would fail a hook or end it with a traceback.
            nonlocal gone
            if not gone:
                try:
                    sock.sendall(data)
                except OSError:
                    gone = True

        self._write = write
        while self._held is None and not gone:
            try:
                chunk = sock.recv(_READ_SIZE)
            except OSError:
                return False
            if not chunk:
                return False
            replies: list[bytes] = []
            try:
                self._frames.feed(chunk)
                while (message := self._frames.next()) is not None:
                    if not self._needs_no_loop(message):
                        self._held = message
                        break
                    self._serve_without_loop(message, replies)
            except ProtocolError as error:
                _say_broken(error)
                return False
            finally:
                if replies:
                    write(b"".join(replies))
        return not gone

    def _needs_no_loop(self, message: dict[str, Any]) -> bool:
        op = message.get("op")
        if op == Kind.HEALTH:
            return True
        if op == Kind.LOAD:  # (a slice imported here, not in the template, might look for a loop)
            return message.get("entry_point") in _preloaded
        if op == Kind.START and self.loop_to_start:
            return False
        if op == Kind.START or op == Kind.STOP:
            hook = "aether_stop" if op == Kind.STOP else "aether_start"
            return self.plugins is None or not getattr(self.plugins.hook, hook).get_hookimpls()
        return False

    def _serve_without_loop(self, message: dict[str, Any], replies: list[bytes]) -> None:
        if message.get("op") == Kind.HEALTH:
            replies.append(_reply_frame(message.get("id"), _health(), Kind.HEALTH))
        else:
            self.lifecycle(str(message.get("op")), message, replies)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._write = transport.write  # type: ignore[attr-defined]
        if self._held is not None:  # (before the transport's first read: the node's order is kept)
            self.data_received(b"")

    def data_received(self, data: bytes) -> None:
        try:
            if self.take(data):
                return
        except Exception as error:  # a bug of ours: the instance ends with it (its traceback in the log)
            self._end(error)
        else:
            self._end(None)
        assert self._transport is not None
        self._transport.close()

    def eof_received(self) -> None:
        """The node closed the connection (or died): stop now (a frame cut short too). The transport
        closes (returning None)."""

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(None)

    def _end(self, error: Exception | None) -> None:
        if self._ended is not None and not self._ended.done():
            if error is None:
                self._ended.set_result(None)
            else:
                self._ended.set_exception(error)

    # ------------------------------------------------------------ frames

    def send(self, message: dict[str, Any]) -> None:
        self._write(protocol.encode(message))

    def take(self, chunk: bytes) -> bool:
        """Serve what one read brought: what can be answered at once is answered in one write (see
        `serve`); the rest is answered by its own task when done. False if the stream cannot be trusted
        further (it broke the protocol: said on stderr): the connection must end."""
        replies: list[bytes] = []
        try:
            self._frames.feed(chunk)
            if self._held is not None:
                held, self._held = self._held, None
                self.serve(held, replies)
            while (message := self._frames.next()) is not None:
                self.serve(message, replies)
        except ProtocolError as error:
            _say_broken(error)
            return False
        finally:
            if replies:
                self._write(b"".join(replies))
        return True

    def serve(self, message: dict[str, Any], replies: list[bytes]) -> None:
        """Take one message. An invoke's entry point is called here, on the loop, as a task would call
        it: a sync one runs to its end (it held the loop in a task too), and its answer joins `replies`;
        what returns an awaitable (an async one) is awaited in a task of its own. So are LOAD, START and
        STOP (`lifecycle`): in order, each done before the next message is looked at, so that a node
        may send START right behind LOAD. Every other request is served by a task of its own."""
        request_id = message.get("id")
        if isinstance(request_id, str):  # a reply to one of our calls
            future = self.pending_calls.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(message)
            return
        op = message.get("op")
        if op == Kind.LOAD or op == Kind.START or op == Kind.STOP:
            self.lifecycle(op, message, replies)
            return
        if op != Kind.INVOKE:
            self.spawn(self.handle(message))
            return
        try:
            self.refuse_invoke()
            entry = self.entry(message.get("entry"))
            serving = _serving_of(message)
        except Exception as error:
            replies.append(_error_frame(request_id, error))
            return
        # In a copy of the context, as a task would be: what the call sets is not seen by the next.
        context = contextvars.copy_context()
        if serving is not None:
            context.run(_serving.set, serving)
        try:
            result = context.run(entry.function, message.get("payload"))
        # (any: a KeyboardInterrupt or a BaseException of the slice's own ended the instance)
        except BaseException as error:
            if not _answerable(error):
                raise
            _raised_log.log(f"entry point {entry.name!r}", error)
            replies.append(_error_frame(request_id, error, by_slice=True))
            if serving is not None:
                serving.answered = True
            return
        what = f"entry point {entry.name!r}"
        if inspect.isawaitable(result):
            self.spawn(self.finish(request_id, result, what, serving))
        else:
            if serving is not None:
                serving.answered = True  # (a task it started calls on with no deadline but this one's depth)
            replies.append(_reply_frame(request_id, result, what))

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def handle(self, message: dict[str, Any]) -> None:
        try:
            frame = _reply_frame(message.get("id"), await self.dispatch(message), str(message.get("op")))
        except Exception as error:
            frame = _error_frame(message.get("id"), error)
        self._write(frame)

    async def finish(
        self,
        request_id: Any,
        result: Awaitable[Any],
        what: str,
        serving: _Serving | None = None,
    ) -> None:
        """Await what an entry point or a hook returned (`what`: which one, for an error) and answer it;
        `serving`: what the call it serves allows the calls it makes (`_serving`), set in this task's
        context, which the awaited code runs in."""
        if serving is not None:
            _serving.set(serving)
        try:
            frame = _reply_frame(request_id, await result, what)
        except BaseException as error:  # (any: its own CancelledError or BaseException went unanswered)
            if not _answerable(error):
                raise
            if what in _HOOKS:
                _log_failure(what, error)
            else:
                _raised_log.log(what, error)
            frame = _error_frame(request_id, error, by_slice=True)
        if serving is not None:
            serving.answered = True
        self._write(frame)

    def refuse_invoke(self) -> None:
        """Raise HostError if this connection may not invoke now (the node's connection always may)."""

    def lifecycle(self, op: str, message: dict[str, Any], replies: list[bytes]) -> None:
        """LOAD, START or STOP, called here as a task would call it (in a copy of the context); what the
        start or stop hooks return to await is awaited in a task of its own, which answers."""
        request_id = message.get("id")
        try:
            if op == Kind.LOAD:
                loaded = contextvars.copy_context().run(self.load, message)
                replies.append(_reply_frame(request_id, loaded, Kind.LOAD))
                return
            self.stopped = op == Kind.STOP  # (from now on attached connections refuse invokes)
            hook = "aether_stop" if self.stopped else "aether_start"
            if replies:  # (the LOAD answered with it goes before a sync hook that may take long)
                self._write(b"".join(replies))
                replies.clear()
            results = contextvars.copy_context().run(self.call_hook, hook)
        except BaseException as error:
            if not _answerable(error):
                raise
            _log_failure(op, error)
            replies.append(_error_frame(request_id, error))
            return
        awaitables = [result for result in results if inspect.isawaitable(result)]
        if awaitables:
            self.spawn(self.finish(request_id, _done_after(awaitables), hook))
        else:
            replies.append(_reply_frame(request_id, {}, hook))

    async def dispatch(self, message: dict[str, Any]) -> Any:
        try:
            kind = protocol.kind_of(message)
        except ProtocolError as error:
            raise HostError(protocol.HostErrorKind.PROTOCOL, str(error)) from None
        if kind is Kind.ATTACH:
            await self.attach(str(message.get("socket")), str(message.get("token")))
            return {}
        if kind is Kind.HEALTH:
            return _health()
        raise HostError(protocol.HostErrorKind.PROTOCOL, f"an instance does not answer a {kind} message")

    # ------------------------------------------------------------ lifecycle

    def load(self, message: dict[str, Any]) -> dict[str, Any]:
        name = message["entry_point"]
        group, artifact, version = message["coordinates"].split(":")
        manager = _preloaded[name] if name in _preloaded else _plugin_manager(name)
        logger = logging.getLogger(_logger_name(name))
        self.context = SliceContext(
            group=group,
            artifact=artifact,
            version=version,
            instance=int(message["instance"]),
            config=dict(message.get("config") or {}),
            logger=logger,
            caller=self.call,
        )
        entries: dict[str, EntryPoint] = {}
        try:
            declared_all = manager.hook.aether_entry_points(context=self.context)
        except RuntimeError as error:
            if "event loop" not in str(error):
                raise
            raise HostError(
                "entry_point",
                f"aether_entry_points: {error}: it runs before the instance's event loop; make what needs"
                " the loop in aether_start (which runs on it) or in an entry point",
                _short_traceback(),
            ) from None
        for declared in declared_all:
            if inspect.iscoroutine(declared):
                declared.close()  # (never awaited: no warning)
                raise HostError(
                    "entry_point",
                    "aether_entry_points is a coroutine function (`async def`): it must return the entry"
                    " points at once (a plain `def`); aether_start and the entry points may be async",
                )
            for entry in _as_entry_points(declared):
                if entry.name in entries:
                    raise HostError("entry_point", f"entry point {entry.name!r} is declared twice")
                entries[entry.name] = entry
        if not entries:
            raise HostError("entry_point", "the slice declares no entry points (hook aether_entry_points)")
        self.entries = entries
        self.plugins = manager  # loaded: only now may START run its start hook (a node sends it right behind)
        declared = [{"name": e.name, "idempotent": e.idempotent} for e in entries.values()]
        return protocol.loaded(declared, os.getpid())  # (the template does not answer FORK: the pid is here)

    def call_hook(self, name: str) -> list[Any]:
        """Call hook `name` of the loaded slice; what its implementations returned."""
        if self.plugins is None:
            raise HostError("protocol", "the slice is not loaded")
        return list(getattr(self.plugins.hook, name)(context=self.context))

    def entry(self, name: Any) -> EntryPoint:
        entry = self.entries.get(name)  # type: ignore[arg-type]
        if entry is None:
            known = ", ".join(sorted(self.entries)) or "none"
            raise HostError("no_entry", f"the slice has no entry point {name!r} (it has: {known})")
        return entry

    async def attach(self, path: str, token: str) -> None:
        """Connect to `path`, say hello with `token` there, and serve invokes on that connection too."""
        attached = Attached(self)
        try:
            await asyncio.get_running_loop().create_unix_connection(lambda: attached, path)
        except OSError as error:
            raise HostError(protocol.HostErrorKind.PROTOCOL, f"cannot attach to {path}: {error}") from None
        attached.send(protocol.hello(token, os.getpid()))

    # ------------------------------------------------------------ calls to other slices

    async def call(self, artifact: str, entry: str, payload: Any, timeout: float) -> Any:
        """Call another slice through the node: one step deeper in the chain of calls than the call this
        one serves (refused past `protocol.MAX_CALL_DEPTH`), and given no more time than it has left."""
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
            why = f"call to {artifact}/{entry}: timeout: expected seconds in (0, 3600], got {timeout!r}"
            raise SliceCallError("bad_request", why)
        serving = _serving.get() or _FROM_OUTSIDE
        depth = serving.depth + 1
        why = protocol.too_deep(depth, artifact, entry)
        if why is not None:
            raise SliceCallError("bad_request", why)
        deadline = None if serving.answered else serving.deadline
        if deadline is not None:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise SliceCallError(
                    "timeout", f"call to {artifact}/{entry}: the call it would serve has no time left"
                )
            timeout = min(timeout, left)
        self.call_ids += 1
        call_id = f"c{self.call_ids}"
        request = protocol.request(
            call_id, Kind.CALL, artifact=artifact, entry=entry, payload=payload, timeout=timeout, depth=depth
        )
        try:
            frame = protocol.encode(request)
        except ProtocolError as error:  # as the node refuses such a payload: the caller's (nothing sent)
            raise SliceCallError("bad_request", f"call to {artifact}/{entry}: the payload: {error}") from None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending_calls[call_id] = future
        self._write(frame)
        try:
            reply = await asyncio.wait_for(future, timeout + 1.0)
        except TimeoutError:
            raise SliceCallError(
                "timeout", f"call to {artifact}/{entry} timed out after {timeout:g} s"
            ) from None
        finally:
            self.pending_calls.pop(call_id, None)
        if "error" in reply:
            failure = protocol.failure_of(reply, default_kind="unavailable")
            raise SliceCallError(failure.kind, failure.message, failure.type)
        return reply.get("ok")


class Attached(Host):
    """A second connection of an instance (from ATTACH): the same slice, invokes only. After STOP it
    answers them with "stopped" (not run), so a caller with a stale view routes them again."""

    def __init__(self, main: Host) -> None:
        super().__init__()
        self.main = main
        self.entries = main.entries

    def lifecycle(self, op: str, message: dict[str, Any], replies: list[bytes]) -> None:
        failure = HostError(protocol.HostErrorKind.PROTOCOL, "an attached connection serves invokes only")
        replies.append(_error_frame(message.get("id"), failure))

    def refuse_invoke(self) -> None:
        if self.main.stopped:
            raise HostError(protocol.HostErrorKind.STOPPED, "the instance is stopping")

    async def dispatch(self, message: dict[str, Any]) -> Any:
        raise HostError(protocol.HostErrorKind.PROTOCOL, "an attached connection serves invokes only")


def _say_broken(error: ProtocolError) -> None:
    print(f"aether_slice.host: the node sent what the protocol does not allow: {error}", flush=True)


def _health() -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"pid": os.getpid(), "max_rss_kib": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime}


def _as_entry_points(declared: Any) -> list[EntryPoint]:
    if isinstance(declared, Mapping):
        entries = [EntryPoint(name=str(name), function=fn) for name, fn in declared.items()]
    else:
        entries = list(declared or ())
    for entry in entries:
        if not isinstance(entry, EntryPoint):
            raise HostError("entry_point", f"aether_entry_points returned {entry!r}, not an EntryPoint")
        why = _unroutable(entry.name)
        if why is not None:
            raise HostError("entry_point", f"entry point {entry.name[:80]!r}: {why}")
        if not callable(entry.function):  # (else it loads, and every call of it fails with a TypeError)
            raise HostError(
                "entry_point",
                f"entry point {entry.name!r}: its function must be callable, got"
                f" {type(entry.function).__name__} {_short_repr(entry.function)}",
            )
    return entries


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


MAX_ENTRY_NAME = 200  # characters of an entry point's name (it is a segment of the ingress's URL)


def _unroutable(name: Any) -> str | None:
    """Why no call could reach an entry point named `name` (None: one can): the ingress's URL carries it
    as one path segment (`/invoke/{artifact}/{entry}`), so it is a non-empty string of text without "/"."""
    if not isinstance(name, str) or not name:
        return "a name must be a non-empty string"
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:  # (a lone UTF-16 surrogate: no URL, record or answer could carry it)
            return "a name must be text: it holds a lone UTF-16 surrogate"
    if "/" in name:
        return 'a name cannot hold "/": it is one segment of the URL that calls it'
    if len(name) > MAX_ENTRY_NAME:
        return f"a name of {len(name)} characters is over the {MAX_ENTRY_NAME} a URL segment may take here"
    return None


def _logger_name(name: str) -> str:
    """The logger of the slice of entry point `name` ("group:artifact"): `slice.{group}.{artifact}`."""
    return "slice." + name.replace(":", ".")


def _plugin_manager(name: str, reference: str | None = None) -> pluggy.PluginManager:
    """Import the slice of entry point `name` and register it with a new plugin manager. `reference` is
    the entry point's object reference (`module:attr`) if the caller knows it (the node read it from the
    slice's metadata): then the environment's metadata is not scanned. Raises HostError."""
    if reference is None:
        found = [ep for ep in _slice_entry_points() if ep.name == name]
        if not found:
            raise HostError(
                "entry_point", f"no entry point {name!r} in group {ENTRY_POINT_GROUP!r}{_declared_there()}"
            )
        reference = found[0].value
    try:
        plugin = _load_reference(reference)
    except SystemExit as called:  # (it ended the process: the template's, or the instance's at LOAD)
        raise HostError("import", f"importing {reference} called sys.exit({called.code!r})") from None
    except Exception as error:
        raise HostError(
            "import",
            f"importing {reference} failed: {type(error).__name__}: {error}{_import_hint(error, reference)}",
            _short_traceback(),
        ) from None
    try:
        return _manager_of(plugin)
    except pluggy.PluginValidationError as error:  # (it ended the template, unsaid: "died during load")
        said = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise HostError("entry_point", f"{reference}: {said}") from None


def _import_hint(error: Exception, reference: str) -> str:
    """What a module not found while importing the slice of `reference` most likely means: the module the
    entry point names is not there (a typo, or not in the wheel), or another one is a dependency the slice
    does not declare (a test environment has pytest's, a node's virtualenv only the declared ones)."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return ""
    module = reference.partition("[")[0].partition(":")[0].strip()
    if error.name == module:
        return (
            " (the module the slice's entry point names: check its name in pyproject.toml, and that the"
            " wheel holds it)"
        )
    top = error.name.partition(".")[0]
    if top == module.partition(".")[0]:
        return ""
    return (
        f" (is {top!r} a dependency the slice does not declare? A node installs only the distributions its"
        " [project] dependencies name into the slice's virtualenv)"
    )


def _declared_there(limit: int = 20) -> str:
    """What slices this environment declares (a typo in a pyproject's entry point name shows here)."""
    names = sorted({ep.name for ep in _slice_entry_points()})
    if not names:
        return " (this environment declares no slice)"
    more = f", and {len(names) - limit} more" if len(names) > limit else ""
    return f" (this environment declares: {', '.join(names[:limit])}{more})"


def _manager_of(plugin: Any) -> pluggy.PluginManager:
    """A new plugin manager of the project's hooks with `plugin` registered."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(plugin)
    return manager


def _load_reference(reference: str) -> Any:
    """The object an entry point's reference names, loaded as `importlib.metadata.EntryPoint.load`
    loads it: `module` or `module:attr.attr` (extras in brackets are ignored)."""
    module, _, attrs = reference.partition("[")[0].partition(":")
    loaded = importlib.import_module(module.strip())
    for attribute in filter(None, attrs.strip().split(".")):
        loaded = getattr(loaded, attribute)
    return loaded


_preloaded: dict[str, pluggy.PluginManager] = {}  # entry point name → its manager, built in the template
_preloaded_config: Any = None  # the AETHER_SLICE_CONFIG it was imported with


def _preload_arguments(args: list[str]) -> tuple[str, str | None] | None:
    """The entry point to preload from the command line, `--preload NAME [--object MODULE:ATTR]`, and its
    object reference if given (None: none to preload)."""
    if len(args) == 2 and args[0] == "--preload":
        return args[1], None
    if len(args) == 4 and args[0] == "--preload" and args[2] == "--object":
        return args[1], args[3]
    return None


def _preload(name: str, reference: str | None = None) -> bool:
    """In the template, before any fork: import the slice (from `reference`, its entry point's object
    reference, if given: the environment's metadata is then not read, and `importlib.metadata`, ~3 MiB
    whose page tables every fork would copy, is not imported) and build its plugin manager, for every
    child to inherit. False (say why on stderr) if the import failed, or if it left the process with
    more threads than its own (forking a threaded process is unsafe, and a child would lack the thread)
    or with files or sockets open (every instance would share them)."""
    global _preloaded_config
    fds = _open_fds()
    try:
        _preloaded_config = json.loads(os.environ.get("AETHER_SLICE_CONFIG") or "{}")
        _preloaded[name] = _plugin_manager(name, reference)
        logging.getLogger(_logger_name(name))  # made once: each instance's load finds it
    except ValueError as error:
        print(f"aether_slice.host: not preloading {name}: AETHER_SLICE_CONFIG is not JSON: {error}")
        return False
    except HostError as error:
        print(f"aether_slice.host: not preloading {name}: {error.message} (each instance imports it)")
        return False
    threads = _thread_count()
    opened = _open_fds() - fds
    if threads > 1 or opened:
        left = f"started {threads - 1} thread(s)" if threads > 1 else f"left {len(opened)} file(s) open"
        print(f"aether_slice.host: not preloading {name}: importing it {left} (each instance imports it)")
        return False
    return True


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))  # native threads too, not only Python's
    except OSError:
        return threading.active_count()


def _open_fds() -> set[str]:
    """The open file descriptors (with the listing's own, the lowest free one: the same in two listings
    when nothing was opened between them)."""
    try:
        return set(os.listdir("/proc/self/fd"))
    except OSError:
        return set()


_ENTRY_POINTS: list[Any] | None = None


def _slice_entry_points() -> list[Any]:
    """The environment's slice entry points, scanned once: the template scans them before it forks, so
    an instance does not read every distribution's metadata again (tens of ms each, per instance)."""
    global _ENTRY_POINTS
    if _ENTRY_POINTS is None:
        import importlib.metadata

        _ENTRY_POINTS = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    return _ENTRY_POINTS


async def _done_after(awaitables: list[Awaitable[Any]]) -> dict[str, Any]:
    """Await each in turn (what a start or stop hook returned); the answer of the request: {}."""
    for awaitable in awaitables:
        await awaitable
    return {}


class _Serving:
    """What the call an entry point serves allows the calls the entry point makes to other slices: how
    deep that call is in a chain of slice-to-slice calls, and the loop time its caller stops waiting (None:
    not said), which binds only until it is answered (a task the entry point started, which calls on
    after, keeps the depth: a loop of calls through background tasks is still bounded)."""

    __slots__ = ("answered", "deadline", "depth")

    def __init__(self, depth: int, deadline: float | None) -> None:
        self.depth, self.deadline, self.answered = depth, deadline, False


_serving: contextvars.ContextVar[_Serving | None] = contextvars.ContextVar("aether_serving", default=None)
_FROM_OUTSIDE = _Serving(0, None)  # (what no call says: never marked answered)


def _serving_of(message: dict[str, Any]) -> _Serving | None:
    """What INVOKE `message` allows the calls it leads to (None: nothing said, a call from outside with no
    timeout: the defaults). Raises HostError (protocol) for a depth that is not a count."""
    try:
        depth = protocol.call_depth_of(message)
    except ProtocolError as error:
        raise HostError(protocol.HostErrorKind.PROTOCOL, str(error)) from None
    timeout = message.get("timeout")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        return _Serving(depth, None) if depth else None
    return _Serving(depth, asyncio.get_running_loop().time() + timeout)


def _unconnected(data: bytes) -> None:
    raise ConnectionError("the host is not connected yet")


def _reply_frame(request_id: Any, result: Any, what: str) -> bytes:
    """The frame answering `request_id` with `result`, or with bad_result if it cannot be sent (the
    message names `what` returned it: "entry point 'name'")."""
    try:
        return protocol.encode(protocol.reply(request_id, result))
    except ProtocolError as error:  # not JSON (NaN and Infinity included), or too large to send
        why = f"the result of {what} cannot be sent: {error}"
        return _error_frame(request_id, HostError(protocol.HostErrorKind.BAD_RESULT, why))


def _answerable(error: BaseException) -> bool:
    """Whether `error`, out of a slice's code, answers the call it served: anything but the slice ending
    its process (SystemExit: its instance exits, as it asked) and the host's own cancellation of the task
    (a CancelledError the code raised itself is its answer). Call it in the `except` block."""
    if isinstance(error, SystemExit):
        return False
    if isinstance(error, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is None or not task.cancelling()
    return True


def _said(error: BaseException) -> str:
    """An exception's message, as the node can send it on: its `str()` (or its class name if empty, or
    if `str()` itself raised), a lone surrogate escaped (strict JSON has none: the node's answer failed
    as a bare 500), cut with a mark."""
    try:
        text = str(error)
    except BaseException as broken:  # (its own __str__ raised: the instance died of it)
        text = f"<{type(error).__qualname__} whose str() raised {type(broken).__qualname__}>"
    text = text or type(error).__qualname__
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 40] + f"… ({len(text):,} characters, cut)"
    return text


def _error_frame(request_id: Any, error: BaseException, *, by_slice: bool = False) -> bytes:
    """The frame answering `request_id` with `error`: the host's own, or one the slice raised (call
    this in its `except` block: its traceback goes with it). What the slice's code raised (`by_slice`) is
    "raised" whatever its class: a slice that raises a `HostError` does not speak for the runtime (a
    "stopped" would tell its caller the call did not run, and a call that did would be sent again)."""
    if isinstance(error, HostError) and not by_slice:
        answer = protocol.error_reply(request_id, error.kind, error.message, detail=error.detail)
    else:
        answer = protocol.error_reply(
            request_id,
            protocol.HostErrorKind.RAISED,
            _said(error),
            detail=_short_traceback().encode("utf-8", "backslashreplace").decode("utf-8"),
            type=type(error).__qualname__,
        )
    return protocol.encode(answer)


_HOOKS = ("aether_start", "aether_stop")


def _log_failure(step: str, error: BaseException) -> None:
    """A failed load, start or stop hook, with the slice's traceback, on stderr: the instance's log (a
    node's record of the failure holds its message alone; `aether slice logs` shows this). Call it in
    the `except` block. An entry point's error is its caller's, and may be frequent: `RaisedLog`."""
    if isinstance(error, HostError):
        if error.kind == protocol.HostErrorKind.PROTOCOL:
            return  # (the node's own mistake, not the slice's)
        text = error.detail or f"{error.kind}: {error.message}\n"
    else:
        text = _short_traceback()
    print(f"aether_slice.host: {step} failed:\n{text.rstrip()}", file=sys.stderr, flush=True)


RAISED_LOG_EVERY = 10.0  # seconds: an entry point's exception of one type is logged at most this often


class RaisedLog:
    """An entry point's exception on stderr (the instance's log), with its traceback: its caller gets
    the message alone, and the file and line were nowhere on a cluster. One of each (entry point,
    exception type) per RAISED_LOG_EVERY seconds, saying how many were not logged since: a slice may
    raise on every call."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.logged_at: dict[tuple[str, str], float] = {}
        self.unlogged: dict[tuple[str, str], int] = {}

    def log(self, what: str, error: BaseException) -> None:
        """Call it in the `except` block (the traceback is the one being handled)."""
        key, now = (what, type(error).__qualname__), self.clock()
        last = self.logged_at.get(key)
        if last is not None and now - last < RAISED_LOG_EVERY:
            self.unlogged[key] = self.unlogged.get(key, 0) + 1
            return
        self.logged_at[key] = now
        skipped = self.unlogged.pop(key, 0)
        since = f" ({skipped} more since the last one logged)" if skipped else ""
        text = _short_traceback().rstrip()
        print(f"aether_slice.host: {what} raised{since}:\n{text}", file=sys.stderr, flush=True)


_raised_log = RaisedLog()


def _short_traceback(limit: int = 12) -> str:
    return "".join(traceback.format_exc(limit=-limit))[-4000:]


def _serve(connection: int, *, loop_to_start: bool = False) -> None:
    """Serve the node on `connection` (the descriptor of a connected Unix stream socket) until it
    closes: without an event loop while nothing needs one (`Host.serve_before_loop`), then on one."""
    host, sock = Host(), socket.socket(fileno=connection)
    host.loop_to_start = loop_to_start
    sock.setblocking(True)
    if host.serve_before_loop(sock):
        _run(host.serve_on(sock))


def _child(connection: int, output: int, request: dict[str, Any]) -> None:
    """In a process just forked from the template: become one slice instance, serving the node on
    `connection`, with `output` as its stdout and stderr, named as `request` says. Never returns."""
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        # Let go of the template's control socket (fds 0 and 1): its end must mean "template gone".
        os.dup2(devnull, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(devnull)
        os.close(output)  # (sys.stdout and sys.stderr are the template's stream on fd 2: now the log)
        if isinstance(request.get("cgroup"), str):  # first: no code of the slice runs outside its limit
            _join_cgroup(request["cgroup"])
        if not _preloaded:  # (a preloading template forks only instances of its own environment's config)
            os.environ["AETHER_SLICE_CONFIG"] = json.dumps(request.get("config") or {})
        _die_with_parent()  # the template; it dies with the node
        if isinstance(request.get("name"), str):
            _name_process(request["name"])
        _serve(connection, loop_to_start=isinstance(request.get("cgroup"), str))
    except SystemExit as called:  # the slice's own `sys.exit(code)`: its code, said
        code = called.code if isinstance(called.code, int) else (0 if called.code is None else 1)
        print(f"aether_slice.host: the slice called sys.exit({called.code!r})", file=sys.stderr, flush=True)
        os._exit(code)
    except BaseException:
        traceback.print_exc()
        os._exit(70)
    os._exit(0)  # do not wait for threads a slice may have left running


def _join_cgroup(path: str) -> None:
    """Move this process into the (memory) cgroup at `path`: its limit is its slice's. If it cannot,
    say so in its log and go on (the node finds it outside and checks its memory itself)."""
    try:
        with open(os.path.join(path, "cgroup.procs"), "w") as procs:
            procs.write("0")  # (0: the writer)
    except OSError as error:
        print(
            f"aether_slice.host: not joining its memory cgroup {path}: {error}", file=sys.stderr, flush=True
        )


def _receive_with_fds(sock: socket.socket, read_flags: int = 0) -> tuple[bytes, list[int]]:
    """What one read of `sock` (with `read_flags` besides) brings, and the descriptors that came with it
    (close-on-exec). Raises ProtocolError if the kernel had to drop some (more than a FORK carries came
    at once)."""
    space = socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)
    data, ancillary, flags, _ = sock.recvmsg(_READ_SIZE, space, socket.MSG_CMSG_CLOEXEC | read_flags)
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        raise ProtocolError(f"more than {_MAX_FDS} descriptors came with one message")
    return data, list(fds)


class Template:
    """The fork server: imports the runtime once, then forks one child per instance on request.

    Protocol on stdin/stdout, one Unix stream socket (`aether_slice.protocol` frames): FORK, with the
    child's two descriptors → no answer (an ERROR if refused: the child's pid comes with its answer to
    LOAD, one message the template does not write per fork); KILL → the child of that FORK killed; and
    an EXIT event naming the FORK when a child ends.
    Single-threaded on purpose: forking a threaded process is unsafe.
    """

    def __init__(self, fork: Callable[[], int] = os.fork) -> None:
        self.fork = fork
        self.children: dict[int, Any] = {}  # pid → the id of the FORK it came of
        self.frames = protocol.FrameDecoder()
        # Descriptors received and not yet given to a child, in the order their FORKs came (the kernel
        # hands them over with the first bytes of their message, so by the time a FORK's frame is whole
        # its descriptors are here, after those of the FORKs before it).
        self.fds: collections.deque[int] = collections.deque()
        self.control: socket.socket | None = None
        self._wake_read = self._wake_write = -1

    def _wake_on_child_exit(self) -> None:
        """A child's end wakes the loop: SIGCHLD writes a byte to a pipe it waits on (so it never looks
        on a timer). A SIGCHLD between a reap and the next wait leaves its byte there: none is missed."""
        self._wake_read, self._wake_write = os.pipe()
        for fd in (self._wake_read, self._wake_write):
            os.set_blocking(fd, False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)

    def _forget_template(self) -> None:
        """In a child just forked: the template's SIGCHLD pipe, its control socket (fds 0 and 1, which
        `_child` replaces) and the descriptors of other instances' FORKs are not the instance's
        business (another instance's connection held open here would hide that instance's end)."""
        signal.set_wakeup_fd(-1)
        # `_signal.signal`, not `signal.signal`: the latter turns the old handler into an enum member if
        # it can (an Enum lookup, an exception): ~45 page copies in a child that never uses the result.
        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
        if self.control is not None:
            self.control.detach()
        for fd in (self._wake_read, self._wake_write, *self.fds):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fds.clear()

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass

    def write(self, message: dict[str, Any]) -> None:
        data = memoryview(protocol.encode(message))
        while data:
            data = data[os.write(1, data) :]

    def run(self) -> None:
        try:
            self.control = socket.socket(fileno=0)
        except OSError as error:
            print(f"aether_slice.host: a template's stdin must be a Unix stream socket: {error}")
            return
        self._wake_on_child_exit()
        while True:
            try:
                if not self.serve_once():
                    break
            except (BrokenPipeError, ConnectionResetError):  # the node is gone without reading it all
                break
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def serve_once(self) -> bool:
        """Wait for the node or a child's end and serve what came; False once the node is gone (or sent
        what the protocol does not allow: the stream cannot be trusted further)."""
        readable, _, _ = select.select([0, self._wake_read], [], [])  # no timeout: events only
        if self._wake_read in readable:
            self._drain_wakeups()
        if 0 in readable:
            try:
                # What the node has sent by now, read before any of it is served (a read ends where the
                # next FORK's descriptors begin: one read per FORK), then served, decoded first: between
                # two forks the template touches little, and each page it touches after a fork is a
                # copy (its children share its pages).
                came = self.receive(0)
                reads = 1
                while came and reads < _MAX_READS:
                    came = self.receive(socket.MSG_DONTWAIT)
                    reads += 1
                if came is False:
                    return False  # the node is gone
                for request in list(iter(self.frames.next, None)):
                    self.handle(request)
            except ProtocolError as error:
                _say_broken(error)
                return False
        self.reap()
        return True

    def receive(self, flags: int) -> bool | None:
        """Read the node's socket once (with `flags`): True if something came, False if the node closed
        it, None if nothing was waiting (MSG_DONTWAIT)."""
        assert self.control is not None
        try:
            chunk, fds = _receive_with_fds(self.control, flags)
        except BlockingIOError:
            return None
        self.fds.extend(fds)
        if not chunk:
            return False
        self.frames.feed(chunk)
        return True

    def handle(self, request: dict[str, Any]) -> None:
        if request.get("op") == Kind.KILL:
            self.kill(request.get("fork"))
            return
        if request.get("op") != Kind.FORK:
            self.refuse(
                request, f"a template answers only {Kind.FORK} and {Kind.KILL}, not {request.get('op')!r}"
            )
            return
        if len(self.fds) < protocol.FORK_FDS:
            self.refuse(request, f"a fork request must come with {protocol.FORK_FDS} descriptors")
            return
        connection, output = self.fds.popleft(), self.fds.popleft()
        try:
            why = protocol.refuse_fork_of_another_version(request)
            if why is None and _preloaded and (request.get("config") or {}) != _preloaded_config:
                why = (
                    "this template imported the slice with another config (its AETHER_SLICE_CONFIG):"
                    " an instance of this config needs a template of its own"
                )
            if why is not None:  # (the node's end of the connection then ends: its LOAD gets no answer)
                self.refuse(request, why)
                return
            sys.stderr.flush()  # nothing buffered may be written twice
            pid = self.fork()
            if pid == 0:
                self._forget_template()
                _child(connection, output, request)
        finally:  # (the child never gets here: `_child` does not return)
            os.close(connection)
            os.close(output)
        self.children[pid] = request.get("id")

    def kill(self, fork_id: Any) -> None:
        """SIGKILL the process group of the child of FORK `fork_id` (the child leads its own session), or
        the child alone if it has not made its session yet; nothing if it is gone already."""
        pid = next((pid for pid, forked_by in self.children.items() if forked_by == fork_id), None)
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:  # (no group of its own yet)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def refuse(self, request: dict[str, Any], why: str) -> None:
        self.write(protocol.error_reply(request.get("id"), protocol.HostErrorKind.PROTOCOL, why))

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            fork_id = self.children.pop(pid, None)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            self.write(protocol.exit_event(pid, code, fork_id))


OOM_SCORE_ADJ = 500  # the kernel's OOM killer ends a slice instance before a node or a KV replica (0)


def _first_for_the_oom_killer() -> None:
    """Raise the template's OOM score, inherited by every instance forked from it: on a host out of
    memory the kernel kills a slice instance (which the cluster replaces) rather than the node or its KV
    replica. Raising it needs no privilege; where /proc is not writable it stays as it was."""
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as adjust:
        adjust.write(str(OOM_SCORE_ADJ))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    _first_for_the_oom_killer()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the node's terminal is the node's business
    # fd 1 is the protocol: nothing else may write to it. A child's fd 2 is its log, so this stream and
    # the logging handler on it, set up here once, write there in every child.
    sys.stdout = sys.stderr
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        force=True,
    )
    forker = Forker()  # before the slice's import: fewer objects to search for the interpreter's hook lists
    # No event loop but a running one: code that asks for one outside it (a preloaded slice's import, its
    # aether_entry_points) is told so, rather than given a loop of its own that never runs.
    asyncio.set_event_loop(None)
    preload = _preload_arguments(args)
    if preload is None or preload[1] is None:
        try:
            _slice_entry_points()  # once, inherited by every instance forked from here
        except Exception:  # an instance scans again and reports what is wrong
            traceback.print_exc()
    if preload is not None and not _preload(*preload):
        # What the failed or threaded import left behind must not reach the instances: start afresh.
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "aether_slice.host"])
    _choose_loop()
    try:
        _warm_up_rounds(WARM_UP_ROUNDS)
    except Exception:  # only a loss of speed
        traceback.print_exc()
    # What the template made is frozen (out of the collector's reach): a full collection in an instance
    # then walks the instance's own objects only. Walking the template's would write into each of them,
    # copying every page of the template's that holds one (~1,100 pages: an instance's PSS tripled).
    gc.collect()
    gc.freeze()
    Template(forker.fork).run()
    os._exit(0)


_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None  # None: asyncio's own


def _choose_loop() -> None:
    """In the template: uvloop if the slice's environment has it (an instance then spends about a third
    less CPU per call), else asyncio's own loop. The runtime does not bring uvloop: a slice that wants
    it depends on it."""
    global _loop_factory
    try:
        import uvloop
    except ImportError:
        return
    _loop_factory = uvloop.new_event_loop


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on a new loop of the kind the template chose (the warm-up runs the same code the
    instances run), then end as `asyncio.Runner` ends: the tasks left are cancelled (their `finally`
    blocks run) and the async generators closed. Unlike the Runner, it neither installs a SIGINT
    handler (SIGINT is ignored here: the node's business) nor waits for the threads of the loop's
    default executor (an instance ends with `os._exit`, which ends them as it ends any thread a slice
    started), and an instance spends less on it (each object the Runner touches copies a page)."""
    loop = (_loop_factory or asyncio.new_event_loop)()
    try:
        loop.run_until_complete(main)
    finally:
        try:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:  # (a gather of nothing would belong to no running loop)
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


WARM_UP_ROUNDS = 10
_REHEARSAL = "(warm-up)"  # the stand-in slice's entry point name (no slice's: not group:artifact)


class _Rehearsal:
    """The stand-in slice of the warm-up: an instance's lifecycle, run in the template, without the
    slice's own code (whose start hook may open connections or start threads: never in the template).
    It has no start hook: its instances are started before their loop is made, as a slice's without
    one are (`Host.serve_before_loop`)."""

    @hookspecs.hookimpl
    def aether_entry_points(self, context: SliceContext) -> Any:
        return [EntryPoint(name="echo", function=lambda payload: payload, idempotent=True)]

    @hookspecs.hookimpl
    def aether_stop(self, context: SliceContext) -> None:
        return None


class _RehearsalWithStart(_Rehearsal):
    """The stand-in of a slice with a start hook: its instances make their loop to start."""

    @hookspecs.hookimpl
    def aether_start(self, context: SliceContext) -> None:
        return None


def _warm_up_rounds(rounds: int) -> None:
    """Rehearse an instance's life `rounds` times in the template (`_warm_up`) with each stand-in slice
    (with and without a start hook: the two ways an instance starts), registered as if preloaded, then
    forget them."""
    try:
        for stand_in in (_RehearsalWithStart(), _Rehearsal()):
            _preloaded[_REHEARSAL] = _manager_of(stand_in)
            for _ in range(rounds):
                _warm_up()
    finally:
        _preloaded.pop(_REHEARSAL, None)
        logging.Logger.manager.loggerDict.pop(_logger_name(_REHEARSAL), None)


def _warm_up() -> None:
    """What an instance does (a connection on a socket pair's end, a Host answering LOAD, START and
    HEALTH before its loop is made and INVOKE, HEALTH and STOP on it: `_serve`), done in the template with
    the stand-in slice, and more than once: what it builds lazily is then inherited, not built again (and
    its pages copied) in each child, and so is what the interpreter learns of the code it runs: Python
    3.11 rewrites a function's bytecode for speed after its eighth call, and counts the calls and misses
    before it in the code object, each write of which would copy a page in every child."""
    mine, theirs = socket.socketpair()
    with theirs:
        requests = [
            protocol.request(
                1, Kind.LOAD, entry_point=_REHEARSAL, coordinates="aether:warm-up:0", instance=0, config={}
            ),
            protocol.request(2, Kind.START),
            protocol.request(3, Kind.HEALTH),
            protocol.request(4, Kind.INVOKE, entry="echo", payload={"warm": "up"}),
            protocol.request(5, Kind.HEALTH),
            protocol.request(6, Kind.STOP),
        ]
        theirs.sendall(b"".join(protocol.encode(request) for request in requests))
        theirs.shutdown(socket.SHUT_WR)
        _serve(mine.detach())


if __name__ == "__main__":
    main()
