"""What a slice sees of the cluster: its coordinates, instance number, config, a logger, and calls to
other slices. The calling machinery is supplied by the host runner.

Standard library only (dataclasses): this module is placed into every slice's virtualenv and must not
need anything the slice has not installed itself.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any


class SliceCallError(Exception):
    """A call to another slice failed. `kind` says how: "no_endpoint" (no blueprint deploys that slice
    and no instance of it runs, or it has no such entry point), "timeout", "raised" (the other slice
    raised; `remote_type` names its exception), "bad_result" (the other slice returned what JSON cannot
    carry: NaN, a set, over 16 MiB), "bad_request" (the payload is not JSON or too large: not sent) or
    "unavailable" (the slice is deployed but no instance of it is ACTIVE now: not sent, worth trying
    again shortly; or its instance went away mid-call)."""

    def __init__(self, kind: str, message: str, remote_type: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.remote_type = remote_type


@dataclasses.dataclass(frozen=True, kw_only=True)
class EntryPoint:
    """A callable of the slice: takes one JSON-able payload, returns a JSON-able result; sync or async.
    `idempotent` entry points may be retried on another instance when a node dies mid-call."""

    name: str
    function: Callable[[Any], Any]
    idempotent: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class SliceContext:
    group: str
    artifact: str
    version: str
    instance: int
    config: Mapping[str, Any]
    logger: logging.Logger
    caller: Callable[[str, str, Any, float], Awaitable[Any]] = dataclasses.field(repr=False)

    @property
    def coordinates(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"

    async def call(self, artifact: str, entry: str, payload: Any = None, *, timeout: float = 10.0) -> Any:
        """Call `entry` of the slice `artifact` ("group:artifact") through the cluster (asyncio).
        Raises SliceCallError."""
        return await self.caller(artifact, entry, payload, timeout)
