"""The nemesis suite's invariants as pure functions over what a run recorded (no I/O, no clock).

Each check returns `Violation` records (which invariant, when, what, the evidence) instead of raising,
so one run reports every broken invariant at once. Times are seconds since the run started.

- `lost_writes`: every acknowledged unique write is still there at the end;
- `executions`: no non-idempotent request id ran twice; no acknowledged call ran zero times;
- `floor`: ACTIVE instances of a slice never below its floor outside the windows where nodes were lost;
- `kv_history`: the register history is linearizable (`linearizability.check_linearizable`);
- `trend` / `soak_problems`: the soak mode's slope and backlog judgements.
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Iterable, Mapping, Sequence

import attrs

from linearizability import Operation, check_linearizable


@attrs.frozen(kw_only=True)
class Violation:
    invariant: str
    at: float  # seconds since the run started (-1: at the end of the run)
    message: str
    evidence: str = ""

    def __str__(self) -> str:
        when = "end of run" if self.at < 0 else f"t={self.at:.1f}s"
        evidence = ("\n    " + self.evidence.replace("\n", "\n    ")) if self.evidence else ""
        return f"[{self.invariant}] {when}: {self.message}{evidence}"


# ---------------------------------------------------------------- KV


def kv_history(history: Sequence[Operation]) -> list[Violation]:
    result = check_linearizable(history)
    if result.ok:
        return []
    return [
        Violation(
            invariant="kv-linearizable",
            at=-1,
            message=f"the KV register history is not linearizable ({len(history)} operations)",
            evidence=result.message,
        )
    ]


def lost_writes(acknowledged: Mapping[str, float], present: Iterable[str]) -> list[Violation]:
    """`acknowledged`: key → when its put was acknowledged; `present`: the keys read at the end."""
    missing = sorted(set(acknowledged) - set(present), key=lambda k: acknowledged[k])
    if not missing:
        return []
    shown = ", ".join(f"{k} (acked t={acknowledged[k]:.1f}s)" for k in missing[:10])
    return [
        Violation(
            invariant="no-acked-write-lost",
            at=acknowledged[missing[0]],
            message=f"{len(missing)} of {len(acknowledged)} acknowledged writes are gone",
            evidence=shown,
        )
    ]


# ---------------------------------------------------------------- invocations


@attrs.frozen(kw_only=True)
class CallRecord:
    request_id: str
    idempotent: bool
    caller: str  # e.g. "ingress:10.231.5.1:7001" or "api"
    at: float
    outcome: str  # "ok", "failed" (an answer that is not 200) or "unknown" (timeout, connection lost)
    detail: str = ""


def executions(calls: Sequence[CallRecord], journal_lines: Iterable[str]) -> list[Violation]:
    """`journal_lines`: "id instance pid" per execution (the counter slice's `record` entries)."""
    runs: dict[str, list[str]] = collections.defaultdict(list)
    for line in journal_lines:
        parts = line.split()
        if parts:
            runs[parts[0]].append(" ".join(parts[1:]))
    found = []
    for call in calls:
        where = runs.get(call.request_id, [])
        if not call.idempotent and len(where) > 1:
            found.append(
                Violation(
                    invariant="non-idempotent-once",
                    at=call.at,
                    message=f"non-idempotent call {call.request_id} ({call.caller}) ran {len(where)} times; "
                    f"the caller saw {call.outcome}",
                    evidence=f"executions (instance pid): {where}; caller detail: {call.detail[:300]}",
                )
            )
        if call.outcome == "ok" and not where:
            found.append(
                Violation(
                    invariant="acked-call-executed",
                    at=call.at,
                    message=f"call {call.request_id} ({call.caller}) was acknowledged but never ran",
                )
            )
    return found


# ---------------------------------------------------------------- availability floor


@attrs.frozen(kw_only=True)
class FloorSample:
    at: float
    slice: str  # group:artifact
    floor: int
    active: int
    records: str  # what was seen, for the evidence
    # configured nodes missing from the registry at that moment, or registered anew since the sample
    # before (their lease lapsed in between: the cluster forgot their instances)
    lost_nodes: tuple[str, ...] = ()


def floor(
    samples: Sequence[FloorSample], exempt: Sequence[tuple[float, float]], *, recovery: float = 90.0
) -> list[Violation]:
    """A sample below its floor is a violation unless a node was lost then: missing from the registry or
    registered anew (its lease lapsed) in that sample or since, until the slice is back at its floor, for at
    most `recovery` seconds; or inside an `exempt` window (a fault that loses nodes, until the cluster
    converged after it). One violation per slice and stretch of consecutive bad samples."""
    found: list[Violation] = []
    open_stretch: dict[str, bool] = {}
    lost_at: dict[str, float] = {}  # per slice: the last sample that saw a lost node, until recovery
    for sample in samples:
        if sample.lost_nodes:
            lost_at[sample.slice] = sample.at
        elif sample.active >= sample.floor:
            lost_at.pop(sample.slice, None)
        recovering = sample.at - lost_at.get(sample.slice, float("-inf")) <= recovery
        excused = recovering or any(start <= sample.at <= end for start, end in exempt)
        bad = sample.active < sample.floor and not excused
        if bad and not open_stretch.get(sample.slice):
            found.append(
                Violation(
                    invariant="availability-floor",
                    at=sample.at,
                    message=f"{sample.slice}: {sample.active} ACTIVE, floor {sample.floor}, no node lost",
                    evidence=sample.records,
                )
            )
        open_stretch[sample.slice] = bad
    return found


# ---------------------------------------------------------------- soak


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points (0 for fewer than 2 distinct x)."""
    if len(points) < 2:
        return 0.0
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mean_x) ** 2 for x in xs)
    if den == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / den


@attrs.frozen(kw_only=True)
class Series:
    name: str  # e.g. "node-1 rss_mib"
    points: tuple[tuple[float, float], ...]  # (minutes since start, value)
    limit_per_10min: float  # the growth beyond warm-up that counts as a leak


RESTARTED_AFTER = 1.5  # minutes: a process first sampled later than this was started anew
# A slope is judged only over this many minutes of samples after the warm-up: over 2 minutes (a process
# killed soon after its warm-up) one step of a bounded structure reads as 5 times its size per 10 minutes.
MIN_SPAN = 5.0


def after_warmup(points: Sequence[tuple[float, float]], warmup_minutes: float) -> list[tuple[float, float]]:
    """The points of one process after its own warm-up: a process restarted later (a killed node or
    replica) warms up from its first sample, like the first ones did from the start."""
    if not points:
        return []
    start = points[0][0] if points[0][0] > RESTARTED_AFTER else 0.0
    return [p for p in points if p[0] >= start + warmup_minutes]


def trend(series: Series, warmup_minutes: float) -> Violation | None:
    after = after_warmup(series.points, warmup_minutes)
    if len(after) < 3 or after[-1][0] - after[0][0] < MIN_SPAN:
        return None
    per_10 = slope(after) * 10
    if per_10 <= series.limit_per_10min:
        return None
    values = ", ".join(f"{y:g}" for _, y in after)
    return Violation(
        invariant="soak-flat",
        at=after[-1][0] * 60,
        message=f"{series.name} grows {per_10:.2f} per 10 min after warm-up "
        f"(limit {series.limit_per_10min:g})",
        evidence=f"samples after {warmup_minutes:g} min: {values}",
    )


def backlog_drains(
    name: str, points: Sequence[tuple[float, float]], *, near_zero: float = 2
) -> Violation | None:
    """The watch backlog must come back to about 0: its last sample and its minimum over the last
    three must be ≤ near_zero."""
    if not points:
        return None
    tail = [y for _, y in points[-3:]]
    if min(tail) <= near_zero:
        return None
    return Violation(
        invariant="soak-backlog-drains",
        at=points[-1][0] * 60,
        message=f"{name}: watch backlog stays at {tail} batches",
        evidence=str(list(points)),
    )


def convergence_summary(times: Sequence[float]) -> str:
    if not times:
        return "-"
    return f"{statistics.median(times):.1f} s / {max(times):.1f} s"
