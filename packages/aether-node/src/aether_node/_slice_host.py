"""Slice host processes: the one module that talks to them.

Each instance runs `python -m aether_slice.host` in its slice's virtualenv; this module spawns it, speaks
the host protocol over its stdin/stdout (length-prefixed JSON frames), serves the calls the slice makes to
other slices, and notices its death at once (its stdout closes). Closing its stdin, or the node dying,
ends it (the host also asks the kernel for SIGKILL on the node's death).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from aether_kv import FramedStream, InvalidRequestError

from ._errors import InvocationError, SliceHostError, StepTimeoutError
from ._installer import InstalledSlice
from ._processes import ChildProcess, spawn

MAX_FRAME = 16 * 1024 * 1024

CallHandler = Callable[[str, str, Any, float], Awaitable[Any]]


@attrs.define
class _Pending:
    done: trio.Event = attrs.field(factory=trio.Event)
    reply: dict[str, Any] | None = None


class SliceHost:
    """One running host process. Create with `spawn`; its reader runs in the given nursery."""

    def __init__(self, process: ChildProcess, framed: FramedStream, label: str, log_path: Path) -> None:
        self.process = process
        self.framed = framed
        self.label = label
        self.log_path = log_path
        self.exited = trio.Event()
        self.exit_reason = ""
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def spawn(
        cls,
        nursery: trio.Nursery,
        installed: InstalledSlice,
        *,
        label: str,
        config: dict[str, Any],
        log_path: Path,
        on_call: CallHandler,
    ) -> SliceHost:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"))
        }
        env.update(
            AETHER_SLICE_CONFIG=json.dumps(config),
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        with open(log_path, "ab") as log:
            process = spawn(
                [str(installed.python), "-m", "aether_slice.host"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=installed.venv,
                new_session=True,  # the node's Ctrl-C is not the slice's
            )
        assert process.stdin is not None and process.stdout is not None
        framed = FramedStream(trio.StapledStream(process.stdin, process.stdout), max_frame=MAX_FRAME)
        host = cls(process, framed, label, log_path)
        nursery.start_soon(host._read_loop, nursery, on_call)
        return host

    # ------------------------------------------------------------ protocol

    async def _read_loop(self, nursery: trio.Nursery, on_call: CallHandler) -> None:
        try:
            while True:
                message = await self.framed.receive()
                if message is None:
                    break
                request_id = message.get("id")
                if message.get("op") == "call":
                    nursery.start_soon(self._serve_call, message, on_call)
                    continue
                pending = self._pending.get(request_id)  # type: ignore[arg-type]
                if pending is not None:
                    pending.reply = message
                    pending.done.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError, InvalidRequestError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                code = await self.process.wait()
            await trio.aclose_forcefully(self.framed.stream)
            self.exit_reason = _describe_exit(code)
            self.exited.set()
            for pending in self._pending.values():
                pending.done.set()

    async def _serve_call(self, message: dict[str, Any], on_call: CallHandler) -> None:
        reply: dict[str, Any] = {"id": message.get("id")}
        try:
            timeout = float(message.get("timeout") or 10.0)
            reply["ok"] = await on_call(
                str(message.get("artifact")), str(message.get("entry")), message.get("payload"), timeout
            )
        except InvocationError as error:
            reply["error"] = {"kind": error.kind, "message": error.message, "type": error.remote_type}
        try:
            await self.framed.send(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def request(self, op: str, timeout: float, **fields: Any) -> Any:
        """One request to the host; raises SliceHostError (failed, died) or StepTimeoutError."""
        if self.exited.is_set():
            raise SliceHostError("crashed", f"{self.label}: the slice process is gone ({self.exit_reason})")
        request_id = next(self._ids)
        pending = self._pending[request_id] = _Pending()
        try:
            try:
                await self.framed.send({"id": request_id, "op": op, **fields})
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.exited.wait()
                raise SliceHostError(
                    "crashed", f"{self.label}: the slice process died ({self.exit_reason})"
                ) from None
            with trio.move_on_after(timeout) as scope:
                await pending.done.wait()
            if scope.cancelled_caught:
                raise StepTimeoutError(f"{self.label}: {op} did not finish within {timeout:g} s")
        finally:
            self._pending.pop(request_id, None)
        reply = pending.reply
        if reply is None:
            raise SliceHostError(
                "crashed", f"{self.label}: the slice process died during {op} ({self.exit_reason})"
            )
        if "error" in reply:
            error = reply["error"]
            raise SliceHostError(
                str(error.get("kind", "raised")), _error_text(error), error.get("detail"), error.get("type")
            )
        return reply.get("ok")

    async def invoke(self, entry: str, payload: Any, timeout: float) -> Any:
        """Call an entry point; errors become InvocationError (timeout, raised, unavailable, bad_request)."""
        try:
            return await self.request("invoke", timeout, entry=entry, payload=payload)
        except StepTimeoutError:
            raise InvocationError(
                "timeout", f"{self.label}: {entry} did not answer within {timeout:g} s"
            ) from None
        except SliceHostError as error:
            if error.kind == "raised":
                raise InvocationError("raised", error.message, remote_type=error.remote_type) from None
            if error.kind == "no_entry":
                raise InvocationError("no_endpoint", error.message) from None
            if error.kind == "bad_result":
                raise InvocationError("raised", error.message, remote_type="TypeError") from None
            raise InvocationError("unavailable", error.message) from None

    # ------------------------------------------------------------ ending

    async def close(self, grace: float = 3.0) -> None:
        """Close the host's stdin (it exits at once), then SIGKILL its process group if it lingers.
        Shielded from cancellation."""
        with trio.CancelScope(shield=True):
            assert self.process.stdin is not None
            await trio.aclose_forcefully(self.process.stdin)
            with trio.move_on_after(grace):
                await self.exited.wait()
            await self.process.stop(0, sig=signal.SIGKILL, group=True)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL, group=True)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _error_text(error: dict[str, Any]) -> str:
    message = str(error.get("message", "failed"))
    remote = error.get("type")
    return f"{remote}: {message}" if remote and not message.startswith(f"{remote}") else message
