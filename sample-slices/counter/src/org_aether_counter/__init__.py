"""org.aether:counter — a slice that holds a resource between start and stop.

`aether_start` opens the state file (config `state_file`; default: a new temporary file) and starts
counting from zero; `increment` (not idempotent) adds one and returns the count, `count` returns it.
The current count is written to the file after every increment. `aether_stop` writes "stopped" into the
file and closes it, so a test can see that stop ran. Calling an entry before start (or after stop)
raises RuntimeError.

Executions per request id (for the nemesis suite): `record` (not idempotent) and `record_idempotent`
take `{"id": str, "sleep": seconds}`, wait `sleep` seconds (default 0), then append one line
`id instance pid` to the journal file (config `journal`; required by these two entries) and return
`{"id": ..., "instance": ...}`. Every instance of every node may share one journal: each line is one
`O_APPEND` write, so lines never interleave, and counting the lines of an id counts its executions.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import IO, Any

from aether_slice import EntryPoint, SliceContext, hookimpl


class _Counter:
    def __init__(self) -> None:
        self.file: IO[str] | None = None
        self.count = 0

    def require_started(self) -> IO[str]:
        if self.file is None:
            raise RuntimeError("org.aether:counter is not started: aether_start has not run (or stop has)")
        return self.file

    def save(self, text: str) -> None:
        file = self.require_started()
        file.seek(0)
        file.truncate()
        file.write(text)
        file.flush()


_state = _Counter()


@hookimpl
def aether_start(context: SliceContext) -> None:
    path = context.config.get("state_file")
    if path:
        _state.file = open(path, "w+", encoding="utf-8")  # noqa: SIM115 — held open until stop
    else:
        _state.file = tempfile.NamedTemporaryFile(  # noqa: SIM115
            "w+", encoding="utf-8", prefix="aether-counter-", suffix=".txt", delete=False
        )
    _state.count = 0
    _state.save("0")
    context.logger.info("counter started, state in %s", _state.file.name)


@hookimpl
def aether_stop(context: SliceContext) -> None:
    if _state.file is None:
        return
    _state.save("stopped")
    _state.file.close()
    _state.file = None


@hookimpl
def aether_entry_points(context: SliceContext) -> list[EntryPoint]:
    def increment(payload: Any) -> int:
        _state.require_started()
        _state.count += 1
        _state.save(str(_state.count))
        return _state.count

    def count(payload: Any) -> int:
        _state.require_started()
        return _state.count

    async def record(payload: Any) -> dict[str, Any]:
        journal = context.config.get("journal")
        if not journal or not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
            raise ValueError('record needs config "journal" and a payload {"id": str}')
        await asyncio.sleep(float(payload.get("sleep", 0)))
        line = f"{payload['id']} {context.instance} {os.getpid()}\n".encode()
        fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return {"id": payload["id"], "instance": context.instance}

    return [
        EntryPoint(name="increment", function=increment, idempotent=False),
        EntryPoint(name="count", function=count, idempotent=True),
        EntryPoint(name="record", function=record, idempotent=False),
        EntryPoint(name="record_idempotent", function=record, idempotent=True),
    ]
