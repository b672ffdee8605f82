"""The version that last served each slice: the leader's `cluster/serving/{group:artifact}` records
(`ServingVersion`). Pure: decoding them, and the puts and deletes that keep them. No I/O.

A variant (version and config) serves once as many of its instances are ACTIVE on live nodes as the
slice's floor asks (`min_available`, at most its instance count; at least one): the wanted one if it
does, else the one with the most (an update that cannot go on: its old version, also where the leader
never saw it serve as the wanted one, the update coming right after it went ACTIVE). The leader records
it once per change. While an update cannot place its new version (an install that fails
everywhere), the planner keeps the old version serving at its count (`_reconcile.plan`): what a lost
node took of it is made up from the old instances still running; where lost nodes took every one of
them, the version recorded here says which to bring back (`plan(served=...)`). A slice in no blueprint
has its record deleted: a blueprint applied long after never brings back a version from before.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from aether_kv import Delete, KeyValue, Put

from ..core._bad_records import log_once
from ..core._blueprint import SliceSpec
from ..core._coordinates import Coordinates
from ..core._errors import InvalidCoordinatesError
from ..core._records import RecordError, ServingVersion, SliceState, decode_record, encode_record
from ..core._schema import SERVING, serving_key
from ._instance_index import ArtifactInstances, InstanceIndex, Variant

if TYPE_CHECKING:  # (the planner, which defines it, imports this module)
    from ._reconcile import ObservedInstance

log = logging.getLogger("aether_node.cluster")


def decode_serving(raw: Mapping[str, KeyValue]) -> dict[str, ServingVersion]:
    """The `cluster/serving/` records (key → KeyValue), by artifact id; one that does not decode is left
    out (logged once per change) and is replaced once its slice serves again."""
    found: dict[str, ServingVersion] = {}
    for key, kv in raw.items():
        try:
            found[key[len(SERVING) :]] = decode_record(key, kv.value, ServingVersion)
        except RecordError as error:
            log_once(log, error, key, kv.mod_revision)
    return found


def variant_of(record: ServingVersion) -> Variant | None:
    """The variant a record names (None if its coordinates do not parse)."""
    try:
        return Variant.of(Coordinates.parse(record.coordinates), record.config)
    except InvalidCoordinatesError:
        return None


def serving_changes(
    specs: Sequence[SliceSpec],
    index: InstanceIndex,
    live: Collection[str],
    recorded: Mapping[str, ServingVersion],
    present: Collection[str],
) -> list[Put | Delete]:
    """The writes that bring the records up to date: a put for each slice whose serving variant is not
    recorded so, a delete for each record (`present`: the artifact ids with a record, decoded or not) of a
    slice in no blueprint."""
    changes: list[Put | Delete] = []
    wanted: set[str] = set()
    for spec in specs:
        try:
            coordinates = Coordinates.parse(spec.artifact)
        except InvalidCoordinatesError:
            continue
        artifact_id = coordinates.artifact_id
        wanted.add(artifact_id)
        found = _serving(spec, Variant.of(coordinates, spec.config), index.artifact(artifact_id), live)
        record = recorded.get(artifact_id)
        if found is not None and (record is None or variant_of(record) != found[0]):
            value = ServingVersion(coordinates=str(found[0].coordinates), config=dict(found[1]))
            changes.append(Put(key=serving_key(artifact_id), value=encode_record(value)))
    changes += [Delete(key=serving_key(a)) for a in sorted(set(present) - wanted)]
    return changes


def _serving(
    spec: SliceSpec, wanted: Variant, group: ArtifactInstances, live: Collection[str]
) -> tuple[Variant, Mapping[str, Any]] | None:
    """The variant that serves the slice, and its config: one with as many instances ACTIVE on live nodes
    as the slice's floor asks (at least one) — the wanted one if it has them, else the one with the most
    (`most_active`): the old version of an update that cannot go on, also where the leader never saw the
    wanted one serve before the update came. None if none has."""
    need = max(1, min(spec.floor, spec.instances))
    counts = _active_counts(group, live)
    if counts.get(wanted, 0) >= need:
        return wanted, spec.config
    found = most_active(group, live)
    return (found.variant, found.config) if found is not None and counts[found.variant] >= need else None


@attrs.frozen
class Serving:
    variant: Variant
    config: Mapping[str, Any]


def most_active(
    group: ArtifactInstances, nodes: Collection[str], besides: Variant | None = None
) -> Serving | None:
    """The variant (other than `besides`) with the most ACTIVE instances on `nodes`, of two as many the
    one with the newest instance, and its config; None if none is ACTIVE. Counts per bucket: only a tie
    looks at instances."""
    counts = _active_counts(group, nodes)
    counts.pop(besides, None)  # type: ignore[arg-type]
    if not counts:
        return None
    top = max(counts.values())
    tied = {v for v, count in counts.items() if count == top}
    instances = _active(group, nodes, tied)
    if len(tied) > 1:
        instances = [max(instances, key=lambda i: i.instance)]
    return Serving(instances[0].variant, instances[0].config)


def _active_counts(group: ArtifactInstances, nodes: Collection[str]) -> dict[Variant, int]:
    counts: dict[Variant, int] = {}
    for node_id, variants in group.nodes.items():
        if node_id in nodes:
            for variant, states in variants.items():
                active = len(states.get(SliceState.ACTIVE, {}))
                if active:
                    counts[variant] = counts.get(variant, 0) + active
    return counts


def _active(
    group: ArtifactInstances, nodes: Collection[str], variants: Collection[Variant]
) -> list[ObservedInstance]:
    """The ACTIVE instances of `variants` on `nodes` (of one variant: one of them, all it needs)."""
    found: list[ObservedInstance] = []
    for node_id, on_node in group.nodes.items():
        if node_id in nodes:
            for variant in variants:
                found += on_node.get(variant, {}).get(SliceState.ACTIVE, {}).values()
                if found and len(variants) == 1:
                    return found[:1]
    return found
