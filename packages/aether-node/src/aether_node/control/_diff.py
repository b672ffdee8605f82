"""What applying a blueprint would change, per slice and node (`aether blueprint diff`). Pure: the
planner's own target placement (`_reconcile.target_placements`) on the current view, with the new
blueprint in place of the stored one, against what runs now. No I/O, no writes.
"""

from __future__ import annotations

import collections
from collections.abc import Collection, Sequence

from ..client import BlueprintDiff, NodePlacement, SliceChange
from ..core._blueprint import Blueprint, SliceSpec
from ..core._coordinates import Coordinates
from ..core._records import SliceState
from ._allocation import NodeCapacity
from ._reconcile import REMOVING, ObservedInstance, target_placements


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
) -> BlueprintDiff:
    """`stored`: every blueprint the cluster holds now (the one named like `new` is replaced by it)."""
    old = next((b for b in stored if b.name == new.name), None)
    specs = [s for b in stored if b.name != new.name for s in b.slices] + list(new.slices)
    targets = target_placements(
        specs, nodes, instances, now=now, stopping=stopping, cordoned=cordoned, draining=draining
    )
    live = {n.node_id for n in nodes}
    running: dict[str, list[ObservedInstance]] = collections.defaultdict(list)
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
            )
        )
    return BlueprintDiff(
        name=new.name,
        exists=old is not None,
        revision=old.revision if old else 0,
        changed=old is None or any(c.change != "unchanged" for c in changes),
        slices=tuple(changes),
    )


def _artifact_id(spec: SliceSpec) -> str:
    return spec.artifact.rsplit(":", 1)[0]
