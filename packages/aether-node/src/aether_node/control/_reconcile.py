"""Reconciliation planning for the ClusterDeploymentManager. Pure: (blueprints, live nodes, observed
instances) → actions. No I/O, no clock.

Per artifact (`group:artifact`), against the blueprint's spec:
- records on nodes that are gone are deleted (their replacements are placed on survivors);
- a node that is stopping (its registration says `leaving`) gets no new instance and is otherwise left
  alone: it stops and forgets its own instances, and those do not count as available meanwhile;
- the allocation (`_allocation`) says how many instances of the wanted version each node should run;
  missing ones are created, within a surge budget (at most `instances + max_surge` placed at once; a
  rolling `[slices.update]` table's own `max_surge` wins over the leader's);
- surplus, old-version and unwanted instances are removed — not-yet-ACTIVE ones first, then the most
  recently added — but an ACTIVE one only while the ACTIVE count stays at the number to keep: as many as
  the cluster could hold were no node excluded after failures (a move or a version rollout puts the
  replacement ACTIVE before the old instance goes; a rollout whose new version fails keeps the old one
  serving), and never fewer than the slice's floor (`min_available`). Only the loss of a node takes the
  ACTIVE count below the floor; a change the floor holds back waits and says why (a `Problem`);
- a cordoned node (an operator's `aether node cordon`) gets no new instance and keeps what it runs; a
  draining node (`aether node drain`) gets none either and its instances are moved off like any surplus:
  each replacement goes ACTIVE elsewhere before the instance it replaces is removed, and never below the
  floor (a drain that would break a floor waits and says so); its FAILED and not-yet-ACTIVE instances go
  at once, so it ends with nothing (DRAINED);
- the old version of a canary or blue-green rollout in progress is held (`held`): its ACTIVE instances
  stay and do not count against the surge, whatever the new version does (`_strategies.py`);
- the reconciliation policy (`_rebalance.py`): the instances of a node lost less than its slice's
  `rebalance_delay_s` ago keep their records and are replaced only as far as the floor needs; at most
  `max_moves` moves (replacements with `moved_from`) are in flight in the whole cluster;
- a FAILED instance keeps its node out of the running for that artifact (the work is retried elsewhere)
  for `failed_retry_after` seconds, then its record is removed and the node may be tried again; what
  cannot be placed is reported with the reasons.
Running it again on the same view gives the same actions; running it on the view after its actions gives
none: it is idempotent, and safe to restart after a leader change.
"""

from __future__ import annotations

import collections
from collections.abc import Collection, Iterable, Mapping, Sequence

import attrs

from ..core._blueprint import SliceSpec
from ..core._coordinates import Coordinates
from ..core._errors import InvalidCoordinatesError
from ..core._reconcile_spec import DEFAULT, ResolvedPolicy
from ..core._records import REMOVING, SliceState
from ..core._text import plural
from ..core._update_spec import UpdateStrategy
from ._allocation import NodeCapacity, Placement, allocate_all
from ._rebalance import await_lost


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
    moved_from: str = ""  # a move's replacement: the node of the instance it replaces (until ACTIVE)


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


def rolling(spec: SliceSpec) -> bool:
    """Whether the slice's own `[slices.update]` says rolling (then its `max_surge` counts)."""
    return spec.update is not None and spec.update.strategy is UpdateStrategy.ROLLING


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
    stopping: Collection[str] = frozenset(),
    cordoned: Collection[str] = frozenset(),
    draining: Collection[str] = frozenset(),
    held: Collection[str] = frozenset(),
    lost: Mapping[str, float] | None = None,
    policies: Mapping[str, ResolvedPolicy] | None = None,
    frozen: Collection[str] = frozenset(),
) -> Plan:
    """`nodes` are the live nodes; those named in `stopping` are live but shutting down (no placement),
    those in `cordoned` take no new instance, those in `draining` take none and are emptied. For the
    artifact ids in `held` (a canary or blue-green rollout in progress, `_strategies.py`) the ACTIVE
    instances of other versions stay: they are not removed and do not count against the surge. `lost`:
    the nodes the leader saw lost and since when; `policies`: the reconciliation policy per artifact id
    (missing: the default, no delay and no limit). For the artifact ids in `frozen` (a paused rolling
    update, `_pause.py`; they are `held` too) no instance is created."""
    policies = policies or {}
    awaiting = await_lost(specs, instances, {n.node_id for n in nodes}, lost or {}, policies, now=now)
    specs = awaiting.specs
    view = _View.of(specs, nodes, instances, now, failed_retry_after, stopping, cordoned, draining)
    live, stopping, draining, cordoned = view.live, view.stopping, view.draining, view.cordoned
    placeable, wanted, by_artifact, excluded = view.placeable, view.wanted, view.by_artifact, view.excluded
    problems = list(view.problems)
    actions: list[Action] = []
    wanted_specs = [s for s, _ in wanted.values()]
    current = view.current
    placements = view.targets()
    # What the cluster could hold were no node excluded after failures: the number of ACTIVE instances to
    # keep. Failures of a new version hold its rollout back (the old instances keep serving); only a lack
    # of room lets a change settle for fewer.
    # (Only worth a second pass where exclusions left something unplaced: otherwise it changes nothing.)
    short = any(placements[artifact].unplaced for artifact in excluded)
    room = allocate_all(wanted_specs, placeable, current, cordoned=cordoned) if short else placements
    # Moves in flight in the whole cluster (a replacement with `moved_from` not yet ACTIVE), for max_moves.
    moving = sum(
        1
        for i in instances
        if i.moved_from
        and i.node_id in live
        and i.state not in REMOVING
        and i.state not in (SliceState.ACTIVE, SliceState.FAILED)
    )

    for artifact_id in sorted(set(by_artifact) | set(wanted)):
        observed = by_artifact.get(artifact_id, [])
        next_instance = max((i.instance for i in observed), default=0) + 1
        for gone in sorted((i for i in observed if i.node_id not in live), key=lambda i: i.key):
            if gone.key in awaiting.kept:  # its node may come back within the rebalance delay
                continue
            actions.append(DeleteRecord(key=gone.key, mod_revision=gone.mod_revision))
        # A stopping node's instances are its own business now: it stops them and forgets their records.
        alive = [
            i for i in observed if i.node_id in live and i.node_id not in stopping and i.state not in REMOVING
        ]
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
        holding = old_active if artifact_id in held else []
        active = sum(i.state is SliceState.ACTIVE for i in placed) + len(old_active)
        # How many may be placed now (a slice that does not fully fit places what it can; its shortfall
        # is reported below).
        wanted_count = spec.instances - placement.unplaced
        # An ACTIVE instance is kept until this many are ACTIVE without it: as many as the cluster has room
        # for (a slice that does not fully fit still finishes a rollout or a strategy switch), and never
        # fewer than the floor.
        retain = max(wanted_count, spec.instances - room[spec.artifact].unplaced)
        floor = min(spec.floor, spec.instances)
        keep = max(retain, floor)

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
        if not holding:
            candidates += [
                (i, f"replaced by version {coordinates.version}") for i in _newest_first(old_active)
            ]
        held_by_floor = 0
        held_drains: set[str] = set()
        for instance, why in candidates:
            if instance.node_id in draining and why == "scaled down or moved":
                why = f"node {instance.node_id} is draining"
            if instance.state is SliceState.ACTIVE:
                if active - 1 < keep:
                    by_floor = active - 1 >= retain  # the floor, not a missing replacement, holds it
                    held_by_floor += by_floor
                    if by_floor and instance.node_id in draining:
                        held_drains.add(instance.node_id)
                    continue
                active -= 1
            removals.append((instance, why))

        # Everything still running counts against the surge — also what is being removed right now (its
        # UNLOAD has not taken effect yet): a new instance is created only once the old one is gone.
        removing_now = [
            i for i in observed if i.node_id in live and i.node_id not in stopping and i.state in REMOVING
        ]
        in_place = len(placed) + len(old) - len(holding) + len(removing_now)

        # (Counted from the number to keep: instances the floor holds back do not stall the new ones.)
        surge = spec.update.max_surge if rolling(spec) else max_surge
        budget = 0 if artifact_id in frozen else max(0, max(wanted_count, keep) + surge - in_place)
        # Creations while another node holds a surplus ACTIVE instance of this version are moves: name
        # the node each one moves from (for the event log), oldest surplus first, one per surplus.
        move_sources = [i.node_id for i in reversed(_newest_first(surplus)) if i.state is SliceState.ACTIVE]
        max_moves = policies.get(artifact_id, DEFAULT).max_moves
        moves_wait = False
        for node_id in sorted(placement.counts):
            missing = placement.counts[node_id] - len(by_node.get(node_id, ()))
            for _ in range(max(0, missing)):
                if budget == 0:
                    break
                if move_sources and max_moves and moving >= max_moves:
                    moves_wait = True  # a move: it waits until fewer are in flight in the cluster
                    break
                moved_from = move_sources.pop(0) if move_sources else ""
                moving += bool(moved_from)
                actions.append(
                    CreateInstance(
                        node_id=node_id,
                        coordinates=coordinates,
                        instance=next_instance,
                        config=spec.config,
                        moved_from=moved_from,
                    )
                )
                next_instance += 1
                budget -= 1

        # A FAILED record keeps its node out of the running for this artifact; after a while it is
        # removed, so that node may be tried again — at most once per `failed_retry_after`.
        # (On a draining node it goes at once: nothing is retried there.)
        removals += [
            (i, f"node {i.node_id} is draining")
            if i.node_id in draining
            else (i, f"retrying: failed {now - i.timestamp:.0f} s ago")
            for i in failed
            if i.node_id in draining or now - i.timestamp >= failed_retry_after
        ]
        removal_keys = {i.key for i, _ in removals}
        for instance in sorted(placed, key=lambda i: i.key):
            if instance.state is SliceState.LOADED and instance.key not in removal_keys:
                actions.append(ActivateInstance(key=instance.key, mod_revision=instance.mod_revision))
        for instance, why in sorted(removals, key=lambda r: r[0].key):
            actions.append(RemoveInstance(key=instance.key, mod_revision=instance.mod_revision, why=why))

        messages = []
        reasons = "; ".join(f"{i.node_id}: {i.reason}" for i in sorted(failed, key=lambda i: i.node_id))
        if placement.unplaced:
            messages.append(placement.reason + (f"; failed on {reasons}" if reasons else ""))
        serving = sorted({str(i.coordinates.version) for i in old_active})
        if failed and serving:
            messages.append(
                f"upgrade to {coordinates.version} is stuck: {plural(len(failed), 'new instance')} failed"
                + ("" if placement.unplaced else f" ({reasons})")
                + f"; {', '.join(serving)} keeps serving ({len(old_active)} ACTIVE)"
            )
        if held_by_floor:
            messages.append(
                f"waiting: removing an ACTIVE instance would take {artifact_id} below its floor of"
                f" {floor} ACTIVE (min_available; {active} ACTIVE now)"
                + (
                    f"; the drain of {', '.join(sorted(held_drains))} waits for room elsewhere"
                    if held_drains
                    else ""
                )
            )
        if artifact_id in awaiting.messages:
            messages.append(awaiting.messages[artifact_id])
        if moves_wait:
            messages.append(
                f"waiting: {plural(moving, 'move')} in flight in the cluster (max_moves {max_moves})"
            )
        if messages:
            problems.append(Problem(artifact=artifact_id, message="; ".join(messages)))
    return Plan(actions=tuple(actions), problems=tuple(problems))


@attrs.frozen(kw_only=True)
class _View:
    """What the plan sees: live, stopping, draining and cordoned nodes, the wanted specs by artifact id,
    the observed instances by artifact id, the current placement the allocation keeps, and the nodes a
    recent failure keeps out per slice."""

    live: frozenset[str]
    stopping: frozenset[str]
    draining: frozenset[str]
    cordoned: frozenset[str]
    placeable: tuple[NodeCapacity, ...]
    wanted: Mapping[str, tuple[SliceSpec, Coordinates]]
    by_artifact: Mapping[str, list[ObservedInstance]]
    current: Mapping[str, Mapping[str, int]]
    excluded: Mapping[str, frozenset[str]]
    problems: tuple[Problem, ...]

    def targets(self) -> dict[str, Placement]:
        specs = [s for s, _ in self.wanted.values()]
        return allocate_all(specs, self.placeable, self.current, self.excluded, self.cordoned)

    @classmethod
    def of(
        cls,
        specs: Sequence[SliceSpec],
        nodes: Sequence[NodeCapacity],
        instances: Sequence[ObservedInstance],
        now: float,
        failed_retry_after: float,
        stopping: Collection[str],
        cordoned: Collection[str],
        draining: Collection[str],
    ) -> _View:
        live = {n.node_id for n in nodes}
        stopping = frozenset(stopping) & live
        draining = frozenset(draining) & live - stopping
        cordoned = frozenset(cordoned) & live - stopping - draining
        placeable = [n for n in nodes if n.node_id not in stopping and n.node_id not in draining]
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
        return cls(
            live=frozenset(live),
            stopping=stopping,
            draining=draining,
            cordoned=cordoned,
            placeable=tuple(placeable),
            wanted=wanted,
            by_artifact=by_artifact,
            current=current,
            excluded=excluded,
            problems=tuple(problems),
        )


def target_placements(
    specs: Sequence[SliceSpec],
    nodes: Sequence[NodeCapacity],
    instances: Sequence[ObservedInstance],
    *,
    now: float = 0.0,
    failed_retry_after: float = 60.0,
    stopping: Collection[str] = frozenset(),
    cordoned: Collection[str] = frozenset(),
    draining: Collection[str] = frozenset(),
) -> dict[str, Placement]:
    """Where `plan` will put each slice's instances (keyed by `spec.artifact`) on this view, once it has
    converged: what `aether blueprint diff` shows. Same arguments as `plan`."""
    view = _View.of(specs, nodes, instances, now, failed_retry_after, stopping, cordoned, draining)
    return view.targets()
