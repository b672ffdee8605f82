"""The autoscaling controller. Pure: (a slice's `[slices.autoscale]`, its instance count, a window of
readings from the nodes, the time) → a Decision: up, down or hold. No I/O, no clock.

An explicit decision tree; each decision carries the path that led to it and the numbers behind it:

    bounds      the count is outside min..max (or below min_available)  → up / down into the bounds
    fresh       no reading, or the last one older than `stale_after`     → hold ("stale")
    complete    an expected node is missing from the last reading         → hold ("partial")
    settled     running instances ≠ the count asked for                   → hold ("settling")
    sustained   fewer complete seconds of readings than a branch needs    → that branch is not taken
    up          a target exceeded over the last `up_after_s`
                  cooldown → hold; at max → hold; else up by `up_step` (at most max)
    forecast    (only with `forecast_s`) the call rate's rising trend over the last `forecast_s`,
                `forecast_s` ahead, per instance, above the calls_per_second target
                  cooldown → hold; at max → hold; else up by `up_step` (at most max)
    down        every target, projected onto `down_step` fewer instances, under `down_below` × target
                over the last `down_after_s`
                  at the lower bound → hold; cooldown → hold; else down (at least the lower bound)
    hold        within targets (or not enough readings yet, and it says so)

A reading holds, per node that answered, cumulative counters (calls to the slice routed by that node, its
latency histogram, each running instance's CPU seconds) and the calls in flight. Figures come from the
differences between consecutive readings; an interval is usable only if every expected node is in both
readings and no counter went back (a restarted node). Rates per instance scale as 1/instances; p99 does
not, so it is taken as it is when projecting a scale-down.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import attrs

from ..core._autoscale_spec import AutoscaleSpec
from ._autoscale_forecast import Trend, rising

STALE_AFTER = 15.0  # seconds: a reading older than this is no basis for a decision
UNITS = {"cpu": "", "p99_ms": " ms", "calls_per_second": "/s", "in_flight": ""}
LABELS = {"cpu": "cpu", "p99_ms": "p99", "calls_per_second": "calls", "in_flight": "in flight"}


class Action(enum.StrEnum):
    UP = "up"
    DOWN = "down"
    HOLD = "hold"


@attrs.frozen(kw_only=True)
class NodeSample:
    """One node's figures for one slice at one reading."""

    calls: int  # cumulative calls to the slice routed by this node, over all its entry points
    buckets: tuple[tuple[float, int], ...] = ()  # cumulative latency histogram: (upper bound s, calls)
    in_flight: int = 0  # calls to the slice routed by this node and not yet answered
    cpu_seconds: Mapping[str, float] = attrs.field(factory=dict)  # running instance here → its CPU seconds


@attrs.frozen(kw_only=True)
class Reading:
    at: float  # when the leader gathered it (its clock)
    nodes: Mapping[str, NodeSample]  # the nodes that answered


@attrs.frozen(kw_only=True)
class Decision:
    action: Action
    current: int
    target: int
    path: tuple[str, ...]  # the tree's nodes, root to leaf
    reason: str  # the leaf, in words, with its numbers
    figures: Mapping[str, float] = attrs.field(factory=dict)  # the numbers behind it

    def message(self, artifact_id: str) -> str:
        """`scale org.aether:busy 2 -> 4: p99 312 ms > 200 ms for 30 s` or `hold org.aether:busy at 2: …`."""
        if self.action is Action.HOLD:
            return f"hold {artifact_id} at {self.current}: {self.reason}"
        return f"scale {artifact_id} {self.current} -> {self.target}: {self.reason}"


@attrs.frozen
class _Interval:
    start: float
    end: float
    instances: int  # running at the end
    rate: float  # calls per second to the whole slice
    figures: Mapping[str, float | None]  # per TARGETS name; None: nothing to measure (no calls, ...)


def decide(
    spec: AutoscaleSpec,
    *,
    current: int,
    window: Sequence[Reading],
    expected: Collection[str],
    now: float,
    last_scaled_at: float | None = None,
    min_available: int | None = None,
    stale_after: float = STALE_AFTER,
) -> Decision:
    """The decision for a slice whose blueprint asks for `current` instances. `window` is in time order;
    `expected` are the nodes whose readings count (all live nodes: any of them may route calls);
    `last_scaled_at` is when the controller last changed the count (None: never)."""
    lower = max(spec.min, min_available or 0)
    path: list[str] = []

    def hold(leaf: str, reason: str, **figures: float) -> Decision:
        return Decision(
            action=Action.HOLD,
            current=current,
            target=current,
            path=(*path, leaf),
            reason=reason,
            figures=figures,
        )

    if current < lower:
        return Decision(
            action=Action.UP,
            current=current,
            target=lower,
            path=("bounds: below the lower bound",),
            reason=f"{current} is below the lower bound {lower} (min {spec.min}, floor {min_available})",
        )
    if current > spec.max:
        return Decision(
            action=Action.DOWN,
            current=current,
            target=spec.max,
            path=("bounds: above max",),
            reason=f"{current} is above max {spec.max}",
        )
    path.append("bounds: within")
    if not window:
        return hold("fresh: no reading", "no reading yet: no decision")
    latest = window[-1]
    age = now - latest.at
    if age > stale_after:
        return hold(
            "fresh: stale",
            f"stale: the last reading is {age:.0f} s old (stale after {stale_after:g} s): no decision",
            age_s=age,
        )
    path.append("fresh")
    missing = sorted(set(expected) - set(latest.nodes))
    if missing:
        return hold(
            "complete: partial",
            f"partial: no reading from {', '.join(missing)}: no decision on part of the cluster",
            missing=len(missing),
        )
    path.append("complete")
    running = sum(len(sample.cpu_seconds) for sample in latest.nodes.values())
    if running != current:
        return hold(
            "settled: settling",
            f"settling: {running} of {current} instances running",
            running=running,
        )
    path.append("settled")

    intervals = _intervals(window, expected)
    covered = latest.at - intervals[0].start if intervals else 0.0
    targets = spec.targets()
    cooling = now - last_scaled_at if last_scaled_at is not None else None

    def up(leaf: str, why: str, figures: dict[str, float]) -> Decision:
        path.append(leaf)
        if cooling is not None and cooling < spec.up_cooldown_s:
            wait = spec.up_cooldown_s - cooling
            return hold("cooldown", f"{why}; but cooling down: up allowed in {wait:.0f} s", **figures)
        if current >= spec.max:
            return hold("at max", f"{why}; but already at max {spec.max}", **figures)
        path.append("room")
        return Decision(
            action=Action.UP,
            current=current,
            target=min(spec.max, current + spec.up_step),
            path=(*path, "scale up"),
            reason=why,
            figures=figures,
        )

    if covered >= spec.up_after_s:
        span = _last(intervals, latest.at, spec.up_after_s)
        breached = {
            name: min(values)  # exceeded throughout: by at least this much
            for name, target in targets.items()
            if (values := [i.figures[name] for i in span])
            and all(v is not None and v > target for v in values)
        }
        if breached:
            why = (
                ", ".join(_compare(name, value, ">", targets[name]) for name, value in breached.items())
                + f" for {spec.up_after_s:g} s"
            )
            figures = {**breached, **{f"{name}_target": targets[name] for name in breached}}
            return up("up: " + ", ".join(sorted(breached)) + " above target", why, figures)
        path.append("up: no target exceeded throughout")
    if spec.forecast_s is not None and spec.calls_per_second is not None:
        trend = _forecast(intervals, latest.at, spec.forecast_s)
        ahead = trend.at(spec.forecast_s) if trend is not None else 0.0
        if trend is not None and ahead / current > spec.calls_per_second:
            rate = ahead / current
            why = (
                f"forecast: {_compare('calls_per_second', rate, '>', spec.calls_per_second)} "
                f"in {spec.forecast_s:g} s (the slice's rate {trend.rate:.1f}/s, rising "
                f"{trend.slope:.2f}/s per s)"
            )
            figures = {"forecast_calls_per_second": rate, "calls_per_second_target": spec.calls_per_second}
            return up("forecast: calls above target ahead", why, figures)
        path.append("forecast: within target")
    if covered >= spec.down_after_s:
        span = _last(intervals, latest.at, spec.down_after_s)
        after = max(lower, current - spec.down_step)
        headroom = _headroom(spec, targets, span, current, after)
        if headroom is not None:
            path.append("down: headroom on every target")
            why = (
                ", ".join(
                    _compare(name, value, "<", spec.down_below * targets[name])
                    + (f" with {after}" if name != "p99_ms" else "")
                    for name, value in headroom.items()
                )
                + f" for {spec.down_after_s:g} s"
            )
            figures = dict(headroom)
            if current <= lower:
                return hold("at lower bound", f"{why}; but already at the lower bound {lower}", **figures)
            if cooling is not None and cooling < spec.down_cooldown_s:
                wait = spec.down_cooldown_s - cooling
                return hold("cooldown", f"{why}; but cooling down: down allowed in {wait:.0f} s", **figures)
            return Decision(
                action=Action.DOWN,
                current=current,
                target=after,
                path=(*path, "scale down"),
                reason=why,
                figures=figures,
            )
        path.append("down: not every target has headroom")
    needed = max(spec.up_after_s, spec.down_after_s)
    if covered < needed:
        return hold(
            "warming up",
            f"{covered:.0f} s of complete readings, {spec.up_after_s:g} s needed to scale up "
            f"and {spec.down_after_s:g} s to scale down",
            covered_s=covered,
        )
    return hold("within targets", "within targets")


def _intervals(window: Sequence[Reading], expected: Collection[str]) -> list[_Interval]:
    """The usable intervals that end at the last reading, contiguous, oldest first."""
    found: list[_Interval] = []
    for before, after in reversed(list(itertools.pairwise(window))):
        interval = _interval(before, after, expected)
        if interval is None:
            break
        found.append(interval)
    return found[::-1]


def _interval(before: Reading, after: Reading, expected: Collection[str]) -> _Interval | None:
    seconds = after.at - before.at
    if seconds <= 0 or any(node not in before.nodes or node not in after.nodes for node in expected):
        return None
    calls, in_flight, cpu, steady = 0, 0, 0.0, 0
    buckets: dict[float, int] = {}
    for node, now in after.nodes.items():
        then = before.nodes.get(node)
        if then is None:
            return None  # a node joined: its counters have no base
        if now.calls < then.calls:
            return None  # the node restarted: its counters went back
        calls += now.calls - then.calls
        in_flight += now.in_flight
        for bound, count in now.buckets:
            buckets[bound] = buckets.get(bound, 0) + count
        for bound, count in then.buckets:
            buckets[bound] = buckets.get(bound, 0) - count
        for instance, seconds_used in now.cpu_seconds.items():
            base = then.cpu_seconds.get(instance)
            if base is not None and seconds_used >= base:  # in both readings, the same process
                cpu += seconds_used - base
                steady += 1
    instances = sum(len(sample.cpu_seconds) for sample in after.nodes.values())
    p99 = quantile(0.99, sorted(buckets.items()), calls)
    figures: dict[str, float | None] = {
        "cpu": cpu / seconds / steady if steady else None,
        "p99_ms": None if p99 is None else p99 * 1000,
        "calls_per_second": calls / seconds / instances if instances else None,
        "in_flight": in_flight / instances if instances else None,
    }
    return _Interval(before.at, after.at, instances, calls / seconds, figures)


def signals(before: Reading, after: Reading) -> dict[str, float] | None:
    """The figures the controller compares with the targets (cpu, p99_ms, calls_per_second, in_flight;
    those that can be measured) between two readings of the nodes that answered both, for display (the
    dashboard's signal charts); None if the readings cannot be compared (a node joined or restarted)."""
    interval = _interval(before, after, set(before.nodes) & set(after.nodes))
    if interval is None:
        return None
    return {name: value for name, value in interval.figures.items() if value is not None}


def _last(intervals: list[_Interval], end: float, seconds: float) -> list[_Interval]:
    """The intervals that reach into the last `seconds` before `end`."""
    return [interval for interval in intervals if interval.end > end - seconds]


def _forecast(intervals: list[_Interval], end: float, seconds: float) -> Trend | None:
    """The rising trend of the slice's call rate over the last `seconds` of intervals (each at its end,
    the rate it ended with), valued at `end`; None without the whole span or without a rise."""
    span = _last(intervals, end, seconds)
    if not span or span[0].start > end - seconds:
        return None  # the fit needs the whole look-back span
    return rising([(i.end, i.rate) for i in span])


def _headroom(
    spec: AutoscaleSpec, targets: Mapping[str, float], span: list[_Interval], current: int, after: int
) -> dict[str, float] | None:
    """Each target's highest figure over `span`, projected onto `after` instances (p99 as it is), if every
    one stays under `down_below` × its target throughout; else None. No calls means no latency to
    worry about; an instance with no CPU reading yet means CPU is not known, and blocks a scale-down."""
    if after >= current:
        after = current  # at the lower bound: report the figures as they are
    highest: dict[str, float] = {}
    for name, target in targets.items():
        values = []
        for interval in span:
            value = interval.figures[name]
            if value is None:
                if name == "p99_ms":
                    continue
                return None
            if name != "p99_ms":
                value = value * interval.instances / after
            values.append(value)
        top = max(values, default=0.0)
        if top >= spec.down_below * target:
            return None
        highest[name] = top
    return highest


def quantile(q: float, buckets: Sequence[tuple[float, int]], total: int) -> float | None:
    """The q-quantile of `total` calls in cumulative `buckets` (upper bound, count), interpolated inside
    its bucket like Prometheus' `histogram_quantile`; None without calls. Past the last bound: that bound."""
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0
    for bound, count in buckets:
        if count >= rank:
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def reading_for(artifact_id: str, at: float, answers: Mapping[str, Any]) -> Reading:
    """The Reading of one slice from the nodes' `slice_usage()` answers (node id → answer, None for a node
    that did not answer). A node that answered without the slice counts, with nothing (it routed no
    call and runs no instance); an answer that is not well-formed (a node of another version) counts as
    no answer, so the controller holds on partial data instead of deciding on a guess."""
    nodes: dict[str, NodeSample] = {}
    for node_id, answer in answers.items():
        if not isinstance(answer, dict):
            continue
        item = answer.get(artifact_id)
        if item is None:
            nodes[node_id] = NodeSample(calls=0)
            continue
        try:
            nodes[node_id] = NodeSample(
                calls=int(item["calls"]),
                buckets=tuple(sorted((float(bound), int(count)) for bound, count in item["buckets"])),
                in_flight=int(item["in_flight"]),
                cpu_seconds={str(key): float(value) for key, value in item["cpu_seconds"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return Reading(at=at, nodes=nodes)


def trim(window: Sequence[Reading], now: float, spec: AutoscaleSpec) -> list[Reading]:
    """The readings `decide` can still use: those of the last max(up_after_s, down_after_s, forecast_s)
    seconds, and the one just before (the start of the oldest interval)."""
    keep = max(spec.up_after_s, spec.down_after_s, spec.forecast_s or 0.0)
    inside = [index for index, reading in enumerate(window) if reading.at >= now - keep]
    first = max(0, inside[0] - 1) if inside else len(window)
    return list(window[first:])


def _value(name: str, value: float) -> str:
    shown = f"{value:.0f}" if name == "p99_ms" else f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{shown}{UNITS[name]}"


def _compare(name: str, value: float, sign: str, bound: float) -> str:
    """`p99 312 ms > 200 ms`."""
    return f"{LABELS[name]} {_value(name, value)} {sign} {_value(name, bound)}"
