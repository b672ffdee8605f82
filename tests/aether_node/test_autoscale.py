"""The autoscaling controller (`aether_node.control._autoscale`): a pure decision tree over a window of
readings. Examples for each leaf and its message, and hypothesis properties: a steady load never makes
it flap, its counts stay within min..max and the floor, cooldowns hold, and partial or stale readings
give a hold that says why. A closed loop (`simulate`) stands for the cluster: the load is split evenly
over the instances, and a scaling takes effect at once."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aether_node.control._autoscale import (
    Action,
    Decision,
    NodeSample,
    Reading,
    decide,
    quantile,
    reading_for,
    signals,
    trim,
)
from aether_node.core._autoscale_spec import AutoscaleSpec
from aether_node.core._coordinates import Coordinates
from aether_node.observe._metrics import InstanceSample, NodeMetrics
from aether_node.observe._slice_usage import slice_totals, slice_usage

STEP = 5.0  # seconds between readings
BOUNDS = (0.001, 0.01, 0.1, 0.25, 0.5, 1.0, 5.0)
ARTIFACT = "org.aether:busy"


@attrs.frozen(kw_only=True)
class Load:
    """A steady load on the slice as a whole, split evenly over its instances."""

    calls_per_second: int = 0
    cpu: float = 0.0  # cores, over all instances
    in_flight: int = 0
    latency_s: float = 0.005


def buckets(calls: int, latency_s: float) -> tuple[tuple[float, int], ...]:
    return tuple((bound, calls if latency_s <= bound else 0) for bound in BOUNDS)


class Cluster:
    """Counters of one slice on `nodes` nodes (instances spread round robin), advanced under a load."""

    def __init__(self, instances: int, nodes: int = 1) -> None:
        self.nodes = [f"node-{i + 1}" for i in range(nodes)]
        self.calls = dict.fromkeys(self.nodes, 0)
        self.cpu: dict[str, float] = {}
        self.next = 0
        self.resize(instances)

    def resize(self, instances: int) -> None:
        while len(self.cpu) < instances:
            self.cpu[f"i{self.next}"] = 0.0
            self.next += 1
        while len(self.cpu) > instances:
            del self.cpu[sorted(self.cpu, key=lambda key: int(key[1:]))[-1]]

    def advance(self, load: Load, seconds: float) -> None:
        for node in self.nodes:
            self.calls[node] += round(load.calls_per_second * seconds) // len(self.nodes)
        for instance in self.cpu:
            self.cpu[instance] += load.cpu / len(self.cpu) * seconds

    def reading(self, at: float, load: Load) -> Reading:
        placed: dict[str, dict[str, float]] = {node: {} for node in self.nodes}
        for index, (instance, seconds) in enumerate(sorted(self.cpu.items())):
            placed[self.nodes[index % len(self.nodes)]][instance] = seconds
        return Reading(
            at=at,
            nodes={
                node: NodeSample(
                    calls=self.calls[node],
                    buckets=buckets(self.calls[node], load.latency_s),
                    in_flight=load.in_flight // len(self.nodes),
                    cpu_seconds=placed[node],
                )
                for node in self.nodes
            },
        )


def simulate(
    spec: AutoscaleSpec,
    load: Load | Callable[[float], Load],
    *,
    start: int,
    steps: int,
    min_available: int | None = None,
) -> list[Decision]:
    """The decisions of a closed loop under `load` (or the load at each time, for a ramp)."""
    load_at = load if callable(load) else lambda now: load
    cluster = Cluster(start)
    current, window, last_scaled, decisions = start, [], None, []
    for step in range(steps):
        now = step * STEP
        if step:
            cluster.advance(load_at(now), STEP)
        window = [*window, cluster.reading(now, load_at(now))][-14:]  # 65 s: the longest span
        decision = decide(
            spec,
            current=current,
            window=window,
            expected=cluster.nodes,
            now=now,
            last_scaled_at=last_scaled,
            min_available=min_available,
        )
        decisions.append(decision)
        if decision.action is not Action.HOLD:
            current, last_scaled = decision.target, now
            cluster.resize(current)
    return decisions


def steady_window(load: Load, instances: int, seconds: float, nodes: int = 1) -> list[Reading]:
    cluster = Cluster(instances, nodes)
    window = [cluster.reading(0.0, load)]
    for step in range(1, int(seconds / STEP) + 1):
        cluster.advance(load, STEP)
        window.append(cluster.reading(step * STEP, load))
    return window


SPEC = AutoscaleSpec(min=1, max=6, p99_ms=200.0, cpu=0.7, up_after_s=30.0, down_after_s=60.0)
HOT = Load(calls_per_second=100, cpu=1.82, latency_s=0.4)  # 2 instances: cpu 0.91 each, p99 ≈ 400 ms
QUIET = Load(calls_per_second=4, cpu=0.1, latency_s=0.005)


# ---------------------------------------------------------------- the leaves, with their messages


def test_a_sustained_breach_scales_up_and_says_why() -> None:
    window = steady_window(HOT, 2, 60)
    decision = decide(SPEC, current=2, window=window, expected=["node-1"], now=60.0)

    assert (decision.action, decision.target) == (Action.UP, 3)
    assert (
        decision.message(ARTIFACT)
        == "scale org.aether:busy 2 -> 3: cpu 0.91 > 0.7, p99 498 ms > 200 ms for 30 s"
    )
    assert decision.path == (
        "bounds: within",
        "fresh",
        "complete",
        "settled",
        "up: cpu, p99_ms above target",
        "room",
        "scale up",
    )
    assert decision.figures["cpu"] == pytest.approx(0.91)
    assert decision.figures["p99_ms_target"] == 200.0


def test_up_step_is_capped_at_max() -> None:
    spec = attrs.evolve(SPEC, up_step=4)
    decision = decide(spec, current=4, window=steady_window(HOT, 4, 60), expected=["node-1"], now=60.0)
    assert (decision.action, decision.target) == (Action.UP, 6)


def test_at_max_a_breach_holds_and_says_so() -> None:
    decision = decide(SPEC, current=6, window=steady_window(HOT, 6, 60), expected=["node-1"], now=60.0)
    assert decision.action is Action.HOLD
    assert decision.path[-1] == "at max"
    assert decision.reason == "p99 498 ms > 200 ms for 30 s; but already at max 6"


def test_a_breach_during_the_up_cooldown_holds_with_the_wait() -> None:
    decision = decide(
        SPEC, current=2, window=steady_window(HOT, 2, 60), expected=["node-1"], now=60.0, last_scaled_at=50.0
    )
    assert decision.action is Action.HOLD
    assert decision.path[-1] == "cooldown"
    assert decision.reason.endswith("; but cooling down: up allowed in 20 s")


def test_a_quiet_slice_scales_down_with_the_projected_figures() -> None:
    decision = decide(SPEC, current=3, window=steady_window(QUIET, 3, 60), expected=["node-1"], now=60.0)
    assert (decision.action, decision.target) == (Action.DOWN, 2)
    assert decision.message(ARTIFACT) == (
        "scale org.aether:busy 3 -> 2: cpu 0.05 < 0.56 with 2, p99 10 ms < 160 ms for 60 s"
    )
    assert decision.path[-2:] == ("down: headroom on every target", "scale down")


def test_down_never_goes_below_min_available() -> None:
    spec = attrs.evolve(SPEC, down_step=3)
    decision = decide(
        spec, current=4, window=steady_window(QUIET, 4, 60), expected=["node-1"], now=60.0, min_available=2
    )
    assert (decision.action, decision.target) == (Action.DOWN, 2)
    at_floor = decide(
        spec, current=2, window=steady_window(QUIET, 2, 60), expected=["node-1"], now=60.0, min_available=2
    )
    assert at_floor.action is Action.HOLD
    assert at_floor.path[-1] == "at lower bound"
    assert at_floor.reason.endswith("; but already at the lower bound 2")


def test_no_headroom_after_the_step_holds() -> None:
    # 2 instances at 0.3 cpu each: with 1 it would be 0.6 ≥ 0.8 × 0.7 = 0.56
    load = Load(calls_per_second=10, cpu=0.6, latency_s=0.005)
    decision = decide(SPEC, current=2, window=steady_window(load, 2, 60), expected=["node-1"], now=60.0)
    assert decision.action is Action.HOLD
    assert decision.path[-2:] == ("down: not every target has headroom", "within targets")


def test_a_short_window_holds_while_warming_up() -> None:
    decision = decide(SPEC, current=2, window=steady_window(HOT, 2, 20), expected=["node-1"], now=20.0)
    assert decision.action is Action.HOLD
    assert decision.reason == "20 s of complete readings, 30 s needed to scale up and 60 s to scale down"


def test_a_restarted_node_breaks_the_window() -> None:
    window = steady_window(HOT, 2, 60)
    reset = attrs.evolve(window[-3], nodes={"node-1": attrs.evolve(window[-3].nodes["node-1"], calls=0)})
    decision = decide(
        SPEC, current=2, window=[*window[:-3], reset, *window[-2:]], expected=["node-1"], now=60.0
    )
    assert decision.action is Action.HOLD
    assert decision.path[-1] == "warming up"
    assert decision.figures["covered_s"] == 10.0


def test_a_count_outside_the_bounds_is_brought_back_without_readings() -> None:
    up = decide(SPEC, current=1, window=[], expected=["node-1"], now=0.0, min_available=3)
    assert (up.action, up.target, up.path) == (Action.UP, 3, ("bounds: below the lower bound",))
    down = decide(SPEC, current=9, window=[], expected=["node-1"], now=0.0)
    assert (down.action, down.target, down.reason) == (Action.DOWN, 6, "9 is above max 6")


@pytest.mark.parametrize(
    ("change", "leaf", "reason"),
    [
        ("no readings", "fresh: no reading", "no reading yet: no decision"),
        ("stale", "fresh: stale", "stale: the last reading is 20 s old (stale after 15 s): no decision"),
        (
            "node missing",
            "complete: partial",
            "partial: no reading from node-2: no decision on part of the cluster",
        ),
        ("instance missing", "settled: settling", "settling: 1 of 2 instances running"),
    ],
)
def test_partial_or_stale_readings_hold_and_say_why(change: str, leaf: str, reason: str) -> None:
    window = steady_window(HOT, 2, 60, nodes=2)
    now = 60.0
    if change == "no readings":
        window = []
    elif change == "stale":
        now = 80.0
    elif change == "node missing":
        window[-1] = attrs.evolve(window[-1], nodes={"node-1": window[-1].nodes["node-1"]})
    else:
        window[-1] = attrs.evolve(
            window[-1],
            nodes={**window[-1].nodes, "node-2": attrs.evolve(window[-1].nodes["node-2"], cpu_seconds={})},
        )
    decision = decide(SPEC, current=2, window=window, expected=["node-1", "node-2"], now=now)
    assert decision.action is Action.HOLD
    assert (decision.path[-1], decision.reason) == (leaf, reason)
    assert decision.message(ARTIFACT) == f"hold org.aether:busy at 2: {reason}"


def test_calls_and_in_flight_targets_are_per_instance() -> None:
    spec = AutoscaleSpec(min=1, max=10, calls_per_second=40.0, in_flight=3.0)
    load = Load(calls_per_second=100, in_flight=8)  # 2 instances: 50/s and 4 in flight each
    decision = decide(spec, current=2, window=steady_window(load, 2, 60), expected=["node-1"], now=60.0)
    assert decision.reason == "calls 50/s > 40/s, in flight 4 > 3 for 30 s"


def test_an_instance_without_a_cpu_base_blocks_a_scale_down_on_cpu() -> None:
    window = steady_window(QUIET, 3, 60)
    last = window[-1].nodes["node-1"]
    renamed = {f"new{i}": s for i, s in enumerate(last.cpu_seconds.values())}
    window[-1] = attrs.evolve(window[-1], nodes={"node-1": attrs.evolve(last, cpu_seconds=renamed)})
    decision = decide(SPEC, current=3, window=window, expected=["node-1"], now=60.0)
    assert decision.action is Action.HOLD


def test_quantile_interpolates_inside_the_bucket() -> None:
    assert quantile(0.99, [(0.1, 0), (0.5, 100)], 100) == pytest.approx(0.496)
    assert quantile(0.5, [(0.1, 50), (0.5, 100)], 100) == pytest.approx(0.1)
    assert quantile(0.99, [(0.1, 10)], 100) == 0.1  # past the last bound
    assert quantile(0.99, [], 0) is None


def test_slice_totals_sum_the_entry_points_of_the_slice() -> None:
    stats = [
        {
            "artifact": ARTIFACT,
            "entry": "burn",
            "calls": 3,
            "errors": 0,
            "seconds": 0.1,
            "buckets": [[0.1, 2]],
        },
        {
            "artifact": ARTIFACT,
            "entry": "nap",
            "calls": 2,
            "errors": 1,
            "seconds": 0.1,
            "buckets": [[0.1, 1]],
        },
        {
            "artifact": "org.aether:echo",
            "entry": "echo",
            "calls": 9,
            "errors": 0,
            "seconds": 0.1,
            "buckets": [],
        },
    ]
    assert slice_totals(stats, ARTIFACT) == (5, ((0.1, 3),))


def test_a_node_reports_its_slices_usage_and_the_leader_reads_it() -> None:
    metrics = NodeMetrics()
    metrics.invocation(ARTIFACT, "burn", "ingress", 0.3, None)
    metrics.invocation(ARTIFACT, "nap", "ingress", 0.004, "timeout")
    busy = Coordinates.parse("org.aether:busy:1.0.0")
    metrics.instances = lambda: [
        InstanceSample(coordinates=busy, instance=1, state="ACTIVE", pid=os.getpid()),  # a real process
        InstanceSample(coordinates=busy, instance=2, state="LOADING", pid=os.getpid()),  # not serving yet
        InstanceSample(coordinates=busy, instance=3, state="ACTIVE", pid=None),
    ]
    answer = json.loads(json.dumps(slice_usage(metrics, {ARTIFACT: 3})))  # as it crosses the peer link

    assert set(answer) == {ARTIFACT}
    usage = answer[ARTIFACT]
    assert (usage["calls"], usage["in_flight"], list(usage["cpu_seconds"])) == (2, 3, ["1.0.0/1"])
    assert usage["cpu_seconds"]["1.0.0/1"] > 0
    reading = reading_for(ARTIFACT, 10.0, {"node-1": answer, "node-2": {}, "node-3": None})
    assert set(reading.nodes) == {"node-1", "node-2"}  # node-2 answered without the slice; node-3 did not
    sample = reading.nodes["node-1"]
    assert (sample.calls, sample.in_flight, dict(sample.buckets)[0.005], dict(sample.buckets)[0.5]) == (
        2,
        3,
        1,
        2,
    )
    assert reading.nodes["node-2"] == NodeSample(calls=0)


def test_a_malformed_answer_counts_as_no_answer_and_the_controller_holds() -> None:
    good = {ARTIFACT: {"calls": 1, "buckets": [[0.1, 1]], "in_flight": 0, "cpu_seconds": {"1.0.0/1": 0.5}}}
    bad = {ARTIFACT: {"calls": "many", "buckets": [], "in_flight": 0, "cpu_seconds": {}}}
    reading = reading_for(ARTIFACT, 0.0, {"node-1": good, "node-2": bad, "node-3": ["not", "a", "dict"]})
    assert set(reading.nodes) == {"node-1"}
    decision = decide(SPEC, current=1, window=[reading], expected=["node-1", "node-2", "node-3"], now=0.0)
    assert decision.reason == "partial: no reading from node-2, node-3: no decision on part of the cluster"


def test_trim_keeps_the_longest_span_and_the_reading_before_it() -> None:
    window = [Reading(at=float(t), nodes={}) for t in range(0, 100, 5)]
    kept = trim(window, 95.0, SPEC)  # 60 s: readings from 35 s on, and the one at 30 s
    assert [r.at for r in kept] == [float(t) for t in range(30, 100, 5)]
    assert trim([], 0.0, SPEC) == []
    assert [r.at for r in trim(window, 500.0, SPEC)] == []


def test_signals_are_the_figures_between_two_readings_of_the_nodes_in_both() -> None:
    cluster = Cluster(2, nodes=2)
    cluster.advance(HOT, STEP)
    before = cluster.reading(STEP, HOT)
    cluster.advance(HOT, STEP)
    after = cluster.reading(2 * STEP, HOT)

    found = signals(before, after)
    assert found is not None
    assert found["calls_per_second"] == pytest.approx(50.0)  # 100/s over 2 instances
    assert found["cpu"] == pytest.approx(0.91)
    assert found["p99_ms"] == pytest.approx(498.0, abs=1)
    assert found["in_flight"] == 0.0
    # a node missing from the later reading: measured on the one in both
    only_one = Reading(at=after.at, nodes={"node-1": after.nodes["node-1"]})
    assert signals(before, only_one) is not None
    # a node that restarted (its counter went back): nothing to compare
    restarted = Reading(at=after.at, nodes={**after.nodes, "node-2": NodeSample(calls=0)})
    assert signals(before, restarted) is None


# ---------------------------------------------------------------- the forecast (forecast_s)

FORECAST = AutoscaleSpec(
    min=1, max=4, calls_per_second=50.0, up_after_s=10.0, down_after_s=30.0, forecast_s=20.0
)


def ramp(start: float, slope: float) -> Callable[[float], Load]:
    """A call rate that rises by `slope` calls/s every second from `start`."""
    return lambda now: Load(calls_per_second=round(start + slope * now), latency_s=0.005)


def ramp_window(load: Callable[[float], Load], until: float, instances: int = 1) -> list[Reading]:
    cluster = Cluster(instances)
    window = [cluster.reading(0.0, load(0.0))]
    for step in range(1, int(until / STEP) + 1):
        cluster.advance(load(step * STEP), STEP)
        window.append(cluster.reading(step * STEP, load(step * STEP)))
    return window


def test_a_rising_rate_scales_up_ahead_of_the_target_with_the_forecast() -> None:
    window = ramp_window(ramp(10, 1.0), 30.0)  # 40 calls/s now, 60 in 20 s
    ahead = decide(FORECAST, current=1, window=window, expected=["node-1"], now=30.0)
    reactive = decide(
        attrs.evolve(FORECAST, forecast_s=None), current=1, window=window, expected=["node-1"], now=30.0
    )

    assert (ahead.action, ahead.target) == (Action.UP, 2)
    assert ahead.message(ARTIFACT) == (
        "scale org.aether:busy 1 -> 2: forecast: calls 60/s > 50/s in 20 s "
        "(the slice's rate 40.0/s, rising 1.00/s per s)"
    )
    assert ahead.path[-3:] == ("forecast: calls above target ahead", "room", "scale up")
    assert ahead.figures["forecast_calls_per_second"] == pytest.approx(60.0)
    assert reactive.action is Action.HOLD  # 40/s is under 50/s: nothing to react to yet


def test_the_forecast_holds_on_a_flat_or_falling_rate_and_without_the_whole_span() -> None:
    for load in (ramp(45, 0.0), ramp(49, -0.5)):
        decision = decide(FORECAST, current=1, window=ramp_window(load, 30.0), expected=["node-1"], now=30.0)
        assert decision.action is Action.HOLD
        assert "forecast: within target" in decision.path
    short = ramp_window(ramp(10, 1.0), 15.0)  # 15 s of readings: the fit needs 20
    decision = decide(FORECAST, current=1, window=short, expected=["node-1"], now=15.0)
    assert decision.action is Action.HOLD


def test_a_forecast_breach_honours_the_cooldown_and_max() -> None:
    window = ramp_window(ramp(10, 1.0), 30.0)
    cooling = decide(FORECAST, current=1, window=window, expected=["node-1"], now=30.0, last_scaled_at=20.0)
    assert (cooling.action, cooling.path[-1]) == (Action.HOLD, "cooldown")
    assert "up allowed in 20 s" in cooling.reason
    at_max = decide(attrs.evolve(FORECAST, max=1), current=1, window=window, expected=["node-1"], now=30.0)
    assert (at_max.action, at_max.path[-1]) == (Action.HOLD, "at max")


def test_trim_keeps_the_forecast_span() -> None:
    spec = attrs.evolve(FORECAST, up_after_s=5.0, down_after_s=5.0, forecast_s=40.0)
    window = ramp_window(ramp(10, 0.0), 100.0)
    assert trim(window, 100.0, spec)[0].at == 55.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=st.integers(0, 40),
    slope=st.floats(0.2, 5.0),
    forecast=st.sampled_from([10.0, 20.0, 40.0]),
    target=st.sampled_from([20.0, 50.0]),
)
def test_on_a_ramp_the_forecast_scales_no_later_than_the_reactive_controller_and_stays_in_bounds(
    start: int, slope: float, forecast: float, target: float
) -> None:
    spec = AutoscaleSpec(
        min=1, max=5, calls_per_second=target, up_after_s=10.0, down_after_s=30.0, up_cooldown_s=10.0
    )
    load = ramp(start, slope)
    reactive = simulate(spec, load, start=1, steps=40)
    ahead = simulate(attrs.evolve(spec, forecast_s=forecast), load, start=1, steps=40)

    def first_up(decisions: list[Decision]) -> int:
        return next((i for i, d in enumerate(decisions) if d.action is Action.UP), len(decisions))

    assert first_up(ahead) <= first_up(reactive)
    assert all(1 <= d.target <= 5 for d in ahead)
    assert Action.DOWN not in [d.action for d in ahead]  # a rising load is never scaled down


# ---------------------------------------------------------------- properties

specs = st.builds(
    lambda low, extra, targets, steps, cooldowns, afters, down_below, forecast: AutoscaleSpec(
        min=low,
        max=low + extra,
        cpu=targets[0],
        p99_ms=targets[1],
        calls_per_second=targets[2],
        in_flight=targets[3],
        up_step=steps[0],
        down_step=steps[1],
        up_cooldown_s=cooldowns[0],
        down_cooldown_s=cooldowns[1],
        up_after_s=afters[0],
        down_after_s=afters[1],
        down_below=down_below,
        forecast_s=forecast if targets[2] is not None else None,  # the blueprint's rule
    ),
    st.integers(1, 4),
    st.integers(0, 6),
    st.tuples(
        st.none() | st.floats(0.1, 2.0),
        st.none() | st.sampled_from([5.0, 50.0, 300.0]),
        st.none() | st.floats(1.0, 100.0),
        st.none() | st.floats(0.5, 8.0),
    ).filter(lambda targets: any(t is not None for t in targets)),
    st.tuples(st.integers(1, 3), st.integers(1, 3)),
    st.tuples(st.sampled_from([0.0, 10.0, 30.0, 60.0]), st.sampled_from([0.0, 10.0, 30.0, 60.0])),
    st.tuples(st.sampled_from([5.0, 15.0, 30.0]), st.sampled_from([5.0, 15.0, 60.0])),
    st.floats(0.1, 0.95),
    st.none() | st.sampled_from([10.0, 20.0, 60.0]),
)
loads = st.builds(
    Load,
    calls_per_second=st.integers(0, 1000),
    cpu=st.floats(0.0, 8.0),
    in_flight=st.integers(0, 40),
    latency_s=st.sampled_from([0.0005, 0.005, 0.05, 0.2, 0.4, 2.0]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs, load=loads, start=st.integers(1, 10), floor=st.none() | st.integers(0, 4), data=st.data())
def test_a_steady_load_never_flaps_and_settles(
    spec: AutoscaleSpec, load: Load, start: int, floor: int | None, data: st.DataObject
) -> None:
    floor = None if floor is None else min(floor, spec.min)  # the blueprint parser's rule
    start = data.draw(st.integers(max(spec.min, floor or 0), spec.max), label="start")
    decisions = simulate(spec, load, start=start, steps=200, min_available=floor)

    moves = [d.action for d in decisions if d.action is not Action.HOLD]
    assert Action.UP not in moves[moves.index(Action.DOWN) :] if Action.DOWN in moves else True, moves
    assert all(d.action is Action.HOLD for d in decisions[-12:]), [d.path for d in decisions[-12:]]
    for decision in decisions:
        assert max(spec.min, floor or 0) <= decision.target <= spec.max


windows = st.lists(
    st.builds(
        Reading,
        at=st.floats(0, 300),
        nodes=st.dictionaries(
            st.sampled_from(["node-1", "node-2"]),
            st.builds(
                NodeSample,
                calls=st.integers(0, 10_000),
                buckets=st.lists(st.tuples(st.sampled_from(BOUNDS), st.integers(0, 10_000)), max_size=4).map(
                    lambda b: tuple(sorted(b))
                ),
                in_flight=st.integers(0, 50),
                cpu_seconds=st.dictionaries(st.sampled_from(["i0", "i1", "i2", "i3"]), st.floats(0, 1000)),
            ),
        ),
    ),
    max_size=8,
).map(lambda readings: sorted(readings, key=lambda r: r.at))


@settings(max_examples=150, deadline=None)
@given(
    spec=specs,
    window=windows,
    current=st.integers(0, 14),
    floor=st.none() | st.integers(0, 4),
    now=st.floats(0, 400),
    last=st.none() | st.floats(0, 400),
)
def test_any_decision_stays_in_bounds_and_honours_the_cooldowns(
    spec: AutoscaleSpec,
    window: list[Reading],
    current: int,
    floor: int | None,
    now: float,
    last: float | None,
) -> None:
    floor = None if floor is None else min(floor, spec.min)  # the blueprint parser's rule
    decision = decide(
        spec,
        current=current,
        window=window,
        expected=["node-1", "node-2"],
        now=now,
        last_scaled_at=last,
        min_available=floor,
    )
    lower = max(spec.min, floor or 0)
    assert decision.path and decision.reason
    if decision.action is Action.HOLD:
        assert decision.target == current
        return
    assert lower <= decision.target <= spec.max
    if not lower <= current <= spec.max:
        assert decision.path[0].startswith("bounds:")
        return
    assert (decision.target > current) == (decision.action is Action.UP)
    if decision.action is Action.UP:
        assert last is None or now - last >= spec.up_cooldown_s
    else:
        assert last is None or now - last >= spec.down_cooldown_s
    assert decision.path[:4] == ("bounds: within", "fresh", "complete", "settled")


@settings(max_examples=150, deadline=None)
@given(
    spec=specs,
    load=loads,
    instances=st.integers(1, 6),
    drop=st.sampled_from(["stale", "partial", "settling"]),
)
def test_partial_or_stale_data_always_holds_with_a_reason(
    spec: AutoscaleSpec, load: Load, instances: int, drop: str
) -> None:
    instances = min(max(instances, spec.min), spec.max)
    window = steady_window(load, instances, 120, nodes=2)
    now = 120.0
    if drop == "stale":
        now += 15.5
    elif drop == "partial":
        window[-1] = attrs.evolve(window[-1], nodes={"node-2": window[-1].nodes["node-2"]})
    else:
        window[-1] = attrs.evolve(
            window[-1],
            nodes={**window[-1].nodes, "node-1": attrs.evolve(window[-1].nodes["node-1"], cpu_seconds={})},
        )
    decision = decide(spec, current=instances, window=window, expected=["node-1", "node-2"], now=now)
    assert decision.action is Action.HOLD
    assert decision.reason.startswith(drop)
