"""The slice host runner: `python -m aether_slice.host`, one process per slice instance, started by the
node inside the slice's own virtualenv. Standard library + pluggy only (asyncio, not trio, so that it
imposes nothing on the slice's dependencies).

It speaks the host protocol with the node over its stdin/stdout: frames of a 4-byte big-endian length
and a JSON object. Anything the slice prints goes to stderr (the node's log for this instance).
It exits at once when its stdin closes, and asks the kernel to kill it if the node dies.

Node → host: load, start, stop, invoke, health (each with an integer "id"; one reply each).
Host → node: call (id "c<n>"), for a slice calling another slice through the cluster.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.metadata
import inspect
import json
import logging
import os
import resource
import signal
import struct
import sys
import traceback
from collections.abc import Mapping
from typing import Any, BinaryIO

import pluggy

from . import ENTRY_POINT_GROUP, hookspecs
from ._context import EntryPoint, SliceCallError, SliceContext

HEADER = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024
PR_SET_PDEATHSIG = 1


class HostError(Exception):
    def __init__(self, kind: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.detail = detail


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: stdin EOF still ends us
        pass
    if os.getppid() == 1:  # the node died before we could ask
        os._exit(1)


class Host:
    def __init__(self, reader: asyncio.StreamReader, writer: BinaryIO) -> None:
        self.reader = reader
        self.writer = writer
        self.plugins: pluggy.PluginManager | None = None
        self.context: SliceContext | None = None
        self.entries: dict[str, EntryPoint] = {}
        self.pending_calls: dict[str, asyncio.Future[Any]] = {}
        self.call_ids = 0
        self.tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ frames

    def send(self, message: dict[str, Any]) -> None:
        self.write(json.dumps(message, separators=(",", ":")).encode())

    def write(self, payload: bytes) -> None:
        data = memoryview(HEADER.pack(len(payload)) + payload)
        while data:  # a blocking pipe: each write takes what fits; nothing interleaves (one thread)
            data = data[self.writer.write(data) :]

    async def receive(self) -> dict[str, Any] | None:
        try:
            header = await self.reader.readexactly(HEADER.size)
            (size,) = HEADER.unpack(header)
            if size > MAX_FRAME:
                raise HostError("protocol", f"frame of {size} bytes is too large")
            return json.loads(await self.reader.readexactly(size))
        except asyncio.IncompleteReadError:
            return None

    async def run(self) -> None:
        while True:
            message = await self.receive()
            if message is None:
                return  # the node closed our stdin (or died): stop now
            request_id = message.get("id")
            if isinstance(request_id, str):  # a reply to one of our calls
                future = self.pending_calls.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_result(message)
                continue
            task = asyncio.create_task(self.handle(message))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def handle(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        try:
            result = await self.dispatch(message)
            reply: dict[str, Any] = {"id": request_id, "ok": result}
            try:
                encoded = json.dumps(reply, separators=(",", ":"))
            except (TypeError, ValueError) as error:
                raise HostError("bad_result", f"the result is not JSON-serialisable: {error}") from None
            self.write(encoded.encode())
            return
        except HostError as error:
            body = {"kind": error.kind, "message": error.message, "detail": error.detail}
        except Exception as error:  # the slice raised
            body = {
                "kind": "raised",
                "type": type(error).__qualname__,
                "message": str(error) or type(error).__qualname__,
                "detail": _short_traceback(),
            }
        self.send({"id": request_id, "error": body})

    async def dispatch(self, message: dict[str, Any]) -> Any:
        op = message.get("op")
        if op == "invoke":
            return await self.invoke(message.get("entry"), message.get("payload"))
        if op == "load":
            return self.load(message)
        if op == "start":
            await self.run_hook("aether_start")
            return {}
        if op == "stop":
            await self.run_hook("aether_stop")
            return {}
        if op == "health":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            return {
                "pid": os.getpid(),
                "max_rss_kib": usage.ru_maxrss,
                "cpu_s": usage.ru_utime + usage.ru_stime,
            }
        raise HostError("protocol", f"unknown host operation {op!r}")

    # ------------------------------------------------------------ lifecycle

    def load(self, message: dict[str, Any]) -> dict[str, Any]:
        name = message["entry_point"]
        group, artifact, version = message["coordinates"].split(":")
        found = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not found:
            raise HostError("entry_point", f"no entry point {name!r} in group {ENTRY_POINT_GROUP!r}")
        try:
            plugin = found[0].load()
        except Exception as error:
            raise HostError(
                "import",
                f"importing {found[0].value} failed: {type(error).__name__}: {error}",
                _short_traceback(),
            ) from None
        manager = pluggy.PluginManager(hookspecs.PROJECT)
        manager.add_hookspecs(hookspecs)
        manager.register(plugin)
        logger = logging.getLogger(f"slice.{group}.{artifact}")
        self.context = SliceContext(
            group=group,
            artifact=artifact,
            version=version,
            instance=int(message["instance"]),
            config=dict(message.get("config") or {}),
            logger=logger,
            caller=self.call,
        )
        self.plugins = manager
        entries: dict[str, EntryPoint] = {}
        for declared in manager.hook.aether_entry_points(context=self.context):
            for entry in _as_entry_points(declared):
                if entry.name in entries:
                    raise HostError("entry_point", f"entry point {entry.name!r} is declared twice")
                entries[entry.name] = entry
        if not entries:
            raise HostError("entry_point", "the slice declares no entry points (hook aether_entry_points)")
        self.entries = entries
        return {"entry_points": [{"name": e.name, "idempotent": e.idempotent} for e in entries.values()]}

    async def run_hook(self, name: str) -> None:
        if self.plugins is None:
            raise HostError("protocol", "the slice is not loaded")
        for result in getattr(self.plugins.hook, name)(context=self.context):
            if inspect.isawaitable(result):
                await result

    async def invoke(self, name: Any, payload: Any) -> Any:
        entry = self.entries.get(name)  # type: ignore[arg-type]
        if entry is None:
            known = ", ".join(sorted(self.entries)) or "none"
            raise HostError("no_entry", f"the slice has no entry point {name!r} (it has: {known})")
        result = entry.function(payload)
        if inspect.isawaitable(result):
            result = await result
        return result

    # ------------------------------------------------------------ calls to other slices

    async def call(self, artifact: str, entry: str, payload: Any, timeout: float) -> Any:
        self.call_ids += 1
        call_id = f"c{self.call_ids}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending_calls[call_id] = future
        self.send(
            {
                "id": call_id,
                "op": "call",
                "artifact": artifact,
                "entry": entry,
                "payload": payload,
                "timeout": timeout,
            }
        )
        try:
            reply = await asyncio.wait_for(future, timeout + 1.0)
        except TimeoutError:
            raise SliceCallError(
                "timeout", f"call to {artifact}/{entry} timed out after {timeout:g} s"
            ) from None
        finally:
            self.pending_calls.pop(call_id, None)
        if "error" in reply:
            error = reply["error"]
            raise SliceCallError(
                error.get("kind", "unavailable"), error.get("message", ""), error.get("type")
            )
        return reply.get("ok")


def _as_entry_points(declared: Any) -> list[EntryPoint]:
    if isinstance(declared, Mapping):
        return [EntryPoint(name=str(name), function=fn) for name, fn in declared.items()]
    entries = list(declared or ())
    for entry in entries:
        if not isinstance(entry, EntryPoint):
            raise HostError("entry_point", f"aether_entry_points returned {entry!r}, not an EntryPoint")
    return entries


def _short_traceback(limit: int = 12) -> str:
    return "".join(traceback.format_exc(limit=-limit))[-4000:]


async def _main() -> None:
    loop = asyncio.get_running_loop()
    protocol_in = os.fdopen(os.dup(0), "rb", buffering=0)
    protocol_out = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # the slice's prints go to stderr, never into the protocol
    sys.stdout = sys.stderr
    reader = asyncio.StreamReader(limit=MAX_FRAME)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), protocol_in)
    await Host(reader, protocol_out).run()


def main() -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the node's terminal is the node's business
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    asyncio.run(_main())
    os._exit(0)  # do not wait for threads a slice may have left running


if __name__ == "__main__":
    main()
