"""org.aether:counter — a slice that holds a resource between start and stop.

`aether_start` opens the state file (config `state_file`; default: a new temporary file) and starts
counting from zero; `increment` (not idempotent) adds one and returns the count, `count` returns it.
The current count is written to the file after every increment. `aether_stop` writes "stopped" into the
file and closes it, so a test can see that stop ran. Calling an entry before start (or after stop)
raises RuntimeError.
"""

from __future__ import annotations

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

    return [
        EntryPoint(name="increment", function=increment, idempotent=False),
        EntryPoint(name="count", function=count, idempotent=True),
    ]
