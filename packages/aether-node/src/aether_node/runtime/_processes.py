"""Child processes of the node (its KV replica, slice hosts), spawned from the main thread.

Why not `trio.lowlevel.open_process`: it forks on a worker thread, and Linux's parent-death signal
(which our children request so they never outlive the node) fires when the *thread* that forked them
ends — trio retires idle worker threads after a few seconds. Forking on the trio thread (the process's
main thread, which lives as long as the node) keeps that signal meaningful. A fork+exec costs ~1 ms.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import IO, Any

import trio


class ChildProcess:
    """A child with optional trio streams on its stdin/stdout."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.stdin: trio.lowlevel.FdStream | None = None
        self.stdout: trio.lowlevel.FdStream | None = None
        if popen.stdin is not None:
            self.stdin = trio.lowlevel.FdStream(os.dup(popen.stdin.fileno()))
            popen.stdin.close()
        if popen.stdout is not None:
            self.stdout = trio.lowlevel.FdStream(os.dup(popen.stdout.fileno()))
            popen.stdout.close()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    async def wait(self) -> int:
        """Wait for the exit; cancellable (the waiting thread is abandoned, the child is not)."""
        if self.popen.poll() is not None:
            return self.popen.returncode
        return await trio.to_thread.run_sync(self.popen.wait, abandon_on_cancel=True)

    def send_signal(self, sig: int, *, group: bool = False) -> None:
        try:
            if group:
                os.killpg(self.popen.pid, sig)
            else:
                self.popen.send_signal(sig)
        except ProcessLookupError:
            pass

    async def stop(self, grace: float, *, sig: int = signal.SIGTERM, group: bool = False) -> int:
        """Send `sig`, wait up to `grace` s, then SIGKILL. Shielded from cancellation."""
        with trio.CancelScope(shield=True):
            if self.returncode is None:
                self.send_signal(sig, group=group)
                with trio.move_on_after(grace):
                    await self.wait()
            if self.returncode is None:
                self.send_signal(signal.SIGKILL, group=group)
            code = await self.wait()
            for stream in (self.stdin, self.stdout):
                if stream is not None:
                    await trio.aclose_forcefully(stream)
            return code


def spawn(
    args: list[str],
    *,
    stdin: int | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    new_session: bool = False,
) -> ChildProcess:
    """Start a child from the calling (trio) thread."""
    popen = subprocess.Popen(
        args, stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=cwd, start_new_session=new_session
    )
    return ChildProcess(popen)
