"""A slice's `[slices.update]` table: how a new version replaces the running one. The record and its
validation. Pure; the blueprint parser (`_blueprint_toml`) calls `parse_update` with its own error maker,
so errors name file:line:column.

- rolling (the default): `max_surge` new instances at a time (default 1) beyond the count to keep, an
  old one removed once the ACTIVE count allows it (`control/_reconcile.py`); `aether slice pause|resume`
  holds it where it is (`control/_pause.py`);
- canary: new instances take `steps` shares of the traffic (percent, the last 100), each step held for
  `step_window_s`; the step passes if the new version's error rate exceeds the stable one's by at most
  `max_error_rate` and its p99 latency is at most `max_p99_ratio` × the stable one's or within
  `p99_slack_ms` of it (`control/_strategies.py`);
- blue_green: the full new set comes up ACTIVE beside the old one, traffic switches in one step, the
  old set stays `grace_s` seconds (an instant switch back), then goes.

Every strategy: `min_ready_s` (default 2 s; 0: off), how long a new instance must have stayed ACTIVE
before it counts as available where an ACTIVE instance would be removed for it (the floor rule of
`control/_reconcile.py`: a rolling update's old instances, those a canary or blue-green rollout lets go
once promoted, a move's or a drain's), and for canary and blue-green before a step's share of the calls
or the switch goes to it (`control/_strategies.py`): a new version that crashes soon after it starts
never replaces the instances that serve, nor gets their calls (like Kubernetes' minReadySeconds).
"""

from __future__ import annotations

import enum
import itertools
import math
from typing import Any

import attrs

from ._table_problems import Fail, Problems, key_named, unknown_key
from ._text import shown

MAX_SECONDS = 24 * 3600.0  # a limit well above any real rollout, so that typos (1e9) are caught
MAX_STEPS = 20
MAX_SURGE = 1000
# A new instance counts as available for removals once ACTIVE this long: longer than the first lives of a
# process that dies at start (the node restarts it after 0.25 s, 0.5 s, ...), short enough not to slow a
# rollout of many instances much.
DEFAULT_MIN_READY_S = 2.0
MAX_MIN_READY_S = 3600.0


class UpdateStrategy(enum.StrEnum):
    ROLLING = "rolling"
    CANARY = "canary"
    BLUE_GREEN = "blue_green"


ROLLING_KEYS = frozenset({"max_surge"})
CANARY_KEYS = frozenset({"steps", "step_window_s", "max_error_rate", "max_p99_ratio", "p99_slack_ms"})
BLUE_GREEN_KEYS = frozenset({"grace_s"})
COMMON_KEYS = frozenset({"strategy", "min_ready_s"})  # for every strategy
KEYS = COMMON_KEYS | ROLLING_KEYS | CANARY_KEYS | BLUE_GREEN_KEYS


@attrs.frozen(kw_only=True)
class UpdateSpec:
    """How a new version of the slice replaces the running one. Fields of another strategy keep their
    defaults (the parser refuses them)."""

    strategy: UpdateStrategy = UpdateStrategy.ROLLING
    max_surge: int = 1  # rolling: new instances placed at once beyond the count to keep
    steps: tuple[int, ...] = (10, 50, 100)  # canary: the new version's share of the calls, in percent
    step_window_s: float = 60.0  # canary: how long each step runs before it is judged
    max_error_rate: float = 0.01  # canary: how much its error rate (0..1) may exceed the stable one's
    max_p99_ratio: float = 1.5  # canary: its p99 at most this × the stable version's
    # canary: ... unless within this many milliseconds of it (a p99 of 4 ms against 2 ms is noise, not a
    # slower version: the default ratio alone aborted rollouts of fast slices on timing jitter)
    p99_slack_ms: float = 20.0
    grace_s: float = 300.0  # blue_green: how long the old set stays after the switch
    # Every strategy: how long a new instance must have stayed ACTIVE before an ACTIVE instance is removed
    # on the strength of it (0: at once).
    min_ready_s: float = DEFAULT_MIN_READY_S


def parse_update(raw: Any, path: str, fail: Fail) -> UpdateSpec:
    """Validate one `[slices.update]` table of the slice at `path` (e.g. slices[0].update). Raises what
    `fail` makes of every problem found (key "update" points at an `update = ...` line of the slice)."""
    problems = Problems()
    if not isinstance(raw, dict):
        problems.add(
            path, "must be a table: [slices.update] with strategy = rolling|canary|blue_green", "update"
        )
        problems.raise_any(fail)
    for key in raw:
        if key not in KEYS:
            problems.add(f"{path}.{key_named(key)}", unknown_key(key, KEYS), key)
    value = raw.get("strategy", UpdateStrategy.ROLLING.value)
    strategy = None
    try:
        strategy = UpdateStrategy(value)
    except ValueError:
        choices = ", ".join(member.value for member in UpdateStrategy)
        problems.add(f"{path}.strategy", f"must be one of {choices}, got {shown(value)}", "strategy")
    if strategy is not None:
        allowed = {
            UpdateStrategy.ROLLING: ROLLING_KEYS,
            UpdateStrategy.CANARY: CANARY_KEYS,
            UpdateStrategy.BLUE_GREEN: BLUE_GREEN_KEYS,
        }[strategy]
        for key in sorted((set(raw) & KEYS) - COMMON_KEYS - allowed):
            owner = "canary" if key in CANARY_KEYS else "rolling" if key in ROLLING_KEYS else "blue_green"
            problems.add(
                f"{path}.{key}", f"only for strategy = {owner!r} (this slice's is {strategy.value!r})", key
            )

    def number(key: str, low: float, high: float, default: float) -> float:
        if key not in raw:
            return default
        found = raw[key]
        if (
            isinstance(found, bool)
            or not isinstance(found, int | float)
            or not math.isfinite(found)
            or not low <= found <= high
        ):
            problems.add(f"{path}.{key}", f"must be a number in [{low:g}, {high:g}], got {shown(found)}", key)
            return default
        return float(found)

    defaults = UpdateSpec()
    surge = raw.get("max_surge", defaults.max_surge)
    if isinstance(surge, bool) or not isinstance(surge, int) or not 1 <= surge <= MAX_SURGE:
        problems.add(
            f"{path}.max_surge",
            f"must be a whole number in [1, {MAX_SURGE}], got {shown(surge)}",
            "max_surge",
        )
    spec = UpdateSpec(
        strategy=strategy or UpdateStrategy.ROLLING,
        max_surge=surge,
        steps=_steps(raw["steps"], f"{path}.steps", problems) if "steps" in raw else defaults.steps,
        step_window_s=number("step_window_s", 0.0, MAX_SECONDS, defaults.step_window_s),
        max_error_rate=number("max_error_rate", 0.0, 1.0, defaults.max_error_rate),
        max_p99_ratio=number("max_p99_ratio", 1.0, 1000.0, defaults.max_p99_ratio),
        p99_slack_ms=number("p99_slack_ms", 0.0, MAX_SECONDS * 1000, defaults.p99_slack_ms),
        grace_s=number("grace_s", 0.0, MAX_SECONDS, defaults.grace_s),
        min_ready_s=number("min_ready_s", 0.0, MAX_MIN_READY_S, defaults.min_ready_s),
    )
    problems.raise_any(fail)
    return spec


def _steps(steps: Any, where: str, problems: Problems) -> tuple[int, ...]:
    """The canary's steps; the defaults (with a problem added) when they are not valid."""
    if (
        not isinstance(steps, list)
        or not steps
        or len(steps) > MAX_STEPS
        or any(isinstance(s, bool) or not isinstance(s, int) for s in steps)
    ):
        problem = (
            f"must be a list of 1 to {MAX_STEPS} integer percentages, e.g. [10, 50, 100]; got {shown(steps)}"
        )
    elif any(not 1 <= s <= 100 for s in steps):
        problem = f"each step must be between 1 and 100 (percent), got {shown(steps)}"
    elif any(later <= earlier for earlier, later in itertools.pairwise(steps)):
        problem = f"steps must grow, got {shown(steps)}"
    elif steps[-1] != 100:
        problem = f"the last step must be 100 (all traffic on the new version), got {shown(steps)}"
    else:
        return tuple(steps)
    problems.add(where, problem, "steps")
    return UpdateSpec().steps
