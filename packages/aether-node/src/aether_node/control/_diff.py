"""What applying a blueprint would change, per slice and node (`aether blueprint diff`). Pure: the
planner's own target placement (`_reconcile.target_placements`) on the current view, with the new
blueprint in place of the stored one, against what runs now; and how the change would go: the rollout in
flight (a canary or blue-green record, a paused rolling update) and what the new spec does with it
(`_strategies.advance`, the leader's own rule: a canary or blue-green rollout starts, goes on, is aborted
or replaced; a rolling update's surge and floor); and, for a slice with instances on a lost node awaited
within its rebalance delay, the leader's rule for that too (`_rebalance.await_lost`: kept in place while
awaited, replaced on the live nodes after); for a slice that does not fit, what cannot be placed and the
running instances its floor keeps (the leader removes no ACTIVE one below it); and a change of its health
checks (`[slices.health]`, which the nodes apply to the running instances: no restart). No I/O, no
writes.
"""

from __future__ import annotations

import collections
from collections.abc import Collection, Iterable, Mapping, Sequence

from ..client import BlueprintDiff, NodePlacement, SliceChange
from ..core._blueprint import Blueprint, SliceSpec
from ..core._config_digest import config_change
from ..core._coordinates import Coordinates
from ..core._health_spec import describe as describe_health
from ..core._reconcile_spec import ReconcilePolicy
from ..core._records import RolloutRecord, SliceState
from ..core._text import plural
from ..core._update_spec import UpdateSpec, UpdateStrategy
from ._allocation import NodeCapacity
from ._instance_index import InstanceIndex, Variant, as_index
from ._rebalance import await_lost, awaited_nodes, delays_of, policies_of
from ._reconcile import REMOVING, ObservedInstance, crowded_first, target_placements
from ._strategies import advance, is_candidate, is_stable, update_of
from ._strategies import running as running_of


def diff_blueprint(
    new: Blueprint,
    stored: Sequence[Blueprint],
    nodes: Sequence[NodeCapacity],
    instances: Iterable[ObservedInstance] | InstanceIndex,
    *,
    now: float,
    stopping: Collection[str] = frozenset(),
    cordoned: Collection[str] = frozenset(),
    draining: Collection[str] = frozenset(),
    rollouts: Mapping[str, RolloutRecord] | None = None,
    paused: Collection[str] = frozenset(),
    lost: Mapping[str, float] | None = None,
    policy: ReconcilePolicy | None = None,
    retried: Mapping[str, int] | None = None,
) -> BlueprintDiff:
    """`stored`: every blueprint the cluster holds now (the one named like `new` is replaced by it);
    `rollouts`: the rollout records in flight (artifact id → record); `paused`: the artifact ids whose
    rolling update is paused; `lost`: the lost nodes the leader awaits (node → since:
    `ReconcileState.awaited()`); `policy`: the cluster's reconciliation policy (each blueprint's `[policy]`
    over it, `new`'s for its own slices). A slice with instances on a node awaited within its rebalance
    delay is planned as the leader plans it (`_rebalance.await_lost`): those instances stay in place
    (`after` on that node), the live nodes get only what the floor needs; `later` says where they go once
    the delay is over without the node back. `retried`: the failures an operator's `slice retry` let go
    (`ReconcileState.retried`): they keep no node out, as for the leader."""
    rollouts = rollouts or {}
    lost = lost or {}
    old = next((b for b in stored if b.name == new.name), None)
    blueprints = [b for b in stored if b.name != new.name] + [new]
    specs = [s for b in blueprints for s in b.slices]
    live = {n.node_id for n in nodes}
    policies = policies_of(blueprints, policy)
    instances = as_index(instances)  # once, for the planners below (each would index a list again)
    awaiting = await_lost(specs, instances, live, lost, policies, now=now)
    waiting = awaited_nodes(lost, live, delays_of(policies), now=now)
    views = {"nodes": nodes, "instances": instances, "now": now, "retried": retried}
    operations = {"stopping": stopping, "cordoned": cordoned, "draining": draining}
    targets = target_placements(awaiting.specs, **views, **operations)
    later_targets = target_placements(specs, **views, **operations) if awaiting.messages else targets
    running: dict[str, list[ObservedInstance]] = collections.defaultdict(list)
    every: dict[str, list[ObservedInstance]] = collections.defaultdict(list)
    for instance in instances:
        artifact_id = instance.coordinates.artifact_id
        if instance.node_id in live:
            every[artifact_id].append(instance)
        there = instance.node_id in live or instance.node_id in waiting.get(artifact_id, ())
        if there and instance.state not in REMOVING and instance.state is not SliceState.FAILED:
            running[artifact_id].append(instance)

    before_specs = {_artifact_id(s): s for s in (old.slices if old else ())}
    after_specs = {_artifact_id(s): s for s in new.slices}
    changes = []
    for artifact_id in sorted(before_specs.keys() | after_specs.keys()):
        spec = after_specs.get(artifact_id)
        here = running.get(artifact_id, [])
        before = collections.Counter(i.node_id for i in here)
        placement = targets.get(spec.artifact) if spec else None
        after = dict(placement.counts) if placement else {}
        awaited_here = waiting.get(artifact_id, frozenset()) if spec else frozenset()
        for instance in here:  # kept in place on an awaited node: the wanted version only
            if instance.node_id in awaited_here and str(instance.coordinates) == spec.artifact:
                after[instance.node_id] = after.get(instance.node_id, 0) + 1
        wanted = Variant.of(Coordinates.parse(spec.artifact), spec.config) if spec else None
        kept: list[ObservedInstance] = []  # running, with no room in the new spec, held by the floor
        if spec is not None and placement is not None and placement.unplaced:
            held = artifact_id in rollouts or artifact_id in paused  # the old version's ACTIVE ones stay
            candidates = [i for i in here if i.node_id not in stopping]
            kept = _kept_by_floor(spec, placement.unplaced, candidates, after, wanted, held=held)
            for instance in kept:
                after[instance.node_id] = after.get(instance.node_id, 0) + 1
        later = dict(later_targets[spec.artifact].counts) if artifact_id in awaiting.messages else None
        shown = before.keys() | after.keys() | (later or {}).keys()
        grown = sum(max(0, after.get(n, 0) - before.get(n, 0)) for n in shown)
        shrunk = sum(max(0, before.get(n, 0) - after.get(n, 0)) for n in shown)
        moved = min(grown, shrunk)
        version = str(Coordinates.parse(spec.artifact).version) if spec else ""
        # Stale: another version, or the same with another config (replaced by the update strategy),
        # but those the floor keeps (nothing of the new spec can take their place).
        staying = {i.key for i in kept}
        going = [i for i in here if i.key not in staying]
        replaced = sum(1 for i in going if wanted and i.variant != wanted)
        stale_configs = sum(1 for i in going if wanted and i.config_digest != wanted.config)
        previous = before_specs.get(artifact_id)
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
                    NodePlacement(
                        node_id=n,
                        before=before.get(n, 0),
                        after=after.get(n, 0),
                        awaited=n in awaited_here,
                        later=None if later is None else later.get(n, 0),
                    )
                    for n in sorted(shown)
                ),
                problem=_problem(artifact_id, spec, placement.reason, len(kept))
                if placement and spec
                else "",
                rollout=_in_flight(rollouts.get(artifact_id), artifact_id in paused and bool(replaced)),
                update=_update(
                    spec, every.get(artifact_id, []), rollouts.get(artifact_id), artifact_id in paused, now
                )
                if spec is not None and (replaced or artifact_id in rollouts)
                else "",
                awaiting=_awaiting(awaiting.messages.get(artifact_id, ""), after, later, awaited_here),
                health=_health(before_specs.get(artifact_id), spec),
                config=_config(previous, spec, stale_configs),
                unplaced=placement.unplaced if placement else 0,
                kept=len(kept),
            )
        )
    return BlueprintDiff(
        name=new.name,
        exists=old is not None,
        revision=old.revision if old else 0,
        changed=old is None or any(c.change != "unchanged" for c in changes),
        slices=tuple(changes),
    )


def _kept_by_floor(
    spec: SliceSpec,
    unplaced: int,
    here: Sequence[ObservedInstance],
    after: Mapping[str, int],
    wanted: Variant | None,
    *,
    held: bool,
) -> list[ObservedInstance]:
    """The running ACTIVE instances the leader keeps beyond `after` when `spec` does not fit. Its rule
    (`_reconcile.plan`): an ACTIVE instance goes only while the ACTIVE count stays at the number to keep,
    what fits but never below the floor; the wanted variant's surplus goes first, newest first, then
    other variants' (unless a rollout holds them), the most crowded node's first."""
    keep = max(spec.instances - unplaced, min(spec.floor, spec.instances))
    short = keep - sum(after.values())
    if short <= 0:
        return []
    on_node: collections.Counter[str] = collections.Counter()
    surplus, others = [], []
    for instance in sorted(here, key=lambda i: (i.state is not SliceState.ACTIVE, i.instance, i.key)):
        if instance.variant == wanted:
            on_node[instance.node_id] += 1  # the oldest on a node are the ones its placement keeps
            if on_node[instance.node_id] > after.get(instance.node_id, 0):
                surplus.append(instance)
        elif not held:
            others.append(instance)
    # Removal order: the surplus newest first, then the others as a rollout replaces them (the most
    # crowded node's first: `crowded_first`); what stays is its end.
    order = [i for i in reversed(surplus) if i.state is SliceState.ACTIVE]
    order += crowded_first([i for i in others if i.state is SliceState.ACTIVE])
    return order[max(0, len(order) - short) :]


def _problem(artifact_id: str, spec: SliceSpec, reason: str, kept: int) -> str:
    """What would not fit (the allocator's reason) and the running instances the floor keeps anyway."""
    if not kept:
        return reason
    stay = "stays" if kept == 1 else "stay"
    return (
        f"{reason}; {plural(kept, 'running instance')} {stay}: removing one would take {artifact_id}"
        f" below its floor of {min(spec.floor, spec.instances)} ACTIVE (min_available)"
    )


def _awaiting(
    message: str, after: Mapping[str, int], later: Mapping[str, int] | None, awaited: Collection[str]
) -> str:
    """The leader's own words for a slice that waits for lost nodes, and what changes once it stops."""
    if not message or later is None:
        return ""
    moves = ", ".join(
        f"{n} {after.get(n, 0)} -> {later.get(n, 0)}"
        for n in sorted(after.keys() | later.keys())
        if after.get(n, 0) != later.get(n, 0)
    )
    nodes = ", ".join(sorted(awaited))
    return f"{message}; once the delay is over without {nodes} back: {moves or 'no change'}"


def _health(before: SliceSpec | None, after: SliceSpec | None) -> str:
    """A change of the slice's health checks in words ("" for none, or for a slice removed)."""
    if after is None or (before.health if before else None) == after.health:
        return ""
    return (
        describe_health(after.health)
        if before is None
        else f"{describe_health(before.health)} -> {describe_health(after.health)}"
    )


def _config(before: SliceSpec | None, after: SliceSpec | None, stale: int) -> str:
    """A change of the slice's config, in words: which keys, and the running instances it replaces."""
    if after is None:
        return ""
    keys = config_change(before.config, after.config) if before is not None else ""
    if not keys and not stale:
        return ""
    running = f"{plural(stale, 'running instance')} with another config replaced" if stale else ""
    return "; ".join(p for p in (keys, running) if p)


def _in_flight(record: RolloutRecord | None, paused: bool) -> str:
    """The rollout running now, in words ("" for none)."""
    if record is None:
        return "rolling update paused (`aether slice resume`)" if paused else ""
    share = "" if record.share is None else f", {record.share}% of calls on {record.candidate}"
    why = f" ({record.reason})" if record.reason else ""
    kind = record.strategy.replace("_", "-")
    return f"{kind} {_arrow(record)}: {record.phase.value}{share}{why}"


def _arrow(record: RolloutRecord) -> str:
    """`1.0 -> 2.0`, with `(config changed)` when the config changes too (or alone)."""
    return f"{record.stable} -> {record.candidate}" + (
        " (config changed)" if record.stable_config is not None else ""
    )


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
    digest = Variant.of(coordinates, spec.config).config
    lead = ""
    if record is not None and not is_candidate(record, version, digest):
        if is_stable(record, version, digest):
            return (
                f"undoes the rollout to {record.candidate} in flight: every call back on {record.stable},"
                f" the {record.candidate} instances go"
            )
        lead = f"replaces the rollout to {record.candidate} in flight; "
    after = advance(spec, record, running_of(instances, coordinates, spec.config), now=now)
    if after is not None and record is not None and is_candidate(record, version, digest):
        return f"the rollout to {after.candidate} in flight goes on ({after.phase.value})"
    if after is not None and after.strategy == UpdateStrategy.CANARY.value:
        steps = ", ".join(f"{s}%" for s in update.steps)
        if after.stable == after.candidate:  # calls are counted per version: nothing to judge a step by
            return lead + (
                f"canary {_arrow(after)}: steps {steps} of the instances, the calls split by instance"
                f" count{_settled(update)}; each step waits for `aether slice promote` or `abort` (a"
                " config change keeps the version, whose calls are counted together); the old config"
                " keeps its instances until promoted; a failing new instance aborts"
            )
        return lead + (
            f"canary {_arrow(after)}: steps {steps} of the calls{_settled(update)}, each judged over"
            f" {update.step_window_s:g} s (error rate, p99); {after.stable} keeps its instances until"
            " promoted; a failing step aborts"
        )
    if after is not None:
        return lead + (
            f"blue-green {_arrow(after)}: {plural(spec.instances, 'new instance')}"
            f" beside the old set, then every call at once{_settled(update)}; the old set stays"
            f" {update.grace_s:g} s"
        )
    if update.strategy is not UpdateStrategy.ROLLING:
        kind = update.strategy.value.replace("_", "-")
        return lead + f"{kind}: no other version serves, so every instance is placed at once"
    floor = min(spec.floor, spec.instances)
    rolling = (
        f"rolling to {version}: up to {plural(update.max_surge, 'new instance')} at a time beyond the"
        f" count to keep; an old one goes once the ACTIVE count allows, never below the floor of {floor}"
        + _settled(update)
    )
    return lead + rolling + ("; paused: it holds until `aether slice resume`" if paused else "")


def _settled(update: UpdateSpec) -> str:
    """When a new instance counts (`min_ready_s`), for every strategy's description ("" when at once)."""
    if not update.min_ready_s:
        return ""
    return f" (a new instance counts once it has stayed ACTIVE {update.min_ready_s:g} s)"


def _artifact_id(spec: SliceSpec) -> str:
    return spec.artifact.rsplit(":", 1)[0]
