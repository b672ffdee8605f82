"""org.aether:echo — the smallest useful slice. Stateless: `echo` returns its payload unchanged, `info`
says which version and instance answered (and from which process)."""

from __future__ import annotations

import os
from typing import Any

from aether_slice import EntryPoint, SliceContext, hookimpl


@hookimpl
def aether_entry_points(context: SliceContext) -> list[EntryPoint]:
    def echo(payload: Any) -> Any:
        return payload

    def info(payload: Any) -> dict[str, Any]:
        return {"version": context.version, "instance": context.instance, "pid": os.getpid()}

    return [
        EntryPoint(name="echo", function=echo, idempotent=True),
        EntryPoint(name="info", function=info, idempotent=True),
    ]
