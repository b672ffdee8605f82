"""The stable set of a rollout kept whole (`aether_node.control._stable_set`, through
`_reconcile.plan(..., stable=)`): where a held slice's lost stable instances are replaced, and where
not. Pure: plans over observed records, no processes. (The rollouts that give the planner its stable
spec, and node losses mid-canary and mid-blue-green end to end over the simulated cluster, are in
test_strategies.)"""

from __future__ import annotations

import attrs
from test_reconcile import creates, node, observed, removes

from aether_node.control._reconcile import plan
from aether_node.core._blueprint import Resources, SliceSpec
from aether_node.core._reconcile_spec import ResolvedPolicy
from aether_node.core._records import SliceState
from aether_node.core._update_spec import UpdateSpec, UpdateStrategy

ECHO = "org.example:echo"
OLD, NEW = f"{ECHO}:1.0", f"{ECHO}:2.0"
CANARY = UpdateSpec(strategy=UpdateStrategy.CANARY, steps=(25, 100))
HELD = {ECHO}


def candidate(instances: int = 1, **changes: object) -> SliceSpec:
    """The candidate at the canary step's count, as `_strategies.planned_spec` gives it."""
    return SliceSpec(artifact=NEW, instances=instances, update=CANARY, **changes)  # type: ignore[arg-type]


def stable(instances: int = 4, **changes: object) -> dict[str, SliceSpec]:
    """The stable version at the slice's count, as `_strategies.stable_spec` gives it."""
    return {ECHO: SliceSpec(artifact=OLD, instances=instances, update=CANARY, **changes)}  # type: ignore[arg-type]


def canary_on(*stable_nodes: str) -> list:
    """One candidate instance on a; a stable instance on each of `stable_nodes`."""
    return [observed(n, OLD, i) for i, n in enumerate(stable_nodes, 1)] + [observed("a", NEW, 99)]


def test_the_stable_instances_of_a_lost_node_are_replaced_at_once_beyond_the_surge() -> None:
    nodes = [node("a"), node("b")]  # c and d are lost, with their stable instances
    p = plan([candidate()], nodes, canary_on("a", "b", "c", "d"), held=HELD, stable=stable(4))
    made = creates(p)
    assert sorted(c.node_id for c in made) == ["a", "b"]
    assert {str(c.coordinates) for c in made} == {OLD}
    assert all(c.why == "replacing a lost instance of the stable version 1.0" for c in made)
    assert not removes(p) and not p.problems


def test_replacements_on_their_way_stay_and_are_not_placed_twice() -> None:
    nodes = [node("a"), node("b")]
    running = [*canary_on("a", "b"), observed("a", OLD, 5, SliceState.LOADING)]
    p = plan([candidate()], nodes, running, held=HELD, stable=stable(4))
    assert [c.node_id for c in creates(p)] == ["b"]  # one of the two missing is on its way already
    assert not removes(p)  # the LOADING stable instance is no stale record to remove


def test_the_stable_version_keeps_its_own_config() -> None:
    config = {"greeting": "hi"}
    p = plan([candidate()], [node("a")], canary_on("a", "z"), held=HELD, stable=stable(2, config=config))
    (made,) = creates(p)
    assert made.config == config


def test_a_node_awaited_within_the_rebalance_delay_has_only_the_floor_replaced() -> None:
    nodes = [node("a"), node("b")]
    policy = {ECHO: ResolvedPolicy(rebalance_delay_s=60.0)}
    running = canary_on("a", "b", "c", "d")
    lost = {"c": 100.0, "d": 100.0}

    def replacements(now: float, floor: int | None) -> int:
        kept = stable(4, min_available=floor)
        p = plan([candidate()], nodes, running, held=HELD, stable=kept, lost=lost, policies=policy, now=now)
        assert not removes(p)
        return len(creates(p))

    assert replacements(110.0, floor=2) == 0  # 2 of 1.0 left, its floor 2: c and d are awaited
    assert replacements(110.0, floor=None) == 1  # its floor 3 (more than half): one replaced now
    assert replacements(200.0, floor=2) == 2  # the delay is over: every lost instance is replaced


def test_a_node_where_a_stable_replacement_failed_takes_none_and_the_slice_says_why() -> None:
    nodes = [node("a")]
    running = [*canary_on("a", "z"), observed("a", OLD, 5, SliceState.FAILED, reason="start: boom")]
    p = plan([candidate()], nodes, running, held=HELD, stable=stable(2), now=10.0)
    assert not creates(p) and not removes(p)
    (problem,) = p.problems
    assert "1 lost instance of the stable version 1.0 cannot be replaced now" in problem.message
    assert "failed on a: start: boom" in problem.message
    retried = plan([candidate()], nodes, running, held=HELD, stable=stable(2), now=100.0)
    assert [r.why for r in removes(retried)] == ["retrying: failed 100 s ago"]
    # an operator's retry that covers the failure's record: removed and replaced at once
    retried = plan([candidate()], nodes, running, held=HELD, stable=stable(2), now=10.0, retried={ECHO: 1})
    assert [r.why for r in removes(retried)] == [
        "retried: an operator let its failure go (`aether slice retry`)"
    ]
    assert [c.node_id for c in creates(retried)] == ["a"] and not retried.problems


def test_replacements_go_only_where_new_instances_may_go_and_where_there_is_room() -> None:
    nodes = [node("a"), node("b", cpu=1.0), node("c"), node("d")]
    running = canary_on("a", "b", "x", "y")
    needs_cpu = {"resources": Resources(cpu=2.0)}
    p = plan(
        [candidate(**needs_cpu)],
        nodes,
        running,
        held=HELD,
        stable=stable(4, **needs_cpu),
        cordoned={"c"},
        draining={"d"},
    )
    assert [c.node_id for c in creates(p)] == ["a", "a"]  # b has no room; c is cordoned, d draining
    assert not p.problems
    full = attrs.evolve(nodes[0], cpu=4.0)  # a holds the candidate and one of 1.0 already
    p = plan(
        [candidate(**needs_cpu)],
        [full, *nodes[1:]],
        running,
        held=HELD,
        stable=stable(4, **needs_cpu),
        cordoned={"c"},
        draining={"d"},
    )
    assert not creates(p)
    (problem,) = p.problems
    assert "2 lost instances of the stable version 1.0 cannot be replaced now" in problem.message


def test_nothing_is_restored_for_a_slice_that_is_not_held() -> None:
    p = plan([candidate(4)], [node("a"), node("b")], canary_on("a", "b", "c"), stable=stable(4))
    assert {str(c.coordinates) for c in creates(p)} <= {NEW}
