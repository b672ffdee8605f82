"""Reconciliation planning for the ClusterDeploymentManager. Pure: (blueprints, live nodes, observed
instances) → actions. No I/O, no clock.

Per artifact (`group:artifact`), against the blueprint's spec:
- records on nodes that are gone are deleted (their replacements are placed on survivors);
- a node that is stopping (its registration says `leaving`) gets no new instance and is otherwise left
  alone: it stops and forgets its own instances, and those do not count as available meanwhile;
- the allocation (`_allocation`) says how many instances of the wanted version each node should run;
  missing ones are created, within a surge budget (at most `instances + max_surge` placed at once; a
  rolling `[slices.update]` table's own `max_surge` wins over the leader's);
- an instance is stale when it runs another variant than the spec (`Variant`: another version, or the
  same version created with another config, compared by value): it is replaced like an old version's;
- surplus, stale and unwanted instances are removed — not-yet-ACTIVE ones first, then the most recently
  added; a rollout's ACTIVE old instances from the node with the most of them first (`crowded_first`: the
  slice stays spread) — but an ACTIVE one only while the ACTIVE count stays at the number to keep: as many
  as the cluster could hold were no node excluded after failures (a move or a version rollout puts the
  replacement ACTIVE before the old instance goes; a rollout whose new version fails keeps the old one
  serving), and never fewer than the slice's floor (`min_available`). An old instance on its way to ACTIVE
  (its node restarts its dead process, or it was created just before the blueprint changed) stays while
  the ACTIVE count is short of that number without it. While failures keep the new version from its room
  (an update stuck on an install that fails), what a lost node took of the old version is replaced with
  the old version (the one with most ACTIVE instances, with its config: `_serving_spec`, placed as
  `_stable_set.restore` places a rollout's stable version), up to that number less the new instances
  placed; where none of the old version runs, the version recorded as the last that served (`served`,
  `_serving.py`). Only the loss of a node takes the ACTIVE count below the floor, and only for as long as
  its replacements take to start; a change the floor holds back waits and says why (a `Problem`);
- a new instance (of the wanted variant) counts as ACTIVE for that rule only once it has stayed ACTIVE
  for its slice's `min_ready_s` (`[slices.update]`), by the leader's own clock (`active_since`: when the
  leader first saw each ACTIVE record): a new version that dies soon after it starts never replaces the
  instances that serve. Creations never wait for it (an initial deployment is not slowed);
- a cordoned node (an operator's `aether node cordon`) gets no new instance and keeps what it runs; a
  draining node (`aether node drain`) gets none either and its instances are moved off like any surplus:
  each replacement goes ACTIVE elsewhere before the instance it replaces is removed, and never below the
  floor (a drain that would break a floor waits and says so); its FAILED and not-yet-ACTIVE instances go
  at once, so it ends with nothing (DRAINED);
- the old version of a canary or blue-green rollout in progress is held (`held`): its ACTIVE instances
  stay and do not count against the surge, whatever the new version does (`_strategies.py`); they stay
  on a draining node too (the drain waits for the rollout to be promoted or aborted, and says so); and
  the stable version is kept at its count (`stable`, `_stable_set.py`): what a lost or stopping node
  took is replaced on the others, so a node failure never leaves the rollout below its floor;
- the reconciliation policy (`_rebalance.py`): the instances of a node lost less than its slice's
  `rebalance_delay_s` ago keep their records and are replaced only as far as the floor needs; at most
  `max_moves` moves (replacements with `moved_from`) are in flight in the whole cluster;
- new instances are numbered per artifact from `numbers` (what the leader last wrote in
  `cluster/instance-numbers/`) or from the highest number recorded + 1, whichever is higher; the plan
  says the next number after its creations (`Plan.numbers`), which the leader writes with them: a removed
  instance's number is never given again, so its key, log, metrics and events are its own;
- a FAILED instance keeps its node out of the running for that artifact (the work is retried elsewhere)
  for `failed_retry_after` seconds, or until an operator's `slice retry` (`retried`, `_failure_hold.py`),
  then its record is removed and the node may be tried again; what cannot be placed is reported with
  the reasons.
Running it again on the same view gives the same actions; running it on the view after its actions gives
none: it is idempotent, and safe to restart after a leader change.
"""

from __future__ import annotations

import collections
import heapq
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence

import attrs

from ..core._blueprint import Resources, SliceSpec
from ..core._config_digest import config_digest
from ..core._coordinates import Coordinates
from ..core._errors import InvalidCoordinatesError
from ..core._reconcile_spec import DEFAULT, ResolvedPolicy
from ..core._records import REMOVING, ServingVersion, SliceState
from ..core._text import plural
from ..core._update_spec import UpdateStrategy
from ._allocation import NodeCapacity, Placement, allocate_all
from ._failure_hold import RETRIED_WHY, FailureHold
from ._instance_index import ArtifactInstances, Bucket, InstanceIndex, Variant, as_index
from ._rebalance import await_lost
from ._serving import most_active, variant_of
from ._stable_set import StableSet, restore, usage_of


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
    config: Mapping[str, object] = attrs.field(factory=dict)  # the config it was created with
    config_digest: str = attrs.field(
        default=attrs.Factory(lambda self: config_digest(self.config), takes_self=True)
    )

    @property
    def variant(self) -> Variant:
        """What it runs (version and config): stale when not the blueprint's."""
        return Variant(self.coordinates, self.config_digest)


@attrs.frozen(kw_only=True)
class CreateInstance:
    node_id: str
    coordinates: Coordinates
    instance: int
    config: Mapping[str, object]
    # A rebalancing move: this instance replaces a surplus one on `moved_from` (removed once it is ACTIVE).
    moved_from: str = ""
    # Why it is created, when it replaces stale instances (`rolling out: config changed`); "" otherwise.
    why: str = ""


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
    # artifact id → the next instance number once this plan's creations of it are made: written with
    # them (`cluster/instance-numbers/`), so no number is given twice. Only artifacts with creations.
    numbers: Mapping[str, int] = attrs.field(factory=dict)


def rolling(spec: SliceSpec) -> bool:
    """Whether the slice's own `[slices.update]` says rolling (then its `max_surge` counts)."""
    return spec.update is not None and spec.update.strategy is UpdateStrategy.ROLLING


def _newest_first(instances: Iterable[ObservedInstance]) -> list[ObservedInstance]:
    """Removal order: not yet ACTIVE first, then the most recently added (highest instance number); the
    key decides between equal numbers."""
    return sorted(instances, key=lambda i: (i.state is SliceState.ACTIVE, -i.instance, i.key))


def crowded_first(instances: Iterable[ObservedInstance]) -> list[ObservedInstance]:
    """Removal order of the instances a rollout replaces: first one of the node that has the most of them
    left (after each, that node has one less), the newest first among equals. A rollout so keeps the
    slice spread over its nodes: newest first alone emptied one node while another ran three of four
    (found by an operator probe), whose loss then took the slice below its floor. It depends on these
    instances alone, not on where the new ones are yet: removing a first part of the order leaves the
    rest in the same order, so `blueprint diff` (`_diff._kept_by_floor`) says where it ends. O(n log n)."""
    ordered = _newest_first(instances)
    queues: dict[str, collections.deque[int]] = {}
    for rank, instance in enumerate(ordered):
        queues.setdefault(instance.node_id, collections.deque()).append(rank)
    heap = [(-len(ranks), ranks[0], node_id) for node_id, ranks in queues.items()]
    heapq.heapify(heap)
    taken: list[ObservedInstance] = []
    while heap:
        _, rank, node_id = heapq.heappop(heap)
        taken.append(ordered[rank])
        ranks = queues[node_id]
        ranks.popleft()
        if ranks:
            heapq.heappush(heap, (-len(ranks), ranks[0], node_id))
    return taken


def plan(
    specs: Sequence[SliceSpec],
    nodes: Sequence[NodeCapacity],
    instances: Iterable[ObservedInstance] | InstanceIndex,
    *,
    now: float = 0.0,
    max_surge: int = 1,
    failed_retry_after: float = 60.0,
    retried: Mapping[str, int] | None = None,
    stopping: Collection[str] = frozenset(),
    cordoned: Collection[str] = frozenset(),
    draining: Collection[str] = frozenset(),
    held: Collection[str] = frozenset(),
    lost: Mapping[str, float] | None = None,
    policies: Mapping[str, ResolvedPolicy] | None = None,
    frozen: Collection[str] = frozenset(),
    stable: Mapping[str, SliceSpec] | None = None,
    active_since: Mapping[str, float] | None = None,
    numbers: Mapping[str, int] | None = None,
    served: Mapping[str, ServingVersion] | None = None,
) -> Plan:
    """`nodes` are the live nodes; those named in `stopping` are live but shutting down (no placement),
    those in `cordoned` take no new instance, those in `draining` take none and are emptied. For the
    artifact ids in `held` (a canary or blue-green rollout in progress, `_strategies.py`) the ACTIVE
    instances of other versions stay: they are not removed and do not count against the surge. `lost`:
    the nodes the leader saw lost and since when; `policies`: the reconciliation policy per artifact id
    (missing: the default, no delay and no limit). For the artifact ids in `frozen` (a paused rolling
    update, `_pause.py`; they are `held` too) no instance is created. `stable`: for artifact ids in
    `held` by a rollout, the stable version's spec (`_strategies.stable_spec`): its lost instances are
    replaced (`_stable_set.py`). `active_since`: instance key → when (on `now`'s clock) the planner's
    caller first saw that record ACTIVE (the leader's own observation, so no two machines' clocks are
    compared); an ACTIVE instance of the wanted variant seen less than its slice's `min_ready_s` ago does
    not count as ACTIVE where an ACTIVE instance would be removed for it. A key missing (or None, e.g.
    `blueprint diff`): no window known, it counts at once. `instances`: the observed records,
    as a list or as an `InstanceIndex` (the leader's, kept up to date from its watch: then a pass costs
    per node and state of each slice, and per action, not per instance). `numbers`: artifact id → the
    next instance number as last written (`Plan.numbers`, kept in the KV); new instances are numbered
    from it, or from the highest number recorded + 1 if that is higher or none is known. `served`:
    artifact id → the version that last served it (`_serving.py`), brought back while an update cannot
    place its new version and no instance of an old one runs. `retried`: artifact id → the revision up to
    which an operator's `slice retry` let the slice's failures go (`_failure_hold.py`): those records
    keep no node out and are removed now."""
    hold = FailureHold(retry_after=failed_retry_after, retried=retried or {})
    served = served or {}
    policies = policies or {}
    numbers = numbers or {}
    next_numbers: dict[str, int] = {}
    stable = stable or {}
    index = as_index(instances)
    awaiting = await_lost(specs, index, {n.node_id for n in nodes}, lost or {}, policies, now=now)
    specs = awaiting.specs
    view = _View.of(specs, nodes, index, now, hold, stopping, cordoned, draining)
    live, stopping, draining, cordoned = view.live, view.stopping, view.draining, view.cordoned
    placeable, wanted, excluded = view.placeable, view.wanted, view.excluded
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
    usage: dict[str, Resources] | None = None  # what the placements take per node, once asked for

    def placed_usage() -> dict[str, Resources]:
        nonlocal usage
        if usage is None:
            usage = usage_of(wanted_specs, {a: p.counts for a, p in placements.items()})
        return usage

    # Moves in flight in the whole cluster (a replacement with `moved_from` not yet ACTIVE), for max_moves.
    moving = sum(
        1
        for i in index.moves.values()
        if i.node_id in live
        and i.state not in REMOVING
        and i.state not in (SliceState.ACTIVE, SliceState.FAILED)
    )

    for artifact_id in sorted(set(index.artifact_ids()) | set(wanted)):
        group = index.artifact(artifact_id)
        first_number = next_instance = max(group.highest() + 1, numbers.get(artifact_id, 1))
        gone = [i for node_id in group.nodes if node_id not in live for i in group.on(node_id)]
        for instance in sorted(gone, key=lambda i: i.key):
            if instance.key in awaiting.kept:  # its node may come back within the rebalance delay
                continue
            actions.append(DeleteRecord(key=instance.key, mod_revision=instance.mod_revision))
        if artifact_id not in wanted:
            # A stopping node's instances are its own business now: it stops them and forgets them.
            alive = _Alive.of(group, live, stopping, None)
            for instance in sorted(alive.every(), key=lambda i: i.key):
                actions.append(
                    RemoveInstance(
                        key=instance.key, mod_revision=instance.mod_revision, why="not in any blueprint"
                    )
                )
            continue
        spec, coordinates = wanted[artifact_id]
        variant = view.variants[artifact_id]
        alive = _Alive.of(group, live, stopping, variant)
        placement = placements[spec.artifact]
        failed = alive.failed
        holding = artifact_id in held
        active = alive.active + alive.old_active
        # How many may be placed now (a slice that does not fully fit places what it can; its shortfall
        # is reported below).
        wanted_count = spec.instances - placement.unplaced
        # An ACTIVE instance is kept until this many are ACTIVE without it: as many as the cluster has room
        # for (a slice that does not fully fit still finishes a rollout or a strategy switch), and never
        # fewer than the floor.
        retain = max(wanted_count, spec.instances - room[spec.artifact].unplaced)
        floor = min(spec.floor, spec.instances)
        keep = max(retain, floor)

        kept_stable: StableSet | None = None
        # A new version that failures keep from its room (a rolling update stuck on an install that fails
        # everywhere, or on some nodes) leaves the old version serving: what a lost node took of it is
        # replaced with the old version, up to the number to keep with the new instances placed.
        blocked = room[spec.artifact].unplaced < placement.unplaced and not holding
        to_serve = keep - sum(alive.placed.values())
        serving = _serving_spec(alive, spec, to_serve, served.get(artifact_id)) if blocked else None
        if (holding and artifact_id in stable) or serving is not None:
            kept_stable = restore(
                stable[artifact_id] if serving is None else serving,
                group,
                variant,
                live=live,
                stopping=stopping,
                placeable=view.placeable,
                cordoned=cordoned,
                awaited=awaiting.kept,
                usage=placed_usage,
                now=now,
                hold=hold,
                role="the stable version" if serving is None else "the version that serves",
            )
        surplus: list[ObservedInstance] = []
        for node_id, count in alive.placed.items():
            extra = count - placement.counts.get(node_id, 0)
            if extra > 0:
                surplus.extend(_newest_first(alive.placed_on(node_id))[:extra])
        # New instances ACTIVE for less than min_ready_s do not count yet (looked up only when an ACTIVE
        # instance may be removed: a converged slice costs nothing here).
        ready_after = spec.min_ready_s
        settling = _settling(alive, active_since, now, ready_after) if surplus or alive.old_active else set()
        floor_rule = _FloorRule(
            active=active - len(settling), keep=keep, retain=retain, draining=draining, settling=settling
        )
        removals: list[tuple[ObservedInstance, str]] = []
        # (oldest first: which of them stay must not hang on the order the index keeps them in)
        for instance, why in sorted(
            _stale_inactive(alive, variant, kept_stable, hold, now), key=_oldest_first
        ):
            floor_rule.consider_stale(instance, why, removals)
        for instance in _newest_first(surplus):
            floor_rule.consider(instance, "scaled down or moved", removals)
        if not holding and alive.old_active:
            if floor_rule.active - 1 < keep:  # every one is held, and the ACTIVE count stays: count them
                floor_rule.hold_all(alive.old_active, alive.old_active_nodes())
            else:
                for instance in crowded_first(alive.old_active_instances()):
                    floor_rule.consider(instance, replaced_why(instance.variant, variant), removals)
        active, held_by_floor, held_drains = floor_rule.active, floor_rule.held, floor_rule.held_drains
        settling_now = len(floor_rule.settling)  # (those not removed as surplus themselves)

        # Everything still running counts against the surge — also what is being removed right now (its
        # UNLOAD has not taken effect yet): a new instance is created only once the old one is gone.
        in_place = (
            sum(alive.placed.values())
            + alive.old
            - (alive.old_active if holding else 0)
            - (len(kept_stable.on_their_way) if kept_stable else 0)
            + alive.removing
        )

        # (Counted from the number to keep: instances the floor holds back do not stall the new ones.)
        surge = spec.update.max_surge if rolling(spec) else max_surge
        if artifact_id in frozen:
            # A pause holds the update where it is, but not below the floor: what lost nodes took is
            # made up to the floor with the version asked for (the old instances are held meanwhile).
            budget = max(0, floor - alive.old_active - sum(alive.placed.values()))
        else:
            budget = max(0, max(wanted_count, keep) + surge - in_place)
        # Creations while another node holds a surplus ACTIVE instance of this version are moves: name
        # the node each one moves from (for the event log), oldest surplus first, one per surplus.
        move_sources = [i.node_id for i in reversed(_newest_first(surplus)) if i.state is SliceState.ACTIVE]
        rolling_out = _rolling_out(alive, variant)
        max_moves = policies.get(artifact_id, DEFAULT).max_moves
        moves_wait = False
        for node_id in sorted(placement.counts):
            missing = placement.counts[node_id] - alive.placed.get(node_id, 0)
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
                        why="" if moved_from else rolling_out,
                    )
                )
                next_instance += 1
                budget -= 1

        if kept_stable is not None:  # lost capacity of the version that serves: replaced at once
            version = kept_stable.variant.version
            why = (
                f"replacing a lost instance of the stable version {version}"
                if serving is None
                else f"replacing a lost instance of {version}: {_stuck_change(version, variant)} is stuck"
            )
            for node_id in kept_stable.create_on:
                actions.append(
                    CreateInstance(
                        node_id=node_id,
                        coordinates=kept_stable.coordinates,
                        instance=next_instance,
                        config=kept_stable.spec.config,
                        why=why,
                    )
                )
                next_instance += 1
        if next_instance != first_number:
            next_numbers[artifact_id] = next_instance

        # A FAILED record keeps its node out of the running for this artifact; after a while (or once an
        # operator retries the slice) it is removed, so that node may be tried again — at most once per
        # `failed_retry_after` unless retried. (On a draining node it goes at once: nothing is retried there.)
        removals += [
            (i, _failure_gone(i, draining, hold, now))
            for i in failed
            if i.node_id in draining or not hold.keeps_out(i, now)
        ]
        removal_keys = {i.key for i, _ in removals}
        for instance in sorted(alive.loaded, key=lambda i: i.key):
            if instance.key not in removal_keys:
                actions.append(ActivateInstance(key=instance.key, mod_revision=instance.mod_revision))
        for instance, why in sorted(removals, key=lambda r: r[0].key):
            actions.append(RemoveInstance(key=instance.key, mod_revision=instance.mod_revision, why=why))

        messages = []
        reasons = failure_reasons(failed)
        serving = sorted(alive.old_active_versions())
        if failed and serving:  # (first: what an operator must know, that the old version serves)
            messages.append(
                f"{_change_to(alive, variant)} is stuck: {plural(len(failed), 'new instance')} failed"
                + ("" if placement.unplaced else f" ({reasons})")
                + f"; {', '.join(serving)} keeps serving ({alive.old_active} ACTIVE)"
            )
        if placement.unplaced:
            retried_on = [i for i in failed if i.node_id not in draining and i.node_id not in cordoned]
            retried = _retried_from(retried_on, now, hold, artifact_id) if reasons else ""
            if reasons and room[spec.artifact].unplaced < placement.unplaced:
                # failures, not room, keep it short: the failure first (read as a lack of room, it was not)
                messages.append(f"failed on {reasons}{retried}; so {placement.reason}")
            else:
                messages.append(placement.reason + (f"; failed on {reasons}{retried}" if reasons else ""))
        if settling_now and floor_rule.waited:
            messages.append(
                f"waiting for {plural(settling_now, 'new instance')} to stay ACTIVE for {ready_after:g} s"
                " (min_ready_s) before an ACTIVE instance is removed for it"
            )
        if held_by_floor:
            messages.append(
                f"waiting: removing an ACTIVE instance would take {artifact_id} below its floor of"
                f" {floor} ACTIVE (min_available; {active + settling_now} ACTIVE now)"
                + (
                    f"; the drain of {', '.join(sorted(held_drains))} waits for room elsewhere"
                    if held_drains
                    else ""
                )
            )
        held_drains_by_rollout = sorted(alive.old_active_nodes() & draining) if holding else []
        if held_drains_by_rollout:
            messages.append(
                _drain_held(artifact_id, spec, held_drains_by_rollout, paused=artifact_id in frozen)
            )
        if kept_stable is not None and kept_stable.problem:
            messages.append(kept_stable.problem)
        if artifact_id in awaiting.messages:
            messages.append(awaiting.messages[artifact_id])
        if moves_wait:
            messages.append(
                f"waiting: {plural(moving, 'move')} in flight in the cluster (max_moves {max_moves})"
            )
        if messages:
            problems.append(Problem(artifact=artifact_id, message="; ".join(messages)))
    return Plan(actions=tuple(actions), problems=tuple(problems), numbers=next_numbers)


def _serving_spec(
    alive: _Alive, spec: SliceSpec, count: int, recorded: ServingVersion | None
) -> SliceSpec | None:
    """The spec that keeps the old version serving at `count` instances while the new one cannot take
    its place: the old variant with the most ACTIVE instances on live nodes (`most_active`), with its
    config; with none ACTIVE, the version `recorded` as the last that served (`_serving.py`) if it is not
    the one wanted; None if there is none or nothing is to be kept."""
    if count <= 0:
        return None
    found = most_active(alive.group, alive.nodes, besides=alive.wanted)
    if found is not None:
        coordinates, config = str(found.variant.coordinates), found.config
    elif recorded is not None and variant_of(recorded) not in (None, alive.wanted):
        coordinates, config = recorded.coordinates, recorded.config
    else:
        return None
    return attrs.evolve(spec, artifact=coordinates, config=dict(config), instances=count, min_available=0)


def _oldest_first(candidate: tuple[ObservedInstance, str]) -> tuple[int, str]:
    return candidate[0].instance, candidate[0].key


def _stale_inactive(
    alive: _Alive, wanted: Variant, kept_stable: StableSet | None, hold: FailureHold, now: float
) -> list[tuple[ObservedInstance, str]]:
    """The other variants' records that are not ACTIVE, to remove, and why — but a rollout's stable
    replacements on their way (and those FAILED less than the retry ago) stay."""
    if kept_stable is None:
        return [(i, replaced_why(i.variant, wanted)) for i in alive.old_inactive()]
    retry = {i.key for i in kept_stable.retry}
    return [
        (i, _failure_gone(i, (), hold, now) if i.key in retry else replaced_why(i.variant, wanted))
        for i in alive.old_inactive()
        if i.key not in kept_stable.on_their_way
    ]


def _settling(
    alive: _Alive, active_since: Mapping[str, float] | None, now: float, ready_after: float
) -> set[str]:
    """The keys of the wanted variant's ACTIVE instances seen ACTIVE less than `ready_after` s ago."""
    if not active_since or ready_after <= 0:
        return set()
    return {i.key for i in alive.active_instances() if is_settling(i.key, active_since, now, ready_after)}


def is_settling(key: str, active_since: Mapping[str, float] | None, now: float, ready_after: float) -> bool:
    """Whether the ACTIVE record at `key` was first seen ACTIVE less than `ready_after` s before `now`
    (`active_since`: key → when; a key missing, or no map: no window known, it counts at once)."""
    if not active_since or ready_after <= 0:
        return False
    since = active_since.get(key)
    return since is not None and now - since < ready_after


def _retrying(failed: ObservedInstance, now: float) -> str:
    return f"retrying: failed {now - failed.timestamp:.0f} s ago"


def _failure_gone(failed: ObservedInstance, draining: Collection[str], hold: FailureHold, now: float) -> str:
    """Why a FAILED record is removed: its node drains, an operator retried the slice, or its time is up."""
    if failed.node_id in draining:
        return f"node {failed.node_id} is draining"
    return RETRIED_WHY if hold.let_go(failed) else _retrying(failed, now)


def replaced_why(old: Variant, wanted: Variant) -> str:
    """Why a stale instance goes: the version the blueprint asks for, and whether its config changed."""
    if old.version == wanted.version:
        return "replaced: config changed"
    changed = " (config changed)" if old.config != wanted.config else ""
    return f"replaced by version {wanted.version}{changed}"


def _rolling_out(alive: _Alive, wanted: Variant) -> str:
    """Why new instances are created while stale ones run: what rolls out ("" when none is stale)."""
    stale = alive.old_variants() if alive.old else set()
    if not stale:
        return ""
    if all(v.version == wanted.version for v in stale):
        return "rolling out: config changed"
    changed = " (config changed)" if any(v.config != wanted.config for v in stale) else ""
    return f"rolling out version {wanted.version}{changed}"


def _change_to(alive: _Alive, wanted: Variant) -> str:
    """The change under way, in words: an upgrade to a version, a config change, or both."""
    if all(v.version == wanted.version for v in alive.old_active_variants()):
        return f"config change of {wanted.version}"
    return f"upgrade to {wanted.version}"


def _stuck_change(serving: str, wanted: Variant) -> str:
    """The change that cannot go on, from the version that serves meanwhile to the one wanted."""
    return (
        f"config change of {wanted.version}" if serving == wanted.version else f"upgrade to {wanted.version}"
    )


def _drain_held(artifact_id: str, spec: SliceSpec, nodes: Sequence[str], *, paused: bool) -> str:
    """Why a drain waits on a slice whose old version's ACTIVE instances are held: a rollout in progress
    keeps them until it ends (they are the stable set it compares with and falls back to), and a paused
    rolling update keeps both versions as they stand."""
    drain = f"the drain of {', '.join(nodes)} waits for that"
    if paused:
        return (
            f"the paused update of {artifact_id} holds its instances where they are:"
            f" `aether slice resume {artifact_id}` lets it go on; {drain}"
        )
    if spec.update is not None and spec.update.strategy is UpdateStrategy.BLUE_GREEN:
        name, ends = "blue-green", "it ends after its grace period, or promote or abort it now"
    else:
        name, ends = "canary", "promote or abort it"
    return (
        f"the {name} rollout of {artifact_id} holds the old version's instances until it ends: {ends}"
        f" (`aether slice promote|abort {artifact_id}`); {drain}"
    )


@attrs.define(kw_only=True)
class _FloorRule:
    """Which removal candidates go: an ACTIVE one only while the ACTIVE count stays at `keep` without it.
    Counts what it holds back, and how many of those the floor (not a missing replacement) holds. The
    instances in `settling` (ACTIVE for less than `min_ready_s`) are not in `active`: one of them (a
    surplus) goes while the count stays at `keep`, and takes nothing from it."""

    active: int
    keep: int
    retain: int
    draining: frozenset[str]
    settling: set[str] = attrs.field(factory=set)  # keys of ACTIVE instances that do not count yet
    held: int = 0  # held back by the floor
    returning: int = 0  # old instances on their way to ACTIVE held back for a short ACTIVE count
    held_drains: set[str] = attrs.field(factory=set)  # draining nodes whose instances the floor holds
    waited: bool = False  # an ACTIVE candidate was held back (by the floor or a missing replacement)

    def consider(
        self, instance: ObservedInstance, why: str, removals: list[tuple[ObservedInstance, str]]
    ) -> None:
        if instance.node_id in self.draining and why == "scaled down or moved":
            why = f"node {instance.node_id} is draining"
        if instance.state is SliceState.ACTIVE:
            # (A settling candidate is not in `active`; it still goes only while the count is kept: it
            # is serving, and those that count may be too few without it, as right after a deploy.)
            settling = instance.key in self.settling
            if self.active - (0 if settling else 1) < self.keep:
                self.hold_all(1, {instance.node_id})
                return
            if settling:
                self.settling.discard(instance.key)
            else:
                self.active -= 1
        removals.append((instance, why))

    def consider_stale(
        self, instance: ObservedInstance, why: str, removals: list[tuple[ObservedInstance, str]]
    ) -> None:
        """An old variant's instance that is not ACTIVE. One on its way to ACTIVE (its process died and
        its node restarts it, or it was created just before the blueprint changed) stays while the
        ACTIVE count is short of `keep` without it: while the new version fails, it is what will serve
        again. (On a draining node it goes at once, as every instance there that is not ACTIVE.)"""
        returning = instance.state in RETURNING and instance.node_id not in self.draining
        if returning and self.active + self.returning < self.keep:
            self.returning += 1
            return
        removals.append((instance, why))

    def hold_all(self, count: int, nodes: Collection[str]) -> None:
        """Hold `count` ACTIVE candidates on `nodes` (the count to keep is reached: the count stays)."""
        self.waited = True
        if self.active - 1 >= self.retain:  # the floor, not a missing replacement, holds them
            self.held += count
            self.held_drains.update(n for n in nodes if n in self.draining)


# The states of an instance on its way to ACTIVE (the leader's ACTIVATE, the node's working states).
RETURNING = frozenset({SliceState.ACTIVATE, SliceState.LOADING, SliceState.ACTIVATING})


@attrs.define
class _Alive:
    """One artifact's records on the live nodes that are not stopping and not being removed, against the
    wanted variant (version and config; None: nothing is wanted, every record is old): counts per
    bucket, and the buckets themselves where the plan acts on their records. A record of another
    variant — another version, or the same version with another config — is old (stale)."""

    group: ArtifactInstances
    nodes: list[str]  # the live, not stopping nodes that hold records
    wanted: Variant | None
    placed: dict[str, int]  # node → records of the wanted variant, neither FAILED nor being removed
    active: int  # ACTIVE ones among them
    loaded: list[ObservedInstance]  # LOADED ones among them
    failed: list[ObservedInstance]  # FAILED records of the wanted variant
    old: int  # records of other variants
    old_active: int  # ACTIVE ones among them
    removing: int  # records being removed (any version)

    @classmethod
    def of(
        cls,
        group: ArtifactInstances,
        live: Collection[str],
        stopping: Collection[str],
        wanted: Variant | None,
    ) -> _Alive:
        alive = cls(group, [], wanted, {}, 0, [], [], 0, 0, 0)
        for node_id, versions in group.nodes.items():
            if node_id not in live or node_id in stopping:
                continue
            alive.nodes.append(node_id)
            for version, states in versions.items():
                for state, bucket in states.items():
                    if state in REMOVING:
                        alive.removing += len(bucket)
                    elif version != wanted:
                        alive.old += len(bucket)
                        alive.old_active += len(bucket) if state is SliceState.ACTIVE else 0
                    elif state is SliceState.FAILED:
                        alive.failed.extend(bucket.values())
                    else:
                        alive.placed[node_id] = alive.placed.get(node_id, 0) + len(bucket)
                        if state is SliceState.ACTIVE:
                            alive.active += len(bucket)
                        elif state is SliceState.LOADED:
                            alive.loaded.extend(bucket.values())
        return alive

    def _old(self, active: bool) -> Iterator[tuple[str, Variant, Bucket]]:
        """(node, variant, bucket) of the other variants' records, ACTIVE or not."""
        for node_id in self.nodes:
            for version, states in self.group.nodes[node_id].items():
                if version != self.wanted:
                    for state, bucket in states.items():
                        if state not in REMOVING and (state is SliceState.ACTIVE) == active:
                            yield node_id, version, bucket

    def active_instances(self) -> Iterator[ObservedInstance]:
        """The wanted variant's ACTIVE records."""
        assert self.wanted is not None
        for node_id in self.nodes:
            states = self.group.nodes[node_id].get(self.wanted, {})
            yield from states.get(SliceState.ACTIVE, {}).values()

    def old_inactive(self) -> list[ObservedInstance]:
        return [i for _, _, bucket in self._old(False) for i in bucket.values()]

    def old_active_instances(self) -> list[ObservedInstance]:
        return [i for _, _, bucket in self._old(True) for i in bucket.values()]

    def old_active_nodes(self) -> set[str]:
        return {node_id for node_id, _, _ in self._old(True)}

    def old_active_variants(self) -> set[Variant]:
        return {variant for _, variant, _ in self._old(True)}

    def old_variants(self) -> set[Variant]:
        """The other variants with a record that runs or is on its way (neither FAILED nor removed)."""
        return {
            variant
            for node_id in self.nodes
            for variant, states in self.group.nodes[node_id].items()
            if variant != self.wanted
            and any(s not in REMOVING and s is not SliceState.FAILED for s in states)
        }

    def old_active_versions(self) -> set[str]:
        """The versions of the stale ACTIVE instances (`1.0 (old config)` for the wanted version's)."""
        assert self.wanted is not None
        return {
            f"{v.version} (old config)" if v.version == self.wanted.version else v.version
            for v in self.old_active_variants()
        }

    def placed_on(self, node_id: str) -> list[ObservedInstance]:
        """The records of the wanted variant on the node, neither FAILED nor being removed."""
        assert self.wanted is not None
        return _placed(self.group, node_id, self.wanted)

    def every(self) -> list[ObservedInstance]:
        """Every record counted here but those being removed (when no version is wanted)."""
        return self.old_inactive() + self.old_active_instances()


@attrs.frozen(kw_only=True)
class _View:
    """What the plan sees: live, stopping, draining and cordoned nodes, the wanted specs by artifact id,
    the current placement the allocation keeps, and the nodes a recent failure keeps out per slice."""

    live: frozenset[str]
    stopping: frozenset[str]
    draining: frozenset[str]
    cordoned: frozenset[str]
    placeable: tuple[NodeCapacity, ...]
    wanted: Mapping[str, tuple[SliceSpec, Coordinates]]
    variants: Mapping[str, Variant]  # artifact id → the wanted variant (version and config)
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
        index: InstanceIndex,
        now: float,
        hold: FailureHold,
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

        current: dict[str, dict[str, int]] = {}
        excluded: dict[str, frozenset[str]] = {}
        variants = {a: Variant.of(coordinates, spec.config) for a, (spec, coordinates) in wanted.items()}
        for artifact_id, (spec, _) in wanted.items():
            variant = variants[artifact_id]
            group = index.artifact(artifact_id)
            counts: dict[str, int] = {}
            failed_on = set()
            for node_id, versions in group.nodes.items():
                states = versions.get(variant)
                if node_id not in live or not states:
                    continue
                for state, bucket in states.items():
                    if state is SliceState.FAILED:
                        if any(hold.keeps_out(i, now) for i in bucket.values()):
                            failed_on.add(node_id)
                    elif state not in REMOVING:
                        counts[node_id] = counts.get(node_id, 0) + len(bucket)
            if sum(counts.values()) > spec.instances:
                # Scaling down keeps the oldest instances: the allocation only sees those.
                placed = [i for node_id in counts for i in _placed(group, node_id, variant)]
                kept = sorted(placed, key=lambda i: (i.instance, i.key))[: spec.instances]
                counts = dict(collections.Counter(i.node_id for i in kept))
            current[spec.artifact] = counts
            if failed_on:
                excluded[spec.artifact] = frozenset(failed_on)
        return cls(
            live=frozenset(live),
            stopping=stopping,
            draining=draining,
            cordoned=cordoned,
            placeable=tuple(placeable),
            wanted=wanted,
            variants=variants,
            current=current,
            excluded=excluded,
            problems=tuple(problems),
        )


def _placed(group: ArtifactInstances, node_id: str, variant: Variant) -> list[ObservedInstance]:
    """The records of `variant` on the node, neither FAILED nor being removed."""
    states = group.nodes.get(node_id, {}).get(variant, {})
    return [
        i
        for state, bucket in states.items()
        if state is not SliceState.FAILED and state not in REMOVING
        for i in bucket.values()
    ]


def target_placements(
    specs: Sequence[SliceSpec],
    nodes: Sequence[NodeCapacity],
    instances: Iterable[ObservedInstance] | InstanceIndex,
    *,
    now: float = 0.0,
    failed_retry_after: float = 60.0,
    retried: Mapping[str, int] | None = None,
    stopping: Collection[str] = frozenset(),
    cordoned: Collection[str] = frozenset(),
    draining: Collection[str] = frozenset(),
) -> dict[str, Placement]:
    """Where `plan` will put each slice's instances (keyed by `spec.artifact`) on this view, once it has
    converged: what `aether blueprint diff` shows. Same arguments as `plan`."""
    hold = FailureHold(retry_after=failed_retry_after, retried=retried or {})
    view = _View.of(specs, nodes, as_index(instances), now, hold, stopping, cordoned, draining)
    return view.targets()


def _retried_from(failed: Iterable[ObservedInstance], now: float, hold: FailureHold, artifact_id: str) -> str:
    """When the first node a failure keeps out is tried again, in words ("; tried again from 23:15:42
    UTC", a time, not a countdown: the problem's text changes only when what it says does), and how to
    try at once; "" if none is kept out. Pure."""
    kept_out = [i.timestamp for i in failed if hold.keeps_out(i, now)]
    if not kept_out:
        return ""
    at = time.strftime("%H:%M:%S", time.gmtime(min(kept_out) + hold.retry_after))
    return (
        f"; tried again from {at} UTC ({hold.retry_after:g} s after a failure;"
        f" at once: `aether slice retry {artifact_id}`)"
    )


def failure_reasons(failed: Iterable[ObservedInstance]) -> str:
    """The FAILED instances' reasons, each once with the nodes it happened on (`a, b: start: boom; c:
    load: ...`), in node order: the same failure on every node reads once, not once per instance."""
    nodes_by_reason: dict[str, list[str]] = {}
    for instance in sorted(failed, key=lambda i: (i.node_id, i.key)):
        nodes = nodes_by_reason.setdefault(instance.reason, [])
        if instance.node_id not in nodes:
            nodes.append(instance.node_id)
    return "; ".join(f"{', '.join(nodes)}: {reason}" for reason, nodes in nodes_by_reason.items())
