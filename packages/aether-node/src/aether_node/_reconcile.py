"""Reconciliation planning for the ClusterDeploymentManager. Pure: (blueprints, live nodes, observed
instances) → actions. No I/O, no clock.

Per artifact (`group:artifact`), against the blueprint's spec:
- records on nodes that are gone are deleted (their replacements are placed on survivors);
- the allocation (`_allocation`) says how many instances of the wanted version each node should run;
  missing ones are created, within a surge budget (at most `instances + max_surge` placed at once);
- surplus, old-version and unwanted instances are removed — not-yet-ACTIVE ones first, then the most
  recently added — but an ACTIVE one only while the ACTIVE count stays at the wanted number: a move
  or a version rollout puts the replacement ACTIVE before the old instance goes;
- a FAILED instance keeps its node out of the running for that artifact (the work is retried elsewhere)
  for `failed_retry_after` seconds, then its record is removed and the node may be tried again; what
  cannot be placed is reported with the reasons.
Running it again on the same view gives the same actions; running it on the view after its actions gives
none: it is idempotent, and safe to restart after a leader change.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence

import attrs

from ._allocation import NodeCapacity, allocate_all
from ._blueprint import SliceSpec
from ._coordinates import Coordinates
from ._errors import InvalidCoordinatesError
from ._records import SliceState

REMOVING = frozenset({SliceState.UNLOAD, SliceState.UNLOADING})


@attrs.frozen(kw_only=True)
class ObservedInstance:
    node_id: str
    coordinates: Coordinates
    instance: int
    state: SliceState
    reason: str = ""
    timestamp: float = 0.0
    key: str
    mod_revision: int


@attrs.frozen(kw_only=True)
class CreateInstance:
    node_id: str
    coordinates: Coordinates
    instance: int
    config: Mapping[str, object]
    # A rebalancing move: this instance replaces a surplus one on `moved_from` (removed once it is ACTIVE).
    moved_from: str = ""


@attrs.frozen(kw_only=True)
class RemoveInstance:
    """Write UNLOAD (the node deactivates, then unloads and deletes the record)."""

    key: str
    mod_revision: int
    why: str


@attrs.frozen(kw_only=True)
class ActivateInstance:
    """Write ACTIVATE on an instance left LOADED (someone deactivated it): the cluster wants it serving."""

    key: str
    mod_revision: int


@attrs.frozen(kw_only=True)
class DeleteRecord:
    """A record of a node that is gone."""

    key: str
    mod_revision: int


Action = CreateInstance | RemoveInstance | ActivateInstance | DeleteRecord


@attrs.frozen(kw_only=True)
class Problem:
    artifact: str
    message: str


@attrs.frozen(kw_only=True)
class Plan:
    actions: tuple[Action, ...]
    problems: tuple[Problem, ...]


def _newest_first(instances: Iterable[ObservedInstance]) -> list[ObservedInstance]:
    """Removal order: not yet ACTIVE first, then the most recently added (highest instance number)."""
    return sorted(instances, key=lambda i: (i.state is SliceState.ACTIVE, -i.instance))


def plan(
    specs: Sequence[SliceSpec],
    nodes: Sequence[NodeCapacity],
    instances: Sequence[ObservedInstance],
    *,
    now: float = 0.0,
    max_surge: int = 1,
    failed_retry_after: float = 60.0,
) -> Plan:
    live = {n.node_id for n in nodes}
    wanted: dict[str, tuple[SliceSpec, Coordinates]] = {}
    problems: list[Problem] = []
    for spec in specs:
        try:
            coordinates = Coordinates.parse(spec.artifact)
        except InvalidCoordinatesError as error:  # a record the API would have refused: report, skip it
            problems.append(Problem(artifact=spec.artifact, message=f"not deployed: {error.message}"))
            continue
        wanted.setdefault(coordinates.artifact_id, (spec, coordinates))
    by_artifact: dict[str, list[ObservedInstance]] = collections.defaultdict(list)
    for observed in instances:
        by_artifact[observed.coordinates.artifact_id].append(observed)

    actions: list[Action] = []
    current: dict[str, dict[str, int]] = {}
    excluded: dict[str, frozenset[str]] = {}
    for artifact_id, (spec, coordinates) in wanted.items():
        placed = [
            i
            for i in by_artifact.get(artifact_id, ())
            if i.node_id in live
            and i.coordinates == coordinates
            and i.state not in REMOVING
            and i.state is not SliceState.FAILED
        ]
        # Scaling down keeps the oldest instances: the allocation only sees those.
        kept = sorted(placed, key=lambda i: i.instance)[: spec.instances]
        current[spec.artifact] = dict(collections.Counter(i.node_id for i in kept))
        failed_on = {
            i.node_id
            for i in by_artifact.get(artifact_id, ())
            if i.coordinates == coordinates
            and i.state is SliceState.FAILED
            and i.node_id in live
            and now - i.timestamp < failed_retry_after
        }
        if failed_on:
            excluded[spec.artifact] = frozenset(failed_on)
    placements = allocate_all([s for s, _ in wanted.values()], nodes, current, excluded)

    for artifact_id in sorted(set(by_artifact) | set(wanted)):
        observed = by_artifact.get(artifact_id, [])
        next_instance = max((i.instance for i in observed), default=0) + 1
        for gone in sorted((i for i in observed if i.node_id not in live), key=lambda i: i.key):
            actions.append(DeleteRecord(key=gone.key, mod_revision=gone.mod_revision))
        alive = [i for i in observed if i.node_id in live and i.state not in REMOVING]
        if artifact_id not in wanted:
            for instance in sorted(alive, key=lambda i: i.key):
                actions.append(
                    RemoveInstance(
                        key=instance.key, mod_revision=instance.mod_revision, why="not in any blueprint"
                    )
                )
            continue
        spec, coordinates = wanted[artifact_id]
        placement = placements[spec.artifact]
        mine = [i for i in alive if i.coordinates == coordinates]
        failed = [i for i in mine if i.state is SliceState.FAILED]
        placed = [i for i in mine if i.state is not SliceState.FAILED]
        old = [i for i in alive if i.coordinates != coordinates]
        old_active = [i for i in old if i.state is SliceState.ACTIVE]
        active = sum(i.state is SliceState.ACTIVE for i in placed) + len(old_active)
        # An ACTIVE instance is kept until this many are ACTIVE without it: as many as the cluster can place
        # (a slice that does not fully fit still finishes a rollout or a strategy switch; its shortfall is
        # reported as a problem below, not made up for by instances the allocation does not want).
        wanted_count = spec.instances - placement.unplaced

        removals: list[tuple[ObservedInstance, str]] = []
        for instance in old:
            if instance.state is not SliceState.ACTIVE:
                removals.append((instance, f"replaced by version {coordinates.version}"))
        by_node: dict[str, list[ObservedInstance]] = collections.defaultdict(list)
        for instance in placed:
            by_node[instance.node_id].append(instance)
        surplus: list[ObservedInstance] = []
        for node_id, here in by_node.items():
            extra = len(here) - placement.counts.get(node_id, 0)
            if extra > 0:
                surplus.extend(_newest_first(here)[:extra])
        candidates = [(i, "scaled down or moved") for i in _newest_first(surplus)]
        candidates += [(i, f"replaced by version {coordinates.version}") for i in _newest_first(old_active)]
        for instance, why in candidates:
            if instance.state is SliceState.ACTIVE:
                if active - 1 < wanted_count:
                    continue  # its replacement is not ACTIVE yet
                active -= 1
            removals.append((instance, why))

        # Everything still running counts against the surge — also what is being removed right now (its
        # UNLOAD has not taken effect yet): a new instance is created only once the old one is gone.
        removing_now = [i for i in observed if i.node_id in live and i.state in REMOVING]
        in_place = len(placed) + len(old) + len(removing_now)

        budget = max(0, wanted_count + max_surge - in_place)
        # Creations while another node holds a surplus ACTIVE instance of this version are moves: name
        # the node each one moves from (for the event log), oldest surplus first, one per surplus.
        move_sources = [i.node_id for i in reversed(_newest_first(surplus)) if i.state is SliceState.ACTIVE]
        for node_id in sorted(placement.counts):
            missing = placement.counts[node_id] - len(by_node.get(node_id, ()))
            for _ in range(max(0, missing)):
                if budget == 0:
                    break
                actions.append(
                    CreateInstance(
                        node_id=node_id,
                        coordinates=coordinates,
                        instance=next_instance,
                        config=spec.config,
                        moved_from=move_sources.pop(0) if move_sources else "",
                    )
                )
                next_instance += 1
                budget -= 1

        # A FAILED record keeps its node out of the running for this artifact; after a while it is
        # removed, so that node may be tried again — at most once per `failed_retry_after`.
        removals += [
            (i, f"retrying: failed {now - i.timestamp:.0f} s ago")
            for i in failed
            if now - i.timestamp >= failed_retry_after
        ]
        removal_keys = {i.key for i, _ in removals}
        for instance in sorted(placed, key=lambda i: i.key):
            if instance.state is SliceState.LOADED and instance.key not in removal_keys:
                actions.append(ActivateInstance(key=instance.key, mod_revision=instance.mod_revision))
        for instance, why in sorted(removals, key=lambda r: r[0].key):
            actions.append(RemoveInstance(key=instance.key, mod_revision=instance.mod_revision, why=why))
        if placement.unplaced:
            reasons = "; ".join(f"{i.node_id}: {i.reason}" for i in sorted(failed, key=lambda i: i.node_id))
            message = placement.reason + (f"; failed on {reasons}" if reasons else "")
            problems.append(Problem(artifact=artifact_id, message=message))
    return Plan(actions=tuple(actions), problems=tuple(problems))
