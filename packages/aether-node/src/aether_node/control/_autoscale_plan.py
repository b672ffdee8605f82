"""The autoscaler's bookkeeping, pure: which slices it scales (and with which table), when a slice was last
scaled (read from the blueprint's revision history, so a new leader keeps the cooldowns), and which
decisions are worth recording. No I/O, no clock: `_autoscaler.py` is the shell around these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import attrs

from ..core._autoscale_spec import AutoscaleSpec
from ..core._blueprint import Blueprint, SliceSpec
from ..core._records import AutoscaleEntry, AutoscaleLog, AutoscaleSettings
from ._autoscale import Action, Decision
from ._autoscale_settings import effective

KEEP = 20  # decisions kept per slice in its AutoscaleLog
PAUSED = ("paused",)
HOLD_EVERY = 30.0  # seconds: a hold with the same leaf as the last recorded one is recorded again after this


@attrs.frozen(kw_only=True)
class Scaled:
    """One autoscaled slice: where it is in which blueprint and the table the leader uses."""

    artifact_id: str  # group:artifact
    blueprint: str
    index: int  # of the slice in its blueprint
    slice: SliceSpec
    spec: AutoscaleSpec  # the blueprint's table with the operator's settings laid over it
    paused: bool


def artifact_id_of(spec: SliceSpec) -> str:
    return spec.artifact.rsplit(":", 1)[0]


def autoscaled(blueprints: Iterable[Blueprint], settings: Mapping[str, AutoscaleSettings]) -> list[Scaled]:
    """The slices with a `[slices.autoscale]` table. A slice that several blueprints deploy is left out
    (no blueprint owns its count; `apply` refuses that case anyway)."""
    holders: dict[str, int] = {}
    found: dict[str, Scaled] = {}
    for blueprint in blueprints:
        for index, spec in enumerate(blueprint.slices):
            artifact_id = artifact_id_of(spec)
            holders[artifact_id] = holders.get(artifact_id, 0) + 1
            if spec.autoscale is None:
                continue
            own = settings.get(artifact_id)
            found[artifact_id] = Scaled(
                artifact_id=artifact_id,
                blueprint=blueprint.name,
                index=index,
                slice=spec,
                spec=effective(spec.autoscale, own),
                paused=own is not None and own.paused,
            )
    return [scaled for artifact_id, scaled in sorted(found.items()) if holders[artifact_id] == 1]


def scale_change(artifact_id: str, before: int, after: int) -> str:
    """The `change` of the revision an autoscaler decision makes."""
    return f"autoscaled {artifact_id} from {before} to {after}"


def last_scaled_at(revisions: Sequence[Blueprint], artifact_id: str) -> float | None:
    """When the count of `artifact_id` was last changed by the autoscaler or `aether slice scale`, from
    the blueprint's kept revisions (None: not in them)."""
    marks = (f"autoscaled {artifact_id} from ", f"scaled {artifact_id} from ")
    times = [b.timestamp for b in revisions if b.change.startswith(marks)]
    return max(times) if times else None


def entry_of(decision: Decision, artifact_id: str, at: float) -> AutoscaleEntry:
    return AutoscaleEntry(
        at=at,
        action=str(decision.action),
        current=decision.current,
        target=decision.target,
        path=decision.path,
        message=decision.message(artifact_id),
    )


def worth_recording(entry: AutoscaleEntry, log: AutoscaleLog | None) -> bool:
    """Every up and down; a hold when its leaf differs from the last recorded decision's, or the same
    one again after HOLD_EVERY seconds (so a steady cluster writes little, and a change of reason —
    "partial", "paused", "cooldown" — is told at once)."""
    if entry.action != str(Action.HOLD) or log is None or not log.entries:
        return True
    last = log.entries[-1]
    if last.action != entry.action or last.path[-1:] != entry.path[-1:]:
        return True
    if entry.path == PAUSED and entry.message != last.message:
        return True  # the bounds in force changed while paused
    return entry.at - last.at >= HOLD_EVERY


def appended(log: AutoscaleLog | None, entry: AutoscaleEntry, *, keep: int = KEEP) -> AutoscaleLog:
    entries = (*(log.entries if log else ()), entry)
    return AutoscaleLog(entries=entries[-keep:])


def paused_decision(current: int, spec: AutoscaleSpec) -> Decision:
    """What the autoscaler decides for a paused slice: nothing (the bounds in force are told)."""
    return Decision(
        action=Action.HOLD,
        current=current,
        target=current,
        path=PAUSED,
        reason=f"paused by an operator (min {spec.min}, max {spec.max}; resume to go on)",
    )
