"""A slice's `[slices.health]` table: how the nodes check that its ACTIVE instances live, over each
node's own `[health]` settings (`_policies.HealthChecks`). The record, its validation and how it combines
with a node's settings. Pure; the blueprint parser (`_blueprint_toml`) calls `parse_health` with its own
error maker, so errors name file:line:column.

The keys are the node's (`interval`, `timeout`, `failures`), each optional: one left out is the node's
own. `enabled = false` turns the checks off for the slice: its instances are never asked `health` nor
killed as hung (a process that dies is still restarted). The nodes follow the blueprints: a change of
this table alone restarts nothing; the running instances are checked by the new settings from the next
check on (`runtime/_health_checks.py`).
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from ._policies import HealthChecks
from ._table_problems import Fail, Problems, key_named, unknown_key
from ._text import shown

MIN_SECONDS = 0.1  # checks more often than this would keep the node busy asking
MAX_SECONDS = 24 * 3600.0  # a limit well above any real probe, so that typos (1e9) are caught
MAX_FAILURES = 100
SETTINGS = ("interval", "timeout", "failures")
KEYS = frozenset({"enabled", *SETTINGS})


@attrs.frozen(kw_only=True)
class HealthSpec:
    """A slice's health checks; a setting left None is each node's own (`[health]` of its config)."""

    enabled: bool = True
    interval: float | None = None  # s without a word from an instance before it is asked `health`
    timeout: float | None = None  # s a check waits for the answer
    failures: int | None = None  # checks in a row unanswered that make an instance hung (it is killed)


def checks_of(spec: HealthSpec | None, node: HealthChecks) -> HealthChecks | None:
    """The checks of a slice whose `[slices.health]` is `spec` (None: no table) on a node whose own are
    `node`; None: no checks."""
    if spec is None:
        return node
    if not spec.enabled:
        return None
    return HealthChecks(
        interval=node.interval if spec.interval is None else spec.interval,
        timeout=node.timeout if spec.timeout is None else spec.timeout,
        failures=node.failures if spec.failures is None else spec.failures,
    )


def describe(spec: HealthSpec | None) -> str:
    """A slice's health checks in words (`aether blueprint diff`): "off", "each node's own", or the
    settings given with the node's for the others: `interval 30 s, timeout 10 s, failures: the node's`."""
    if spec is None or spec == HealthSpec():
        return "each node's own"
    if not spec.enabled:
        return "off"
    words = []
    for name in SETTINGS:
        value = getattr(spec, name)
        if value is None:
            words.append(f"{name}: the node's")
        else:
            words.append(f"{name} {value}" if name == "failures" else f"{name} {value:g} s")
    return ", ".join(words)


def parse_health(raw: Any, path: str, fail: Fail) -> HealthSpec:
    """Validate one `[slices.health]` table of the slice at `path` (e.g. slices[0].health). Raises what
    `fail` makes of every problem found (key "health" points at a `health = ...` line of the slice)."""
    problems = Problems()
    if not isinstance(raw, dict):
        problems.add(
            path, "must be a table: [slices.health] with interval, timeout, failures or enabled", "health"
        )
        problems.raise_any(fail)
    for key in raw:
        if key not in KEYS:
            problems.add(f"{path}.{key_named(key)}", unknown_key(key, KEYS), key)

    def seconds(key: str) -> float | None:
        if key not in raw:
            return None
        value = raw[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not MIN_SECONDS <= value <= MAX_SECONDS
        ):
            problems.add(
                f"{path}.{key}",
                f"must be a number of seconds in [{MIN_SECONDS:g}, {MAX_SECONDS:g}], got {shown(value)}",
                key,
            )
            return None
        return float(value)

    interval, timeout = seconds("interval"), seconds("timeout")
    failures = raw.get("failures")
    if "failures" in raw and (
        isinstance(failures, bool) or not isinstance(failures, int) or not 1 <= failures <= MAX_FAILURES
    ):
        problems.add(
            f"{path}.failures",
            f"must be a whole number in [1, {MAX_FAILURES}], got {shown(failures)}",
            "failures",
        )
        failures = None
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.add(f"{path}.enabled", f"must be true or false, got {shown(enabled)}", "enabled")
        enabled = True
    if enabled is False:
        for key in (k for k in SETTINGS if k in raw):
            problems.add(
                f"{path}.{key}",
                "has no effect with enabled = false (no checks at all): remove it, or the enabled line",
                key,
            )
    problems.raise_any(fail)
    return HealthSpec(enabled=enabled, interval=interval, timeout=timeout, failures=failures)
