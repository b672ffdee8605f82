"""The stability window of `[slices.update] min_ready_s` (`_reconcile.plan(..., active_since=)`): a new
instance counts as ACTIVE for the removal of another one only once it has stayed ACTIVE that long, by
the leader's own observation (`InstanceDecoder.active_since`). Found by an adversarial tester: a new
config whose instances crash ~0.5 s after they start was rolled over every healthy old instance (each
new one counted the moment it was ACTIVE), and the slice went offline.

Pure scenarios, a hypothesis property over a simulated crash-looping rollout, and the leader's
bookkeeping of when it saw each record ACTIVE.
"""

from __future__ import annotations

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from aether_kv import KeyValue
from aether_node.control._allocation import NodeCapacity
from aether_node.control._cluster_manager import InstanceDecoder
from aether_node.control._reconcile import (
    CreateInstance,
    ObservedInstance,
    Plan,
    RemoveInstance,
    plan,
)
from aether_node.core._blueprint import SliceSpec, Strategy
from aether_node.core._coordinates import Coordinates
from aether_node.core._records import SliceRecord, SliceState, encode_record
from aether_node.core._update_spec import DEFAULT_MIN_READY_S, UpdateSpec

ECHO = "org.example:echo"
OLD, NEW = f"{ECHO}:1.0", f"{ECHO}:2.0"
NODES = [NodeCapacity(node_id=n, cpu=64.0, memory_mib=65536) for n in ("a", "b", "c")]


def spec(
    version: str = NEW, *, instances: int = 3, min_ready_s: float | None = None, **more: int
) -> SliceSpec:
    update = None if min_ready_s is None else UpdateSpec(min_ready_s=min_ready_s)
    return SliceSpec(artifact=version, instances=instances, update=update, **more)  # type: ignore[arg-type]


def observed(
    node_id: str, coordinates: str, number: int, state: SliceState = SliceState.ACTIVE
) -> ObservedInstance:
    return ObservedInstance(
        node_id=node_id,
        coordinates=Coordinates.parse(coordinates),
        instance=number,
        state=state,
        key=f"slices/{node_id}/{coordinates}/{number}",
        mod_revision=1,
    )


def removed(p: Plan) -> list[str]:
    return sorted(a.key for a in p.actions if isinstance(a, RemoveInstance))


def created(p: Plan) -> list[CreateInstance]:
    return [a for a in p.actions if isinstance(a, CreateInstance)]


OLD_SET = [observed("a", OLD, 1), observed("b", OLD, 2), observed("c", OLD, 3)]
FRESH = observed("a", NEW, 4)  # the rollout's first new instance, ACTIVE


def test_the_default_is_two_seconds_and_a_slice_without_an_update_table_has_it() -> None:
    assert UpdateSpec().min_ready_s == DEFAULT_MIN_READY_S == 2.0
    seen = {FRESH.key: 10.0}
    assert removed(plan([spec()], NODES, [*OLD_SET, FRESH], now=11.0, active_since=seen)) == []


def test_an_old_instance_stays_until_the_new_one_has_been_active_for_min_ready_s() -> None:
    seen = {FRESH.key: 10.0}
    for now in (10.0, 11.0, 11.99):
        early = plan([spec(min_ready_s=2.0)], NODES, [*OLD_SET, FRESH], now=now, active_since=seen)
        assert removed(early) == [], now
        assert created(early) == []  # the surge (1) is taken by the new instance: nothing more meanwhile
        (problem,) = early.problems
        assert problem.message == (
            "waiting for 1 new instance to stay ACTIVE for 2 s (min_ready_s) before an ACTIVE instance is"
            " removed for it"
        )
    settled = plan([spec(min_ready_s=2.0)], NODES, [*OLD_SET, FRESH], now=12.0, active_since=seen)
    assert removed(settled) == [OLD_SET[2].key]  # the most recently added old one
    assert settled.problems == ()


def test_with_min_ready_s_zero_the_old_instance_goes_as_soon_as_the_new_one_is_active() -> None:
    seen = {FRESH.key: 10.0}
    at_once = plan([spec(min_ready_s=0.0)], NODES, [*OLD_SET, FRESH], now=10.0, active_since=seen)
    assert removed(at_once) == [OLD_SET[2].key]
    unknown = plan([spec()], NODES, [*OLD_SET, FRESH], now=10.0)  # no window known (`blueprint diff`)
    assert removed(unknown) == [OLD_SET[2].key]


def test_an_initial_deployment_and_a_scale_up_are_not_slowed() -> None:
    fresh = plan([spec(min_ready_s=30.0)], NODES, [], now=10.0, active_since={})
    assert sorted(c.node_id for c in created(fresh)) == ["a", "b", "c"]
    one = observed("a", NEW, 1)
    growing = plan([spec(min_ready_s=30.0)], NODES, [one], now=10.0, active_since={one.key: 10.0})
    assert sorted(c.node_id for c in created(growing)) == ["b", "c"] and growing.problems == ()


def test_a_scale_down_removes_a_settling_surplus_instance_without_counting_it() -> None:
    """Instances not yet settled do not count as available; the newest (a settling one) goes first on a
    scale-down and takes nothing from the count, so the settled ones are kept."""
    settled = [observed("a", NEW, 1), observed("b", NEW, 2)]
    fresh = observed("c", NEW, 3)
    seen = {settled[0].key: 0.0, settled[1].key: 0.0, fresh.key: 10.0}
    p = plan([spec(instances=2, min_ready_s=5.0)], NODES, [*settled, fresh], now=10.0, active_since=seen)
    assert removed(p) == [fresh.key] and p.problems == ()


def test_a_drain_right_after_a_deploy_removes_no_instance_the_floor_needs() -> None:
    """Found on real nodes: right after a deploy every instance is settling, so none counts; the drained
    node's instance (a surplus, with nowhere to go) must still stay, as the floor needs it."""
    running = [observed("a", NEW, 1), observed("b", NEW, 2), observed("c", NEW, 3)]
    seen = {i.key: 10.0 for i in running}
    pinned = spec(min_ready_s=2.0, min_available=3, strategy=Strategy.SPREAD)  # 1 per node: nowhere to go
    for now in (10.0, 30.0):  # settling, then settled: the floor holds it either way
        p = plan([pinned], NODES, running, now=now, active_since=seen, draining={"b"})
        assert removed(p) == [] and created(p) == [], now
    (problem,) = plan([pinned], NODES, running, now=30.0, active_since=seen, draining={"b"}).problems
    assert "below its floor of 3 ACTIVE" in problem.message and "the drain of b waits" in problem.message


def test_a_drained_node_keeps_its_instance_until_the_replacement_has_settled() -> None:
    running = [observed("a", NEW, 1), observed("b", NEW, 2), observed("c", NEW, 3)]
    seen = {i.key: 0.0 for i in running}
    two = [NodeCapacity(node_id=n, cpu=64.0, memory_mib=65536) for n in ("a", "b", "c", "d")]
    first = plan([spec(min_ready_s=2.0)], two, running, now=10.0, active_since=seen, draining={"c"})
    (replacement,) = created(first)
    assert replacement.node_id == "d" and removed(first) == []
    moved = observed("d", NEW, 4)
    seen[moved.key] = 11.0
    waiting = plan(
        [spec(min_ready_s=2.0)], two, [*running, moved], now=12.0, active_since=seen, draining={"c"}
    )
    assert removed(waiting) == []
    done = plan([spec(min_ready_s=2.0)], two, [*running, moved], now=13.0, active_since=seen, draining={"c"})
    assert removed(done) == [running[2].key]


# ---------------------------------------------------------------------------- the leader's bookkeeping


def stored(key: str, state: SliceState, revision: int) -> KeyValue:
    value = encode_record(SliceRecord(state=state))
    return KeyValue(key=key, value=value, create_revision=1, mod_revision=revision, version=1, lease=0)


def test_the_leader_times_a_record_from_when_it_first_saw_it_active_and_starts_again_when_it_leaves() -> None:
    key = FRESH.key
    decoder = InstanceDecoder()
    decoder.update({key: stored(key, SliceState.ACTIVATE, 5)}, None, now=1.0)
    assert decoder.active_since == {}
    decoder.update({key: stored(key, SliceState.ACTIVE, 6)}, {key}, now=2.0)
    decoder.update({key: stored(key, SliceState.ACTIVE, 6)}, {key}, now=3.0)  # unchanged: still since 2
    decoder.update({key: stored(key, SliceState.ACTIVE, 6)}, None, now=4.0)
    assert decoder.active_since == {key: 2.0}
    decoder.update({key: stored(key, SliceState.LOADING, 7)}, {key}, now=5.0)  # its process died
    assert decoder.active_since == {}
    decoder.update({key: stored(key, SliceState.ACTIVE, 8)}, {key}, now=6.0)
    assert decoder.active_since == {key: 6.0}
    # Written ACTIVE again at another revision (a restart the leader did not see go by): a new activation.
    decoder.update({key: stored(key, SliceState.ACTIVE, 9)}, {key}, now=7.0)
    assert decoder.active_since == {key: 7.0}
    decoder.update({}, {key}, now=8.0)  # deleted
    assert decoder.active_since == {}
    # A new leader (a decoder of its own) starts every window at its first look.
    successor = InstanceDecoder()
    successor.update({key: stored(key, SliceState.ACTIVE, 9)}, None, now=20.0)
    assert successor.active_since == {key: 20.0}


def test_a_new_instance_that_restarts_starts_its_window_again() -> None:
    """ACTIVE at 10, its process dies at 10.5 (the node writes LOADING), ACTIVE again at 11: the old
    instance stays until 13, two seconds after the second activation, not 12."""
    old = {i.key: stored(i.key, SliceState.ACTIVE, n) for n, i in enumerate(OLD_SET, 1)}
    decoder = InstanceDecoder()

    def pass_at(now: float, state: SliceState, revision: int) -> Plan:
        raw = {**old, FRESH.key: stored(FRESH.key, state, revision)}
        index = decoder.update(raw, None, now=now)
        return plan([spec(min_ready_s=2.0)], NODES, index, now=now, active_since=decoder.active_since)

    assert removed(pass_at(10.0, SliceState.ACTIVE, 10)) == []
    assert removed(pass_at(10.5, SliceState.LOADING, 11)) == []
    assert removed(pass_at(11.0, SliceState.ACTIVE, 12)) == []
    assert removed(pass_at(12.5, SliceState.ACTIVE, 12)) == []  # 2.5 s after the first: not enough
    assert removed(pass_at(13.0, SliceState.ACTIVE, 12)) == [OLD_SET[2].key]


# ---------------------------------------------------------------------------- a crash-looping rollout


@attrs.define
class Rollout:
    """Instance records on three roomy nodes as the nodes and the leader would make them, with the time
    the leader first saw each ACTIVE. A new instance lives `life` s once ACTIVE, then its process dies:
    LOADING, ACTIVE again a step later, FAILED at its `deaths`-th death (the node's restart policy)."""

    life: float
    deaths: int
    now: float = 0.0
    records: dict[str, ObservedInstance] = attrs.field(factory=dict)
    since: dict[str, float] = attrs.field(factory=dict)
    died: dict[str, int] = attrs.field(factory=dict)

    def put(self, instance: ObservedInstance) -> None:
        self.records[instance.key] = instance
        if instance.state is SliceState.ACTIVE:
            self.since[instance.key] = self.now
        else:
            self.since.pop(instance.key, None)

    def tick(self, step: float) -> None:
        """`step` s pass: the new version's processes die or come back (before the leader's next pass)."""
        self.now += step
        for key, instance in list(self.records.items()):
            if str(instance.coordinates) != NEW:
                continue
            if instance.state is SliceState.LOADING:
                self.put(attrs.evolve(instance, state=SliceState.ACTIVE))
            elif instance.state is SliceState.ACTIVE and self.now - self.since[key] >= self.life:
                self.died[key] = self.died.get(key, 0) + 1
                dead = SliceState.FAILED if self.died[key] >= self.deaths else SliceState.LOADING
                self.put(attrs.evolve(instance, state=dead, timestamp=self.now))

    def apply(self, p: Plan) -> None:
        for action in p.actions:
            if isinstance(action, CreateInstance):
                self.put(observed(action.node_id, str(action.coordinates), action.instance))
            elif isinstance(action, RemoveInstance):
                self.records.pop(action.key)
                self.since.pop(action.key, None)

    def active(self, coordinates: str) -> int:
        return sum(
            1
            for i in self.records.values()
            if str(i.coordinates) == coordinates and i.state is SliceState.ACTIVE
        )


@settings(max_examples=150, deadline=None)
@given(
    instances=st.integers(1, 3),
    min_available=st.integers(1, 3),
    min_ready_s=st.floats(0.5, 5.0),
    life_share=st.floats(0.0, 0.99),
    deaths=st.integers(1, 6),
    step=st.floats(0.05, 1.0),
    max_surge=st.integers(1, 3),
)
def test_a_new_version_that_never_stays_up_for_min_ready_s_never_replaces_an_old_instance(
    instances: int,
    min_available: int,
    min_ready_s: float,
    life_share: float,
    deaths: int,
    step: float,
    max_surge: int,
) -> None:
    cluster = Rollout(life=min_ready_s * life_share, deaths=deaths)
    for n, node_id in enumerate(["a", "b", "c"][:instances], 1):
        cluster.put(observed(node_id, OLD, n))
    cluster.now = 100.0  # the old set has long been up
    target = SliceSpec(
        artifact=NEW,
        instances=instances,
        min_available=min(min_available, instances),
        update=UpdateSpec(min_ready_s=min_ready_s, max_surge=max_surge),
    )
    for _ in range(60):
        cluster.tick(step)
        p = plan([target], NODES, list(cluster.records.values()), now=cluster.now, active_since=cluster.since)
        assert not [a for a in p.actions if isinstance(a, RemoveInstance) and OLD in a.key], p
        cluster.apply(p)
        assert cluster.active(OLD) == instances


@settings(max_examples=50, deadline=None)
@given(instances=st.integers(1, 3), min_ready_s=st.floats(0.0, 5.0), step=st.floats(0.1, 1.0))
def test_a_new_version_that_stays_up_replaces_the_old_one_after_its_windows(
    instances: int, min_ready_s: float, step: float
) -> None:
    cluster = Rollout(life=float("inf"), deaths=1)
    for n, node_id in enumerate(["a", "b", "c"][:instances], 1):
        cluster.put(observed(node_id, OLD, n))
    target = SliceSpec(artifact=NEW, instances=instances, update=UpdateSpec(min_ready_s=min_ready_s))
    for _ in range(400):
        cluster.tick(step)
        p = plan([target], NODES, list(cluster.records.values()), now=cluster.now, active_since=cluster.since)
        if not p.actions and not p.problems:
            break
        cluster.apply(p)
        assert cluster.active(OLD) + cluster.active(NEW) >= instances  # never below the count to keep
    assert cluster.active(OLD) == 0 and cluster.active(NEW) == instances


@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from([OLD, NEW]),
            st.sampled_from([SliceState.ACTIVE, SliceState.ACTIVE, SliceState.LOADING, SliceState.FAILED]),
            st.floats(0.0, 10.0),
        ),
        max_size=8,
    ),
    instances=st.integers(0, 4),
    min_available=st.integers(0, 4),
    min_ready_s=st.floats(0.0, 5.0),
    draining=st.sets(st.sampled_from(["a", "b", "c"]), max_size=1),
)
def test_the_window_only_ever_holds_a_removal_back(
    records: list[tuple[str, str, SliceState, float]],
    instances: int,
    min_available: int,
    min_ready_s: float,
    draining: set[str],
) -> None:
    """Whatever the view and the times seen ACTIVE: the windows never remove more ACTIVE instances than
    the rule without them (they may pick a settling one over a settled one), never go below the floor,
    and create the same (only removals wait)."""
    view = [
        observed(node_id, coordinates, n, state)
        for n, (node_id, coordinates, state, _) in enumerate(records, 1)
    ]
    since = {i.key: seen for i, (*_, seen) in zip(view, records, strict=True) if i.state is SliceState.ACTIVE}
    target = spec(instances=instances, min_ready_s=min_ready_s, min_available=min(min_available, instances))
    states = {i.key: i.state for i in view}
    with_windows = plan([target], NODES, view, now=10.0, active_since=since, draining=draining)
    without = plan([target], NODES, view, now=10.0, draining=draining)
    active_removed = [k for k in removed(with_windows) if states[k] is SliceState.ACTIVE]
    assert len(active_removed) <= len([k for k in removed(without) if states[k] is SliceState.ACTIVE])
    active = sum(1 for i in view if i.state is SliceState.ACTIVE)
    assert active - len(active_removed) >= min(active, target.floor)
    assert created(with_windows) == created(without)
