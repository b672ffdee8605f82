"""Calls per slice version, counted by the router while a canary or blue-green rollout of the slice
runs: how many, how many failed with a fault of the instance, and their latency buckets (cumulative,
like the metrics). What the leader reads from every node to judge a canary step (the node's metrics are
per artifact, not per version). Kept in memory, never through consensus; read as plain JSON over the
peer link. No I/O."""

from __future__ import annotations

import bisect
from typing import Any

from ._metrics import LATENCY_BUCKETS

# Errors that say something about the version that answered (not about the caller or the routing).
VERSION_FAULTS = frozenset({"raised", "bad_result", "internal", "timeout", "unavailable"})


class VersionCalls:
    """artifact id → version → [calls, errors, per-bucket counts]; `snapshot()` makes the buckets
    cumulative, as `{"calls", "errors", "buckets": [[bound_s, count], ...]}`."""

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, list[Any]]] = {}

    def record(self, artifact_id: str, version: str, seconds: float, error: str | None) -> None:
        versions = self._counts.setdefault(artifact_id, {})
        counts = versions.get(version)
        if counts is None:
            counts = versions[version] = [0, 0, [0] * (len(LATENCY_BUCKETS) + 1)]
        counts[0] += 1
        if error is not None and error in VERSION_FAULTS:
            counts[1] += 1
        counts[2][bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def snapshot(self) -> dict[str, Any]:
        answer: dict[str, Any] = {}
        for artifact_id, versions in self._counts.items():
            for version, (calls, errors, per_bucket) in versions.items():
                cumulative, running = [], 0
                for bound, count in zip(LATENCY_BUCKETS, per_bucket, strict=False):
                    running += count
                    cumulative.append([bound, running])
                answer.setdefault(artifact_id, {})[version] = {
                    "calls": calls,
                    "errors": errors,
                    "buckets": cumulative,
                }
        return answer
