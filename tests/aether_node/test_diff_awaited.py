"""`aether blueprint diff` and the rebalance delay (`control/_diff.py` with `control/_rebalance.py`): a
slice with instances on a lost node still awaited is shown as the leader plans it: those instances kept
in place (`after` on that node, `awaited`), the live nodes getting only what the floor needs, and `later`
where everything goes once the delay is over without the node. A property checks that the diff and
what the planner then does agree, within the delay and after it. Pure: no processes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_rebalance_policy import converge, lose
from test_reconcile import ECHO, Cluster, node, spec

from aether_node.client import SliceChange
from aether_node.control._diff import diff_blueprint
from aether_node.core._blueprint import Blueprint, SliceSpec
from aether_node.core._reconcile_spec import ReconcilePolicy, ResolvedPolicy

PROPERTY = settings(max_examples=80, deadline=None)
DELAY = 60.0
POLICY = ReconcilePolicy(rebalance_delay_s=DELAY)
WAIT = ResolvedPolicy(rebalance_delay_s=DELAY, max_moves=0)
LOST_AT = 100.0


def diff(cluster: Cluster, stored: SliceSpec, new: SliceSpec, *, now: float, policy=POLICY) -> SliceChange:
    old = Blueprint(name="web", slices=(stored,), revision=1)
    result = diff_blueprint(
        Blueprint(name="web", slices=(new,)),
        [old],
        cluster.nodes,
        cluster.view(),
        now=now,
        lost={"c": LOST_AT},
        policy=policy,
    )
    (change,) = result.slices
    return change


def placed(change: SliceChange) -> dict[str, tuple[int, int, bool, int | None]]:
    return {p.node_id: (p.before, p.after, p.awaited, p.later) for p in change.nodes}


def three_with_c_lost(instances: int = 3, **options: object) -> tuple[Cluster, SliceSpec]:
    cluster = Cluster(nodes=[node("a"), node("b"), node("c")])
    running = spec(instances=instances, max_per_node=instances, **options)
    cluster.converge([running])
    lose(cluster, "c")
    return cluster, running


def test_an_awaited_node_keeps_its_instances_in_the_diff_and_later_they_move() -> None:
    cluster, running = three_with_c_lost()
    change = diff(cluster, running, running, now=LOST_AT + 10)
    # the leader waits: nothing to do now (before, the diff said c's instance would be added elsewhere)
    assert change.change == "unchanged"
    assert (change.instances_before, change.instances_after, change.added, change.moved) == (3, 3, 0, 0)
    shown = placed(change)
    assert shown["c"] == (1, 1, True, 0)
    assert sorted((shown["a"][3], shown["b"][3])) == [1, 2]  # after the delay: c's instance replaced
    assert change.awaiting.startswith(
        "waiting: 1 instance on c lost 10 s ago not replaced for up to 60 s (rebalance delay) in case it"
        " comes back; once the delay is over without c back: "
    )
    assert "c 1 -> 0" in change.awaiting


def test_without_a_delay_or_after_it_the_lost_node_is_not_shown() -> None:
    cluster, running = three_with_c_lost()
    for change in (
        diff(cluster, running, running, now=LOST_AT + DELAY),  # the delay is over
        diff(cluster, running, running, now=LOST_AT + 10, policy=None),  # no delay at all
    ):
        assert "c" not in placed(change)
        assert change.awaiting == "" and all(p.later is None for p in change.nodes)
        assert (change.instances_before, change.instances_after, change.added) == (2, 3, 1)


def test_a_scale_up_while_awaited_adds_on_the_live_nodes_only() -> None:
    cluster, running = three_with_c_lost()
    change = diff(cluster, running, spec(instances=6, max_per_node=6), now=LOST_AT + 10)
    shown = placed(change)
    assert shown["c"][:3] == (1, 1, True)
    assert change.added == 3 and change.instances_after == 6
    assert shown["a"][1] + shown["b"][1] == 5 and shown["a"][3] + shown["b"][3] == 6


def test_the_floor_places_a_replacement_at_once_and_the_diff_says_so() -> None:
    cluster, running = three_with_c_lost(min_available=3)
    change = diff(cluster, running, running, now=LOST_AT + 10)
    assert placed(change)["c"][:3] == (1, 1, True)
    assert change.added == 1 and change.instances_after == 4  # one for the floor, c's still kept
    assert "1 replacement placed now for the floor of 3" in change.awaiting


def test_a_new_version_while_awaited_is_not_kept_on_the_lost_node() -> None:
    cluster, running = three_with_c_lost()
    change = diff(cluster, running, spec(f"{ECHO}:2.0", instances=3, max_per_node=3), now=LOST_AT + 10)
    assert placed(change)["c"][:3] == (1, 0, True)  # the old version there is replaced on its return
    assert change.replaced == 3 and change.awaiting == ""  # nothing of 2.0 is awaited


def test_a_blueprints_own_policy_decides_over_the_clusters() -> None:
    cluster, running = three_with_c_lost()
    old = Blueprint(name="web", slices=(running,), revision=1)
    own = Blueprint(name="web", slices=(running,), policy=ReconcilePolicy(rebalance_delay_s=0.0))
    result = diff_blueprint(
        own, [old], cluster.nodes, cluster.view(), now=LOST_AT + 10, lost={"c": LOST_AT}, policy=POLICY
    )
    assert "c" not in placed(result.slices[0])


@st.composite
def cases(draw: st.DrawFn) -> tuple[int, int, int | None, int, str, float]:
    instances = draw(st.integers(1, 6))
    floor = draw(st.one_of(st.none(), st.integers(0, instances)))
    scaled = draw(st.integers(0, 7))
    version = draw(st.sampled_from(["1.0", "2.0"]))
    elapsed = draw(st.sampled_from([0.0, 30.0, 59.0]))
    return draw(st.integers(3, 4)), instances, floor, scaled, version, elapsed


def counts(cluster: Cluster, artifact: str) -> dict[str, int]:
    return {n: c for n, c in cluster.counts(artifact).items() if c}


@PROPERTY
@given(cases())
def test_the_diff_says_what_the_planner_then_does_within_the_delay_and_after(
    case: tuple[int, int, int | None, int, str, float],
) -> None:
    nodes, instances, floor, scaled, version, elapsed = case
    cluster = Cluster(nodes=[node("c"), *(node(f"n{i}") for i in range(nodes - 1))])
    running = spec(instances=instances, min_available=floor, max_per_node=8)
    cluster.converge([running])
    lose(cluster, "c")
    kept_floor = None if floor is None else min(floor, scaled)
    wanted = spec(f"{ECHO}:{version}", instances=scaled, min_available=kept_floor, max_per_node=8)
    now = LOST_AT + elapsed
    lost = {"c": LOST_AT}
    change = diff(cluster, running, wanted, now=now)
    converge(cluster, [wanted], lost=lost, now=now, policy=WAIT)
    expected = {p.node_id: p.after for p in change.nodes if p.after}
    assert counts(cluster, wanted.artifact) == expected
    # on the converged view: where everything goes once the delay is over
    settled = diff(cluster, wanted, wanted, now=now)
    if settled.awaiting:
        converge(cluster, [wanted], lost=lost, now=LOST_AT + DELAY, policy=WAIT)
        assert counts(cluster, wanted.artifact) == {p.node_id: p.later for p in settled.nodes if p.later}
    else:
        assert all(p.later is None for p in settled.nodes)
