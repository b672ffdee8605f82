"""A paused rolling update (`aether slice pause|resume`, `cluster/paused/{group:artifact}`). Pure: what
the planner should aim for while a slice's version change is paused. No I/O, no clock.

While paused, the rolling update of a slice stays where it is: the planner creates no instance of it
(`_reconcile.plan(..., frozen=)`; but what lost nodes took is made up to the floor, with the version
asked for) and holds the old version's ACTIVE instances (`held`: never removed,
not counted against the surge), so both versions keep serving what they serve. Pausing removes nothing, so
it never takes a slice below its floor (`min_available`); resuming hands the slice back to the rolling
rule, floor included. A pause of a slice with no version change in progress changes nothing (scaling
and moves go on); a change of count asked for while paused waits for the resume.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import attrs

from aether_kv import KeyValue

from ..core._bad_records import log_once
from ..core._blueprint import SliceSpec
from ..core._coordinates import Coordinates
from ..core._errors import InvalidCoordinatesError
from ..core._records import PausedRollout, RecordError, SliceState, decode_record
from ..core._schema import PAUSED
from ..core._text import plural
from ._instance_index import InstanceIndex, Variant, as_index
from ._reconcile import ObservedInstance, Problem

log = logging.getLogger("aether_node.cluster")


@attrs.frozen(kw_only=True)
class Paused:
    held: frozenset[str]  # artifact ids paused mid-change: nothing created, the old ACTIVE instances stay
    problems: tuple[Problem, ...]  # one per paused slice mid-change: where it stands


def pause_specs(
    specs: Sequence[SliceSpec],
    instances: Iterable[ObservedInstance] | InstanceIndex,
    paused: Mapping[str, PausedRollout],
) -> Paused:
    """The paused slices that are mid-change, to hold where they are (see the module), and what to say.
    `instances`: a list, or an `InstanceIndex`."""
    if not paused:
        return Paused(held=frozenset(), problems=())
    index = as_index(instances)
    held: set[str] = set()
    problems: list[Problem] = []
    for spec in specs:
        try:
            coordinates = Coordinates.parse(spec.artifact)
        except InvalidCoordinatesError:
            continue
        artifact_id = coordinates.artifact_id
        if artifact_id not in paused:
            continue
        versions: set[str] = set()
        old_active = new_active = 0
        wanted = Variant.of(coordinates, spec.config)
        for states in index.artifact(artifact_id).nodes.values():
            for variant, by_state in states.items():
                count = len(by_state.get(SliceState.ACTIVE, ()))
                if variant == wanted:
                    new_active += count
                elif count:
                    old_active += count
                    same = variant.version == wanted.version
                    versions.add(f"{variant.version} (old config)" if same else variant.version)
        if not old_active:
            continue
        held.add(artifact_id)
        problems.append(
            Problem(
                artifact=artifact_id,
                message=(
                    f"paused: the update to {coordinates.version} stays where it is"
                    f" ({new_active} of {spec.instances} ACTIVE on {coordinates.version};"
                    f" {', '.join(sorted(versions))} keeps {plural(old_active, 'ACTIVE instance')});"
                    f" `aether slice resume {artifact_id}` goes on"
                ),
            )
        )
    return Paused(held=frozenset(held), problems=tuple(problems))


def merge_problems(*groups: Iterable[Problem]) -> tuple[Problem, ...]:
    """One problem per artifact: the messages of several sources joined, in order."""
    merged: dict[str, list[str]] = {}
    for group in groups:
        for problem in group:
            merged.setdefault(problem.artifact, []).append(problem.message)
    return tuple(Problem(artifact=a, message="; ".join(m)) for a, m in merged.items())


def decode_paused(items: Mapping[str, KeyValue]) -> dict[str, PausedRollout]:
    """`cluster/paused/` keys → artifact id → its record. A record that does not decode is logged and
    skipped (the slice then updates as if not paused)."""
    found: dict[str, PausedRollout] = {}
    for key, kv in items.items():
        if not key.startswith(PAUSED):
            continue
        try:
            found[key[len(PAUSED) :]] = decode_record(key, kv.value, PausedRollout)
        except RecordError as error:
            log_once(log, error, key, kv.mod_revision)
    return found
