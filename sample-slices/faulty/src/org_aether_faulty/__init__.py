"""org.aether:faulty — a slice that misbehaves on purpose, so the node's failure handling can be tested.

Config key `mode` picks the failure:

- `fail_import`: raises at import time (read from the AETHER_SLICE_CONFIG environment variable, which
  the host sets to the instance config's JSON before importing the slice);
- `exit_at_import`: calls `sys.exit(5)` at import time;
- `thread_at_import`: starts a thread at import time (it sleeps until the process ends);
- `open_at_import`: opens a file at import time and keeps it open;
- `fail_start`: `aether_start` raises RuntimeError("faulty: start failed on purpose");
- `hang_start`: `aether_start` never returns;
- `hang_start_sync`: `aether_start` blocks in its own call (not in what it returns to await): the event
  loop is held, as by a sync start hook that never returns;
- `crash_after_start`: `aether_start` starts a thread that kills the process (exit code 3) after
  `crash_delay` seconds (default 0.5);
- `raise`: entry `work` raises ValueError("faulty: work failed on purpose");
- `hang_work`: entry `work` never returns (for callers' timeouts);
- `slow_work`: entry `work` answers "ok" after `work_delay` seconds (default 2);
- `exit_start`: `aether_start` calls `sys.exit(7)`;
- `bad_entry_name`: declares one more entry point, named "a/b" (no URL could call it);
- `bad_entry_text`: declares one more entry point, whose name holds a lone UTF-16 surrogate (no text);
- `ok` or absent: entry `work` returns "ok".

Every call of `work` first prints `faulty: work <payload as JSON>` to the instance's output (its log, as
`aether slice logs` shows it).

Entry `record` (not idempotent) does what `work` does, after appending one line to the file named by
config `executions_file` (if set): a test counts how many times a call ran.

Entry `spawn` (not idempotent) starts a process of the slice's own (`sleep 600`) and answers its pid: a
test checks that it ends with the instance.

Entry `imported` says where and how the module was imported: {"pid": the importing process, "config":
the AETHER_SLICE_CONFIG it saw, "instance", "instance_config": the instance's own, "pid_now": this
process, "threads": its threads now, "metadata_read": whether `importlib.metadata` is imported in the
process (a template that scanned the environment's entry points imported it)}; a test tells a slice
imported by its node's template from one imported by the instance itself.

Entry `compute` (sync, idempotent) keeps the CPU busy in the instance's event loop for `payload` seconds
and answers how long it ran: the instance answers nothing else meanwhile, health checks included.

Entry `block` (sync, not idempotent) blocks the instance's event loop for `payload` seconds without
using CPU (as a sync call waiting on I/O would) and answers how long it blocked: the instance answers
nothing else meanwhile, health checks included, and looks hung to them.

Entry `odd_result` returns what JSON cannot carry, as its payload names it: "nan" (float NaN), "infinity"
(float infinity), "set" (a Python set), "huge" (a string of 16 MiB, over the host protocol's frame limit),
"surrogate" (a string holding a lone UTF-16 surrogate, which no UTF-8 carries);
the caller gets a `bad_result` error naming the entry point. Any other payload is returned as it came.

Entry `orphan` (sync, not idempotent) forks a child that keeps every descriptor of the instance (its
connection to the node too) and sleeps for 600 s, answers the child's pid, and ends the instance 0.1 s
later (exit code 3): a test checks that the node sees the end at once and kills the child.

Entry `collect` (sync, idempotent) runs a full garbage collection (`gc.collect()`) and answers the
minor page faults it took (each a copy of a page the instance shared with its template): a test checks
that a collection leaves the template's objects shared.

Entry `impersonate` (sync, not idempotent) raises the slice runtime's own `HostError` with the kind its
payload names (say "stopped", what the runtime answers for a call that did not run) after printing
`faulty: impersonate` like `work`: the slice's exception must reach the caller as one it raised.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any

from aether_slice import EntryPoint, SliceContext, hookimpl

MODES = (
    "ok",
    "fail_import",
    "exit_at_import",
    "fail_start",
    "hang_start",
    "hang_start_sync",
    "crash_after_start",
    "raise",
    "hang_work",
    "slow_work",
    "thread_at_import",
    "open_at_import",
    "bad_entry_name",
    "bad_entry_text",
    "exit_start",
)


# what entry `odd_result` returns for each payload it knows (made when asked: 16 MiB is not kept)
ODD_RESULTS = {
    "nan": lambda: float("nan"),
    "infinity": lambda: float("inf"),
    "set": lambda: {1, 2},
    "huge": lambda: "x" * (16 * 1024 * 1024),
    "surrogate": lambda: "bad \udcff text",
}


def _import_time_config() -> dict[str, Any]:
    raw = os.environ.get("AETHER_SLICE_CONFIG", "{}")
    try:
        config = json.loads(raw)
    except ValueError:
        return {}
    return config if isinstance(config, dict) else {}


IMPORTED = {"pid": os.getpid(), "config": _import_time_config()}

if IMPORTED["config"].get("mode") == "fail_import":
    raise RuntimeError("faulty: import failed on purpose")
if IMPORTED["config"].get("mode") == "exit_at_import":
    sys.exit(5)
if IMPORTED["config"].get("mode") == "thread_at_import":
    threading.Thread(target=threading.Event().wait, name="faulty-import", daemon=True).start()
if IMPORTED["config"].get("mode") == "open_at_import":
    KEPT_OPEN = open(os.devnull, "rb")  # noqa: SIM115 (kept open on purpose)


def _mode(context: SliceContext) -> str:
    mode = context.config.get("mode") or "ok"
    if mode not in MODES:
        raise ValueError(f"faulty: unknown mode {mode!r} (known: {', '.join(MODES)})")
    return str(mode)


@hookimpl
def aether_start(context: SliceContext) -> Coroutine[Any, Any, None]:
    """Sync, then async: `hang_start_sync` blocks the event loop in the hook's own call (as a sync hook
    that never returns would); every other mode runs in the coroutine it returns, awaited as an async
    hook is."""
    mode = _mode(context)
    if mode == "hang_start_sync":
        time.sleep(3600)
    return _start(context, mode)


async def _start(context: SliceContext, mode: str) -> None:
    if mode == "fail_start":
        raise RuntimeError("faulty: start failed on purpose")
    if mode == "hang_start":
        await asyncio.Event().wait()
    if mode == "exit_start":
        sys.exit(7)
    if mode == "crash_after_start":
        delay = float(context.config.get("crash_delay", 0.5))

        def crash() -> None:
            time.sleep(delay)
            os._exit(3)

        threading.Thread(target=crash, name="faulty-crash", daemon=True).start()


@hookimpl
def aether_entry_points(context: SliceContext) -> list[EntryPoint]:
    mode = _mode(context)

    async def work(payload: Any) -> str:
        print(f"faulty: work {json.dumps(payload)}", flush=True)
        if mode == "raise":
            raise ValueError("faulty: work failed on purpose")
        if mode == "hang_work":
            await asyncio.Event().wait()
        if mode == "slow_work":
            await asyncio.sleep(float(context.config.get("work_delay", 2.0)))
        return "ok"

    async def record(payload: Any) -> str:
        path = context.config.get("executions_file")
        if path:
            with open(path, "a", encoding="utf-8") as file:
                file.write(f"{context.instance} {json.dumps(payload)}\n")
        return await work(payload)

    def imported(payload: Any) -> dict[str, Any]:
        return {
            **IMPORTED,
            "instance": context.instance,
            "instance_config": dict(context.config),
            "pid_now": os.getpid(),
            "threads": threading.active_count(),
            "metadata_read": "importlib.metadata" in sys.modules,
        }

    def spawn(payload: Any) -> int:
        child = subprocess.Popen(["sleep", "600"])
        return child.pid

    def compute(payload: Any) -> float:
        started = time.monotonic()
        while time.monotonic() - started < float(payload):
            sum(range(1000))
        return time.monotonic() - started

    def block(payload: Any) -> float:
        started = time.monotonic()
        time.sleep(float(payload))
        return time.monotonic() - started

    def orphan(payload: Any) -> int:
        child = os.fork()
        if child == 0:
            time.sleep(600)
            os._exit(0)
        asyncio.get_running_loop().call_later(0.1, os._exit, 3)
        return child

    def impersonate(payload: Any) -> None:
        # The runtime's class as the runtime has it: the host runs as `__main__` (`python -m`).
        import aether_slice.host

        HostError = getattr(sys.modules["__main__"], "HostError", aether_slice.host.HostError)
        print("faulty: impersonate", flush=True)
        raise HostError(str(payload), "faulty: raised with the runtime's own error class")

    def collect(payload: Any) -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        gc.collect()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    def odd_result(payload: Any) -> Any:
        return ODD_RESULTS[payload]() if isinstance(payload, str) and payload in ODD_RESULTS else payload

    odd_names = {
        "bad_entry_name": [EntryPoint(name="a/b", function=odd_result)],
        "bad_entry_text": [EntryPoint(name="odd\udcff", function=odd_result)],
    }
    return [
        EntryPoint(name="work", function=work, idempotent=True),
        EntryPoint(name="record", function=record, idempotent=False),
        EntryPoint(name="imported", function=imported, idempotent=True),
        EntryPoint(name="spawn", function=spawn, idempotent=False),
        EntryPoint(name="odd_result", function=odd_result, idempotent=True),
        EntryPoint(name="compute", function=compute, idempotent=True),
        EntryPoint(name="block", function=block, idempotent=False),
        EntryPoint(name="impersonate", function=impersonate, idempotent=False),
        EntryPoint(name="orphan", function=orphan, idempotent=False),
        EntryPoint(name="collect", function=collect, idempotent=True),
        *odd_names.get(mode, []),
    ]
