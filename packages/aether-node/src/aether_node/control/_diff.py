"""What applying a blueprint would change, per slice and node (`aether blueprint diff`). Pure: the
planner's own target placement (`_reconcile.target_placements`) on the current view, with the new
blueprint in place of the stored one, against what runs now; and how the change would go: the rollout in
flight (a canary or blue-green record, a paused rolling update) and what the new spec does with it
(`_strategies.advance`, the leader's own rule: a canary or blue-green rollout starts, goes on, is aborted
or replaced; a rolling update's surge and floor). No I/O, no writes.
"""

from __future__ import annotations

import collections
from collections.abc import Collection, Mapping, Sequence

from ..client import BlueprintDiff, NodePlacement, SliceChange
from ..core._blueprint import Blueprint, SliceSpec
from ..core._coordinates import Coordinates
from ..core._records import RolloutRecord, SliceState
from ..core._text import plural
from ..core._update_spec import UpdateStrategy
from ._allocation import NodeCapacity
from ._reconcile import REMOVING, ObservedInstance, target_placements
from ._strategies import advance, update_of
from ._strategies import running as running_of


def diff_blueprint(
    new: Blueprint,
    stored: Sequence[Blueprint],
    nodes: Sequence[NodeCapacity],
    instances: Sequence[ObservedInstance],
    *,
    now: float,
    stopping: Collection[str] = frozenset(),
    cordoned: Collection[str] = frozenset(),
    draining: Collection[str] = frozenset(),
    rollouts: Mapping[str, RolloutRecord] | None = None,
    paused: Collection[str] = frozenset(),
) -> BlueprintDiff:
    """`stored`: every blueprint the cluster holds now (the one named like `new` is replaced by it);
    `rollouts`: the rollout records in flight (artifact id → record); `paused`: the artifact ids whose
    rolling update is paused."""
    rollouts = rollouts or {}
    old = next((b for b in stored if b.name == new.name), None)
    specs = [s for b in stored if b.name != new.name for s in b.slices] + list(new.slices)
    targets = target_placements(
        specs, nodes, instances, now=now, stopping=stopping, cordoned=cordoned, draining=draining
    )
    live = {n.node_id for n in nodes}
    running: dict[str, list[ObservedInstance]] = collections.defaultdict(list)
    every: dict[str, list[ObservedInstance]] = collections.defaultdict(list)
    for instance in instances:
        if instance.node_id in live:
            every[instance.coordinates.artifact_id].append(instance)
    for instance in instances:
        if (
            instance.node_id in live
            and instance.state not in REMOVING
            and instance.state is not SliceState.FAILED
        ):
            running[instance.coordinates.artifact_id].append(instance)

    before_specs = {_artifact_id(s): s for s in (old.slices if old else ())}
    after_specs = {_artifact_id(s): s for s in new.slices}
    changes = []
    for artifact_id in sorted(before_specs.keys() | after_specs.keys()):
        spec = after_specs.get(artifact_id)
        here = running.get(artifact_id, [])
        before = collections.Counter(i.node_id for i in here)
        placement = targets.get(spec.artifact) if spec else None
        after = dict(placement.counts) if placement else {}
        grown = sum(max(0, after.get(n, 0) - before.get(n, 0)) for n in before.keys() | after.keys())
        shrunk = sum(max(0, before.get(n, 0) - after.get(n, 0)) for n in before.keys() | after.keys())
        moved = min(grown, shrunk)
        version = str(Coordinates.parse(spec.artifact).version) if spec else ""
        replaced = sum(1 for i in here if spec and str(i.coordinates.version) != version)
        if spec is None:
            kind = "removed"
        elif artifact_id not in before_specs:
            kind = "added"
        else:
            kind = (
                "changed"
                if (spec != before_specs[artifact_id] or grown or shrunk or replaced)
                else "unchanged"
            )
        changes.append(
            SliceChange(
                artifact=artifact_id,
                change=kind,
                versions_before=tuple(sorted({str(i.coordinates.version) for i in here})),
                version_after=version,
                instances_before=len(here),
                instances_after=sum(after.values()),
                added=grown - moved,
                moved=moved,
                removed=shrunk - moved,
                replaced=replaced,
                nodes=tuple(
                    NodePlacement(node_id=n, before=before.get(n, 0), after=after.get(n, 0))
                    for n in sorted(before.keys() | after.keys())
                ),
                problem=placement.reason if placement else "",
                rollout=_in_flight(rollouts.get(artifact_id), artifact_id in paused and bool(replaced)),
                update=_update(
                    spec, every.get(artifact_id, []), rollouts.get(artifact_id), artifact_id in paused, now
                )
                if spec is not None and (replaced or artifact_id in rollouts)
                else "",
            )
        )
    return BlueprintDiff(
        name=new.name,
        exists=old is not None,
        revision=old.revision if old else 0,
        changed=old is None or any(c.change != "unchanged" for c in changes),
        slices=tuple(changes),
    )


def _in_flight(record: RolloutRecord | None, paused: bool) -> str:
    """The rollout running now, in words ("" for none)."""
    if record is None:
        return "rolling update paused (`aether slice resume`)" if paused else ""
    share = "" if record.share is None else f", {record.share}% of calls on {record.candidate}"
    why = f" ({record.reason})" if record.reason else ""
    kind = record.strategy.replace("_", "-")
    return f"{kind} {record.stable} -> {record.candidate}: {record.phase.value}{share}{why}"


def _update(
    spec: SliceSpec,
    instances: Sequence[ObservedInstance],
    record: RolloutRecord | None,
    paused: bool,
    now: float,
) -> str:
    """How the change to `spec` would go, by the leader's own rule (`advance`) on what runs now."""
    coordinates = Coordinates.parse(spec.artifact)
    version = str(coordinates.version)
    update = update_of(spec)
    lead = ""
    if record is not None and record.candidate != version:
        if version == record.stable:
            return (
                f"undoes the rollout to {record.candidate} in flight: every call back on {record.stable},"
                f" the {record.candidate} instances go"
            )
        lead = f"replaces the rollout to {record.candidate} in flight; "
    after = advance(spec, record, running_of(instances, coordinates), now=now)
    if after is not None and record is not None and after.candidate == record.candidate:
        return f"the rollout to {after.candidate} in flight goes on ({after.phase.value})"
    if after is not None and after.strategy == UpdateStrategy.CANARY.value:
        steps = ", ".join(f"{s}%" for s in update.steps)
        return lead + (
            f"canary {after.stable} -> {after.candidate}: steps {steps} of the calls, each judged over"
            f" {update.step_window_s:g} s (error rate, p99); {after.stable} keeps its instances until"
            " promoted; a failing step aborts"
        )
    if after is not None:
        return lead + (
            f"blue-green {after.stable} -> {after.candidate}: {plural(spec.instances, 'new instance')}"
            f" beside the old set, then every call at once; the old set stays {update.grace_s:g} s"
        )
    if update.strategy is not UpdateStrategy.ROLLING:
        kind = update.strategy.value.replace("_", "-")
        return lead + f"{kind}: no other version serves, so every instance is placed at once"
    floor = min(spec.floor, spec.instances)
    rolling = (
        f"rolling to {version}: up to {plural(update.max_surge, 'new instance')} at a time beyond the"
        f" count to keep; an old one goes once the ACTIVE count allows, never below the floor of {floor}"
    )
    return lead + rolling + ("; paused: it holds until `aether slice resume`" if paused else "")


def _artifact_id(spec: SliceSpec) -> str:
    return spec.artifact.rsplit(":", 1)[0]
