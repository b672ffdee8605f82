"""Rolling updates: a slice's own `max_surge` (`[slices.update]`) and `aether slice pause|resume`
(`control/_pause.py`) over the planner, on the simulated cluster of `test_reconcile`. Properties: while
paused no pass removes an old ACTIVE one, nor creates an instance unless a loss took the slice below its
floor; no pass takes a slice below min(floor, instances); after the resume the update converges to the
new version alone. Pure."""

from __future__ import annotations

import collections

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_reconcile import Cluster, creates, node, removes

from aether_node.control._pause import merge_problems, pause_specs
from aether_node.control._reconcile import Plan, Problem, plan
from aether_node.core._blueprint import SliceSpec
from aether_node.core._coordinates import Coordinates
from aether_node.core._records import PausedRollout, SliceState
from aether_node.core._update_spec import UpdateSpec

ECHO_ID = "org.example:echo"
OLD, NEW = f"{ECHO_ID}:1.0", f"{ECHO_ID}:2.0"
PAUSED = {ECHO_ID: PausedRollout(since=1.0)}


def rolling(version: str, instances: int, surge: int = 1, floor: int | None = None) -> SliceSpec:
    return SliceSpec(
        artifact=version, instances=instances, min_available=floor, update=UpdateSpec(max_surge=surge)
    )


def step(cluster: Cluster, spec: SliceSpec, paused: bool) -> Plan:
    held = pause_specs([spec], cluster.view(), PAUSED if paused else {})
    return plan([spec], cluster.nodes, cluster.view(), held=held.held, frozen=held.held)


def test_a_slices_max_surge_places_that_many_new_instances_at_once() -> None:
    for surge in (1, 2, 4):
        cluster = Cluster(nodes=[node("a"), node("b")])
        cluster.converge([rolling(OLD, 4)])
        first = step(cluster, rolling(NEW, 4, surge=surge), paused=False)
        assert len(creates(first)) == surge and removes(first) == []


def test_a_paused_update_stays_where_it_is_and_says_so() -> None:
    cluster = Cluster(nodes=[node("a"), node("b")])
    cluster.converge([rolling(OLD, 4)])
    new = rolling(NEW, 4)
    cluster.apply(step(cluster, new, paused=False))  # one 2.0 instance, ACTIVE at once here
    cluster.apply(step(cluster, new, paused=False))  # an old one goes (the next new one waits for it)
    before = dict(cluster.records)
    held = pause_specs([new], cluster.view(), PAUSED)
    p = plan([new], cluster.nodes, cluster.view(), held=held.held, frozen=held.held)
    assert p.actions == () and cluster.records == before
    (problem,) = held.problems
    assert problem.message == (
        "paused: the update to 2.0 stays where it is (1 of 4 ACTIVE on 2.0; 1.0 keeps 3 ACTIVE instances);"
        " `aether slice resume org.example:echo` goes on"
    )
    # resumed: the rolling rule goes on to the new version alone
    for _ in range(50):
        p = step(cluster, new, paused=False)
        if not p.actions:
            break
        cluster.apply(p)
    assert cluster.counts(NEW) and not cluster.counts(OLD)
    assert sum(cluster.counts(NEW).values()) == 4


def test_a_paused_update_that_loses_a_node_is_made_up_to_its_floor_with_the_new_version() -> None:
    """Nodes a, b, c; 1.0 ×6 (floor 5), paused with one 2.0 up and one 1.0 gone. A node with two is lost:
    what is left is below the floor, and the pause makes it up to the floor, with 2.0 (nothing else
    moves)."""
    cluster = Cluster(nodes=[node("a"), node("b"), node("c")])
    cluster.converge([rolling(OLD, 6, floor=5)])
    new = rolling(NEW, 6, floor=5)
    cluster.apply(step(cluster, new, paused=False))  # one 2.0 instance, ACTIVE at once here
    cluster.apply(step(cluster, new, paused=False))  # an old one goes
    assert step(cluster, new, paused=True).actions == ()  # paused, at the floor or above: nothing
    per_node = collections.Counter(r.node_id for r in cluster.view())
    lost = max(per_node, key=lambda n: (per_node[n], n))  # the node with the most (2 of 6)
    cluster.nodes = [n for n in cluster.nodes if n.node_id != lost]
    left = [r for r in cluster.view() if r.node_id != lost]
    serving = sum(1 for r in left if r.state is SliceState.ACTIVE)
    assert serving < 5, serving  # the loss took it below its floor
    p = step(cluster, new, paused=True)
    made = creates(p)
    assert len(made) == 5 - serving and all(str(c.coordinates) == NEW for c in made)
    assert lost not in {c.node_id for c in made} and removes(p) == []


def test_a_pause_before_the_change_holds_it_at_its_start_and_changes_nothing_else() -> None:
    cluster = Cluster(nodes=[node("a"), node("b")])
    cluster.converge([rolling(OLD, 2)])
    assert pause_specs([rolling(OLD, 3)], cluster.view(), PAUSED).held == frozenset()  # scaling goes on
    p = step(cluster, rolling(NEW, 2), paused=True)
    assert p.actions == ()


def test_problems_of_one_artifact_are_joined() -> None:
    merged = merge_problems([Problem(artifact="a", message="x")], [Problem(artifact="a", message="y")])
    assert merged == (Problem(artifact="a", message="x; y"),)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 3),
    st.one_of(st.none(), st.integers(0, 6)),
    st.integers(0, 12),
    st.integers(2, 4),
)
def test_paused_passes_hold_both_versions_and_resumed_ones_converge(
    instances: int, surge: int, floor: int | None, pause_at: int, nodes: int
) -> None:
    floor = None if floor is None else min(floor, instances)
    cluster = Cluster(nodes=[node(f"n{i}") for i in range(nodes)])
    cluster.converge([rolling(OLD, instances, surge, floor)])
    new = rolling(NEW, instances, surge, floor)
    keep = min(new.floor, instances)
    new_coordinates = Coordinates.parse(NEW)
    for round_ in range(200):
        paused = pause_at <= round_ < pause_at + 5
        before = dict(cluster.records)
        active_before = sum(r.state is SliceState.ACTIVE for r in before.values())
        p = step(cluster, new, paused)
        if paused:
            assert creates(p) == []  # nothing is added mid-pause
            old_active = [
                r
                for r in removes(p)
                if before[r.key].state is SliceState.ACTIVE and before[r.key].coordinates != new_coordinates
            ]
            assert not old_active
        if not p.actions and not paused:
            break
        cluster.apply(p, start=SliceState.ACTIVATE)
        active = sum(r.state is SliceState.ACTIVE for r in cluster.records.values())
        assert active >= min(active_before, keep)
        cluster.promote_one()
    else:
        pytest.fail("no convergence")
    assert all(r.coordinates == new_coordinates for r in cluster.view())
    assert sum(cluster.counts(NEW).values()) == instances
