"""An operator's run-time autoscaling settings (`cluster/autoscale/{group:artifact}`, `AutoscaleSettings`)
over a slice's `[slices.autoscale]`: what the leader actually uses, and the checks a change must pass.
Pure: no I/O. The management API checks a change with `check`; the leader's autoscaler uses `effective`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from ..core._autoscale_spec import MAX_SECONDS, AutoscaleSpec
from ..core._blueprint_toml import MAX_INSTANCES
from ..core._records import AutoscaleSettings

COUNTS = ("min", "max")
THRESHOLDS = ("cpu", "p99_ms", "calls_per_second", "in_flight")
SETTABLE = (*COUNTS, *THRESHOLDS)
# The highest value each threshold may take (as in the blueprint): typos like 1e12 are refused.
HIGHEST = {"cpu": 1024.0, "p99_ms": MAX_SECONDS * 1000, "calls_per_second": 1e9, "in_flight": 1e9}


class SettingsError(ValueError):
    """A run-time setting is not valid (the operator's fault); the message names the setting."""


def effective(spec: AutoscaleSpec, settings: AutoscaleSettings | None) -> AutoscaleSpec:
    """The blueprint's table with the operator's settings laid over it."""
    if settings is None:
        return spec
    changed = {name: value for name in SETTABLE if (value := getattr(settings, name)) is not None}
    return attrs.evolve(spec, **changed) if changed else spec


def parse_changes(raw: Mapping[str, Any]) -> dict[str, int | float]:
    """The settings a request asks for (name → value; others None or absent). Raises SettingsError for an
    unknown name or a value of the wrong kind or range."""
    unknown = sorted(set(raw) - set(SETTABLE))
    if unknown:
        raise SettingsError(f"{unknown[0]}: not a setting (settable: {', '.join(SETTABLE)})")
    changes: dict[str, int | float] = {}
    for name in SETTABLE:
        value = raw.get(name)
        if value is None:
            continue
        if name in COUNTS:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INSTANCES:
                raise SettingsError(
                    f"{name}: expected a whole number in 1..{MAX_INSTANCES}, got {value!r:.40}"
                )
        elif (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 < value <= HIGHEST[name]
        ):
            raise SettingsError(f"{name}: expected a number in (0, {HIGHEST[name]:g}], got {value!r:.40}")
        changes[name] = value if name in COUNTS else float(value)
    if not changes:
        raise SettingsError(f"nothing to set: give at least one of {', '.join(SETTABLE)}")
    return changes


def check(spec: AutoscaleSpec, settings: AutoscaleSettings, *, min_available: int | None) -> AutoscaleSpec:
    """The effective table under `settings`; raises SettingsError if min and max do not fit together or
    min goes below the slice's `min_available` (the floor the controller never crosses)."""
    merged = effective(spec, settings)
    if merged.max < merged.min:
        raise SettingsError(f"max: must be ≥ min ({merged.min}), got {merged.max}")
    if min_available is not None and merged.min < min_available:
        raise SettingsError(f"min: must be ≥ the slice's min_available ({min_available}), got {merged.min}")
    return merged
