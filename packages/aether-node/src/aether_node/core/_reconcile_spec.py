"""The reconciliation policy: how eagerly the leader moves instances. The record (the cluster's, kept at
`cluster/reconcile/policy`, and a blueprint's `[policy]` table, which overrides it for that blueprint's
slices), the presets, how the layers combine, and validation. Pure.

- `rebalance_delay_s`: after a node is lost, its instances are not replaced for this long, in case it
  comes back (Helix's delayed rebalance). The availability floor wins: as many are replaced at once as
  the slice's floor (`min_available`) needs; the rest wait. A node back within the delay runs its own
  instances again (their records were kept); after it, or on `aether cluster rebalance`, the rest are
  replaced as before.
- `max_moves`: at most this many moves in flight in the whole cluster (a move: an instance placed to
  replace one on another node that stays until it is ACTIVE: a drain, an evening-out after a node
  joined). 0: no limit. Placements for a scale-up, a new slice or a lost node are not moves.

Presets: `aggressive` (the default: replace at once, no limit on moves) and `conservative` (wait 60 s
for a lost node, at most 2 moves at a time).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from ._records import SCHEMA_VERSION
from ._table_problems import Fail, Problems, key_named, unknown_key
from ._text import shown

MAX_DELAY_S = 24 * 3600.0  # well above any real wait, so that typos (1e9) are caught
MAX_MOVES = 10_000
KEYS = frozenset({"preset", "rebalance_delay_s", "max_moves"})


@attrs.frozen(kw_only=True)
class ResolvedPolicy:
    """The values in force for a slice: every field set."""

    rebalance_delay_s: float = 0.0
    max_moves: int = 0  # 0: no limit


PRESETS: Mapping[str, ResolvedPolicy] = {
    "aggressive": ResolvedPolicy(rebalance_delay_s=0.0, max_moves=0),
    "conservative": ResolvedPolicy(rebalance_delay_s=60.0, max_moves=2),
}
DEFAULT_PRESET = "aggressive"
DEFAULT = PRESETS[DEFAULT_PRESET]


@attrs.frozen(kw_only=True)
class ReconcilePolicy:
    """A layer of policy: a preset (or none: the layer below's values) and values that override it (None:
    not set here). The cluster's (`cluster/reconcile/policy`) lies over the default, a blueprint's
    `[policy]` over the cluster's."""

    preset: str = ""
    rebalance_delay_s: float | None = None
    max_moves: int | None = None
    updated: float = 0.0  # when an operator set it (the cluster's record)
    schema_version: int = SCHEMA_VERSION


def resolve(*layers: ReconcilePolicy | None) -> ResolvedPolicy:
    """The default, then each layer in turn (the cluster's, then a blueprint's): a layer's preset replaces
    every value below it, then its own values replace the preset's."""
    resolved = DEFAULT
    for layer in layers:
        if layer is None:
            continue
        if layer.preset:
            resolved = PRESETS.get(layer.preset, resolved)
        if layer.rebalance_delay_s is not None:
            resolved = attrs.evolve(resolved, rebalance_delay_s=layer.rebalance_delay_s)
        if layer.max_moves is not None:
            resolved = attrs.evolve(resolved, max_moves=layer.max_moves)
    return resolved


def parse_policy(raw: Any, path: str, fail: Fail) -> ReconcilePolicy:
    """Validate a `[policy]` table (or the API's body of `cluster policy set`). Raises what `fail` makes
    of every problem found (key "policy" points at a `policy = ...` line of the blueprint)."""
    problems = Problems()
    if not isinstance(raw, dict):
        problems.add(path, "must be a table: [policy] with preset, rebalance_delay_s, max_moves", "policy")
        problems.raise_any(fail)
    for key in raw:
        if key not in KEYS:
            problems.add(f"{path}.{key_named(key)}", unknown_key(key, KEYS), key)
    preset = raw.get("preset", "")
    if preset != "" and preset not in PRESETS:
        problems.add(
            f"{path}.preset", f"must be one of {', '.join(sorted(PRESETS))}, got {shown(preset)}", "preset"
        )
    delay = raw.get("rebalance_delay_s")
    if delay is not None and (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not math.isfinite(delay)
        or not 0 <= delay <= MAX_DELAY_S
    ):
        problems.add(
            f"{path}.rebalance_delay_s",
            f"must be a number of seconds in [0, {MAX_DELAY_S:g}], got {shown(delay)}",
            "rebalance_delay_s",
        )
    moves = raw.get("max_moves")
    if moves is not None and (
        isinstance(moves, bool) or not isinstance(moves, int) or not 0 <= moves <= MAX_MOVES
    ):
        problems.add(
            f"{path}.max_moves",
            f"must be a whole number in [0, {MAX_MOVES}] (0: no limit), got {shown(moves)}",
            "max_moves",
        )
    problems.raise_any(fail)
    return ReconcilePolicy(
        preset=preset,
        rebalance_delay_s=None if delay is None else float(delay),
        max_moves=moves,
    )


def describe(policy: ResolvedPolicy) -> str:
    """`rebalance delay 60 s, at most 2 moves at a time` (or `no limit on moves`)."""
    moves = f"at most {policy.max_moves} moves at a time" if policy.max_moves else "no limit on moves"
    delay = (
        f"rebalance delay {policy.rebalance_delay_s:g} s"
        if policy.rebalance_delay_s
        else "no rebalance delay"
    )
    return f"{delay}, {moves}"
