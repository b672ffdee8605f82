"""An operator's run-time autoscaling settings (`cluster/autoscale/{group:artifact}`, `AutoscaleSettings`)
over a slice's `[slices.autoscale]`: what the leader actually uses, and the checks a change must pass.
Pure: no I/O. The management API checks a change with `read_changes` and `bound_problems` (every problem
at once, as a blueprint's tables are checked); the leader's autoscaler uses `effective`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import attrs

from ..core._autoscale_spec import MAX_SECONDS, AutoscaleSpec
from ..core._blueprint_toml import MAX_INSTANCES
from ..core._records import AutoscaleSettings
from ..core._table_problems import key_named
from ..core._text import shown

COUNTS = ("min", "max")
THRESHOLDS = ("cpu", "p99_ms", "calls_per_second", "in_flight")
SETTABLE = (*COUNTS, *THRESHOLDS)
# The highest value each threshold may take (as in the blueprint): typos like 1e12 are refused.
HIGHEST = {"cpu": 1024.0, "p99_ms": MAX_SECONDS * 1000, "calls_per_second": 1e9, "in_flight": 1e9}


class SettingsError(ValueError):
    """Run-time settings that are not valid (the operator's fault); the message names each bad setting
    and what is wrong with it, `; ` between them."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


def effective(spec: AutoscaleSpec, settings: AutoscaleSettings | None) -> AutoscaleSpec:
    """The blueprint's table with the operator's settings laid over it."""
    if settings is None:
        return spec
    changed = {name: value for name in SETTABLE if (value := getattr(settings, name)) is not None}
    return attrs.evolve(spec, **changed) if changed else spec


def read_changes(raw: Mapping[str, Any]) -> tuple[dict[str, int | float], tuple[str, ...]]:
    """The good settings a request asks for (name → value; others None or absent) and a sentence for each
    bad one (an unknown name, a value of the wrong kind or range), all of them: one answer names them all.
    Nothing asked for at all is a problem too."""
    settable = ", ".join(SETTABLE)
    unknown = sorted(set(raw) - set(SETTABLE))
    problems = [f"{key_named(name)}: not a setting (settable: {settable})" for name in unknown[:5]]
    if len(unknown) > 5:
        problems.append(f"and {len(unknown) - 5} more that are not settings")
    changes: dict[str, int | float] = {}
    for name in SETTABLE:
        value = raw.get(name)
        if value is None:
            continue
        if name in COUNTS:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INSTANCES:
                problems.append(f"{name}: expected a whole number in 1..{MAX_INSTANCES}, got {shown(value)}")
                continue
        elif (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 < value <= HIGHEST[name]
        ):
            problems.append(f"{name}: expected a number in (0, {HIGHEST[name]:g}], got {shown(value)}")
            continue
        changes[name] = value if name in COUNTS else float(value)
    if not changes and not problems:
        problems.append(f"nothing to set: give at least one of {', '.join(SETTABLE)}")
    return changes, tuple(problems)


def parse_changes(raw: Mapping[str, Any]) -> dict[str, int | float]:
    """`read_changes`, raising SettingsError with every problem if there is any."""
    changes, problems = read_changes(raw)
    if problems:
        raise SettingsError(problems)
    return changes


def bound_problems(
    spec: AutoscaleSpec, settings: AutoscaleSettings, *, min_available: int | None, bad: Collection[str] = ()
) -> tuple[str, ...]:
    """What is wrong with the effective table under `settings`: min and max that do not fit together, a
    min below the slice's `min_available` (the floor the controller never crosses). `bad`: settings
    already refused for their value, about which nothing more is said (their old value stands in
    `settings`, and a sentence about it would mislead)."""
    merged = effective(spec, settings)
    problems = []
    if merged.max < merged.min and not {"min", "max"} & set(bad):
        problems.append(f"max: must be ≥ min ({merged.min}), got {merged.max}")
    if min_available is not None and merged.min < min_available and "min" not in bad:
        problems.append(f"min: must be ≥ the slice's min_available ({min_available}), got {merged.min}")
    return tuple(problems)


def check(spec: AutoscaleSpec, settings: AutoscaleSettings, *, min_available: int | None) -> AutoscaleSpec:
    """The effective table under `settings`; raises SettingsError naming every problem `bound_problems`
    finds."""
    problems = bound_problems(spec, settings, min_available=min_available)
    if problems:
        raise SettingsError(problems)
    return effective(spec, settings)
