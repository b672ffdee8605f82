"""Instance numbers are never given twice (`_reconcile.plan`'s `numbers`, `Plan.numbers`): the planner
numbers new instances from the next number the leader last wrote (`cluster/instance-numbers/`), or from
the highest recorded + 1 where that is higher or no number was written (a cluster from before it), and
says the next number after its creations. Scenarios and properties over the simulated cluster of
`test_reconcile.py`, whose `numbers` stands for the KV's records."""

from __future__ import annotations

import collections

from hypothesis import given
from test_reconcile import (
    ECHO,
    GREETER,
    PROPERTY,
    Cluster,
    Event,
    apply_event,
    creates,
    node,
    observed,
    removes,
    scenarios,
    spec,
)

from aether_node.control._allocation import NodeCapacity
from aether_node.control._reconcile import plan
from aether_node.core._blueprint import SliceSpec

NODES = [node("n1"), node("n2"), node("n3")]


def numbers_of(cluster: Cluster, artifact_id: str = ECHO) -> list[int]:
    return sorted(r.instance for r in cluster.of(artifact_id))


def test_a_scale_down_then_up_gives_new_numbers_not_those_of_the_removed_instances() -> None:
    cluster = Cluster(nodes=list(NODES))
    cluster.converge([spec(instances=3)])
    assert numbers_of(cluster) == [1, 2, 3] and cluster.numbers == {ECHO: 4}
    cluster.converge([spec(instances=1)])
    assert numbers_of(cluster) == [1]  # the newest go
    cluster.converge([spec(instances=3)])
    assert numbers_of(cluster) == [1, 4, 5] and cluster.numbers == {ECHO: 6}


def test_a_plan_numbers_from_the_record_and_says_the_next_number() -> None:
    view = [observed("n1", f"{ECHO}:1.0", 1)]
    p = plan([spec(instances=3)], NODES, view, numbers={ECHO: 7})
    assert sorted(c.instance for c in creates(p)) == [7, 8]
    assert p.numbers == {ECHO: 9}


def test_without_a_record_or_below_the_highest_number_it_goes_on_from_the_highest() -> None:
    view = [observed("n1", f"{ECHO}:1.0", 1), observed("n2", f"{ECHO}:1.0", 5)]
    for numbers in (None, {}, {ECHO: 2}, {GREETER: 40}):
        p = plan([spec(instances=3)], NODES, view, numbers=numbers)
        assert [c.instance for c in creates(p)] == [6], numbers
        assert p.numbers == {ECHO: 7}, numbers


def test_a_plan_without_creations_says_no_number() -> None:
    view = [observed(n, f"{ECHO}:1.0", k) for k, n in enumerate(["n1", "n2", "n3"], start=1)]
    assert plan([spec(instances=3)], NODES, view, numbers={ECHO: 9}).numbers == {}
    shrink = plan([spec(instances=1)], NODES, view, numbers={ECHO: 9})
    assert len(removes(shrink)) == 2 and shrink.numbers == {}


def test_a_blueprint_deleted_and_applied_again_goes_on_from_its_numbers() -> None:
    cluster = Cluster(nodes=list(NODES))
    cluster.converge([spec(instances=2)])
    cluster.converge([])
    assert cluster.of(ECHO) == [] and cluster.numbers == {ECHO: 3}  # the record stays
    cluster.converge([spec(instances=2)])
    assert numbers_of(cluster) == [3, 4]


def test_a_new_version_goes_on_from_the_artifacts_numbers() -> None:
    cluster = Cluster(nodes=list(NODES))
    cluster.converge([spec(instances=2)])
    cluster.converge([spec(artifact=f"{ECHO}:2.0", instances=2)])
    assert numbers_of(cluster) == [3, 4]
    cluster.converge([spec(artifact=f"{ECHO}:1.0", instances=2)])
    assert numbers_of(cluster) == [5, 6]


def test_a_new_leader_that_reads_the_record_gives_no_number_the_old_one_gave() -> None:
    # The old leader numbered 1..3 and removed 2 and 3; the new leader sees only #1 and the record.
    old = Cluster(nodes=list(NODES))
    old.converge([spec(instances=3)])
    old.converge([spec(instances=1)])
    new = Cluster(nodes=list(NODES), records=dict(old.records), numbers=dict(old.numbers))
    new.converge([spec(instances=3)])
    assert numbers_of(new) == [1, 4, 5]


@PROPERTY
@given(scenarios())
def test_no_number_is_ever_given_twice_for_an_artifact(
    scenario: tuple[list[NodeCapacity], dict[str, SliceSpec], list[Event], int],
) -> None:
    """Through scaling, version changes, joins, node losses, deletions and re-additions of slices and
    instance restarts: every creation of an artifact has a number no creation of it had before."""
    nodes, specs, events, max_surge = scenario
    cluster = Cluster(nodes=list(nodes))
    versions: dict[str, int] = {}
    cluster.converge(list(specs.values()), max_surge=max_surge, rounds=60)
    for kind, seed in events:
        apply_event(cluster, specs, kind, seed, versions)
        cluster.converge(list(specs.values()), max_surge=max_surge, rounds=60)
    given_twice = [n for n, times in collections.Counter(cluster.created).items() if times > 1]
    assert given_twice == [], cluster.created
    for artifact_id, number in cluster.created:
        assert number < cluster.numbers[artifact_id]
