"""The event log's pure core: KV changes → typed cluster events, and the filters."""

from __future__ import annotations

import attrs
import pytest

from aether_kv import Event, EventKind, KeyValue
from aether_node.client import EVENT_KINDS, ClusterEvent
from aether_node.core._blueprint import Blueprint
from aether_node.core._records import (
    LeaderClaim,
    NodeRecord,
    RolloutPhase,
    RolloutRecord,
    SliceRecord,
    SliceState,
    encode_record,
)
from aether_node.core._schema import LEADER_KEY
from aether_node.observe._events import EventFilter, EventFilterError, describe, needs_time

ECHO = "org.aether:echo:1.0.0"


def kv(key: str, value: bytes, revision: int) -> KeyValue:
    return KeyValue(key=key, value=value, create_revision=revision, mod_revision=revision, version=1)


def put(key: str, record: object, revision: int, prev: object | None = None) -> Event:
    before = None if prev is None else kv(key, encode_record(prev), revision - 1)
    return Event(
        kind=EventKind.PUT, kv=kv(key, encode_record(record), revision), prev=before, revision=revision
    )


def delete(key: str, prev: object, revision: int) -> Event:
    return Event(
        kind=EventKind.DELETE,
        kv=kv(key, b"", revision),
        prev=kv(key, encode_record(prev), revision - 1),
        revision=revision,
    )


def node(node_id: str, **changes: object) -> NodeRecord:
    return NodeRecord(node_id=node_id, ingress="127.0.0.1:1", lease_ttl=2.0, **changes)  # type: ignore[arg-type]


def test_nodes_join_leave_and_are_lost() -> None:
    [joined] = describe(put("nodes/n1", node("n1"), 5), at=1000.0)
    assert (joined.kind, joined.subject, joined.node_id, joined.revision) == ("node_joined", "n1", "n1", 5)
    assert describe(put("nodes/n1", node("n1", leaving=True), 6, prev=node("n1")), at=1000.0) == []
    [left] = describe(delete("nodes/n1", node("n1", leaving=True), 7), at=1000.0)
    assert (left.kind, left.reason, left.message) == (
        "node_left",
        "it shut down",
        "node n1 left: it shut down",
    )
    [lost] = describe(delete("nodes/n2", node("n2"), 8), at=1000.0)
    assert lost.kind == "node_lost"
    assert lost.reason == "its lease expired: no keep-alive within 2 s (killed, hung or cut off)"
    assert lost.timestamp == 1000.0


def test_a_node_registered_again_on_another_lease_while_its_last_lived_restarted() -> None:
    """Killed and started again before anyone saw it lost (its lease still lived), a node's new run puts
    its registration over the last one's: no delete, so no node_lost or node_joined was said at all."""
    key = "nodes/n1"
    first = node("n1", started_at=1_700_000_000.0)
    old = KeyValue(
        key=key, value=encode_record(first), create_revision=4, mod_revision=4, version=1, lease=11
    )
    new = KeyValue(
        key=key, value=encode_record(node("n1")), create_revision=4, mod_revision=9, version=2, lease=12
    )
    [restarted] = describe(Event(kind=EventKind.PUT, kv=new, prev=old, revision=9), at=1000.0)
    assert (restarted.kind, restarted.node_id, restarted.message) == (
        "node_restarted",
        "n1",
        "node n1 restarted: its previous run ended without leaving (killed or crashed, and started again)"
        " (its run since 22:13:20 UTC); its instances start again",
    )
    same = KeyValue(
        key=key,
        value=encode_record(node("n1", leaving=True)),
        create_revision=4,
        mod_revision=9,
        version=2,
        lease=11,
    )
    assert describe(Event(kind=EventKind.PUT, kv=same, prev=old, revision=9), at=1000.0) == []  # same run


def test_a_leader_election_says_whom_it_replaced_and_the_term() -> None:
    first = LeaderClaim(node_id="n1", since=10.0, term=2)
    [event] = describe(put(LEADER_KEY, first, 3), at=1000.0)
    assert (event.kind, event.node_id, event.reason, event.timestamp) == (
        "leader_elected",
        "n1",
        "term 2: the first leader",
        10.0,
    )
    [event] = describe(
        put(LEADER_KEY, LeaderClaim(node_id="n2", since=20.0, term=4), 9, prev=first), at=1000.0
    )
    assert event.reason == "term 4: took over from n1"
    assert event.message == "node n2 leads the cluster (term 4: took over from n1)"


def test_instance_states_carry_reasons_and_a_move_is_its_own_event() -> None:
    key = f"slices/n2/{ECHO}/3"
    failed = SliceRecord(state=SliceState.FAILED, reason="activate: boom", timestamp=50.0)
    [event] = describe(put(key, failed, 11, prev=SliceRecord(state=SliceState.ACTIVATING)), at=1000.0)
    assert event == ClusterEvent(
        revision=11,
        timestamp=50.0,
        kind="instance_state",
        subject=f"{ECHO}#3",
        message=f"{ECHO}#3 on n2: FAILED (activate: boom)",
        node_id="n2",
        state="FAILED",
        reason="activate: boom",
        artifact=ECHO,
        instance=3,
    )
    moved = SliceRecord(
        state=SliceState.ACTIVATE, reason="rebalance: moving from n1", moved_from="n1", timestamp=60.0
    )
    state, move = describe(put(key, moved, 12), at=1000.0)
    assert (state.kind, state.state, state.reason) == (
        "instance_state",
        "ACTIVATE",
        "rebalance: moving from n1",
    )
    assert (move.kind, move.node_id, move.from_node_id, move.artifact, move.instance) == (
        "rebalance_move",
        "n2",
        "n1",
        ECHO,
        3,
    )
    assert move.message == f"{ECHO}: moving an instance from n1 to n2"
    # the node's own later writes of that record are no new move
    activating = SliceRecord(state=SliceState.ACTIVATING, command=SliceState.ACTIVATE)
    assert [e.kind for e in describe(put(key, activating, 13, prev=moved), at=1000.0)] == ["instance_state"]
    [removed] = describe(delete(key, failed, 14), at=1000.0)
    assert (removed.kind, removed.node_id, removed.artifact) == ("instance_removed", "n2", ECHO)
    # an instance its node started again after its process died: how many times, how the last one ended
    again = SliceRecord(state=SliceState.ACTIVE, restarts=2, last_exit="killed by SIGKILL")
    [event] = describe(put(key, again, 15, prev=activating), at=1000.0)
    assert (event.state, event.reason, event.restarts, event.last_exit) == (
        "ACTIVE",
        "",
        2,
        "killed by SIGKILL",
    )


def test_changes_that_are_not_events() -> None:
    assert describe(put("endpoints/x/echo:1", node("n1"), 3), at=1000.0) == []
    assert describe(put("slices/not-an-instance-key", node("n1"), 3), at=1000.0) == []
    assert describe(put(f"slices/n1/{ECHO}/1", node("n1"), 3), at=1000.0) == []  # not a SliceRecord


def test_events_take_the_writers_time_or_the_stamped_one() -> None:
    """Records with a time of their own (instance states, blueprints, leader claims) give it; node joins
    and losses and every deletion need a stamp (`needs_time`) and take the one passed as `at`."""
    key = f"slices/n1/{ECHO}/1"
    active = SliceRecord(state=SliceState.ACTIVE, timestamp=50.0)
    blueprint = Blueprint(name="demo", slices=(), timestamp=60.0)
    claim = LeaderClaim(node_id="n1", since=70.0, term=2)
    for change, stamped, when in [
        (put(key, active, 3), False, 50.0),
        (delete(key, active, 4), True, 1000.0),
        (put("blueprints/demo", blueprint, 5), False, 60.0),
        (put("blueprints/demo", attrs.evolve(blueprint, timestamp=0.0), 5), True, 1000.0),
        (delete("blueprints/demo", blueprint, 6), True, 1000.0),
        (put(LEADER_KEY, claim, 7), False, 70.0),
        (put("nodes/n1", node("n1", started_at=40.0), 8), True, 1000.0),
        (delete("nodes/n1", node("n1", started_at=40.0), 9), True, 1000.0),
    ]:
        assert needs_time(change) is stamped, change
        [made] = describe(change, at=1000.0)
        assert made.timestamp == when, (change, made)
    # a re-written registration (marked as leaving) is no event and needs no stamp
    assert not needs_time(put("nodes/n1", node("n1", leaving=True), 10, prev=node("n1")))
    assert not needs_time(put("endpoints/x/echo:1", node("n1"), 11))


def event(kind: str, **fields: object) -> ClusterEvent:
    return ClusterEvent(revision=1, timestamp=0.0, kind=kind, subject="s", message="m", **fields)  # type: ignore[arg-type]


def test_filters_select_by_kind_slice_and_node() -> None:
    instance = event("instance_state", node_id="n1", artifact=ECHO)
    move = event("rebalance_move", node_id="n2", from_node_id="n1", artifact=ECHO)
    lost = event("node_lost", node_id="n3")
    applied = event("blueprint_applied")
    everything = [instance, move, lost, applied]

    def kept(selection: EventFilter) -> list[ClusterEvent]:
        return [e for e in everything if selection.matches(e)]

    assert kept(EventFilter.parse()) == everything
    assert kept(EventFilter.parse(["node_lost,rebalance_move"])) == [move, lost]
    assert kept(EventFilter.parse(["node_lost", "blueprint_applied"])) == [lost, applied]
    assert kept(EventFilter.parse(slice="org.aether:echo")) == [instance, move]
    assert kept(EventFilter.parse(slice=ECHO)) == [instance, move]
    assert kept(EventFilter.parse(slice="org.aether:echo:2.0.0")) == []
    assert kept(EventFilter.parse(node="n1")) == [instance, move]
    assert kept(EventFilter.parse(["instance_state"], node="n1")) == [instance]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"kinds": ["node_lost,nope"]},
            "kind: unknown event kind 'nope' (known: " + ", ".join(EVENT_KINDS) + ")",
        ),
        ({"slice": "echo"}, "slice: "),
        ({"slice": "org.aether:echo:not a version"}, "slice: "),
        ({"node": "a/b"}, "node: not a node id: 'a/b'"),
    ],
)
def test_bad_filters_are_refused_with_the_parameter_named(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(EventFilterError) as raised:
        EventFilter.parse(**arguments)  # type: ignore[arg-type]
    assert str(raised.value).startswith(message)


# ---------------------------------------------------------------- rollouts

ROLLOUT_KEY = "cluster/rollouts/org.aether:echo"
STARTED = RolloutRecord(
    artifact_id="org.aether:echo",
    strategy="canary",
    stable="1.0.0",
    candidate="2.0.0",
    phase=RolloutPhase.DEPLOYING,
    since=10.0,
    reason="step 1 of 2: bringing up 1 new instance",
)


def test_a_rollout_tells_its_start_steps_and_end() -> None:
    (started,) = describe(put(ROLLOUT_KEY, STARTED, 5))
    assert (started.kind, started.subject, started.artifact, started.timestamp) == (
        "rollout_started",
        "org.aether:echo",
        "org.aether:echo:2.0.0",
        10.0,
    )
    assert started.message == (
        "rollout of org.aether:echo (canary) 1.0.0 -> 2.0.0: started"
        " (step 1 of 2: bringing up 1 new instance)"
    )
    observing = attrs.evolve(STARTED, phase=RolloutPhase.OBSERVING, share=10, since=20.0, reason="")
    (step,) = describe(put(ROLLOUT_KEY, observing, 6, prev=STARTED))
    assert (step.kind, step.state, step.message) == (
        "rollout_step",
        "OBSERVING",
        "rollout of org.aether:echo (canary) 1.0.0 -> 2.0.0: step 1: 10% of calls on 2.0.0",
    )
    assert describe(put(ROLLOUT_KEY, attrs.evolve(observing, reason="waiting"), 7, prev=observing)) == []
    aborted = attrs.evolve(observing, phase=RolloutPhase.ABORTED, share=0, reason="error rate 50.0% > 1.0%")
    (abort,) = describe(put(ROLLOUT_KEY, aborted, 8, prev=observing))
    assert (abort.kind, abort.reason) == ("rollout_aborted", "error rate 50.0% > 1.0%")
    assert abort.message.endswith("every call back on 1.0.0 (error rate 50.0% > 1.0%)")
    promoted = attrs.evolve(observing, phase=RolloutPhase.PROMOTED)
    assert needs_time(delete(ROLLOUT_KEY, promoted, 9))
    (done,) = describe(delete(ROLLOUT_KEY, promoted, 9), at=42.0)
    assert (done.kind, done.timestamp, done.message) == (
        "rollout_done",
        42.0,
        "rollout of org.aether:echo to 2.0.0 done: the new version runs alone",
    )
    assert EventFilter.parse(kinds=["rollout_step"], slice="org.aether:echo").matches(step)


def test_a_blue_green_switch_and_promotion_are_events() -> None:
    deploying = attrs.evolve(STARTED, strategy="blue_green")
    switched = attrs.evolve(deploying, phase=RolloutPhase.SWITCHED, share=100)
    assert [e.kind for e in describe(put(ROLLOUT_KEY, switched, 6, prev=deploying))] == ["rollout_switched"]
    promoted = attrs.evolve(switched, phase=RolloutPhase.PROMOTED)
    assert [e.kind for e in describe(put(ROLLOUT_KEY, promoted, 7, prev=switched))] == ["rollout_promoted"]
    assert not needs_time(put(ROLLOUT_KEY, promoted, 7, prev=switched))


def test_each_audit_record_put_is_an_audit_event_with_who_what_and_status() -> None:
    from aether_node.core._records import AuditRecord

    record = AuditRecord(
        who="deployer",
        method="DELETE",
        route="/api/v1/blueprints/shop",
        target="shop",
        status=403,
        at=1234.5,
        node_id="n2",
    )
    change = put("cluster/audit/n2", record, 9)
    assert not needs_time(change)  # the record carries its own time
    [event] = describe(change)
    assert (event.kind, event.who, event.status, event.subject, event.node_id, event.timestamp) == (
        "audit",
        "deployer",
        403,
        "shop",
        "n2",
        1234.5,
    )
    assert event.message == "deployer: DELETE /api/v1/blueprints/shop (shop) → 403"
    paced = attrs.evolve(record, unrecorded=40)  # (a flood of refusals: `api/_audit.RefusalPacing`)
    [event] = describe(put("cluster/audit/n2", paced, 9))
    assert event.message == (
        "deployer: DELETE /api/v1/blueprints/shop (shop) → 403"
        " (after 40 more refused, not recorded one by one)"
    )
    assert EventFilter.parse(["audit"]).matches(event)
    assert not EventFilter.parse(["blueprint_deleted"]).matches(event)
    # the key only ever holds the latest record: a delete means nothing, a bad record is skipped
    assert describe(delete("cluster/audit/n2", record, 10), at=1.0) == []
    assert (
        describe(Event(kind=EventKind.PUT, kv=kv("cluster/audit/n2", b"[", 11), prev=None, revision=11)) == []
    )
