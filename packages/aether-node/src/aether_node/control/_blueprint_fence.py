"""A removal goes only under the blueprints it was planned from. Pure: (the blueprint records a pass
planned from, as the leader's cache held them) → the compare each removal's transaction carries. No I/O.

The leader plans from its copy of the blueprints and writes the pass's commands some milliseconds later.
An operator's change that lands in between (a scale-down and the scale-up right after it, a delete and
the same blueprint applied again, an upgrade with a floor) would otherwise meet UNLOADs planned for the
blueprint it replaced: instances removed for nothing, or a slice taken below the floor its new
blueprint asks for. So an instance's removal compares the mod revision of the blueprint that deploys its
slice as the pass read it (changed or deleted since: the removal is not written, the next pass plans on
the new blueprint); the removal of a slice in no blueprint compares `cluster/slice-claims`, which every
write that may give a blueprint a slice moves (`_revisions.store_revision`). A pass that loses that
race writes nothing for those instances and plans again on the change's watch event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from aether_kv import Compare, CompareOp, CompareTarget, KeyValue

from ..core._blueprint import Blueprint
from ..core._coordinates import Coordinates
from ..core._errors import InvalidCoordinatesError
from ..core._schema import BLUEPRINTS, SLICE_CLAIMS, InstanceKey


def _unchanged(key: str, mod_revision: int) -> Compare:
    return Compare(key=key, target=CompareTarget.MOD_REVISION, op=CompareOp.EQ, operand=mod_revision)


@attrs.frozen
class BlueprintFence:
    """The compares of one pass's removals: per artifact id, the blueprint that deploys it unchanged;
    for any other, `cluster/slice-claims` unchanged."""

    by_artifact: Mapping[str, Compare]
    unclaimed: Compare

    @classmethod
    def of(
        cls, blueprints: Sequence[Blueprint], records: Mapping[str, KeyValue], claims: KeyValue | None
    ) -> BlueprintFence:
        """`blueprints` as the pass decoded them from `records` (the cache's `blueprints/` copy, read in
        the same step: its mod revisions are theirs); `claims`: the cache's `cluster/slice-claims`."""
        by_artifact: dict[str, Compare] = {}
        for blueprint in blueprints:
            key = BLUEPRINTS + blueprint.name
            found = records.get(key)
            if found is None:
                continue
            for spec in blueprint.slices:
                try:
                    artifact_id = Coordinates.parse(spec.artifact).artifact_id
                except InvalidCoordinatesError:
                    continue
                by_artifact[artifact_id] = _unchanged(key, found.mod_revision)
        return cls(by_artifact, _unchanged(SLICE_CLAIMS, claims.mod_revision if claims else 0))

    def removal(self, instance_key: str) -> Compare:
        """The compare the removal of the instance at `instance_key` carries."""
        parsed = InstanceKey.parse(instance_key)
        if parsed is None:
            return self.unclaimed
        return self.by_artifact.get(parsed.coordinates.artifact_id, self.unclaimed)
