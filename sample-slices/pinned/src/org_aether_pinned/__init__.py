"""org.aether:pinned — a slice whose dependency (attrs==23.2.0) conflicts with the node's own attrs.
It proves that each slice gets its own virtualenv: `versions` reports the attrs this slice sees."""

from __future__ import annotations

from typing import Any

import attrs

from aether_slice import EntryPoint, SliceContext, hookimpl


@hookimpl
def aether_entry_points(context: SliceContext) -> list[EntryPoint]:
    def versions(payload: Any) -> dict[str, str]:
        return {"attrs": attrs.__version__}

    return [EntryPoint(name="versions", function=versions, idempotent=True)]
