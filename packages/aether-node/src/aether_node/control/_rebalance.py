"""The reconciliation policy in the planner: the rebalance delay after a node is lost, and the limit on
concurrent moves (`core/_reconcile_spec.py` says what they are). Pure: records and times in, what the
planner aims for and the leader's bookkeeping out. No I/O, no clock.

The delay's rule (the availability floor wins): while a lost node is awaited (lost less than its slice's
`rebalance_delay_s` ago, and no `cluster rebalance` since), its instance records of the wanted version
are kept and each slice is planned for `max(instances - awaited, min(floor, instances))` on the live
nodes: replacements only as far as the floor needs. The node, back within the delay, runs its own
instances again from the kept records (and any floor replacement is then surplus, removed under the
usual rule); once the delay is over the records are deleted and the rest replaced as before.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from aether_kv import KeyValue

from ..core._bad_records import log_once
from ..core._blueprint import Blueprint, SliceSpec
from ..core._coordinates import Coordinates
from ..core._errors import InvalidCoordinatesError
from ..core._reconcile_spec import DEFAULT, ReconcilePolicy, ResolvedPolicy, resolve
from ..core._records import (
    REMOVING,
    LostNodeRecord,
    RebalanceRequest,
    RecordError,
    RetryRequest,
    SliceState,
    decode_record,
)
from ..core._schema import LOST_NODES, REBALANCE_KEY, RECONCILE_POLICY, RETRIES
from ..core._text import plural
from ._instance_index import InstanceIndex, Variant, as_index

log = logging.getLogger("aether_node.cluster")

if TYPE_CHECKING:  # (the planner imports this module)
    from ._reconcile import ObservedInstance


def policies_of(
    blueprints: Sequence[Blueprint], cluster: ReconcilePolicy | None
) -> dict[str, ResolvedPolicy]:
    """Artifact id → the policy in force for that slice: its blueprint's `[policy]` over the cluster's."""
    found: dict[str, ResolvedPolicy] = {}
    for blueprint in blueprints:
        resolved = resolve(cluster, blueprint.policy)
        for spec in blueprint.slices:
            found.setdefault(spec.artifact.rsplit(":", 1)[0], resolved)
    return found


@attrs.frozen(kw_only=True)
class Awaiting:
    """What the planner aims for while lost nodes are awaited."""

    specs: tuple[SliceSpec, ...]  # the specs to plan, each lowered by what it awaits (never below its floor)
    kept: frozenset[str]  # instance keys on awaited nodes: not deleted
    messages: Mapping[str, str]  # artifact id → what it waits for


def delays_of(policies: Mapping[str, ResolvedPolicy]) -> dict[str, float]:
    """Artifact id → its rebalance delay, for the slices that have one."""
    return {a: p.rebalance_delay_s for a, p in policies.items() if p.rebalance_delay_s > 0}


def awaited_nodes(
    lost: Mapping[str, float],
    live: Collection[str],
    delays: Mapping[str, float],
    *,
    now: float,
) -> dict[str, frozenset[str]]:
    """Artifact id → the lost nodes it still waits for: lost (`lost`: node → since) less than its delay
    ago and not live again."""
    found: dict[str, frozenset[str]] = {}
    for artifact_id, delay in delays.items():
        waiting = frozenset(n for n, since in lost.items() if n not in live and now - since < delay)
        if waiting:
            found[artifact_id] = waiting
    return found


def await_lost(
    specs: Sequence[SliceSpec],
    instances: Iterable[ObservedInstance] | InstanceIndex,
    live: Collection[str],
    lost: Mapping[str, float],
    policies: Mapping[str, ResolvedPolicy],
    *,
    now: float,
) -> Awaiting:
    """The specs lowered by the instances awaited on lost nodes (never below min(floor, instances)), the
    records to keep, and a message per slice that waits. `instances`: the planner's ObservedInstances (a
    list or an `InstanceIndex`)."""
    if not lost:
        return Awaiting(specs=tuple(specs), kept=frozenset(), messages={})
    waiting = awaited_nodes(lost, live, delays_of(policies), now=now)
    if not waiting:
        return Awaiting(specs=tuple(specs), kept=frozenset(), messages={})
    index = as_index(instances)
    lowered: list[SliceSpec] = []
    kept: set[str] = set()
    messages: dict[str, str] = {}
    for spec in specs:
        try:
            coordinates = Coordinates.parse(spec.artifact)
        except InvalidCoordinatesError:
            lowered.append(spec)  # the planner reports it
            continue
        nodes = waiting.get(coordinates.artifact_id, frozenset())
        group = index.artifact(coordinates.artifact_id)
        mine = [i for node_id in sorted(nodes) for i in group.on(node_id)]
        kept.update(i.key for i in mine)
        wanted = Variant.of(coordinates, spec.config)
        awaited = sum(
            1
            for i in mine
            if i.variant == wanted and i.state is not SliceState.FAILED and i.state not in REMOVING
        )
        if not awaited:
            lowered.append(spec)
            continue
        floor = min(spec.floor, spec.instances)
        count = max(spec.instances - awaited, floor)
        lowered.append(attrs.evolve(spec, instances=count, min_available=spec.floor))
        delay = policies[coordinates.artifact_id].rebalance_delay_s
        holders = sorted({i.node_id for i in mine})
        ages = ", ".join(f"{n} lost {now - lost[n]:.0f} s ago" for n in holders)
        replaced = count - (spec.instances - awaited)  # placed at once for the floor
        messages[coordinates.artifact_id] = (
            f"waiting: {plural(awaited, 'instance')} on {ages} not replaced for up to {delay:g} s"
            f" (rebalance delay) in case it comes back"
            + (f"; {plural(replaced, 'replacement')} placed now for the floor of {floor}" if replaced else "")
        )
    return Awaiting(specs=tuple(lowered), kept=frozenset(kept), messages=messages)


def lost_changes(
    records: Mapping[str, LostNodeRecord],
    live: Collection[str],
    holders: Mapping[str, int],
    delays: Mapping[str, float],
    *,
    now: float,
) -> dict[str, LostNodeRecord | None]:
    """The leader's bookkeeping of lost nodes (`cluster/reconcile/lost/`): node → the record to write, or
    None to delete it. `holders`: nodes that are not live and hold instance records (node → how many),
    `delays`: the rebalance delay of each node's slices (the longest; nodes with none are left out). A
    node newly lost with a delay gets a record (since now); a record goes once its node is live again or
    holds no record any more."""
    changes: dict[str, LostNodeRecord | None] = {}
    for node_id, count in holders.items():
        if node_id in records or node_id in live:
            continue
        delay = delays.get(node_id, 0.0)
        if delay > 0:
            changes[node_id] = LostNodeRecord(since=now, instances=count, delay_s=delay)
    for node_id in records:
        if node_id in live or node_id not in holders:
            changes[node_id] = None
    return changes


def node_delays(
    instances: Iterable[ObservedInstance] | InstanceIndex,
    live: Collection[str],
    policies: Mapping[str, ResolvedPolicy],
) -> tuple[dict[str, int], dict[str, float]]:
    """For the nodes that are not live but hold instance records: (node → records, node → the longest
    rebalance delay among its slices)."""
    holders: dict[str, int] = {}
    delays: dict[str, float] = {}
    for node_id, artifacts in as_index(instances).per_node():
        if node_id in live:
            continue
        holders[node_id] = sum(artifacts.values())
        delay = max(policies.get(a, DEFAULT).rebalance_delay_s for a in artifacts)
        delays[node_id] = max(delays.get(node_id, 0.0), delay)
    return holders, {n: d for n, d in delays.items() if d > 0}


@attrs.frozen(kw_only=True)
class ReconcileState:
    """`cluster/reconcile/` decoded: the cluster's policy, the lost nodes (with their records' mod
    revisions), the mod revision of the last `cluster rebalance` (0: none), and per slice (artifact id)
    the revision up to which an operator's `slice retry` let its failures go."""

    policy: ReconcilePolicy | None = None
    lost: Mapping[str, LostNodeRecord] = attrs.field(factory=dict)
    lost_revisions: Mapping[str, int] = attrs.field(factory=dict)
    rebalanced_at: int = 0
    retried: Mapping[str, int] = attrs.field(factory=dict)

    def awaited(self) -> dict[str, float]:
        """Lost node → since, for those lost after the last `cluster rebalance` (which ended the wait of
        every node lost before it)."""
        return {n: r.since for n, r in self.lost.items() if self.lost_revisions[n] > self.rebalanced_at}


def decode_reconcile(items: Mapping[str, KeyValue]) -> ReconcileState:
    """The `cluster/reconcile/` keys → a ReconcileState. A record that does not decode is logged and
    skipped (a bad policy counts as none: the default)."""
    policy = None
    lost: dict[str, LostNodeRecord] = {}
    revisions: dict[str, int] = {}
    rebalanced_at = 0
    retried: dict[str, int] = {}
    for key, kv in items.items():
        try:
            if key == RECONCILE_POLICY:
                policy = decode_record(key, kv.value, ReconcilePolicy)
            elif key.startswith(LOST_NODES):
                lost[key[len(LOST_NODES) :]] = decode_record(key, kv.value, LostNodeRecord)
                revisions[key[len(LOST_NODES) :]] = kv.mod_revision
            elif key == REBALANCE_KEY:
                rebalanced_at = kv.mod_revision  # (what it covers, if it says: a late copy's own reach)
                covers = decode_record(key, kv.value, RebalanceRequest).covers
                rebalanced_at = min(covers, kv.mod_revision) if covers else kv.mod_revision
            elif key.startswith(RETRIES):
                retry = decode_record(key, kv.value, RetryRequest)
                retried[key[len(RETRIES) :]] = min(retry.covers, kv.mod_revision)
        except RecordError as error:
            log_once(log, error, key, kv.mod_revision)
    return ReconcileState(
        policy=policy, lost=lost, lost_revisions=revisions, rebalanced_at=rebalanced_at, retried=retried
    )
