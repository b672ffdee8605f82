"""org.aether:busy — a load target for autoscaling. `burn` keeps the instance's CPU busy for a while,
`nap` waits without using CPU (the instance serves other calls meanwhile), `info` says who answered.
How long comes from the payload (`{"ms": 20}`) or, without it, from the slice's config (`burn_ms`,
`nap_ms`)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from typing import Any

from aether_slice import EntryPoint, SliceContext, hookimpl

DEFAULT_BURN_MS = 10
DEFAULT_NAP_MS = 50
MAX_MS = 10_000  # one call never holds an instance longer than this


def duration_ms(payload: Any, config: Mapping[str, Any], key: str, default: int) -> float:
    """The milliseconds a call asks for: `payload["ms"]`, else `config[key]`, else `default`. Raises
    ValueError (the caller's fault) for anything but a number in [0, MAX_MS]."""
    if isinstance(payload, dict) and "ms" in payload:
        value, where = payload["ms"], 'the payload\'s "ms"'
    elif payload not in (None, {}) and not isinstance(payload, dict):
        raise ValueError(f'takes {{"ms": <milliseconds>}} or nothing, got {payload!r}')
    else:
        value, where = config.get(key, default), f"the config's {key!r}"
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_MS:
        raise ValueError(f"{where} must be a number of milliseconds in [0, {MAX_MS}], got {value!r}")
    return float(value)


def burn(milliseconds: float) -> float:
    """Spin on the CPU for `milliseconds` of wall time; returns the CPU seconds it used."""
    start, cpu = time.perf_counter(), time.process_time()
    deadline = start + milliseconds / 1000
    spins = 0
    while time.perf_counter() < deadline:
        spins += 1  # keeps the loop busy in the interpreter
    return time.process_time() - cpu


@hookimpl
def aether_entry_points(context: SliceContext) -> list[EntryPoint]:
    def info() -> dict[str, Any]:
        return {"version": context.version, "instance": context.instance, "pid": os.getpid()}

    def burn_entry(payload: Any) -> dict[str, Any]:
        milliseconds = duration_ms(payload, context.config, "burn_ms", DEFAULT_BURN_MS)
        return {"burned_ms": milliseconds, "cpu_s": round(burn(milliseconds), 6), **info()}

    async def nap_entry(payload: Any) -> dict[str, Any]:
        milliseconds = duration_ms(payload, context.config, "nap_ms", DEFAULT_NAP_MS)
        await asyncio.sleep(milliseconds / 1000)
        return {"napped_ms": milliseconds, **info()}

    return [
        EntryPoint(name="burn", function=burn_entry, idempotent=True),
        EntryPoint(name="nap", function=nap_entry, idempotent=True),
        EntryPoint(name="info", function=lambda payload: info(), idempotent=True),
    ]
