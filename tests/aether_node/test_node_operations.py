"""Node operations and blueprint changes in the pure core: the planner with cordoned and draining nodes
(`_reconcile.plan`), node states (`_node_ops`), what a blueprint would change (`_diff`), the TOML
rewrite of `slice scale`, and the events of node operations and revisions.

A drain is simulated as the cluster carries it out: a created instance goes ACTIVE in the round after
it is created, a removal makes the record disappear. Properties: no pass takes a slice below
min(floor, ACTIVE before), nothing is placed on a cordoned or draining node, and the passes converge with
the draining node empty unless the floor holds an instance there (and the plan says the drain waits).
"""

from __future__ import annotations

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from aether_kv import Event, EventKind, KeyValue, Member, Status
from aether_node.control._allocation import NodeCapacity
from aether_node.control._diff import diff_blueprint
from aether_node.control._node_ops import (
    CORDONED,
    DRAINED,
    DRAINING,
    LEAVING,
    ON_DUTY,
    decode_operations,
    drain_waits,
    node_state,
    quorum_lost_by_stopping,
    split_operations,
)
from aether_node.control._reconcile import CreateInstance, ObservedInstance, Plan, RemoveInstance, plan
from aether_node.control._rescale import rescaled_source
from aether_node.core._blueprint import Blueprint, SliceSpec, Strategy
from aether_node.core._blueprint_toml import parse_blueprint
from aether_node.core._coordinates import Coordinates
from aether_node.core._records import NodeOperation, NodeOperationRecord, SliceState, encode_record
from aether_node.core._update_spec import UpdateSpec, UpdateStrategy
from aether_node.observe._events import describe, needs_time

ECHO = "org.example:echo:1.0"
ECHO_11 = "org.example:echo:1.1"


def node(node_id: str) -> NodeCapacity:
    return NodeCapacity(node_id=node_id, cpu=64.0, memory_mib=65536)


def observed(
    node_id: str, instance: int, state: SliceState = SliceState.ACTIVE, artifact: str = ECHO
) -> ObservedInstance:
    return ObservedInstance(
        node_id=node_id,
        coordinates=Coordinates.parse(artifact),
        instance=instance,
        state=state,
        key=f"slices/{node_id}/{artifact}/{instance}",
        mod_revision=1,
    )


def spread(instances: int = 3, floor: int | None = None, max_per_node: int = 1) -> SliceSpec:
    return SliceSpec(
        artifact=ECHO,
        instances=instances,
        strategy=Strategy.SPREAD,
        max_per_node=max_per_node,
        min_available=floor,
    )


def creates(p: Plan) -> list[CreateInstance]:
    return [a for a in p.actions if isinstance(a, CreateInstance)]


def removes(p: Plan) -> list[RemoveInstance]:
    return [a for a in p.actions if isinstance(a, RemoveInstance)]


# ---------------------------------------------------------------- the planner


def test_a_cordoned_node_keeps_its_instances_and_gets_no_new_one() -> None:
    nodes = [node("a"), node("b"), node("c")]
    running = [observed("a", 1), observed("b", 2)]
    p = plan([spread(4, max_per_node=2)], nodes, running, cordoned={"a"})
    assert not removes(p)
    assert {c.node_id for c in creates(p)} <= {"b", "c"} and creates(p)


def test_a_cordoned_node_that_holds_the_only_room_leaves_the_rest_unplaced_and_says_so() -> None:
    p = plan([spread(2)], [node("a"), node("b")], [observed("a", 1)], cordoned={"b"})
    assert not p.actions
    (problem,) = p.problems
    assert "1 of 2 instances of org.example:echo:1.0 fit on no live node" in problem.message
    assert "1 of them cordoned" in problem.message


def test_a_drain_creates_the_replacement_first_then_removes_the_old_instance() -> None:
    nodes = [node("a"), node("b"), node("c"), node("d")]
    running = [observed("a", 1), observed("b", 2), observed("c", 3)]
    first = plan([spread(3)], nodes, running, draining={"c"})
    (create,) = creates(first)
    assert (create.node_id, create.moved_from) == ("d", "c")
    assert not removes(first)  # the replacement is not ACTIVE yet
    replaced = [*running, observed("d", 4)]
    second = plan([spread(3)], nodes, replaced, draining={"c"})
    assert [(r.key, r.why) for r in removes(second)] == [(running[2].key, "node c is draining")]
    assert not creates(second)


def test_failed_and_starting_instances_on_a_draining_node_go_at_once() -> None:
    running = [observed("a", 1), observed("b", 2, SliceState.FAILED), observed("b", 3, SliceState.LOADING)]
    p = plan([spread(2, floor=1)], [node("a"), node("b"), node("c")], running, draining={"b"}, now=0.0)
    assert sorted(r.key for r in removes(p)) == sorted([running[1].key, running[2].key])
    assert all(r.why == "node b is draining" for r in removes(p))


def test_a_drain_the_floor_holds_back_waits_and_says_why() -> None:
    nodes = [node("a"), node("b"), node("c")]
    running = [observed("a", 1), observed("b", 2), observed("c", 3)]
    p = plan([spread(3, floor=3)], nodes, running, draining={"c"})
    assert not p.actions
    (problem,) = p.problems
    assert "below its floor of 3 ACTIVE" in problem.message
    assert "the drain of c waits for room elsewhere" in problem.message


def test_a_drain_a_rollout_holds_back_says_what_ends_it() -> None:
    # a canary of 1.1 at its first step: one new instance, the three of 1.0 held until promote or abort
    nodes = [node("a"), node("b"), node("c")]
    running = [observed("a", 1), observed("b", 2), observed("c", 3), observed("a", 4, artifact=ECHO_11)]
    canary = UpdateSpec(strategy=UpdateStrategy.CANARY, steps=(10, 50, 100))
    spec = attrs.evolve(spread(1), artifact=ECHO_11, update=canary)
    stable = {"org.example:echo": attrs.evolve(spread(3), update=canary)}  # what the leader keeps whole
    p = plan([spec], nodes, running, draining={"c"}, held={"org.example:echo"}, stable=stable)
    assert running[2].key not in {r.key for r in removes(p)}  # the stable set stays whole
    assert not creates(p)  # ... where it is: a drain is no loss, nothing of 1.0 is placed elsewhere
    (problem,) = p.problems
    assert problem.message == (
        "the canary rollout of org.example:echo holds the old version's instances until it ends: promote"
        " or abort it (`aether slice promote|abort org.example:echo`); the drain of c waits for that"
    )
    said = drain_waits("c", ["org.example:echo:1.0#3"], {problem.artifact: problem.message})
    assert "its replacement is not ACTIVE yet" not in said and "promote or abort it" in said
    # paused: the update waits for a resume
    rolling = attrs.evolve(spread(2), artifact=ECHO_11)
    held = {"org.example:echo"}
    p = plan([rolling], nodes, running[:3], draining={"c"}, held=held, frozen=held)
    assert [x.message for x in p.problems] == [
        "the paused update of org.example:echo holds its instances where they are:"
        " `aether slice resume org.example:echo` lets it go on; the drain of c waits for that"
    ]


def test_a_drain_takes_a_slice_down_to_its_floor_when_nothing_else_fits() -> None:
    nodes = [node("a"), node("b"), node("c")]
    running = [observed("a", 1), observed("b", 2), observed("c", 3)]
    p = plan([spread(3, floor=2)], nodes, running, draining={"c"})
    assert [r.key for r in removes(p)] == [running[2].key]


def test_a_draining_node_that_is_also_stopping_is_left_to_its_stop() -> None:
    running = [observed("a", 1), observed("b", 2)]
    p = plan([spread(2, floor=1)], [node("a"), node("b"), node("c")], running, stopping={"b"}, draining={"b"})
    assert not removes(p)
    assert [c.node_id for c in creates(p)] == ["c"]


@st.composite
def drain_scenarios(draw: st.DrawFn) -> tuple[list[NodeCapacity], SliceSpec, list[str], list[str]]:
    count = draw(st.integers(1, 4))
    nodes = [node(f"n{i}") for i in range(count)]
    instances = draw(st.integers(0, 5))
    floor = draw(st.none() | st.integers(0, instances))
    max_per_node = draw(st.integers(1, 3))
    spec = SliceSpec(
        artifact=ECHO,
        instances=instances,
        strategy=draw(st.sampled_from([Strategy.SPREAD, Strategy.ROUND_ROBIN])),
        max_per_node=max_per_node,
        min_available=floor,
    )
    ids = [n.node_id for n in nodes]
    draining = draw(st.lists(st.sampled_from(ids), unique=True, max_size=count))
    cordoned = draw(st.lists(st.sampled_from([i for i in ids if i not in draining] or ids), unique=True))
    return nodes, spec, draining, cordoned


@settings(max_examples=200, deadline=None)
@given(drain_scenarios())
def test_drains_keep_the_floor_place_nothing_on_closed_nodes_and_converge(
    scenario: tuple[list[NodeCapacity], SliceSpec, list[str], list[str]],
) -> None:
    nodes, spec, draining, cordoned = scenario
    records: dict[str, ObservedInstance] = {}
    number = 0
    for _ in range(30):  # settle the blueprint first, with every node on duty
        p = plan([spec], nodes, list(records.values()))
        if not p.actions:
            break
        for action in p.actions:
            if isinstance(action, CreateInstance):
                number = max(number, action.instance)
                made = observed(action.node_id, action.instance)
                records[made.key] = made
            elif isinstance(action, RemoveInstance):
                del records[action.key]
    closed = set(draining) | set(cordoned)
    floor = min(spec.floor, spec.instances)
    starting: set[str] = set()
    for _ in range(40):
        for key in starting:  # what was created last round is ACTIVE now
            if key in records:
                records[key] = attrs.evolve(records[key], state=SliceState.ACTIVE)
        starting = set()
        p = plan([spec], nodes, list(records.values()), cordoned=cordoned, draining=draining)
        if not p.actions:
            break
        active_before = sum(r.state is SliceState.ACTIVE for r in records.values())
        removed = {r.key for r in removes(p)}
        active_after = sum(r.state is SliceState.ACTIVE for k, r in records.items() if k not in removed)
        assert active_after >= min(floor, active_before), (p, records)
        for action in p.actions:
            if isinstance(action, CreateInstance):
                assert action.node_id not in closed, action
                made = observed(action.node_id, action.instance, SliceState.ACTIVATE)
                records[made.key] = made
                starting.add(made.key)
            elif isinstance(action, RemoveInstance):
                del records[action.key]
    else:
        raise AssertionError(f"no convergence: {records}")
    left = [r for r in records.values() if r.node_id in draining]
    if left:  # only the floor keeps an instance on a draining node, and the plan says so
        assert len(records) <= floor, records
        (problem,) = p.problems
        assert "the drain of" in problem.message


# ---------------------------------------------------------------- node states


def test_node_states() -> None:
    cordon = NodeOperationRecord(operation=NodeOperation.CORDONED)
    drain = NodeOperationRecord(operation=NodeOperation.DRAINING)
    assert node_state(None, leaving=False, instances=2) == ON_DUTY
    assert node_state(cordon, leaving=False, instances=2) == CORDONED
    assert node_state(drain, leaving=False, instances=1) == DRAINING
    assert node_state(drain, leaving=False, instances=0) == DRAINED
    assert node_state(drain, leaving=True, instances=1) == LEAVING


def test_operations_decode_and_a_bad_record_counts_as_on_duty() -> None:
    def item(key: str, value: bytes) -> KeyValue:
        return KeyValue(key=key, value=value, create_revision=1, mod_revision=1, version=1)

    records = {
        "cluster/node-ops/a": item(
            "cluster/node-ops/a", encode_record(NodeOperationRecord(operation=NodeOperation.CORDONED))
        ),
        "cluster/node-ops/b": item(
            "cluster/node-ops/b", encode_record(NodeOperationRecord(operation=NodeOperation.DRAINING))
        ),
        "cluster/node-ops/c": item("cluster/node-ops/c", b'{"operation": "SLEEPING"}'),
    }
    assert split_operations(decode_operations(records)) == (frozenset({"a"}), frozenset({"b"}))


def kv_status(up: set[str], replicas: tuple[str, ...] = ("r1", "r2", "r3", "r4", "r5")) -> Status:
    """What replica r1 says: itself and the members it is connected to are up."""
    members = tuple(Member(raft_address=r, connected=r in up) for r in replicas)
    return Status(
        self_address="r1",
        leader="r1",
        is_leader=True,
        term=1,
        commit_index=1,
        last_applied=1,
        revision=1,
        compact_revision=0,
        has_quorum=True,
        members=members,
        keys=0,
        leases=0,
    )


def test_a_stop_that_takes_the_kv_majority_away_says_so_and_one_that_does_not_passes() -> None:
    five_up = kv_status({"r2", "r3", "r4", "r5"})
    assert quorum_lost_by_stopping(five_up, "r3") is None  # 4 of 5 left
    assert quorum_lost_by_stopping(five_up, "") is None  # a node without a replica
    assert quorum_lost_by_stopping(five_up, "r9") is None  # not a replica of this store
    three_up = kv_status({"r2", "r3"})
    assert quorum_lost_by_stopping(three_up, "r4") is None  # down already: stopping it changes nothing
    assert quorum_lost_by_stopping(three_up, "r3") == (
        "leave 2 of the KV store's 5 replicas up, fewer than the 3 it needs to commit anything: every"
        " change in the cluster would stop until enough are back (not up now: r4, r5)"
    )
    named = quorum_lost_by_stopping(three_up, "r3", names={"r4": "n4", "r3": "n3"})
    assert named is not None and named.endswith("(not up now: r4 (node n4), r5)")  # by node where known
    assert quorum_lost_by_stopping(three_up, "r1") is not None  # the replica that answers counts too
    alone = kv_status(set(), replicas=("r1",))
    assert quorum_lost_by_stopping(alone, "r1") == (
        "leave 0 of the KV store's 1 replica up, fewer than the 1 it needs to commit anything: every"
        " change in the cluster would stop until enough are back"
    )


def test_what_a_drain_waits_for() -> None:
    problems = {"org.example:echo": "waiting: below its floor"}
    said = drain_waits("c", ["org.example:echo:1.0#3", "org.example:greeter:1.0#1"], problems)
    assert said == (
        "drain of c waits for 2 instances to move: org.example:echo:1.0#3 (waiting: below its floor);"
        " org.example:greeter:1.0#1: its replacement is not ACTIVE yet"
    )
    assert drain_waits("c", [], problems) == ""


# ---------------------------------------------------------------- diff


def test_diff_of_a_scale_up_a_version_change_and_a_removal() -> None:
    stored = Blueprint(
        name="web",
        slices=(
            SliceSpec(artifact=ECHO, instances=2),
            SliceSpec(artifact="org.example:greeter:1.0", instances=1),
        ),
        revision=3,
    )
    new = Blueprint(name="web", slices=(SliceSpec(artifact="org.example:echo:2.0", instances=3),))
    running = [observed("a", 1), observed("b", 2), observed("a", 3, artifact="org.example:greeter:1.0")]
    diff = diff_blueprint(new, [stored], [node("a"), node("b"), node("c")], running, now=0.0)
    assert (diff.name, diff.exists, diff.revision, diff.changed) == ("web", True, 3, True)
    echo, greeter = diff.slices
    assert (echo.artifact, echo.change, echo.versions_before, echo.version_after) == (
        "org.example:echo",
        "changed",
        ("1.0",),
        "2.0",
    )
    assert (
        echo.instances_before,
        echo.instances_after,
        echo.added,
        echo.moved,
        echo.removed,
        echo.replaced,
    ) == (
        2,
        3,
        1,
        0,
        0,
        2,
    )
    assert [(n.node_id, n.before, n.after) for n in echo.nodes] == [("a", 1, 1), ("b", 1, 1), ("c", 0, 1)]
    assert (greeter.change, greeter.instances_after, greeter.removed) == ("removed", 0, 1)


def test_diff_of_the_same_blueprint_changes_nothing_and_a_drain_moves() -> None:
    stored = Blueprint(name="web", slices=(SliceSpec(artifact=ECHO, instances=2),), revision=1)
    running = [observed("a", 1), observed("b", 2)]
    nodes = [node("a"), node("b"), node("c")]
    same = diff_blueprint(stored, [stored], nodes, running, now=0.0)
    assert not same.changed and same.slices[0].change == "unchanged"
    draining = diff_blueprint(stored, [stored], nodes, running, now=0.0, draining={"b"})
    assert (draining.slices[0].moved, draining.slices[0].added, draining.slices[0].removed) == (1, 0, 0)


def test_diff_of_a_new_blueprint() -> None:
    new = Blueprint(name="new", slices=(SliceSpec(artifact=ECHO, instances=1),))
    diff = diff_blueprint(new, [], [node("a")], [], now=0.0)
    assert (diff.exists, diff.changed, diff.slices[0].change, diff.slices[0].added) == (
        False,
        True,
        "added",
        1,
    )


# ---------------------------------------------------------------- the TOML rewrite of `slice scale`


TOML = """name = "web"  # the site

[[slices]]
artifact = "org.example:echo:1.0"
instances   = 2  # keep two
[slices.resources]
cpu = 0.5

[[slices]]
artifact = "org.example:greeter:1.0"
instances = 1
[slices.config]
instances = 7
"""


def test_rescaled_source_keeps_the_rest_of_the_text() -> None:
    scaled = rescaled_source(TOML, 0, 5)
    assert scaled == TOML.replace("instances   = 2  # keep two", "instances   = 5  # keep two")
    assert [s.instances for s in parse_blueprint(scaled).slices] == [5, 1]


def test_rescaled_source_changes_the_slice_not_a_key_of_its_sub_table() -> None:
    blueprint = parse_blueprint(rescaled_source(TOML, 1, 4))
    assert [s.instances for s in blueprint.slices] == [2, 4]
    assert blueprint.slices[1].config == {"instances": 7}


def test_rescaled_source_without_slice_tables_is_left_alone() -> None:
    inline = 'name = "web"\nslices = [{artifact = "org.example:echo:1.0", instances = 2}]\n'
    assert rescaled_source(inline, 0, 5) == inline  # the API then refuses: it cannot rewrite it


# ---------------------------------------------------------------- events


def _kv(key: str, value: bytes, revision: int) -> KeyValue:
    return KeyValue(key=key, value=value, create_revision=revision, mod_revision=revision, version=1)


def test_node_operation_events() -> None:
    key = "cluster/node-ops/n2"
    record = NodeOperationRecord(operation=NodeOperation.DRAINING, since=1000.0)
    put = Event(kind=EventKind.PUT, kv=_kv(key, encode_record(record), 5), prev=None, revision=5)
    (event,) = describe(put)
    assert (event.kind, event.node_id, event.timestamp) == ("node_draining", "n2", 1000.0)
    assert not needs_time(put)
    cordon = attrs.evolve(record, operation=NodeOperation.CORDONED)
    (event,) = describe(
        Event(kind=EventKind.PUT, kv=_kv(key, encode_record(cordon), 6), prev=None, revision=6)
    )
    assert event.kind == "node_cordoned"
    gone = Event(
        kind=EventKind.DELETE, kv=_kv(key, b"", 7), prev=_kv(key, encode_record(cordon), 6), revision=7
    )
    assert needs_time(gone)
    (event,) = describe(gone, at=1234.0)
    assert (event.kind, event.message, event.timestamp) == (
        "node_uncordoned",
        "node n2 uncordoned: back on duty",
        1234.0,
    )


def test_a_blueprint_event_names_its_revision_and_change() -> None:
    blueprint = Blueprint(
        name="web", slices=(), timestamp=5.0, revision=4, change="rolled back to revision 2"
    )
    raw = Event(
        kind=EventKind.PUT, kv=_kv("blueprints/web", encode_record(blueprint), 9), prev=None, revision=9
    )
    (event,) = describe(raw)
    assert event.message == "blueprint web applied (revision 4: rolled back to revision 2)"
    plain = attrs.evolve(blueprint, change="applied")
    raw = Event(
        kind=EventKind.PUT, kv=_kv("blueprints/web", encode_record(plain), 10), prev=None, revision=10
    )
    assert describe(raw)[0].message == "blueprint web applied (revision 4)"
