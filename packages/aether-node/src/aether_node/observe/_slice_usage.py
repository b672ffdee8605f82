"""What one node tells the leader's autoscaler about each slice: the calls it routed (cumulative, with
their latency buckets), the calls in flight, and the CPU seconds of each of the slice's instances it runs.
Read on demand from the node's metrics and /proc; never through consensus. The answer is plain JSON
(it goes over the peer connection); `control/_autoscale.reading_for` reads it on the leader."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._metrics import NodeMetrics, read_process_usage

RUNNING = "ACTIVE"  # only serving instances count: a loading one has no calls yet and skews CPU


def slice_totals(
    call_stats: Iterable[Mapping[str, Any]], artifact_id: str
) -> tuple[int, tuple[tuple[float, int], ...]]:
    """One node's `call_stats()` (per artifact and entry point) → the slice's calls and cumulative latency
    buckets, summed over its entry points. Pure."""
    calls = 0
    buckets: dict[float, int] = {}
    for item in call_stats:
        if item.get("artifact") != artifact_id:
            continue
        calls += int(item["calls"])
        for bound, count in item["buckets"]:
            buckets[float(bound)] = buckets.get(float(bound), 0) + int(count)
    return calls, tuple(sorted(buckets.items()))


def slice_usage(metrics: NodeMetrics, in_flight: Mapping[str, int] | None = None) -> dict[str, Any]:
    """artifact id (`group:artifact`) → {"calls", "buckets", "in_flight", "cpu_seconds": {"version/n": s}},
    for every slice this node routed calls to or runs an ACTIVE instance of. `in_flight` is the router's
    count of unanswered calls per artifact id. An instance whose process is gone is left out."""
    stats = metrics.call_stats()
    cpu: dict[str, dict[str, float]] = {}
    for sample in metrics.instances() if metrics.instances else ():
        if sample.state != RUNNING or sample.pid is None:
            continue
        usage = read_process_usage(sample.pid)
        if usage is not None:
            key = f"{sample.coordinates.version}/{sample.instance}"
            cpu.setdefault(sample.coordinates.artifact_id, {})[key] = usage.cpu_seconds
    artifacts = {str(item["artifact"]) for item in stats} | set(cpu) | set(in_flight or {})
    answer = {}
    for artifact_id in sorted(artifacts):
        calls, buckets = slice_totals(stats, artifact_id)
        answer[artifact_id] = {
            "calls": calls,
            "buckets": [list(bucket) for bucket in buckets],
            "in_flight": int((in_flight or {}).get(artifact_id, 0)),
            "cpu_seconds": cpu.get(artifact_id, {}),
        }
    return answer
