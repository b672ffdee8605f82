"""The typed cluster event log: KV changes → `ClusterEvent`s, and filters over them. Pure: no I/O.

Events are derived from the KV's history (every change of `nodes/`, `blueprints/`, `cluster/leader`,
`cluster/node-ops/`, `cluster/autoscale-decisions/`, `cluster/rollouts/`, `cluster/paused/`,
`cluster/reconcile/`, `cluster/audit/` and `slices/` is one or two events), so every node can tell the
same story, in revision order. Kinds: `client.EVENT_KINDS`.

An event's time is when it was written, the same on every query: the writer's own timestamp where the
record carries one (instance states, blueprints, leader claims), else — node joins and losses, deletions —
the time the change was first observed, which `_event_clock` stamps into the KV once (`needs_time` says
which changes; the caller passes that time as `at`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import attrs

from aether_kv import Event

from ..client import EVENT_KINDS, ClusterEvent
from ..core._blueprint import Blueprint
from ..core._coordinates import Coordinates, parse_artifact_id
from ..core._errors import InvalidCoordinatesError
from ..core._reconcile_spec import ReconcilePolicy, resolve
from ..core._reconcile_spec import describe as describe_policy
from ..core._records import (
    AuditRecord,
    AutoscaleLog,
    LeaderClaim,
    LostNodeRecord,
    NodeOperation,
    NodeOperationRecord,
    NodeRecord,
    PausedRollout,
    RebalanceRequest,
    RecordError,
    RetryRequest,
    RolloutPhase,
    RolloutRecord,
    SliceRecord,
    SliceState,
    decode_record,
)
from ..core._schema import (
    AUDIT,
    AUTOSCALE_DECISIONS,
    BLUEPRINTS,
    LEADER_KEY,
    LOST_NODES,
    NODE_OPS,
    NODES,
    PAUSED,
    REBALANCE_KEY,
    RECONCILE,
    RECONCILE_POLICY,
    RETRIES,
    ROLLOUTS,
    SLICES,
    InstanceKey,
)

MAX_NODE_ID = 253


class EventFilterError(ValueError):
    """A filter parameter is not valid (the caller's fault); the message names the parameter."""


@attrs.frozen(kw_only=True)
class EventFilter:
    """Which events to keep: any of `kinds` (all if empty), of one slice, about one node."""

    kinds: frozenset[str] = frozenset()
    slice: str = ""  # group:artifact (any version) or group:artifact:version
    node: str = ""

    def matches(self, event: ClusterEvent) -> bool:
        if self.kinds and event.kind not in self.kinds:
            return False
        if self.slice:
            if not event.artifact:
                return False
            if self.slice != event.artifact and self.slice != event.artifact.rsplit(":", 1)[0]:
                return False
        return not self.node or self.node in (event.node_id, event.from_node_id)

    @classmethod
    def parse(
        cls, kinds: Iterable[str] = (), slice: str | None = None, node: str | None = None
    ) -> EventFilter:
        """From query parameters (`kinds`: names, each maybe comma-separated). Raises EventFilterError."""
        wanted = {k.strip() for item in kinds for k in item.split(",") if k.strip()}
        unknown = sorted(wanted - set(EVENT_KINDS))
        if unknown:
            raise EventFilterError(
                f"kind: unknown event kind {', '.join(map(repr, unknown))} (known: {', '.join(EVENT_KINDS)})"
            )
        slice = (slice or "").strip()
        if slice:
            try:
                if slice.count(":") == 2:
                    Coordinates.parse(slice)
                else:
                    parse_artifact_id(slice)
            except InvalidCoordinatesError as error:
                raise EventFilterError(f"slice: {error.message}") from None
        node = (node or "").strip()
        if len(node) > MAX_NODE_ID or "/" in node:
            raise EventFilterError(f"node: not a node id: {node[:40]!r}")
        return cls(kinds=frozenset(wanted), slice=slice, node=node)


ALL_EVENTS = EventFilter()


def timed_prefixes() -> tuple[str, ...]:
    """The key prefixes where a change may need a time stamp (`needs_time`): nothing else is watched for
    it (endpoints, stamps, problems and the rest change often and never need one)."""
    return (NODES, BLUEPRINTS, SLICES, NODE_OPS, ROLLOUTS, RECONCILE, PAUSED)


def needs_time(event: Event) -> bool:
    """Whether the events of this KV change carry no time of their own (then `describe` takes `at`)."""
    key = event.kv.key
    if key.startswith(NODES):
        return event.kind == "delete" or event.prev is None
    if key.startswith(BLUEPRINTS):
        return event.kind == "delete" or _blueprint_time(event) is None
    if key.startswith(SLICES):
        return event.kind == "delete" and InstanceKey.parse(key) is not None
    if any(key.startswith(p) for p in timed_prefixes()):
        return event.kind == "delete"
    return False


def _blueprint_time(event: Event) -> float | None:
    try:
        timestamp = decode_record(event.kv.key, event.kv.value, Blueprint).timestamp
    except RecordError:
        return None
    return timestamp or None


def _blueprint_revision(event: Event) -> str:
    """ " (revision 3: rolled back to revision 1)" for a blueprint with a revision, else ""."""
    try:
        blueprint = decode_record(event.kv.key, event.kv.value, Blueprint)
    except RecordError:
        return ""
    if not blueprint.revision:
        return ""
    told = blueprint.change and blueprint.change != "applied"  # (applied: the event says so already)
    return f" (revision {blueprint.revision}" + (f": {blueprint.change})" if told else ")")


def _node_operation_event(event: Event, node_id: str, at: float) -> list[ClusterEvent]:
    if event.kind == "delete":
        message = f"node {node_id} uncordoned: back on duty"
        return [_made(event, at, "node_uncordoned", node_id, message, node_id=node_id)]
    try:
        record = decode_record(event.kv.key, event.kv.value, NodeOperationRecord)
    except RecordError:
        return []
    if record.operation is NodeOperation.CORDONED:
        message = f"node {node_id} cordoned: no new instance is placed there"
        return [_made(event, record.since, "node_cordoned", node_id, message, node_id=node_id)]
    message = f"node {node_id} draining: its instances move to other nodes"
    return [_made(event, record.since, "node_draining", node_id, message, node_id=node_id)]


def _rollout_record(key: str, value: bytes | None) -> RolloutRecord | None:
    if not value:
        return None
    try:
        return decode_record(key, value, RolloutRecord)
    except RecordError:
        return None


def _rollout_event(event: Event, artifact_id: str, at: float) -> list[ClusterEvent]:
    """A rollout's record started, moved to another phase, or was deleted (its end); a change of its
    reason alone is no event."""
    before = _rollout_record(event.kv.key, event.prev.value if event.prev else None)
    if event.kind == "delete":
        if before is None:
            return []
        outcome = "the new version runs alone" if before.phase is RolloutPhase.PROMOTED else "record removed"
        message = f"rollout of {artifact_id} to {before.candidate} done: {outcome}"
        return [
            _made(
                event, at, "rollout_done", artifact_id, message, artifact=f"{artifact_id}:{before.candidate}"
            )
        ]
    record = _rollout_record(event.kv.key, event.kv.value)
    if record is None or (before is not None and before.phase is record.phase and before.step == record.step):
        return []
    name = f"rollout of {artifact_id} ({record.strategy}) {record.stable} -> {record.candidate}"
    if record.stable_config is not None:
        name += " (config changed)"
    if before is None:
        kind, what = "rollout_started", "started"
    elif record.phase is RolloutPhase.OBSERVING:
        kind, what = "rollout_step", f"step {record.step + 1}: {record.share}% of calls on {record.candidate}"
    elif record.phase is RolloutPhase.DEPLOYING:
        kind, what = "rollout_step", f"step {record.step + 1}: bringing up new instances"
    elif record.phase is RolloutPhase.SWITCHED:
        kind, what = "rollout_switched", f"every call on {record.candidate}"
    elif record.phase is RolloutPhase.PROMOTED:
        kind, what = "rollout_promoted", f"{record.candidate} takes over"
    else:
        kind, what = "rollout_aborted", f"every call back on {record.stable}"
    message = f"{name}: {what}" + (f" ({record.reason})" if record.reason else "")
    return [
        _made(
            event,
            record.since or at,
            kind,
            artifact_id,
            message,
            state=record.phase.value,
            reason=record.reason,
            artifact=f"{artifact_id}:{record.candidate}",
        )
    ]


def describe(event: Event, *, at: float = 0.0) -> list[ClusterEvent]:
    """One KV change → the cluster events it means (none for changes that are not events). `at`: when the
    change happened, for the changes whose records carry no time (`needs_time`)."""
    key = event.kv.key
    if key.startswith(NODES):
        return _node_event(event, key[len(NODES) :], at)
    if key.startswith(BLUEPRINTS):
        name = key[len(BLUEPRINTS) :]
        verb = "applied" if event.kind == "put" else "deleted"
        when = (_blueprint_time(event) if event.kind == "put" else None) or at
        revision = _blueprint_revision(event) if event.kind == "put" else ""
        return [_made(event, when, f"blueprint_{verb}", name, f"blueprint {name} {verb}{revision}")]
    if key.startswith(NODE_OPS):
        return _node_operation_event(event, key[len(NODE_OPS) :], at)
    if key.startswith(ROLLOUTS):
        return _rollout_event(event, key[len(ROLLOUTS) :], at)
    if key.startswith(RECONCILE):
        return _reconcile_event(event, at)
    if key.startswith(PAUSED):
        return _pause_event(event, key[len(PAUSED) :], at)
    if key == LEADER_KEY and event.kind == "put":
        return _leader_event(event)
    if key.startswith(AUTOSCALE_DECISIONS) and event.kind == "put":
        return _autoscale_event(event, key[len(AUTOSCALE_DECISIONS) :])
    if key.startswith(SLICES):
        parsed = InstanceKey.parse(key)
        return [] if parsed is None else _instance_events(event, parsed, at)
    if key.startswith(AUDIT) and event.kind == "put":
        return _audit_event(event)
    return []


def _pause_event(event: Event, artifact_id: str, at: float) -> list[ClusterEvent]:
    """A slice's rolling update paused (its record written) or resumed (deleted)."""
    if event.kind == "delete":
        message = f"rolling update of {artifact_id} resumed"
        return [_made(event, at, "rollout_resumed", artifact_id, message, artifact=artifact_id)]
    if event.prev is not None:
        return []
    try:
        record = decode_record(event.kv.key, event.kv.value, PausedRollout)
    except RecordError:
        return []
    message = f"rolling update of {artifact_id} paused: it stays where it is until resumed"
    return [_made(event, record.since, "rollout_paused", artifact_id, message, artifact=artifact_id)]


def _reconcile_event(event: Event, at: float) -> list[ClusterEvent]:
    """The cluster's policy set; a lost node awaited (or no longer); an operator's rebalance, or retry of a
    slice."""
    key = event.kv.key
    try:
        if key == RECONCILE_POLICY and event.kind == "put":
            policy = decode_record(key, event.kv.value, ReconcilePolicy)
            preset = f" (preset {policy.preset})" if policy.preset else ""
            message = f"reconciliation policy set: {describe_policy(resolve(policy))}{preset}"
            return [_made(event, policy.updated or at, "reconcile_policy_set", "cluster", message)]
        if key == REBALANCE_KEY and event.kind == "put":
            request = decode_record(key, event.kv.value, RebalanceRequest)
            message = "rebalance now: the instances of every lost node are replaced without waiting"
            return [_made(event, request.requested_at or at, "rebalance_requested", "cluster", message)]
        if key.startswith(RETRIES) and event.kind == "put":
            retry = decode_record(key, event.kv.value, RetryRequest)
            artifact_id = key[len(RETRIES) :]
            message = f"{artifact_id} retried: its failures are let go, their nodes tried again now"
            return [
                _made(
                    event,
                    retry.requested_at or at,
                    "retry_requested",
                    artifact_id,
                    message,
                    artifact=artifact_id,
                )
            ]
        if key.startswith(LOST_NODES):
            node_id = key[len(LOST_NODES) :]
            if event.kind == "delete":
                message = f"node {node_id}: no longer awaited (it came back, or its instances are replaced)"
                return [_made(event, at, "rebalance_delay_ended", node_id, message, node_id=node_id)]
            if event.prev is not None:
                return []
            record = decode_record(key, event.kv.value, LostNodeRecord)
            message = (
                f"node {node_id} lost: its {record.instances} instance records wait up to"
                f" {record.delay_s:g} s for it to come back (rebalance delay)"
            )
            return [_made(event, record.since, "rebalance_delayed", node_id, message, node_id=node_id)]
    except RecordError:
        return []
    return []


def _audit_event(event: Event) -> list[ClusterEvent]:
    try:
        record = decode_record(event.kv.key, event.kv.value, AuditRecord)
    except RecordError:
        return []
    on = f" ({record.target})" if record.target else ""
    message = f"{record.who or 'nobody'}: {record.method} {record.route}{on} → {record.status}"
    if record.unrecorded:  # (a flood of refusals is paced: `api/_audit.RefusalPacing`)
        message += f" (after {record.unrecorded} more refused, not recorded one by one)"
    return [
        _made(
            event,
            record.at,
            "audit",
            record.target or record.route,
            message,
            node_id=record.node_id,
            who=record.who,
            status=record.status,
        )
    ]


def _made(
    event: Event, timestamp: float, kind: str, subject: str, message: str, **extra: object
) -> ClusterEvent:
    return ClusterEvent(
        revision=event.revision, timestamp=timestamp, kind=kind, subject=subject, message=message, **extra
    )


def _node_record(key: str, value: bytes | None) -> NodeRecord | None:
    if not value:
        return None
    try:
        return decode_record(key, value, NodeRecord)
    except RecordError:
        return None


def _node_event(event: Event, node_id: str, now: float) -> list[ClusterEvent]:
    if event.kind == "put":
        if event.prev is None:
            return [_made(event, now, "node_joined", node_id, f"node {node_id} joined", node_id=node_id)]
        if not event.prev.lease or event.prev.lease == event.kv.lease:
            return []  # re-written by the same run (e.g. marked as leaving): not an event of its own
        # Registered again on another lease while the last one lived: a new run of the node, whose
        # previous one ended without leaving (killed and restarted at once, before anyone saw it lost).
        before = _node_record(event.kv.key, event.prev.value)
        since = (
            f" (its run since {time.strftime('%H:%M:%S', time.gmtime(before.started_at))} UTC)"
            if before is not None and before.started_at
            else ""
        )
        reason = "its previous run ended without leaving (killed or crashed, and started again)"
        message = f"node {node_id} restarted: {reason}{since}; its instances start again"
        return [_made(event, now, "node_restarted", node_id, message, node_id=node_id, reason=reason)]
    before = _node_record(event.kv.key, event.prev.value if event.prev else None)
    if before is not None and before.leaving:
        reason = "it shut down"
        return [
            _made(
                event,
                now,
                "node_left",
                node_id,
                f"node {node_id} left: {reason}",
                node_id=node_id,
                reason=reason,
            )
        ]
    ttl = f" within {before.lease_ttl:g} s" if before is not None and before.lease_ttl else ""
    reason = f"its lease expired: no keep-alive{ttl} (killed, hung or cut off)"
    message = f"node {node_id} lost: {reason}"
    return [_made(event, now, "node_lost", node_id, message, node_id=node_id, reason=reason)]


def _leader_event(event: Event) -> list[ClusterEvent]:
    try:
        claim = decode_record(LEADER_KEY, event.kv.value, LeaderClaim)
    except RecordError:
        return []
    previous = None
    if event.prev is not None:
        try:
            previous = decode_record(LEADER_KEY, event.prev.value, LeaderClaim)
        except RecordError:
            previous = None
    term = f"term {claim.term}" if claim.term else "a new term"
    if previous is None:
        reason = f"{term}: the first leader"
    elif previous.node_id == claim.node_id:
        reason = f"{term}: re-elected"
    else:
        reason = f"{term}: took over from {previous.node_id}"
    message = f"node {claim.node_id} leads the cluster ({reason})"
    return [
        _made(
            event, claim.since, "leader_elected", claim.node_id, message, node_id=claim.node_id, reason=reason
        )
    ]


def _autoscale_event(event: Event, artifact_id: str) -> list[ClusterEvent]:
    """The newest decision of the slice's log: what the autoscaler did or why it held, with its tree path
    (as the reason: `bounds: within > fresh > complete: partial`)."""
    try:
        entries = decode_record(event.kv.key, event.kv.value, AutoscaleLog).entries
    except RecordError:
        return []
    if not entries:
        return []
    last = entries[-1]
    return [
        _made(
            event,
            last.at,
            "autoscale_decision",
            artifact_id,
            last.message,
            reason=" > ".join(last.path),
            state=last.action,
            artifact=artifact_id,
        )
    ]


def _instance_events(event: Event, key: InstanceKey, at: float) -> list[ClusterEvent]:
    label = key.label
    about = {"node_id": key.node_id, "artifact": str(key.coordinates), "instance": key.instance}
    if event.kind == "delete":
        return [_made(event, at, "instance_removed", label, f"{label} removed from {key.node_id}", **about)]
    try:
        record = decode_record(event.kv.key, event.kv.value, SliceRecord)
    except RecordError:
        return []
    message = f"{label} on {key.node_id}: {record.state}" + (f" ({record.reason})" if record.reason else "")
    found = [
        _made(
            event,
            record.timestamp,
            "instance_state",
            label,
            message,
            state=str(record.state),
            reason=record.reason,
            restarts=record.restarts,
            last_exit=record.last_exit,
            **about,
        )
    ]
    if record.moved_from and record.state is SliceState.ACTIVATE and event.prev is None:
        move = f"{key.coordinates}: moving an instance from {record.moved_from} to {key.node_id}"
        found.append(
            _made(
                event,
                record.timestamp,
                "rebalance_move",
                label,
                move,
                reason="rebalance: spreading the slice over the nodes the blueprint's strategy allows",
                from_node_id=record.moved_from,
                **about,
            )
        )
    return found
