"""A canary step's verdict: each version's calls over the step's window (from every node's counts per
version, `observe/_version_calls.py`) and the judgement of the new version against the stable one.
Pure: readings in, a verdict out. No I/O, no clock."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ..core._text import plural
from ..core._update_spec import UpdateSpec
from ._autoscale import quantile

MIN_CALLS = 20  # fewer calls on the new version in a window say nothing about it


@attrs.frozen(kw_only=True)
class VersionWindow:
    """One version's calls over a canary step's window: how many, how many failed, their p99."""

    calls: int
    errors: int
    p99_ms: float | None = None


@attrs.frozen(kw_only=True)
class Verdict:
    """A canary step judged: passed (True), failed (False) or not judged (None: too little data)."""

    passed: bool | None
    reason: str


# Calls are counted per version: a canary of a config change alone has no figures of its own to judge.
CONFIG_ONLY_VERDICT = Verdict(
    passed=None, reason="calls are counted per version, and a config change keeps the version"
)


def evaluate(update: UpdateSpec, stable: VersionWindow | None, candidate: VersionWindow | None) -> Verdict:
    """Judge a canary step's window: the candidate fails if its error rate exceeds the stable version's by
    more than `max_error_rate`, or its p99 is above `max_p99_ratio` × the stable one's and more than
    `p99_slack_ms` above it (a few milliseconds of jitter on a fast slice are no slower version). Too
    few calls on the candidate (fewer than MIN_CALLS) give no verdict. Without stable figures (all calls
    on the candidate) only its error rate is judged, against 0."""
    if candidate is None or candidate.calls < MIN_CALLS:
        calls = 0 if candidate is None else candidate.calls
        return Verdict(
            passed=None,
            reason=f"{plural(calls, 'call')} on the new version in the window, fewer than {MIN_CALLS}",
        )
    rate = candidate.errors / candidate.calls
    base = stable.errors / stable.calls if stable is not None and stable.calls else 0.0
    if rate > base + update.max_error_rate:
        return Verdict(
            passed=False,
            reason=f"error rate {rate:.1%} > stable {base:.1%} + {update.max_error_rate:.1%}"
            f" ({candidate.errors} of {candidate.calls} calls failed)",
        )
    if (
        stable is not None
        and stable.calls
        and stable.p99_ms
        and candidate.p99_ms is not None
        and candidate.p99_ms > update.max_p99_ratio * stable.p99_ms
        and candidate.p99_ms > stable.p99_ms + update.p99_slack_ms
    ):
        return Verdict(
            passed=False,
            reason=f"p99 {candidate.p99_ms:.0f} ms > {update.max_p99_ratio:g} x stable"
            f" {stable.p99_ms:.0f} ms, and more than {update.p99_slack_ms:g} ms above it",
        )
    return Verdict(
        passed=True,
        reason=f"error rate {rate:.1%}, p99 within {update.max_p99_ratio:g} x stable"
        f" or {update.p99_slack_ms:g} ms of it",
    )


def version_windows(
    start: Mapping[str, Any], end: Mapping[str, Any], artifact_id: str
) -> dict[str, VersionWindow]:
    """Two readings of every node's calls per version (node id → `VersionCalls.snapshot()`) → each
    version's calls, errors and p99 between them, summed over the nodes in both. A node whose counts went
    back (it restarted) or whose answer is malformed is left out. Pure."""
    totals: dict[str, list[Any]] = {}
    for node_id, after in end.items():
        before = start.get(node_id)
        if not isinstance(after, Mapping) or not isinstance(before, Mapping):
            continue
        try:
            interval = _interval(before.get(artifact_id) or {}, after.get(artifact_id) or {})
        except (TypeError, ValueError, KeyError):
            continue
        if interval is None:
            continue
        for version, (calls, errors, buckets) in interval.items():
            into = totals.setdefault(version, [0, 0, {}])
            into[0] += calls
            into[1] += errors
            for bound, count in buckets.items():
                into[2][bound] = into[2].get(bound, 0) + count
    windows = {}
    for version, (calls, errors, buckets) in totals.items():
        p99 = quantile(0.99, sorted(buckets.items()), calls)
        windows[version] = VersionWindow(
            calls=calls, errors=errors, p99_ms=None if p99 is None else p99 * 1000
        )
    return windows


def _interval(
    before: Mapping[str, Any], after: Mapping[str, Any]
) -> dict[str, tuple[int, int, dict[float, int]]] | None:
    """One node's calls per version between two of its snapshots of one artifact; None if any went back."""
    found = {}
    for version, now in after.items():
        was = before.get(version) or {"calls": 0, "errors": 0, "buckets": []}
        calls, errors = int(now["calls"]) - int(was["calls"]), int(now["errors"]) - int(was["errors"])
        earlier = {float(bound): int(count) for bound, count in was["buckets"]}
        buckets = {float(bound): int(count) - earlier.get(float(bound), 0) for bound, count in now["buckets"]}
        if calls < 0 or errors < 0 or any(count < 0 for count in buckets.values()):
            return None
        found[str(version)] = (calls, errors, buckets)
    return found
