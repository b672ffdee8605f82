"""Allocation (`_allocation`): exact counts, capacity, determinism, balance and minimal movement, for every
strategy. Pure: plain examples plus hypothesis properties over random clusters, specs and placements.

Capacities and requirements are drawn from binary fractions (0.25, 0.5, ...) so the reference arithmetic
below is exact and the properties can compare counts with `==`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aether_node.control._allocation import NodeCapacity, Placement, allocate, allocate_all
from aether_node.core._blueprint import Resources, SliceSpec, Strategy

PROPERTY = settings(max_examples=100, deadline=None)
PROPERTY_ALL = settings(max_examples=60, deadline=None)  # allocate_all: several slices per example
ALL_STRATEGIES = list(Strategy)
SPREADING = [Strategy.ROUND_ROBIN, Strategy.SPREAD]
ANY_STRATEGY = st.sampled_from(ALL_STRATEGIES)

# ---------------------------------------------------------------------------- reference model


def room(spec: SliceSpec, node: NodeCapacity, cpu_used: float = 0.0, memory_used: int = 0) -> int:
    """How many instances of `spec` fit on `node` on top of the given usage (exact arithmetic)."""
    limits = [spec.instances]
    if spec.resources.cpu > 0:
        free = Fraction(node.cpu) - Fraction(cpu_used)
        limits.append(max(0, math.floor(free / Fraction(spec.resources.cpu))))
    if spec.resources.memory_mib > 0:
        limits.append(max(0, (node.memory_mib - memory_used) // spec.resources.memory_mib))
    if spec.strategy is Strategy.SPREAD:
        limits.append(spec.max_per_node)
    return max(0, min(limits))


def rooms(spec: SliceSpec, nodes: Sequence[NodeCapacity]) -> dict[str, int]:
    return {n.node_id: room(spec, n) for n in nodes}


def is_balanced(counts: Mapping[str, int], room_of: Mapping[str, int]) -> bool:
    """No node holds more than one instance above any node that still has room."""
    loads = {i: counts.get(i, 0) for i in room_of}
    with_room = [loads[i] for i in room_of if loads[i] < room_of[i]]
    return not with_room or max(loads.values()) - min(with_room) <= 1


def assert_well_formed(spec: SliceSpec, nodes: Sequence[NodeCapacity], placement: Placement) -> None:
    """Exact counts, capacity, and an honest `unplaced`/`reason` (for a lone spec, no other usage)."""
    node_ids = {n.node_id for n in nodes}
    room_of = rooms(spec, nodes)
    assert set(placement.counts) <= node_ids
    assert all(c > 0 for c in placement.counts.values()), placement
    assert sum(placement.counts.values()) + placement.unplaced == spec.instances
    assert placement.unplaced >= 0
    for node_id, count in placement.counts.items():
        assert count <= room_of[node_id], (node_id, count, room_of)
    # unplaced only when nothing more fits anywhere: the placed total is what the cluster can hold
    assert sum(placement.counts.values()) == min(spec.instances, sum(room_of.values()))
    if placement.unplaced:
        assert all(placement.counts.get(i, 0) == room_of[i] for i in node_ids)
        assert placement.reason.startswith(f"{placement.unplaced} of {spec.instances} instances of ")
        assert spec.artifact in placement.reason
        assert f"({len(node_ids)} {'node' if len(node_ids) == 1 else 'nodes'}" in placement.reason
        if spec.strategy is Strategy.SPREAD:
            assert f"at most {spec.max_per_node} per node" in placement.reason
    else:
        assert placement.reason == ""


# ---------------------------------------------------------------------------- hypothesis strategies

NODE_IDS = [f"n{i:02d}" for i in range(30)]
CPUS = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0, 16.0]
MEMORIES = [0, 256, 512, 1024, 1536, 2048, 4096, 8192]
SPEC_CPUS = [0.0, 0.0, 0.25, 0.5, 1.0, 2.0]
SPEC_MEMORIES = [0, 0, 128, 256, 512, 1024]


@st.composite
def node_sets(draw: st.DrawFn, min_size: int = 1, max_size: int = 12) -> list[NodeCapacity]:
    ids = draw(st.lists(st.sampled_from(NODE_IDS), min_size=min_size, max_size=max_size, unique=True))
    return [
        NodeCapacity(node_id=i, cpu=draw(st.sampled_from(CPUS)), memory_mib=draw(st.sampled_from(MEMORIES)))
        for i in ids
    ]


@st.composite
def specs(
    draw: st.DrawFn,
    *,
    strategy: st.SearchStrategy[Strategy] = ANY_STRATEGY,
    artifact: str = "org.example:echo:1.0",
    constrained: bool = True,
    max_instances: int = 40,
) -> SliceSpec:
    resources = (
        Resources(cpu=draw(st.sampled_from(SPEC_CPUS)), memory_mib=draw(st.sampled_from(SPEC_MEMORIES)))
        if constrained
        else Resources()
    )
    return SliceSpec(
        artifact=artifact,
        instances=draw(st.integers(0, max_instances)),
        strategy=draw(strategy),
        max_per_node=draw(st.integers(1, 5)),
        resources=resources,
    )


def currents(node_ids: Sequence[str]) -> st.SearchStrategy[dict[str, int]]:
    """Random current placements, including nodes that are not (or no longer) in the cluster."""
    return st.dictionaries(st.sampled_from([*node_ids, "gone-1", "gone-2"]), st.integers(0, 12), max_size=14)


@st.composite
def cases(draw: st.DrawFn, **spec_options: object) -> tuple[SliceSpec, list[NodeCapacity], dict[str, int]]:
    nodes = draw(node_sets())
    spec = draw(specs(**spec_options))  # type: ignore[arg-type]
    current = draw(currents([n.node_id for n in nodes]))
    return spec, nodes, current


def node(node_id: str, cpu: float = 4.0, memory_mib: int = 4096) -> NodeCapacity:
    return NodeCapacity(node_id=node_id, cpu=cpu, memory_mib=memory_mib)


def spec_of(
    instances: int,
    strategy: Strategy = Strategy.ROUND_ROBIN,
    *,
    cpu: float = 0.0,
    memory_mib: int = 0,
    max_per_node: int = 1,
    artifact: str = "org.example:echo:1.0",
) -> SliceSpec:
    return SliceSpec(
        artifact=artifact,
        instances=instances,
        strategy=strategy,
        max_per_node=max_per_node,
        resources=Resources(cpu=cpu, memory_mib=memory_mib),
    )


# ---------------------------------------------------------------------------- examples


def test_round_robin_spreads_evenly_over_all_nodes() -> None:
    placement = allocate(spec_of(7), [node("a"), node("b"), node("c")], {})
    assert placement == Placement(counts={"a": 3, "b": 2, "c": 2})


def test_round_robin_keeps_current_placement_when_balanced() -> None:
    placement = allocate(spec_of(4), [node("a"), node("b"), node("c")], {"a": 1, "b": 2, "c": 1})
    assert placement.counts == {"a": 1, "b": 2, "c": 1}


def test_zero_instances_places_nothing() -> None:
    for strategy in ALL_STRATEGIES:
        placement = allocate(spec_of(0, strategy), [node("a")], {"a": 3})
        assert placement == Placement(counts={}, unplaced=0, reason="")


def test_no_nodes_leaves_everything_unplaced_with_a_reason() -> None:
    placement = allocate(spec_of(3, cpu=1, memory_mib=256), [], {})
    assert placement.counts == {}
    assert placement.unplaced == 3
    assert placement.reason == (
        "3 of 3 instances of org.example:echo:1.0 fit on no live node"
        " (0 nodes; needs cpu 1, memory 256 MiB each)"
    )


def test_spread_caps_each_node_and_reports_the_rest() -> None:
    spec = spec_of(7, Strategy.SPREAD, max_per_node=2)
    placement = allocate(spec, [node("a"), node("b"), node("c")], {})
    assert placement.counts == {"a": 2, "b": 2, "c": 2}
    assert placement.unplaced == 1
    assert placement.reason == (
        "1 of 7 instances of org.example:echo:1.0 fit on no live node (3 nodes; at most 2 per node)"
    )


def test_spread_uses_distinct_nodes_first() -> None:
    placement = allocate(spec_of(3, Strategy.SPREAD, max_per_node=3), [node("a"), node("b"), node("c")], {})
    assert placement.counts == {"a": 1, "b": 1, "c": 1}


def test_cpu_and_memory_both_limit() -> None:
    # cpu allows 4 per node, memory only 2
    spec = spec_of(10, cpu=1, memory_mib=2048)
    placement = allocate(spec, [node("a", cpu=4, memory_mib=4096), node("b", cpu=4, memory_mib=4096)], {})
    assert placement.counts == {"a": 2, "b": 2}
    assert placement.unplaced == 6
    assert "needs cpu 1, memory 2048 MiB each" in placement.reason


def test_fractional_cpu_fills_exactly() -> None:
    # 0.1 is not a binary fraction: 3 x 0.1 must still fit on 0.3 cpu
    placement = allocate(spec_of(5, cpu=0.1), [node("a", cpu=0.3)], {})
    assert placement.counts == {"a": 3}
    assert placement.unplaced == 2


def test_current_over_capacity_is_cut_back() -> None:
    placement = allocate(spec_of(6, cpu=1), [node("a", cpu=2), node("b", cpu=4)], {"a": 5, "b": 1})
    assert placement.counts["a"] <= 2
    assert sum(placement.counts.values()) == 6


def test_usage_of_other_slices_reduces_room() -> None:
    placement = allocate(
        spec_of(4, cpu=1),
        [node("a", cpu=4), node("b", cpu=4)],
        {},
        {"a": Resources(cpu=3.0, memory_mib=0)},
    )
    assert placement.counts == {"a": 1, "b": 3}


def test_nodes_not_in_the_cluster_are_ignored() -> None:
    placement = allocate(spec_of(2), [node("a")], {"gone": 2})
    assert placement.counts == {"a": 2}


@pytest.mark.parametrize(
    ("instances", "expected_nodes", "unplaced"),
    [(1, 1, 0), (4, 1, 0), (5, 2, 0), (10, 3, 0), (16, 4, 0), (17, 4, 1), (20, 4, 4)],
)
def test_bin_pack_uses_as_few_identical_nodes_as_possible(
    instances: int, expected_nodes: int, unplaced: int
) -> None:
    nodes = [node(f"n{i}", cpu=4) for i in range(4)]
    placement = allocate(spec_of(instances, Strategy.BIN_PACK, cpu=1), nodes, {})
    assert len(placement.counts) == expected_nodes
    assert sorted(placement.counts.values(), reverse=True)[:-1] == [4] * (expected_nodes - 1)
    assert placement.unplaced == unplaced
    assert bool(placement.reason) == bool(unplaced)
    if unplaced:
        assert placement.reason.startswith(f"{unplaced} of {instances} instances")


def test_bin_pack_ten_on_four_cpu_nodes_takes_three() -> None:
    placement = allocate(spec_of(10, Strategy.BIN_PACK, cpu=1), [node(f"n{i}", cpu=4) for i in range(6)], {})
    assert sorted(placement.counts.values()) == [2, 4, 4]


def test_bin_pack_prefers_the_tightest_fit() -> None:
    # b has less free memory left after taking one: it is the tighter fit
    nodes = [node("a", cpu=8, memory_mib=8192), node("b", cpu=8, memory_mib=2048)]
    placement = allocate(spec_of(2, Strategy.BIN_PACK, cpu=1, memory_mib=512), nodes, {})
    assert placement.counts == {"b": 2}


def test_bin_pack_scale_down_empties_the_loosest_node_first() -> None:
    nodes = [node("a", cpu=4), node("b", cpu=4)]
    placement = allocate(spec_of(4, Strategy.BIN_PACK, cpu=1), nodes, {"a": 3, "b": 2})
    # b has the most room left: it gives up its instances first
    assert placement.counts == {"a": 3, "b": 1}


def test_bin_pack_keeps_a_running_placement_when_a_node_joins() -> None:
    nodes = [node("a", cpu=4), node("b", cpu=4)]
    first = allocate(spec_of(6, Strategy.BIN_PACK, cpu=1), nodes, {})
    again = allocate(spec_of(6, Strategy.BIN_PACK, cpu=1), [*nodes, node("c", cpu=4)], first.counts)
    assert again == first


def test_allocate_all_shares_capacity_in_artifact_order() -> None:
    nodes = [node("a", cpu=2), node("b", cpu=2)]
    first = spec_of(3, cpu=1, artifact="a.g:first:1")
    second = spec_of(3, cpu=1, artifact="b.g:second:1")
    placements = allocate_all([second, first], nodes, {})
    assert list(placements) == ["a.g:first:1", "b.g:second:1"]
    assert sum(placements["a.g:first:1"].counts.values()) == 3
    assert placements["b.g:second:1"].unplaced == 2
    assert sum(placements["b.g:second:1"].counts.values()) == 1


def test_allocate_all_spreads_one_instance_slices_over_the_nodes() -> None:
    """Each slice alone is spread; between slices, a tie goes to the node holding fewest instances of
    the others (node a took every one-instance slice, node c none)."""
    nodes = [node("a"), node("b"), node("c")]
    specs = [spec_of(1, artifact=f"org.example:s{i}:1") for i in range(6)]
    placements = allocate_all(specs, nodes, {})
    per_node = {n.node_id: 0 for n in nodes}
    for placement in placements.values():
        for node_id, count in placement.counts.items():
            per_node[node_id] += count
    assert per_node == {"a": 2, "b": 2, "c": 2}
    # what runs stays where it is: a pass over a placement makes no move
    again = allocate_all(specs, nodes, {a: p.counts for a, p in placements.items()})
    assert again == placements


def test_a_slice_of_several_instances_evens_out_beside_the_others() -> None:
    nodes = [node("a"), node("b"), node("c")]
    lone = spec_of(1, artifact="a.g:lone:1")
    pair = spec_of(2, artifact="b.g:pair:1")
    placements = allocate_all([lone, pair], nodes, {})
    assert placements["a.g:lone:1"].counts == {"a": 1}
    assert placements["b.g:pair:1"].counts == {"b": 1, "c": 1}


def test_allocate_all_excluded_node_gets_nothing_new() -> None:
    nodes = [node("a"), node("b"), node("c")]
    placements = allocate_all([spec_of(3)], nodes, {}, {"org.example:echo:1.0": frozenset({"b"})})
    assert placements["org.example:echo:1.0"].counts == {"a": 2, "c": 1}


def test_allocate_all_excluded_node_keeps_what_it_runs() -> None:
    nodes = [node("a"), node("b")]
    placements = allocate_all(
        [spec_of(2)],
        nodes,
        {"org.example:echo:1.0": {"a": 1, "b": 1}},
        {"org.example:echo:1.0": frozenset("a")},
    )
    assert placements["org.example:echo:1.0"].counts == {"a": 1, "b": 1}


def test_allocate_all_every_node_excluded_reports_all_unplaced() -> None:
    placements = allocate_all([spec_of(2)], [node("a")], {}, {"org.example:echo:1.0": frozenset({"a"})})
    placement = placements["org.example:echo:1.0"]
    assert placement.counts == {}
    assert placement.unplaced == 2
    assert "1 of them excluded after failures" in placement.reason


def test_allocate_all_excluded_node_with_instances_receives_no_new_ones() -> None:
    nodes = [node("a"), node("b")]
    placements = allocate_all(
        [spec_of(4)], nodes, {"org.example:echo:1.0": {"a": 1}}, {"org.example:echo:1.0": frozenset({"a"})}
    )
    # a may keep its one instance; the three others belong on b
    assert placements["org.example:echo:1.0"].counts.get("a", 0) <= 1


def test_allocate_all_does_not_evict_running_instances_of_another_slice() -> None:
    nodes = [node("x", cpu=2), node("y", cpu=2)]
    newcomer = spec_of(1, cpu=1, artifact="a.g:newcomer:1")
    running = spec_of(2, cpu=1, artifact="b.g:running:1")
    placements = allocate_all([newcomer, running], nodes, {"b.g:running:1": {"x": 2}})
    # Both fit and nothing is evicted (round-robin may still even out the running slice: that is a move,
    # not an eviction), and no node is committed beyond its capacity.
    assert sum(placements["b.g:running:1"].counts.values()) == 2
    assert sum(placements["a.g:newcomer:1"].counts.values()) == 1
    for node_id in ("x", "y"):
        used = sum(p.counts.get(node_id, 0) for p in placements.values())
        assert used <= 2


# ---------------------------------------------------------------------------- properties: one slice


@PROPERTY
@given(cases())
def test_counts_are_exact_and_within_capacity(
    case: tuple[SliceSpec, list[NodeCapacity], dict[str, int]],
) -> None:
    spec, nodes, current = case
    assert_well_formed(spec, nodes, allocate(spec, nodes, current))


@PROPERTY
@given(cases(), st.randoms(use_true_random=False))
def test_deterministic_and_invariant_to_node_order(
    case: tuple[SliceSpec, list[NodeCapacity], dict[str, int]], rng: object
) -> None:
    spec, nodes, current = case
    placement = allocate(spec, nodes, current)
    assert allocate(spec, nodes, current) == placement
    shuffled = list(nodes)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    assert allocate(spec, shuffled, current) == placement
    assert allocate(spec, list(reversed(nodes)), dict(reversed(list(current.items())))) == placement


@PROPERTY
@given(cases(strategy=st.sampled_from(SPREADING)))
def test_round_robin_and_spread_are_balanced(
    case: tuple[SliceSpec, list[NodeCapacity], dict[str, int]],
) -> None:
    spec, nodes, current = case
    placement = allocate(spec, nodes, current)
    assert is_balanced(placement.counts, rooms(spec, nodes)), (placement, rooms(spec, nodes))


@PROPERTY
@given(cases())
def test_allocation_is_a_fixed_point(case: tuple[SliceSpec, list[NodeCapacity], dict[str, int]]) -> None:
    spec, nodes, current = case
    placement = allocate(spec, nodes, current)
    assert allocate(spec, nodes, placement.counts) == placement


@PROPERTY
@given(cases())
def test_keeps_what_runs_where_it_may(case: tuple[SliceSpec, list[NodeCapacity], dict[str, int]]) -> None:
    """A node only loses instances when it has more than it may hold, or more than the spec wants
    in total, or (round robin / spread) more than balance allows."""
    spec, nodes, current = case
    placement = allocate(spec, nodes, current)
    room_of = rooms(spec, nodes)
    kept = {i: min(current.get(i, 0), room_of[i]) for i in room_of}
    if sum(kept.values()) <= spec.instances and (
        spec.strategy is Strategy.BIN_PACK or is_balanced(kept, room_of)
    ):
        assert all(placement.counts.get(i, 0) >= kept[i] for i in room_of), (kept, placement)


@PROPERTY
@given(node_sets(), specs(strategy=st.just(Strategy.ROUND_ROBIN), constrained=False))
def test_unconstrained_round_robin_is_an_even_split(nodes: list[NodeCapacity], spec: SliceSpec) -> None:
    placement = allocate(spec, nodes, {})
    q, r = divmod(spec.instances, len(nodes))
    loads = sorted((placement.counts.get(n.node_id, 0) for n in nodes), reverse=True)
    assert loads == [q + 1] * r + [q] * (len(nodes) - r)
    assert placement.unplaced == 0


@PROPERTY
@given(
    st.integers(1, 12),
    st.sampled_from([0.5, 1.0, 2.0]),
    st.sampled_from([1.0, 2.0, 4.0, 8.0]),
    st.integers(0, 40),
)
def test_bin_pack_uses_the_fewest_identical_nodes(
    count: int, need: float, cpu: float, instances: int
) -> None:
    nodes = [node(f"n{i:02d}", cpu=cpu, memory_mib=1024) for i in range(count)]
    placement = allocate(spec_of(instances, Strategy.BIN_PACK, cpu=need), nodes, {})
    per_node = int(cpu // need)
    placed = min(instances, per_node * count)
    assert sum(placement.counts.values()) == placed
    assert len(placement.counts) == (math.ceil(placed / per_node) if per_node else 0)
    assert placement.unplaced == instances - placed
    assert bool(placement.reason) == (placed < instances)


# ---------------------------------------------------------------------------- properties: movement


@PROPERTY
@given(
    cases(), st.sampled_from(["a-first", "n15x", "zz-last"]), st.sampled_from(CPUS), st.sampled_from(MEMORIES)
)
def test_node_join_moves_the_minimum(
    case: tuple[SliceSpec, list[NodeCapacity], dict[str, int]], new_id: str, cpu: float, memory: int
) -> None:
    spec, nodes, current = case
    before = allocate(spec, nodes, current)
    joined = [*nodes, NodeCapacity(node_id=new_id, cpu=cpu, memory_mib=memory)]
    after = allocate(spec, joined, before.counts)
    assert_well_formed(spec, joined, after)
    # nothing moves between the old nodes: they only give to the newcomer
    lost = {i: before.counts.get(i, 0) - after.counts.get(i, 0) for i in (n.node_id for n in nodes)}
    assert all(v >= 0 for v in lost.values()), (before, after)
    moved = sum(lost.values())
    newly_placed = before.unplaced - after.unplaced
    assert after.counts.get(new_id, 0) == moved + newly_placed
    if spec.strategy is Strategy.BIN_PACK:
        assert moved == 0  # packing never moves a running instance to a fresh node
        return
    # one fewer move is not balanced: give one back to any node that lost one
    room_of = rooms(spec, joined)
    for donor, count in lost.items():
        if count:
            fewer = dict(after.counts)
            fewer[donor] = fewer.get(donor, 0) + 1
            fewer[new_id] -= 1
            assert not is_balanced(fewer, room_of), (before, after, donor)


@PROPERTY
@given(node_sets(max_size=11), specs(strategy=st.sampled_from(SPREADING), constrained=False), st.data())
def test_node_join_without_limits_moves_exactly_what_balance_needs(
    nodes: list[NodeCapacity], spec: SliceSpec, data: st.DataObject
) -> None:
    current = data.draw(currents([n.node_id for n in nodes]))
    before = allocate(spec, nodes, current)
    new_id = "zz-new"
    after = allocate(spec, [*nodes, node(new_id)], before.counts)
    assert all(after.counts.get(i, 0) <= c for i, c in before.counts.items())
    moved = sum(c - after.counts.get(i, 0) for i, c in before.counts.items())
    assert after.counts.get(new_id, 0) == moved + (before.unplaced - after.unplaced)
    if spec.strategy is Strategy.ROUND_ROBIN:
        # the least c such that the old nodes, each cut to at most c + 1, give up no more than c
        minimum = next(
            c
            for c in range(spec.instances + 1)
            if sum(max(0, v - (c + 1)) for v in before.counts.values()) <= c
        )
        assert moved == minimum
        assert moved in (spec.instances // (len(nodes) + 1), -(-spec.instances // (len(nodes) + 1)))


@PROPERTY
@given(cases(), st.data())
def test_node_leave_moves_only_its_instances(
    case: tuple[SliceSpec, list[NodeCapacity], dict[str, int]], data: st.DataObject
) -> None:
    spec, nodes, current = case
    before = allocate(spec, nodes, current)
    leaving = data.draw(st.sampled_from(nodes))
    survivors = [n for n in nodes if n is not leaving]
    after = allocate(spec, survivors, before.counts)
    assert_well_formed(spec, survivors, after)
    for n in survivors:
        assert after.counts.get(n.node_id, 0) >= before.counts.get(n.node_id, 0), (before, after)
    gained = sum(after.counts.get(n.node_id, 0) - before.counts.get(n.node_id, 0) for n in survivors)
    assert gained <= before.counts.get(leaving.node_id, 0) + before.unplaced


@PROPERTY
@given(cases(), st.integers(0, 40))
def test_rescale_keeps_the_remaining_instances(
    case: tuple[SliceSpec, list[NodeCapacity], dict[str, int]], instances: int
) -> None:
    """Scaling up only adds; scaling down only removes (no instance changes node)."""
    spec, nodes, current = case
    before = allocate(spec, nodes, current)
    rescaled = SliceSpec(
        artifact=spec.artifact,
        instances=instances,
        strategy=spec.strategy,
        max_per_node=spec.max_per_node,
        resources=spec.resources,
    )
    after = allocate(rescaled, nodes, before.counts)
    assert_well_formed(rescaled, nodes, after)
    ids = [n.node_id for n in nodes]
    if instances >= spec.instances:
        assert all(after.counts.get(i, 0) >= before.counts.get(i, 0) for i in ids), (before, after)
    else:
        assert all(after.counts.get(i, 0) <= before.counts.get(i, 0) for i in ids), (before, after)


# ---------------------------------------------------------------------------- properties: allocate_all


@st.composite
def clusters(
    draw: st.DrawFn,
) -> tuple[list[SliceSpec], list[NodeCapacity], dict[str, dict[str, int]], dict[str, frozenset[str]]]:
    nodes = draw(node_sets())
    ids = [n.node_id for n in nodes]
    names = draw(st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=4, unique=True))
    all_specs = [draw(specs(artifact=f"org.example:{name}:1.0", max_instances=15)) for name in names]
    current = {s.artifact: draw(currents(ids)) for s in all_specs if draw(st.booleans())}
    excluded = {
        s.artifact: frozenset(draw(st.lists(st.sampled_from(ids), max_size=3)))
        for s in all_specs
        if draw(st.booleans())
    }
    return all_specs, nodes, current, excluded


@PROPERTY_ALL
@given(clusters())
def test_allocate_all_never_exceeds_a_node(
    cluster: tuple[list[SliceSpec], list[NodeCapacity], dict[str, dict[str, int]], dict[str, frozenset[str]]],
) -> None:
    all_specs, nodes, current, excluded = cluster
    placements = allocate_all(all_specs, nodes, current, excluded)
    assert set(placements) == {s.artifact for s in all_specs}
    for n in nodes:
        cpu = sum(
            Fraction(s.resources.cpu) * placements[s.artifact].counts.get(n.node_id, 0) for s in all_specs
        )
        memory = sum(
            s.resources.memory_mib * placements[s.artifact].counts.get(n.node_id, 0) for s in all_specs
        )
        constrains_cpu = any(
            s.resources.cpu > 0 and placements[s.artifact].counts.get(n.node_id) for s in all_specs
        )
        constrains_mem = any(
            s.resources.memory_mib > 0 and placements[s.artifact].counts.get(n.node_id) for s in all_specs
        )
        assert not constrains_cpu or cpu <= Fraction(n.cpu), (n, placements)
        assert not constrains_mem or memory <= n.memory_mib, (n, placements)
    for s in all_specs:
        placement = placements[s.artifact]
        assert sum(placement.counts.values()) + placement.unplaced == s.instances
        assert bool(placement.reason) == bool(placement.unplaced)
        if s.strategy is Strategy.SPREAD:
            assert all(c <= s.max_per_node for c in placement.counts.values())
        banned = excluded.get(s.artifact, frozenset())
        for node_id in banned:
            if not current.get(s.artifact, {}).get(node_id):
                assert node_id not in placement.counts, (node_id, placement)


@PROPERTY_ALL
@given(clusters(), st.randoms(use_true_random=False))
def test_allocate_all_is_deterministic_and_order_free(
    cluster: tuple[list[SliceSpec], list[NodeCapacity], dict[str, dict[str, int]], dict[str, frozenset[str]]],
    rng: object,
) -> None:
    all_specs, nodes, current, excluded = cluster
    placements = allocate_all(all_specs, nodes, current, excluded)
    assert allocate_all(all_specs, nodes, current, excluded) == placements
    shuffled_nodes, shuffled_specs = list(nodes), list(all_specs)
    rng.shuffle(shuffled_nodes)  # type: ignore[attr-defined]
    rng.shuffle(shuffled_specs)  # type: ignore[attr-defined]
    assert allocate_all(shuffled_specs, shuffled_nodes, current, excluded) == placements


@PROPERTY_ALL
@given(clusters())
def test_allocate_all_is_a_fixed_point(
    cluster: tuple[list[SliceSpec], list[NodeCapacity], dict[str, dict[str, int]], dict[str, frozenset[str]]],
) -> None:
    all_specs, nodes, current, _ = cluster
    placements = allocate_all(all_specs, nodes, current)
    again = allocate_all(all_specs, nodes, {a: dict(p.counts) for a, p in placements.items()})
    assert again == placements


@PROPERTY_ALL
@given(clusters())
def test_allocate_all_unplaced_only_when_nothing_fits(
    cluster: tuple[list[SliceSpec], list[NodeCapacity], dict[str, dict[str, int]], dict[str, frozenset[str]]],
) -> None:
    """A slice with unplaced instances has no room left on any node, given what the slices placed before
    it (in artifact order) take."""
    all_specs, nodes, _current, _ = cluster
    # From scratch: with a current placement, running instances of later slices are reserved too (so
    # nothing is evicted), and a slice may then be unplaced because of them.
    placements = allocate_all(all_specs, nodes, {})
    cpu_used = {n.node_id: Fraction(0) for n in nodes}
    memory_used = {n.node_id: 0 for n in nodes}
    for s in sorted(all_specs, key=lambda s: s.artifact):
        placement = placements[s.artifact]
        for n in nodes:
            left = room(s, n, float(cpu_used[n.node_id]), memory_used[n.node_id])
            count = placement.counts.get(n.node_id, 0)
            assert count <= left
            if placement.unplaced:
                assert count == left, (s, n, placement)
            cpu_used[n.node_id] += Fraction(s.resources.cpu) * count
            memory_used[n.node_id] += s.resources.memory_mib * count
