"""A slice's `[slices.autoscale]` table: the record and its validation. Pure; the blueprint parser
(`_blueprint_toml`) calls `parse_autoscale` with its own error maker, so errors name file:line:column.

Targets are per instance (CPU, calls per second, calls in flight) or per slice (p99 latency of its entry
points); at least one is required. The controller (`control/_autoscale.py`) scales up when any target
is exceeded for `up_after_s`, and down when every target would still hold with `down_step` fewer
instances, with headroom (`down_below` × target), for `down_after_s`. With `forecast_s` (optional, off
by default) it also scales up ahead of a rising call rate (`control/_autoscale_forecast.py`): when the
rate's trend, `forecast_s` seconds ahead, exceeds the `calls_per_second` target (which it then needs).
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from ._table_problems import Fail, Problems, key_named, unknown_key
from ._text import shown

# a limit well above any real cluster, so that typos (1e9) are caught
MAX_SECONDS = 24 * 3600.0
MAX_FORECAST_S = 3600.0  # a straight trend an hour ahead is already a guess
TARGETS = ("cpu", "p99_ms", "calls_per_second", "in_flight")
KEYS = frozenset(
    {
        "min",
        "max",
        *TARGETS,
        "up_step",
        "down_step",
        "up_cooldown_s",
        "down_cooldown_s",
        "up_after_s",
        "down_after_s",
        "down_below",
        "forecast_s",
    }
)


@attrs.frozen(kw_only=True)
class AutoscaleSpec:
    """Bounds, targets (None: not a target), steps, cooldowns and how long a signal must last."""

    min: int
    max: int
    cpu: float | None = None  # cores used per instance (1.0: one core busy)
    p99_ms: float | None = None  # p99 latency of the slice's calls, over all its entry points
    calls_per_second: float | None = None  # per instance
    in_flight: float | None = None  # calls in flight per instance
    up_step: int = 1
    down_step: int = 1
    up_cooldown_s: float = 30.0  # after any scaling, before the next scale-up
    down_cooldown_s: float = 120.0  # after any scaling, before the next scale-down
    up_after_s: float = 30.0  # a target exceeded this long → up
    down_after_s: float = 60.0  # every target with headroom this long → down
    down_below: float = 0.8  # the headroom: down only if each figure stays below this share of its target
    forecast_s: float | None = None  # scale up ahead of the call rate's trend this far (None: reactive only)

    def targets(self) -> dict[str, float]:
        """The configured targets by name (in TARGETS order)."""
        return {name: value for name in TARGETS if (value := getattr(self, name)) is not None}


def parse_autoscale(
    raw: Any, path: str, fail: Fail, *, instances: int | None, min_available: int | None, max_instances: int
) -> AutoscaleSpec:
    """Validate one `[slices.autoscale]` table of the slice at `path` (e.g. slices[0]); `instances` and
    `min_available` are the slice's valid ones, None when missing or invalid (the checks against them
    are skipped then: the table's own problems are reported all the same). Raises what `fail` makes of
    every problem found (key "" points at the table's header; key "autoscale" at an `autoscale = ...`
    line of the slice itself)."""
    problems = Problems()
    if not isinstance(raw, dict):
        problems.add(
            path, "must be a table: [slices.autoscale] with min, max and at least one target", "autoscale"
        )
        problems.raise_any(fail)
    for key in raw:
        if key not in KEYS:
            problems.add(f"{path}.{key_named(key)}", unknown_key(key, KEYS), key)

    def integer(key: str, low: int, high: int, default: int | None = None) -> int | None:
        if key not in raw:
            if default is None:
                problems.add(f"{path}.{key}", "required: an integer", key)
            return default
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int):
            problems.add(f"{path}.{key}", f"must be an integer, got {shown(value)}", key)
            return default
        if not low <= value <= high:
            problems.add(f"{path}.{key}", f"must be between {low} and {high}, got {shown(value)}", key)
            return default
        return value

    def number(
        key: str,
        low: float,
        high: float,
        default: float | None,
        *,
        above_low: bool = False,
        open_high: bool = False,
    ) -> Any:
        if key not in raw:
            return default
        value = raw[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not (low < value if above_low else low <= value)
            or not (value < high if open_high else value <= high)
        ):
            interval = ("(" if above_low else "[") + f"{low:g}, {high:g}" + (")" if open_high else "]")
            problems.add(f"{path}.{key}", f"must be a number in {interval}, got {shown(value)}", key)
            return default
        return float(value)

    low = integer("min", 1, max_instances)  # 0 instances measure nothing: no way back up
    high = integer("max", 1, max_instances)
    if low is not None and high is not None:
        if high < low:
            problems.add(f"{path}.max", f"must be ≥ min ({low}), got {high}", "max")
        elif instances is not None and not low <= instances <= high:
            problems.add(
                f"{path}.min" if instances < low else f"{path}.max",
                f"instances ({instances}) must lie within min..max ({low}..{high}): the controller starts"
                " there",
                "min" if instances < low else "max",
            )
    if low is not None and min_available is not None and low < min_available:
        problems.add(
            f"{path}.min",
            f"must be ≥ min_available ({min_available}): the controller never scales below the floor",
            "min",
        )
    targets = {
        "cpu": number("cpu", 0.0, 1024.0, None, above_low=True),
        "p99_ms": number("p99_ms", 0.0, MAX_SECONDS * 1000, None, above_low=True),
        "calls_per_second": number("calls_per_second", 0.0, 1e9, None, above_low=True),
        "in_flight": number("in_flight", 0.0, 1e9, None, above_low=True),
    }
    settings = {
        "up_step": integer("up_step", 1, max_instances, 1),
        "down_step": integer("down_step", 1, max_instances, 1),
        "up_cooldown_s": number("up_cooldown_s", 0.0, MAX_SECONDS, 30.0),
        "down_cooldown_s": number("down_cooldown_s", 0.0, MAX_SECONDS, 120.0),
        "up_after_s": number("up_after_s", 0.0, MAX_SECONDS, 30.0),
        "down_after_s": number("down_after_s", 0.0, MAX_SECONDS, 60.0),
        "down_below": number("down_below", 0.0, 1.0, 0.8, above_low=True, open_high=True),
        "forecast_s": number("forecast_s", 0.0, MAX_FORECAST_S, None, above_low=True),
    }
    if not set(TARGETS) & set(raw):  # (a target given but not valid has a problem of its own)
        problems.add(path, f"[slices.autoscale] needs at least one target: {', '.join(TARGETS)}", "")
    if "forecast_s" in raw and "calls_per_second" not in raw:
        problems.add(
            f"{path}.forecast_s",
            "needs a calls_per_second target: the forecast is of the call rate, against that target",
            "forecast_s",
        )
    problems.raise_any(fail)
    assert low is not None and high is not None
    return AutoscaleSpec(min=low, max=high, **targets, **settings)
