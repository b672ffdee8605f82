"""The reconciliation policy (`core/_reconcile_spec.py`, `control/_rebalance.py`, and the planner's use of
them): the `[policy]` table and its errors, the layers (default < cluster < blueprint), the rebalance
delay after a node is lost (records kept, replacements only as far as the floor needs, all of them after
the delay), the limit on moves in flight; and properties over the simulated cluster of
`test_reconcile`: the floor is never broken by a plan, and every plan converges, with the delay and
with the limit. Pure: no processes."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_reconcile import ECHO, GREETER, Cluster, deletes, node, spec

from aether_node.control._rebalance import await_lost, lost_changes, node_delays, policies_of
from aether_node.control._reconcile import CreateInstance, Plan, plan
from aether_node.core._blueprint import Blueprint
from aether_node.core._blueprint_toml import BlueprintError, parse_blueprint
from aether_node.core._reconcile_spec import (
    DEFAULT,
    PRESETS,
    ReconcilePolicy,
    ResolvedPolicy,
    describe,
    resolve,
)
from aether_node.core._records import LostNodeRecord, SliceState

PROPERTY = settings(max_examples=60, deadline=None)
SLICES = '\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 1\n'
WAIT = ResolvedPolicy(rebalance_delay_s=60.0, max_moves=0)


# ---------------------------------------------------------------------------- the [policy] table


def test_a_policy_table_is_parsed_into_the_blueprint() -> None:
    text = 'name = "demo"\n\n[policy]\npreset = "conservative"\nmax_moves = 5\n' + SLICES
    blueprint = parse_blueprint(text, "bp.toml")
    assert blueprint.policy == ReconcilePolicy(preset="conservative", max_moves=5)
    assert resolve(None, blueprint.policy) == ResolvedPolicy(rebalance_delay_s=60.0, max_moves=5)


def test_a_blueprint_without_a_policy_table_has_none() -> None:
    assert parse_blueprint('name = "demo"\n' + SLICES, "bp.toml").policy is None


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            'preset = "lazy"',
            'bp.toml:4:1: policy.preset: must be one of aggressive, conservative, got "lazy"',
        ),
        (
            "rebalance_delay_s = -1",
            "bp.toml:4:1: policy.rebalance_delay_s: must be a number of seconds in [0, 86400], got -1",
        ),
        (
            "rebalance_delay_s = true",
            "bp.toml:4:1: policy.rebalance_delay_s: must be a number of seconds in [0, 86400], got true",
        ),
        (
            "max_moves = 1.5",
            "bp.toml:4:1: policy.max_moves: must be a whole number in [0, 10000] (0: no limit), got 1.5",
        ),
        (
            "moves = 2",
            "bp.toml:4:1: policy.moves: unknown key (did you mean 'max_moves'? expected: max_moves, preset,"
            " rebalance_delay_s)",
        ),
    ],
)
def test_a_bad_policy_is_refused_naming_file_line_and_key(lines: str, message: str) -> None:
    text = f'name = "demo"\n\n[policy]\n{lines}\n' + SLICES
    with pytest.raises(BlueprintError) as caught:
        parse_blueprint(text, "bp.toml")
    assert caught.value.message == message


def test_a_policy_that_is_not_a_table_is_refused_where_it_is() -> None:
    with pytest.raises(BlueprintError) as caught:
        parse_blueprint('name = "demo"\npolicy = 3\n' + SLICES, "bp.toml")
    assert caught.value.message.startswith("bp.toml:2:1: policy: must be a table")


def test_layers_default_then_cluster_then_blueprint() -> None:
    assert resolve() == DEFAULT == PRESETS["aggressive"] == ResolvedPolicy()
    cluster = ReconcilePolicy(preset="conservative")
    assert resolve(cluster) == PRESETS["conservative"]
    assert resolve(cluster, ReconcilePolicy(rebalance_delay_s=5.0)) == ResolvedPolicy(
        rebalance_delay_s=5.0, max_moves=2
    )
    # a blueprint's preset replaces every value of the cluster's below it
    cluster = ReconcilePolicy(rebalance_delay_s=30.0, max_moves=4)
    assert resolve(cluster, ReconcilePolicy(preset="aggressive")) == ResolvedPolicy()
    assert describe(PRESETS["conservative"]) == "rebalance delay 60 s, at most 2 moves at a time"
    assert describe(DEFAULT) == "no rebalance delay, no limit on moves"


def test_each_slice_takes_its_blueprints_policy_over_the_clusters() -> None:
    plain = Blueprint(name="a", slices=(spec(f"{ECHO}:1.0"),))
    careful = Blueprint(
        name="b", slices=(spec(f"{GREETER}:1.0"),), policy=ReconcilePolicy(rebalance_delay_s=9.0)
    )
    found = policies_of([plain, careful], ReconcilePolicy(max_moves=3))
    assert found == {
        ECHO: ResolvedPolicy(rebalance_delay_s=0.0, max_moves=3),
        GREETER: ResolvedPolicy(rebalance_delay_s=9.0, max_moves=3),
    }


# ---------------------------------------------------------------------------- the rebalance delay


def lose(cluster: Cluster, node_id: str) -> None:
    cluster.nodes = [n for n in cluster.nodes if n.node_id != node_id]


def planned(cluster: Cluster, specs: list, *, lost: dict[str, float], now: float, policy=WAIT) -> Plan:
    policies = {s.artifact.rsplit(":", 1)[0]: policy for s in specs}
    return plan(specs, cluster.nodes, cluster.view(), now=now, lost=lost, policies=policies)


def converge(cluster: Cluster, specs: list, *, lost: dict[str, float], now: float, policy=WAIT) -> Plan:
    for _ in range(200):
        p = planned(cluster, specs, lost=lost, now=now, policy=policy)
        if not p.actions:
            return p
        cluster.apply(p)
    pytest.fail(f"no convergence; last plan: {p}")


def test_a_lost_node_within_its_delay_keeps_its_records_and_is_not_replaced() -> None:
    cluster = Cluster(nodes=[node("a"), node("b"), node("c")])
    specs = [spec(instances=3)]  # floor 2
    cluster.converge(specs)
    lose(cluster, "c")
    p = planned(cluster, specs, lost={"c": 100.0}, now=110.0)
    assert p.actions == ()
    assert [pr.message for pr in p.problems] == [
        "waiting: 1 instance on c lost 10 s ago not replaced for up to 60 s (rebalance delay) in case"
        " it comes back"
    ]
    # the node comes back with its records: nothing to do
    cluster.nodes.append(node("c"))
    assert planned(cluster, specs, lost={"c": 100.0}, now=120.0) == Plan(actions=(), problems=())


def test_the_floor_wins_over_the_delay() -> None:
    cluster = Cluster(nodes=[node("a"), node("b"), node("c")])
    specs = [spec(instances=3, min_available=3)]
    cluster.converge(specs)
    lose(cluster, "c")
    p = converge(cluster, specs, lost={"c": 100.0}, now=101.0)
    assert cluster.counts(specs[0].artifact) == {"a": 2, "b": 1, "c": 1}  # c's record kept, one replaced
    assert "1 replacement placed now for the floor of 3" in p.problems[0].message
    # back within the delay: the floor's replacement is surplus and goes (ACTIVE count stays at 3)
    cluster.nodes.append(node("c"))
    converge(cluster, specs, lost={"c": 100.0}, now=102.0)
    assert sorted(cluster.counts(specs[0].artifact).values()) == [1, 1, 1]


def test_after_the_delay_the_records_go_and_every_instance_is_replaced() -> None:
    cluster = Cluster(nodes=[node("a"), node("b"), node("c")])
    specs = [spec(instances=6)]
    cluster.converge(specs)
    lose(cluster, "c")
    assert deletes(planned(cluster, specs, lost={"c": 100.0}, now=159.0)) == []
    p = planned(cluster, specs, lost={"c": 100.0}, now=160.0)
    assert len(deletes(p)) == 2
    converge(cluster, specs, lost={"c": 100.0}, now=160.0)
    assert cluster.counts(specs[0].artifact) == {"a": 3, "b": 3}


def test_without_a_delay_a_lost_node_is_replaced_at_once() -> None:
    cluster = Cluster(nodes=[node("a"), node("b"), node("c")])
    specs = [spec(instances=3)]
    cluster.converge(specs)
    lose(cluster, "c")
    p = planned(cluster, specs, lost={"c": 100.0}, now=101.0, policy=DEFAULT)
    assert len(deletes(p)) == 1 and len([a for a in p.actions if isinstance(a, CreateInstance)]) == 1


def test_the_leaders_bookkeeping_of_lost_nodes() -> None:
    cluster = Cluster(nodes=[node("a"), node("b"), node("c")])
    specs = [spec(instances=3)]
    cluster.converge(specs)
    lose(cluster, "c")
    live = {n.node_id for n in cluster.nodes}
    policies = {ECHO: WAIT}
    holders, delays = node_delays(cluster.view(), live, policies)
    assert (holders, delays) == ({"c": 1}, {"c": 60.0})
    changes = lost_changes({}, live, holders, delays, now=5.0)
    assert changes == {"c": LostNodeRecord(since=5.0, instances=1, delay_s=60.0)}
    assert lost_changes(changes, live, holders, delays, now=6.0) == {}  # written once
    assert lost_changes(changes, live | {"c"}, {}, {}, now=7.0) == {"c": None}  # back
    assert lost_changes(changes, live, {}, {}, now=70.0) == {"c": None}  # its records are gone
    assert node_delays(cluster.view(), live, {ECHO: DEFAULT}) == ({"c": 1}, {})  # no delay: no record


def test_a_failed_record_on_a_lost_node_is_kept_but_awaits_nothing() -> None:
    cluster = Cluster(nodes=[node("a"), node("b"), node("c")])
    specs = [spec(instances=3)]
    cluster.converge(specs)
    failed = next(r for r in cluster.view() if r.node_id == "c")
    cluster.records[failed.key] = attrs.evolve(failed, state=SliceState.FAILED)
    lose(cluster, "c")
    awaiting = await_lost(specs, cluster.view(), {"a", "b"}, {"c": 0.0}, {ECHO: WAIT}, now=1.0)
    assert awaiting.kept == {failed.key}
    assert awaiting.specs == tuple(specs) and awaiting.messages == {}


def live_active(cluster: Cluster, live: set[str]) -> int:
    return sum(1 for r in cluster.view() if r.node_id in live and r.state is SliceState.ACTIVE)


# ---------------------------------------------------------------------------- moves in flight


def moves_in_flight(cluster: Cluster) -> int:
    return sum(1 for r in cluster.view() if r.moved_from and r.state is not SliceState.ACTIVE)


def test_moves_after_a_node_joins_stay_within_max_moves_and_converge() -> None:
    cluster = Cluster(nodes=[node("a"), node("b")])
    specs = [spec(f"{ECHO}:1.0", instances=6), spec(f"{GREETER}:1.0", instances=6)]
    cluster.converge(specs)
    cluster.nodes.append(node("c"))
    limit = ResolvedPolicy(max_moves=1)
    most = 0
    waited = False
    for _ in range(200):
        p = planned(cluster, specs, lost={}, now=0.0, policy=limit)
        waited |= any("max_moves 1" in pr.message for pr in p.problems)
        if not p.actions:
            break
        cluster.apply(p, start=SliceState.ACTIVATE)
        most = max(most, moves_in_flight(cluster))
        cluster.promote_one()
    assert most == 1 and waited
    assert cluster.counts(specs[0].artifact) == {"a": 2, "b": 2, "c": 2}
    assert cluster.counts(specs[1].artifact) == {"a": 2, "b": 2, "c": 2}


# ---------------------------------------------------------------------------- properties


@st.composite
def delayed_losses(draw: st.DrawFn) -> tuple[int, int, int | None, int, float]:
    nodes = draw(st.integers(2, 5))
    instances = draw(st.integers(1, 8))
    floor = draw(st.one_of(st.none(), st.integers(0, instances)))
    lost = draw(st.integers(1, nodes - 1))  # at least one node stays
    elapsed = draw(st.sampled_from([0.0, 30.0, 59.9]))
    return nodes, instances, floor, lost, elapsed


@PROPERTY
@given(delayed_losses())
def test_within_the_delay_plans_keep_the_floor_and_converge_then_replace_everything(
    case: tuple[int, int, int | None, int, float],
) -> None:
    nodes, instances, floor, lost_count, elapsed = case
    cluster = Cluster(nodes=[node(f"n{i}") for i in range(nodes)])
    specs = [spec(instances=instances, min_available=floor)]
    cluster.converge(specs)
    gone = [f"n{i}" for i in range(lost_count)]
    for node_id in gone:
        lose(cluster, node_id)
    lost = dict.fromkeys(gone, 0.0)
    on_lost = {r.key for r in cluster.view() if r.node_id in gone}
    wanted_floor = min(specs[0].floor, instances)
    live = {n.node_id for n in cluster.nodes}
    for _ in range(200):
        p = planned(cluster, specs, lost=lost, now=elapsed)
        if not p.actions:
            break
        before = live_active(cluster, live)
        assert not {a.key for a in deletes(p)} & on_lost  # kept for the node's return
        cluster.apply(p)
        assert live_active(cluster, live) >= min(before, wanted_floor)  # no plan goes below the floor
    else:
        pytest.fail("no convergence within the delay")
    live_count = sum(1 for r in cluster.view() if r.node_id in live)
    awaited = len(on_lost)
    assert live_count == max(instances - awaited, wanted_floor)
    # the delay over: everything on the live nodes, the lost records gone
    converge(cluster, specs, lost=lost, now=60.0)
    assert sum(cluster.counts(specs[0].artifact).values()) == instances
    assert not any(r.node_id in gone for r in cluster.view())


@PROPERTY
@given(
    st.integers(1, 3),
    st.lists(st.integers(1, 9), min_size=1, max_size=3),
    st.integers(2, 4),
)
def test_moves_in_flight_never_exceed_max_moves_and_plans_converge(
    limit: int, counts: list[int], before: int
) -> None:
    cluster = Cluster(nodes=[node(f"n{i}") for i in range(before)])
    specs = [spec(f"org.example:s{i}:1.0", instances=n) for i, n in enumerate(counts)]
    cluster.converge(specs)
    cluster.nodes += [node("new-1"), node("new-2")]
    policy = ResolvedPolicy(max_moves=limit)
    for _ in range(500):
        p = planned(cluster, specs, lost={}, now=0.0, policy=policy)
        if not p.actions:
            break
        cluster.apply(p, start=SliceState.ACTIVATE)
        assert moves_in_flight(cluster) <= limit
        cluster.promote_one()
    else:
        pytest.fail("no convergence")
    starting = [r for r in cluster.view() if r.state is not SliceState.ACTIVE]
    while starting:  # nothing left to plan: what starts goes ACTIVE, then the view is settled
        cluster.promote_one()
        starting = [r for r in cluster.view() if r.state is not SliceState.ACTIVE]
        if not starting:
            converge(cluster, specs, lost={}, now=0.0, policy=policy)
    assert planned(cluster, specs, lost={}, now=0.0, policy=policy).actions == ()
