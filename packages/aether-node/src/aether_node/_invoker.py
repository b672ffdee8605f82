"""Routing a call to a slice instance. For now: this node's ACTIVE instances, round-robin."""

from __future__ import annotations

import itertools
from typing import Any

from ._coordinates import parse_artifact_id
from ._errors import InvalidCoordinatesError, InvocationError
from ._slice_store import SliceStore


class LocalInvoker:
    def __init__(self, store: SliceStore) -> None:
        self.store = store
        self._turns: dict[str, itertools.count[int]] = {}

    async def invoke(self, artifact_id: str, entry: str, payload: Any, timeout: float | None = None) -> Any:
        """Call `entry` of an ACTIVE instance of `artifact_id` (group:artifact, any version).
        Raises InvocationError with kind no_endpoint, timeout, raised, bad_request or unavailable."""
        try:
            parse_artifact_id(artifact_id)
        except InvalidCoordinatesError as error:
            raise InvocationError("bad_request", error.message) from None
        candidates = [i for i in self.store.active() if i.key.coordinates.artifact_id == artifact_id]
        if not candidates:
            raise InvocationError("no_endpoint", f"no ACTIVE instance of {artifact_id} is available")
        with_entry = [i for i in candidates if entry in i.entry_points]
        if not with_entry:
            known = ", ".join(sorted(candidates[0].entry_points))
            raise InvocationError(
                "no_endpoint", f"{artifact_id} has no entry point {entry!r} (it has: {known})"
            )
        turn = next(self._turns.setdefault(artifact_id, itertools.count()))
        instance = with_entry[turn % len(with_entry)]
        instance.in_flight += 1
        try:
            return await instance.host.invoke(entry, payload, timeout or self.store.timeouts.invoke)
        finally:
            instance.in_flight -= 1
