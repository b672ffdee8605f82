"""`aether blueprint diff` for a slice that does not fit (`control/_diff.py`, with the allocator's reason
from `control/_allocation.py`): a new slice larger than any node, or spread thinner than its nodes, is
added with what cannot be placed and why; a running slice changed so that it no longer fits keeps what
its floor holds (the leader removes nothing below it), and the diff says so instead of "removed". A
check against the planner itself: what the diff shows is where `plan` converges. Pure: no processes."""

from __future__ import annotations

import collections

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_reconcile import ECHO, Cluster, node, spec

from aether_node.client import SliceChange
from aether_node.control._diff import diff_blueprint
from aether_node.core._blueprint import Blueprint, SliceSpec, Strategy

SMALL = [
    node("a", cpu=1, memory_mib=1024),
    node("b", cpu=1, memory_mib=1024),
    node("c", cpu=1, memory_mib=1024),
]


def diff(new: SliceSpec, *, stored: SliceSpec | None = None, cluster: Cluster | None = None) -> SliceChange:
    old = [Blueprint(name="web", slices=(stored,), revision=1)] if stored else []
    cluster = cluster or Cluster(nodes=SMALL)
    (change,) = diff_blueprint(
        Blueprint(name="web", slices=(new,)), old, cluster.nodes, cluster.view(), now=0.0
    ).slices
    return change


def placed(change: SliceChange) -> dict[str, int]:
    return {p.node_id: p.after for p in change.nodes if p.after}


def test_a_new_slice_larger_than_any_node_is_added_and_cannot_be_placed() -> None:
    change = diff(spec(instances=2, cpu=64, memory_mib=64))
    assert (change.change, change.instances_after, change.unplaced, change.kept) == ("added", 0, 2, 0)
    assert (change.added, change.removed) == (0, 0)
    assert change.problem == (
        f"2 of 2 instances of {ECHO}:1.0 fit on no live node (3 nodes; needs cpu 64, memory 64 MiB each;"
        " the largest node has cpu 1)"
    )
    memory = diff(spec(instances=1, memory_mib=4096))
    assert memory.problem.endswith("needs memory 4096 MiB each; the largest node has memory 1024 MiB)")


def test_a_spread_thinner_than_its_nodes_places_what_it_can_and_says_the_rest() -> None:
    change = diff(spec(instances=5, strategy=Strategy.SPREAD, max_per_node=1))
    assert (change.change, change.instances_after, change.added, change.unplaced) == ("added", 3, 3, 2)
    assert placed(change) == {"a": 1, "b": 1, "c": 1}
    assert (
        change.problem == f"2 of 5 instances of {ECHO}:1.0 fit on no live node (3 nodes; at most 1 per node)"
    )
    # a full cluster (no instance larger than a node) names no largest node
    assert "largest" not in diff(spec(instances=4, cpu=1)).problem


@pytest.mark.parametrize(("instances", "min_available", "kept"), [(2, None, 2), (3, 2, 2), (3, 1, 1)])
def test_a_running_slice_that_no_longer_fits_keeps_what_its_floor_holds(
    instances: int, min_available: int | None, kept: int
) -> None:
    cluster = Cluster(nodes=SMALL)
    running = spec(instances=instances, min_available=min_available)
    cluster.converge([running])
    bigger = spec(instances=instances, min_available=min_available, cpu=64)
    change = diff(bigger, stored=running, cluster=cluster)
    assert (change.change, change.instances_before, change.unplaced) == ("changed", instances, instances)
    assert (change.instances_after, change.kept, change.removed) == (kept, kept, instances - kept)
    assert change.problem.endswith(
        f"; {kept} running instance{'s' if kept > 1 else ''} stay{'s' if kept == 1 else ''}: removing one"
        f" would take {ECHO} below its floor of {kept} ACTIVE (min_available)"
    )
    # the leader's own plan, run until it has nothing left to do, ends where the diff said
    cluster.converge([bigger])
    assert placed(change) == dict(collections.Counter(r.node_id for r in cluster.view()))


@settings(max_examples=80, deadline=None)
@given(
    instances=st.integers(1, 5),
    floor=st.integers(0, 5),
    version=st.sampled_from(["1.0", "2.0"]),
    cpu=st.sampled_from([0.0, 0.6, 1.0, 64.0]),
    node_cpu=st.sampled_from([1.0, 2.0]),
)
def test_property_the_diff_of_a_change_that_may_not_fit_is_where_the_planner_converges(
    instances: int, floor: int, version: str, cpu: float, node_cpu: float
) -> None:
    cluster = Cluster(nodes=[node(n, cpu=node_cpu, memory_mib=1024) for n in "abc"])
    min_available = min(floor, instances) or None
    running = spec(instances=instances, min_available=min_available)
    cluster.converge([running])
    new = spec(f"{ECHO}:{version}", instances=instances, min_available=min_available, cpu=cpu)
    change = diff(new, stored=running, cluster=cluster)
    stale_before = sum(1 for r in cluster.view() if str(r.coordinates) != new.artifact)
    cluster.converge([new])
    assert placed(change) == dict(collections.Counter(r.node_id for r in cluster.view()))
    assert change.instances_after == len(cluster.view())
    # what the floor keeps of the old version is not replaced: the diff counts only those that go
    stale_after = sum(1 for r in cluster.view() if str(r.coordinates) != new.artifact)
    assert change.replaced == stale_before - stale_after
