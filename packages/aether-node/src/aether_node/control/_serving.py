"""The version that last served each slice: the leader's `cluster/serving/{group:artifact}` records
(`ServingVersion`). Pure: decoding them, and the puts and deletes that keep them. No I/O.

A slice's wanted variant (version and config) serves once as many of its instances are ACTIVE on live
nodes as its floor asks (`min_available`, at most its instance count; at least one): the leader records
it then, once per change. While an update cannot place its new version (an install that fails
everywhere), the planner keeps the old version serving at its count (`_reconcile.plan`): what a lost
node took of it is made up from the old instances still running; where lost nodes took every one of
them, the version recorded here says which to bring back (`plan(serving=...)`). A slice in no blueprint
has its record deleted: a blueprint applied long after never brings back a version from before.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence

from aether_kv import Delete, KeyValue, Put

from ..core._bad_records import log_once
from ..core._blueprint import SliceSpec
from ..core._coordinates import Coordinates
from ..core._errors import InvalidCoordinatesError
from ..core._records import RecordError, ServingVersion, SliceState, decode_record, encode_record
from ..core._schema import SERVING, serving_key
from ._instance_index import InstanceIndex, Variant

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
    """The writes that bring the records up to date: a put for each wanted variant that serves and is not
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
        variant = Variant.of(coordinates, spec.config)
        record = recorded.get(artifact_id)
        if record is not None and variant_of(record) == variant:
            continue
        group = index.artifact(artifact_id)
        active = sum(
            len(group.nodes[node_id].get(variant, {}).get(SliceState.ACTIVE, {}))
            for node_id in group.nodes
            if node_id in live
        )
        if active and active >= min(spec.floor, spec.instances):
            value = ServingVersion(coordinates=str(coordinates), config=dict(spec.config))
            changes.append(Put(key=serving_key(artifact_id), value=encode_record(value)))
    changes += [Delete(key=serving_key(a)) for a in sorted(set(present) - wanted)]
    return changes
