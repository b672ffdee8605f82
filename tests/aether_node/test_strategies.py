"""Canary and blue-green rollouts (`aether_node.control._strategies`, the verdict of
`_canary_verdict`), with the reconcile planner they steer, over the simulated `slices/` records of
test_reconcile's `Cluster`. Pure: no processes.

Properties (hypothesis): while a rollout runs or after it aborted, no pass removes an ACTIVE instance of
the old version, so a failing new version never takes its capacity (and so never its floor); the
slice's ACTIVE count never goes below min(floor, instances); every schedule of verdicts and operator
commands reaches a fixed point (no action, the record unchanged) where exactly one version runs, or the
rollout waits for an operator with both versions serving. With `min_ready_s` (the leader's ACTIVE-since
times): the switch and each canary step's share go only to new instances that have stayed ACTIVE that
long, so a version whose instances crash sooner never gets a call and its rollout aborts on the crash
loop, the old version whole.
"""

from __future__ import annotations

import re

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_reconcile import Cluster, node
from test_rolling_min_ready import NODES as LIFETIME_NODES
from test_rolling_min_ready import Rollout as Lifetimes
from test_rolling_min_ready import observed

from aether_node.control._canary_verdict import Verdict, VersionWindow, evaluate, version_windows
from aether_node.control._reconcile import CreateInstance, ObservedInstance, Plan, RemoveInstance, plan
from aether_node.control._strategies import (
    RolloutCommandError,
    Running,
    advance,
    command,
    planned_spec,
    rollouts,
    running,
    stable_spec,
    step_count,
)
from aether_node.core._blueprint import SliceSpec
from aether_node.core._coordinates import Coordinates
from aether_node.core._records import RolloutPhase, RolloutRecord, SliceState
from aether_node.core._update_spec import UpdateSpec, UpdateStrategy
from aether_node.observe._version_calls import VersionCalls

ECHO = "org.example:echo"
OLD, NEW = f"{ECHO}:1.0", f"{ECHO}:2.0"
PASS = Verdict(passed=True, reason="fine")
FAIL = Verdict(passed=False, reason="error rate 50.0% > stable 0.0% + 1.0%")
UNKNOWN = Verdict(passed=None, reason="3 calls on the new version in the window, fewer than 20")
CANARY = UpdateSpec(strategy=UpdateStrategy.CANARY, steps=(10, 50, 100), step_window_s=30.0)
BLUE_GREEN = UpdateSpec(strategy=UpdateStrategy.BLUE_GREEN, grace_s=60.0)


def slice_spec(artifact: str, instances: int = 4, update: UpdateSpec | None = None, floor: int | None = None):
    return SliceSpec(artifact=artifact, instances=instances, update=update, min_available=floor)


def version_counts(cluster: Cluster, state: SliceState | None = SliceState.ACTIVE) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in cluster.of(ECHO):
        if state is None or record.state is state:
            counts[record.coordinates.version] = counts.get(record.coordinates.version, 0) + 1
    return counts


@attrs.define
class Rollout:
    """The leader's pass, as `_cluster_manager` runs it: advance the record, plan for it, apply the plan;
    every instance created starts ACTIVE unless its version is broken."""

    cluster: Cluster
    spec: SliceSpec
    record: RolloutRecord | None = None
    now: float = 1000.0

    def step(self, verdict: Verdict | None = None) -> Plan:
        candidate = Coordinates.parse(self.spec.artifact)
        self.record = advance(
            self.spec,
            self.record,
            running(self.cluster.of(ECHO), candidate, self.spec.config),
            now=self.now,
            verdict=verdict,
        )
        planned, hold = planned_spec(self.spec, self.record)
        stable = stable_spec(self.spec, self.record)
        result = plan(
            [planned],
            self.cluster.nodes,
            self.cluster.view(),
            now=self.now,
            held={ECHO} if hold else (),
            stable={ECHO: stable} if hold and stable is not None else None,
        )
        self.cluster.apply(result)
        return result

    def settle(self, verdict: Verdict | None = None, rounds: int = 50) -> None:
        """Passes at the same time until nothing changes."""
        for _ in range(rounds):
            before = self.record
            if not self.step(verdict).actions and self.record == before:
                return
        pytest.fail(f"no fixed point within {rounds} passes: {self.record}")


def serving(instances: int = 4, nodes: int = 4) -> Cluster:
    cluster = Cluster(nodes=[node(f"n{i}") for i in range(1, nodes + 1)])
    cluster.converge([slice_spec(OLD, instances)])
    assert version_counts(cluster) == {"1.0": instances}
    return cluster


# ---------------------------------------------------------------- the evaluator


def test_a_canary_within_its_limits_passes() -> None:
    verdict = evaluate(
        CANARY,
        VersionWindow(calls=900, errors=9, p99_ms=10.0),
        VersionWindow(calls=100, errors=1, p99_ms=14.0),
    )
    assert verdict.passed is True


def test_a_canary_with_more_errors_than_allowed_fails_and_says_by_how_much() -> None:
    verdict = evaluate(CANARY, VersionWindow(calls=900, errors=9), VersionWindow(calls=100, errors=5))
    assert verdict == Verdict(
        passed=False, reason="error rate 5.0% > stable 1.0% + 1.0% (5 of 100 calls failed)"
    )


def test_a_slow_canary_fails_on_its_p99() -> None:
    verdict = evaluate(
        CANARY,
        VersionWindow(calls=900, errors=0, p99_ms=10.0),
        VersionWindow(calls=100, errors=0, p99_ms=36.0),
    )
    assert verdict == Verdict(
        passed=False, reason="p99 36 ms > 1.5 x stable 10 ms, and more than 20 ms above it"
    )


@pytest.mark.parametrize(("stable", "candidate"), [(2.0, 4.0), (10.0, 19.0), (10.0, 30.0)])
def test_a_canary_within_the_slack_of_the_stable_p99_passes(stable: float, candidate: float) -> None:
    """Jitter of a fast slice is no slower version: 4 ms against 2 ms (a slice author's dev cluster)
    aborted the rollout on the ratio alone."""
    verdict = evaluate(
        CANARY,
        VersionWindow(calls=900, errors=0, p99_ms=stable),
        VersionWindow(calls=100, errors=0, p99_ms=candidate),
    )
    assert verdict.passed is True, verdict


def test_the_slack_is_the_blueprints() -> None:
    strict = attrs.evolve(CANARY, p99_slack_ms=0.0)
    verdict = evaluate(
        strict, VersionWindow(calls=900, errors=0, p99_ms=2.0), VersionWindow(calls=100, errors=0, p99_ms=4.0)
    )
    assert verdict == Verdict(
        passed=False, reason="p99 4 ms > 1.5 x stable 2 ms, and more than 0 ms above it"
    )


def test_too_few_calls_give_no_verdict() -> None:
    assert (
        evaluate(CANARY, VersionWindow(calls=900, errors=0), VersionWindow(calls=19, errors=19)).passed
        is None
    )
    assert evaluate(CANARY, VersionWindow(calls=900, errors=0), None).passed is None


def test_without_stable_figures_only_the_error_rate_is_judged_against_zero() -> None:
    assert evaluate(CANARY, None, VersionWindow(calls=100, errors=1, p99_ms=900.0)).passed is True
    assert evaluate(CANARY, None, VersionWindow(calls=100, errors=2)).passed is False


# ---------------------------------------------------------------- scenarios


def test_rolling_and_first_deployments_make_no_rollout() -> None:
    nothing = Running(active={}, present=frozenset())
    assert advance(slice_spec(NEW, update=CANARY), None, nothing, now=1.0) is None
    old = Running(active={"1.0": 4}, present=frozenset({"1.0"}))
    assert advance(slice_spec(NEW), None, old, now=1.0) is None
    assert advance(slice_spec(NEW, update=UpdateSpec()), None, old, now=1.0) is None


def test_canary_steps_bring_up_their_share_and_promote_on_passing_verdicts() -> None:
    cluster = serving(instances=4)
    rollout = Rollout(cluster, slice_spec(NEW, 4, CANARY))
    rollout.settle()
    assert rollout.record.phase is RolloutPhase.OBSERVING
    assert (rollout.record.step, rollout.record.share) == (0, 10)
    assert version_counts(cluster) == {"1.0": 4, "2.0": 1}  # 10 % of 4, at least one; the old set whole

    rollout.settle(PASS)  # the window has not run: a verdict changes nothing yet
    assert (rollout.record.phase, rollout.record.step) == (RolloutPhase.OBSERVING, 0)

    rollout.now += 30
    rollout.settle(PASS)
    assert (rollout.record.phase, rollout.record.step, rollout.record.share) == (
        RolloutPhase.OBSERVING,
        1,
        50,
    )
    assert version_counts(cluster) == {"1.0": 4, "2.0": 2}

    rollout.now += 30
    rollout.settle(PASS)
    assert (rollout.record.phase, rollout.record.share) == (RolloutPhase.OBSERVING, 100)
    assert version_counts(cluster) == {"1.0": 4, "2.0": 4}

    rollout.now += 30
    rollout.settle(PASS)
    assert rollout.record is None  # promoted, the old set removed, the record forgotten
    assert version_counts(cluster, None) == {"2.0": 4}


def test_a_failing_canary_step_aborts_and_the_stable_version_keeps_every_instance() -> None:
    cluster = serving(instances=4)
    rollout = Rollout(cluster, slice_spec(NEW, 4, CANARY))
    rollout.settle()
    rollout.now += 30
    rollout.settle(FAIL)

    assert rollout.record.phase is RolloutPhase.ABORTED
    assert rollout.record.share == 0
    assert rollout.record.reason == f"step 1 (10%): {FAIL.reason}"
    assert version_counts(cluster, None) == {"1.0": 4}
    rollout.now += 1000
    rollout.settle(PASS)  # aborted stays aborted while the blueprint asks for the same version
    assert rollout.record.phase is RolloutPhase.ABORTED


def test_a_canary_without_a_verdict_waits_for_an_operator_and_says_so() -> None:
    cluster = serving(instances=2)
    rollout = Rollout(cluster, slice_spec(NEW, 2, CANARY))
    rollout.settle()
    rollout.now += 30
    rollout.settle(UNKNOWN)
    assert rollout.record.phase is RolloutPhase.OBSERVING
    assert rollout.record.reason == (
        f"step 1 (10%) ran its window; {UNKNOWN.reason}: waiting for `aether slice promote` or `abort`"
    )
    rollout.record = command(rollout.record, "promote", now=rollout.now, artifact_id=ECHO)
    assert (rollout.record.phase, rollout.record.share) == (RolloutPhase.PROMOTED, None)
    for _ in range(10):
        rollout.settle()
    assert rollout.record is None
    assert version_counts(cluster, None) == {"2.0": 2}


def test_a_new_version_that_fails_to_start_aborts_with_the_reason() -> None:
    cluster = serving(instances=3)
    cluster.broken_versions.add(NEW)
    rollout = Rollout(cluster, slice_spec(NEW, 3, BLUE_GREEN))
    rollout.settle()
    assert rollout.record.phase is RolloutPhase.ABORTED
    assert re.match(r"\d+ new instances? failed: n", rollout.record.reason), rollout.record.reason
    assert rollout.record.reason.endswith("start failed: boom")
    assert version_counts(cluster, None) == {"1.0": 3}


def test_blue_green_brings_up_the_full_set_switches_at_once_and_keeps_the_old_set_for_the_grace() -> None:
    cluster = serving(instances=3)
    rollout = Rollout(cluster, slice_spec(NEW, 3, BLUE_GREEN))
    first = rollout.step()
    assert rollout.record.phase is RolloutPhase.DEPLOYING
    assert rollout.record.share == 0
    # the whole new set at once (the held old set does not count against the surge), nothing removed
    assert len([a for a in first.actions if isinstance(a, CreateInstance)]) == 3
    assert not [a for a in first.actions if isinstance(a, RemoveInstance)]
    rollout.settle()
    assert (rollout.record.phase, rollout.record.share) == (RolloutPhase.SWITCHED, 100)
    assert version_counts(cluster) == {"1.0": 3, "2.0": 3}

    rollout.now += 59
    rollout.settle()
    assert version_counts(cluster) == {"1.0": 3, "2.0": 3}
    rollout.now += 1
    rollout.settle()
    assert rollout.record is None
    assert version_counts(cluster, None) == {"2.0": 3}


def test_blue_green_abort_in_the_grace_switches_back_and_removes_the_new_set() -> None:
    cluster = serving(instances=3)
    rollout = Rollout(cluster, slice_spec(NEW, 3, BLUE_GREEN))
    rollout.settle()
    rollout.record = command(rollout.record, "abort", now=rollout.now, artifact_id=ECHO)
    assert (rollout.record.phase, rollout.record.share) == (RolloutPhase.ABORTED, 0)
    result = rollout.step()
    assert {a.key.split("/")[2] for a in result.actions if isinstance(a, RemoveInstance)} == {NEW}
    rollout.settle()
    assert version_counts(cluster, None) == {"1.0": 3}


def test_a_version_applied_in_the_grace_period_rolls_out_from_the_set_that_takes_the_calls() -> None:
    """Blue-green from 2.0 to 1.0 (switched: 1.0 takes every call, 2.0 kept for the grace period, as many
    instances), then 3.0 applied: the new rollout's stable version is 1.0, which serves, not the old set
    that ties with it (every call went back to 2.0, the version the operator had replaced, and an abort
    removed 1.0's set)."""
    cluster = Cluster(nodes=[node(f"n{i}") for i in range(1, 5)])
    cluster.converge([slice_spec(f"{ECHO}:2.0", 3)])
    rollout = Rollout(cluster, slice_spec(f"{ECHO}:1.0", 3, BLUE_GREEN))
    rollout.settle()
    assert (rollout.record.phase, rollout.record.candidate) == (RolloutPhase.SWITCHED, "1.0")
    assert version_counts(cluster) == {"1.0": 3, "2.0": 3}
    rollout.spec = slice_spec(f"{ECHO}:3.0", 3, BLUE_GREEN)
    rollout.step()
    assert (rollout.record.stable, rollout.record.candidate, rollout.record.share) == ("1.0", "3.0", 0)
    rollout.record = command(rollout.record, "abort", now=rollout.now, artifact_id=ECHO)
    rollout.settle()
    assert version_counts(cluster, None) == {"1.0": 3}  # back on what served


def test_a_version_applied_mid_canary_rolls_out_from_the_stable_version() -> None:
    cluster = serving(instances=4)
    rollout = Rollout(cluster, slice_spec(NEW, 4, CANARY))
    rollout.settle()
    assert (rollout.record.phase, rollout.record.share) == (RolloutPhase.OBSERVING, 10)
    rollout.spec = slice_spec(f"{ECHO}:3.0", 4, CANARY)
    rollout.step()
    assert (rollout.record.stable, rollout.record.candidate) == ("1.0", "3.0")


def test_going_back_to_the_stable_version_ends_the_rollout() -> None:
    cluster = serving(instances=2)
    rollout = Rollout(cluster, slice_spec(NEW, 2, BLUE_GREEN))
    rollout.settle()
    rollout.spec = slice_spec(OLD, 2, BLUE_GREEN)
    rollout.step()
    assert (rollout.record.phase, rollout.record.share) == (RolloutPhase.ABORTED, 0)
    assert rollout.record.reason == "the blueprint went back to 1.0"
    rollout.settle()
    assert rollout.record is None
    assert version_counts(cluster, None) == {"1.0": 2}


def test_commands_refuse_what_the_phase_cannot_take() -> None:
    with pytest.raises(RolloutCommandError, match="has no canary or blue-green rollout in progress"):
        command(None, "promote", now=1.0, artifact_id=ECHO)
    deploying = RolloutRecord(
        artifact_id=ECHO, strategy="blue_green", stable="1.0", candidate="2.0", phase=RolloutPhase.DEPLOYING
    )
    with pytest.raises(RolloutCommandError, match="is not ACTIVE yet"):
        command(deploying, "promote", now=1.0, artifact_id=ECHO)
    aborted = attrs.evolve(deploying, phase=RolloutPhase.ABORTED)
    with pytest.raises(RolloutCommandError, match="already ABORTED"):
        command(aborted, "abort", now=1.0, artifact_id=ECHO)
    with pytest.raises(RolloutCommandError, match="already PROMOTED; to go back, roll the blueprint back"):
        command(attrs.evolve(deploying, phase=RolloutPhase.PROMOTED), "abort", now=1.0, artifact_id=ECHO)


def test_canary_step_counts_are_their_share_of_the_instances_at_least_one() -> None:
    spec = slice_spec(NEW, 10, CANARY)
    assert [step_count(spec, k) for k in range(3)] == [1, 5, 10]
    assert step_count(slice_spec(NEW, 1, CANARY), 0) == 1


# ---------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None)
@given(
    instances=st.integers(1, 5),
    nodes=st.integers(1, 4),
    floor=st.none() | st.integers(0, 5),
    update=st.sampled_from([CANARY, BLUE_GREEN, UpdateSpec(strategy=UpdateStrategy.CANARY, steps=(100,))]),
    broken=st.booleans(),
    verdicts=st.lists(st.sampled_from([PASS, FAIL, UNKNOWN, None]), min_size=1, max_size=12),
    commands=st.lists(st.sampled_from([None, None, None, "promote", "abort"]), max_size=12),
)
def test_the_old_version_keeps_its_capacity_and_every_rollout_converges(
    instances: int,
    nodes: int,
    floor: int | None,
    update: UpdateSpec,
    broken: bool,
    verdicts: list[Verdict | None],
    commands: list[str | None],
) -> None:
    floor = None if floor is None else min(floor, instances)
    cluster = serving(instances, nodes)
    if broken:
        cluster.broken_versions.add(NEW)
    spec = slice_spec(NEW, instances, update, floor)
    rollout = Rollout(cluster, spec)
    lowest = min(spec.floor, instances)
    for turn in range(30):
        rollout.now += 20  # windows and grace periods run out as the passes go on
        operation = commands[turn] if turn < len(commands) else None
        if operation is not None:
            try:
                rollout.record = command(rollout.record, operation, now=rollout.now, artifact_id=ECHO)
            except RolloutCommandError:
                pass
        old_before = version_counts(cluster).get("1.0", 0)
        active_before = sum(version_counts(cluster).values())
        rollout.step(verdicts[turn % len(verdicts)])
        old_after = version_counts(cluster).get("1.0", 0)
        held = rollout.record is not None and rollout.record.phase is not RolloutPhase.PROMOTED
        if held or broken:  # running, or aborted: the old version's ACTIVE instances all stay
            assert old_after >= old_before, rollout.record
        assert sum(version_counts(cluster).values()) >= min(lowest, active_before)

    # Then, with verdicts that pass and time that runs, it reaches a fixed point.
    for _ in range(8):
        rollout.now += 1000
        rollout.settle(PASS)
    before = rollout.record
    assert not rollout.step(PASS).actions
    assert rollout.record == before
    versions = version_counts(cluster, None)
    if rollout.record is None:
        assert versions == {"2.0": instances}
        assert not broken
    else:
        assert rollout.record.phase is RolloutPhase.ABORTED
        assert versions == {"1.0": instances}


# ---------------------------------------------------------------- windows from the nodes' readings


def test_calls_per_version_are_counted_with_cumulative_buckets_and_only_instance_faults() -> None:
    tally = VersionCalls()
    tally.record(ECHO, "1.0", 0.003, None)
    tally.record(ECHO, "1.0", 0.2, "raised")
    tally.record(ECHO, "1.0", 0.2, "bad_request")  # the caller's fault, not the version's
    snapshot = tally.snapshot()[ECHO]["1.0"]
    assert (snapshot["calls"], snapshot["errors"]) == (3, 1)
    assert dict((bound, n) for bound, n in snapshot["buckets"])[0.005] == 1
    assert snapshot["buckets"][-1] == [30.0, 3]


def reading(**versions: tuple[int, int, float]) -> dict[str, object]:
    """One node's snapshot: version → (calls, errors, the bound every call fell under)."""
    return {
        ECHO: {
            v[1:].replace("_", "."): {
                "calls": c,
                "errors": e,
                "buckets": [[0.01, c if b <= 0.01 else 0], [1.0, c]],
            }
            for v, (c, e, b) in versions.items()
        }
    }


def test_version_windows_sum_the_nodes_intervals_and_leave_out_a_restarted_node() -> None:
    start = {
        "n1": reading(v1_0=(100, 0, 0.01)),
        "n2": reading(v1_0=(50, 0, 0.01)),
        "n3": reading(v1_0=(90, 0, 0.01)),
    }
    end = {
        "n1": reading(v1_0=(190, 1, 0.01), v2_0=(10, 5, 1.0)),
        "n2": reading(v1_0=(60, 0, 0.01)),
        "n3": reading(v1_0=(5, 0, 0.01)),  # restarted: its counts went back
        "n4": reading(v1_0=(7, 0, 0.01)),  # not in the first reading
    }
    windows = version_windows(start, end, ECHO)
    assert windows["1.0"].calls == 100 and windows["1.0"].errors == 1
    assert windows["1.0"].p99_ms is not None and windows["1.0"].p99_ms <= 10.0
    assert (windows["2.0"].calls, windows["2.0"].errors) == (10, 5)
    assert windows["2.0"].p99_ms is not None and windows["2.0"].p99_ms > 10.0
    assert version_windows({"n1": "garbage"}, {"n1": {ECHO: {"1.0": {"calls": "x"}}}}, ECHO) == {}


# ---------------------------------------------------------------- node failures during a rollout


def lose(cluster: Cluster, *node_ids: str) -> None:
    """The nodes are gone (SIGKILL): no longer live; their records stay until the planner deletes them."""
    cluster.nodes = [n for n in cluster.nodes if n.node_id not in node_ids]


def holders(cluster: Cluster, version: str) -> set[str]:
    return {r.node_id for r in cluster.of(ECHO) if r.coordinates.version == version}


def test_a_node_lost_in_a_canary_has_its_stable_instances_replaced_and_the_canary_holds_its_step() -> None:
    cluster = serving(instances=4, nodes=4)
    rollout = Rollout(cluster, slice_spec(NEW, 4, CANARY, floor=4))
    rollout.settle()
    assert (rollout.record.phase, version_counts(cluster)) == (RolloutPhase.OBSERVING, {"1.0": 4, "2.0": 1})
    lost = sorted(holders(cluster, "1.0") - holders(cluster, "2.0"))[0]

    lose(cluster, lost)
    rollout.settle(UNKNOWN)

    record = rollout.record
    assert (record.phase, record.step, record.share) == (RolloutPhase.OBSERVING, 0, 10)
    assert version_counts(cluster) == {"1.0": 4, "2.0": 1}  # the stable set whole again, on the survivors
    assert lost not in holders(cluster, "1.0")


def test_a_canary_whose_every_stable_instance_is_lost_is_not_promoted_but_restores_the_stable_set() -> None:
    cluster = serving(instances=2, nodes=2)
    cluster.nodes.insert(0, node("n0"))  # the candidate goes to the emptiest node, which runs no 1.0
    rollout = Rollout(cluster, slice_spec(NEW, 2, CANARY))
    rollout.settle()
    assert holders(cluster, "2.0") == {"n0"} and holders(cluster, "1.0") == {"n1", "n2"}

    lose(cluster, "n1", "n2")
    rollout.settle(UNKNOWN)

    assert rollout.record.phase is RolloutPhase.OBSERVING, rollout.record
    assert version_counts(cluster) == {"1.0": 2, "2.0": 1}
    # ... and only its verdict (or an operator) moves it on from there
    rollout.now += 30
    rollout.settle(PASS)
    assert (rollout.record.phase, rollout.record.step) == (RolloutPhase.OBSERVING, 1)


def test_blue_green_restores_the_old_set_lost_in_its_grace_period_so_an_abort_can_switch_back() -> None:
    cluster = serving(instances=3, nodes=4)
    rollout = Rollout(cluster, slice_spec(NEW, 3, BLUE_GREEN))
    rollout.settle()
    assert (rollout.record.phase, version_counts(cluster)) == (RolloutPhase.SWITCHED, {"1.0": 3, "2.0": 3})

    lose(cluster, *sorted(holders(cluster, "1.0"))[:2])
    rollout.now += 10
    rollout.settle()

    assert rollout.record.phase is RolloutPhase.SWITCHED
    assert version_counts(cluster) == {"1.0": 3, "2.0": 3}  # both colours whole again
    rollout.record = command(rollout.record, "abort", now=rollout.now, artifact_id=ECHO)
    rollout.settle()
    assert version_counts(cluster, None) == {"1.0": 3}


def test_a_count_changed_mid_canary_changes_the_stable_sets_count_too_as_it_takes_most_calls() -> None:
    cluster = serving(instances=2, nodes=3)
    rollout = Rollout(cluster, slice_spec(NEW, 3, CANARY))
    rollout.settle()
    assert (rollout.record.phase, version_counts(cluster)) == (RolloutPhase.OBSERVING, {"1.0": 3, "2.0": 1})
    rollout.spec = slice_spec(NEW, 1, CANARY)  # scaled down: the held stable set is not removed
    rollout.settle()
    assert (rollout.record.phase, version_counts(cluster)) == (RolloutPhase.OBSERVING, {"1.0": 3, "2.0": 1})


@pytest.mark.parametrize(
    ("update", "phase"),
    [
        (CANARY, RolloutPhase.DEPLOYING),
        (CANARY, RolloutPhase.OBSERVING),
        (BLUE_GREEN, RolloutPhase.DEPLOYING),
        (BLUE_GREEN, RolloutPhase.SWITCHED),
    ],
)
def test_a_rollout_whose_stable_instances_are_all_gone_stays_in_its_phase(
    update: UpdateSpec, phase: RolloutPhase
) -> None:
    record = RolloutRecord(
        artifact_id=ECHO,
        strategy=update.strategy.value,
        stable="1.0",
        candidate="2.0",
        phase=phase,
        share=10,
        since=1000.0,
    )
    ready = 0 if phase is RolloutPhase.DEPLOYING else 1  # (deploying: the candidate is not up yet)
    only_the_candidate = Running(active={"2.0": ready}, present=frozenset({"2.0"}))
    after = advance(slice_spec(NEW, 4, update), record, only_the_candidate, now=1001.0, verdict=UNKNOWN)
    assert after is not None and after.phase is phase, after


@settings(max_examples=100, deadline=None)
@given(
    instances=st.integers(1, 5),
    nodes=st.integers(2, 5),
    floor=st.none() | st.integers(0, 5),
    update=st.sampled_from([CANARY, attrs.evolve(BLUE_GREEN, grace_s=1e9)]),
    lost_turn=st.integers(0, 6),
    lost=st.integers(1, 4),
)
def test_node_losses_during_a_rollout_never_promote_it_and_the_stable_count_comes_back(
    instances: int, nodes: int, floor: int | None, update: UpdateSpec, lost_turn: int, lost: int
) -> None:
    cluster = serving(instances, nodes)
    floor = None if floor is None else min(floor, instances)
    rollout = Rollout(cluster, slice_spec(NEW, instances, update, floor))
    for turn in range(8):
        if turn == lost_turn:
            lose(cluster, *[f"n{i}" for i in range(1, min(lost, nodes - 1) + 1)])
        rollout.now += 20
        rollout.step(UNKNOWN)
        assert rollout.record is not None and rollout.record.phase in (
            RolloutPhase.DEPLOYING,
            RolloutPhase.OBSERVING,
            RolloutPhase.SWITCHED,
        ), rollout.record
    rollout.settle(UNKNOWN)
    assert rollout.record.phase is not RolloutPhase.PROMOTED
    assert version_counts(cluster)["1.0"] == instances, version_counts(cluster, None)


def test_a_record_whose_stable_version_does_not_parse_restores_nothing() -> None:
    record = RolloutRecord(
        artifact_id=ECHO,
        strategy="canary",
        stable="not a version",
        candidate="2.0",
        phase=RolloutPhase.OBSERVING,
    )
    assert stable_spec(slice_spec(NEW, 4, CANARY), record) is None
    assert stable_spec(slice_spec(NEW, 4, CANARY), attrs.evolve(record, stable="1.0")) == slice_spec(
        OLD, 4, CANARY
    )


# ---------------------------------------------------------------- min_ready_s: only settled instances count


def deploying(update: UpdateSpec) -> RolloutRecord:
    return RolloutRecord(
        artifact_id=ECHO,
        strategy=update.strategy.value,
        stable="1.0",
        candidate="2.0",
        phase=RolloutPhase.DEPLOYING,
        share=0,
        since=0.0,
    )


def rollout_at(
    update: UpdateSpec, view: list[ObservedInstance], seen: dict[str, float] | None, now: float
) -> RolloutRecord | None:
    """The leader's rollout pass over `view` (`rollouts`), from a DEPLOYING record, at `now`."""
    record = deploying(update)
    steered = rollouts([slice_spec(NEW, 3, update)], view, {ECHO: record}, now=now, active_since=seen)
    return steered.changes.get(ECHO, record)


OLD_SET = [observed(n, OLD, i) for i, n in enumerate(("a", "b", "c"), 1)]
NEW_SET = [observed(n, NEW, i) for i, n in enumerate(("a", "b", "c"), 4)]
SEEN = {NEW_SET[0].key: 10.0, NEW_SET[1].key: 10.0, NEW_SET[2].key: 11.0}  # ACTIVE since, by the leader


def test_blue_green_switches_only_once_every_new_instance_has_stayed_active_for_min_ready_s() -> None:
    update = attrs.evolve(BLUE_GREEN, min_ready_s=2.0)
    for now in (11.0, 12.0, 12.99):
        waiting = rollout_at(update, [*OLD_SET, *NEW_SET], SEEN, now)
        assert (waiting.phase, waiting.share) == (RolloutPhase.DEPLOYING, 0), now
    assert waiting.reason == (
        "bringing up the new set (3 instances) beside the old one; waiting for 1 new instance to stay"
        " ACTIVE for 2 s (min_ready_s) before the switch"
    )
    switched = rollout_at(update, [*OLD_SET, *NEW_SET], SEEN, 13.0)
    assert (switched.phase, switched.share, switched.since) == (RolloutPhase.SWITCHED, 100, 13.0)


def test_a_blue_green_set_not_all_active_names_no_settling_instance() -> None:
    """While the set is still coming up the reason stays as it was (a reason is a write of the record)."""
    loading = [*NEW_SET[:2], attrs.evolve(NEW_SET[2], state=SliceState.LOADING)]
    record = rollout_at(attrs.evolve(BLUE_GREEN, min_ready_s=2.0), [*OLD_SET, *loading], SEEN, 11.0)
    assert record.reason == "bringing up the new set (3 instances) beside the old one"


def test_a_canary_step_and_its_window_start_once_its_instances_have_stayed_active_for_min_ready_s() -> None:
    update = attrs.evolve(CANARY, min_ready_s=5.0)  # step 1: 10 % of 3, one instance
    view = [*OLD_SET, NEW_SET[0]]
    waiting = rollout_at(update, view, SEEN, 14.0)
    assert (waiting.phase, waiting.share) == (RolloutPhase.DEPLOYING, 0)
    assert waiting.reason == (
        "step 1 of 3: bringing up 1 new instance; waiting for 1 new instance to stay ACTIVE for 5 s"
        " (min_ready_s) before 10% of the calls go to the new version"
    )
    observing = rollout_at(update, view, SEEN, 15.0)
    # the window starts now, on an instance that has stayed up
    assert (observing.phase, observing.share, observing.since) == (RolloutPhase.OBSERVING, 10, 15.0)


def test_the_next_canary_step_waits_for_its_new_instances_to_settle_too() -> None:
    update = attrs.evolve(CANARY, min_ready_s=2.0)
    step_2 = attrs.evolve(deploying(update), step=1, share=10)  # 50 % of 3: two instances
    view = [*OLD_SET, *NEW_SET[:2]]
    seen = {NEW_SET[0].key: 0.0, NEW_SET[1].key: 10.0}  # the first step's long settled, a new one
    spec = slice_spec(NEW, 3, update)
    early = advance(
        spec,
        step_2,
        running(view, Coordinates.parse(NEW), None, active_since=seen, now=11.0, min_ready_s=2.0),
        now=11.0,
    )
    assert (early.phase, early.share) == (RolloutPhase.DEPLOYING, 10)
    assert early.reason.endswith("before 50% of the calls go to the new version")
    settled = running(view, Coordinates.parse(NEW), None, active_since=seen, now=12.0, min_ready_s=2.0)
    assert (advance(spec, step_2, settled, now=12.0).phase, settled.settling) == (RolloutPhase.OBSERVING, 0)


def test_without_a_window_the_new_instances_count_at_once() -> None:
    """min_ready_s 0, or no ACTIVE-since times (`blueprint diff`): as soon as they are ACTIVE."""
    view = [*OLD_SET, *NEW_SET]
    assert (
        rollout_at(attrs.evolve(BLUE_GREEN, min_ready_s=0.0), view, SEEN, 10.0).phase is RolloutPhase.SWITCHED
    )
    assert rollout_at(BLUE_GREEN, view, None, 10.0).phase is RolloutPhase.SWITCHED
    # (only a key the leader has a time for waits: one seen ACTIVE just now, as by a new leader)
    assert rollout_at(BLUE_GREEN, view, {NEW_SET[0].key: 10.0}, 10.0).phase is RolloutPhase.DEPLOYING


def test_an_operator_is_told_a_blue_green_set_switches_once_settled() -> None:
    with pytest.raises(
        RolloutCommandError, match="once every new instance has stayed ACTIVE for min_ready_s"
    ):
        command(deploying(BLUE_GREEN), "promote", now=1.0, artifact_id=ECHO)


@settings(max_examples=120, deadline=None)
@given(
    update=st.sampled_from(
        [
            attrs.evolve(BLUE_GREEN, grace_s=5.0),
            attrs.evolve(CANARY, step_window_s=5.0),
            UpdateSpec(strategy=UpdateStrategy.CANARY, steps=(100,), step_window_s=5.0),
        ]
    ),
    instances=st.integers(1, 3),
    min_ready_s=st.floats(0.5, 5.0),
    life_share=st.none() | st.floats(0.0, 0.99),
    deaths=st.integers(1, 6),
    tick=st.floats(0.1, 1.0),
)
def test_only_settled_new_instances_get_calls_and_a_crash_looping_version_never_does(
    update: UpdateSpec,
    instances: int,
    min_ready_s: float,
    life_share: float | None,
    deaths: int,
    tick: float,
) -> None:
    """The leader's passes (`rollouts`, then `plan`) over instances that live `life` s once ACTIVE (None:
    for good), then die (LOADING, ACTIVE again a tick later, FAILED at the `deaths`-th death): the
    switch and each step's share go only to new instances ACTIVE for min_ready_s; a version whose
    instances never stay up that long never gets a call, the old version keeps every instance ACTIVE,
    and the rollout aborts on the crash loop; one that stays up is promoted and replaces the old one."""
    life = float("inf") if life_share is None else min_ready_s * life_share
    cluster = Lifetimes(life=life, deaths=deaths)
    for n, node_id in enumerate(["a", "b", "c"][:instances], 1):
        cluster.put(observed(node_id, OLD, n))
    cluster.now = 100.0
    spec = slice_spec(NEW, instances, attrs.evolve(update, min_ready_s=min_ready_s))
    records: dict[str, RolloutRecord] = {}
    while cluster.now < 300.0:  # (a canary of 3 steps and its removals take some 40 s)
        cluster.tick(tick)
        view = list(cluster.records.values())
        steered = rollouts(
            [spec], view, records, now=cluster.now, verdicts={ECHO: PASS}, active_since=cluster.since
        )
        before = records.get(ECHO)
        after = steered.changes.get(ECHO, before)
        records = {} if after is None else {ECHO: after}
        if after is not None and after.share and (before is None or after.share != before.share):
            # more calls for the candidate: only while as many as needed have stayed up
            needed = (
                spec.instances
                if update.strategy is UpdateStrategy.BLUE_GREEN
                else step_count(spec, after.step)
            )
            settled = [
                i
                for i in view
                if str(i.coordinates) == NEW
                and i.state is SliceState.ACTIVE
                and cluster.now - cluster.since[i.key] >= min_ready_s
            ]
            assert len(settled) >= needed, (after, view)
            assert life == float("inf"), after
        p = plan(
            steered.specs,
            LIFETIME_NODES,
            view,
            now=cluster.now,
            held=steered.held,
            stable=steered.stable,
            active_since=cluster.since,
        )
        if life != float("inf"):
            assert not [a for a in p.actions if isinstance(a, RemoveInstance) and OLD in a.key], p
        cluster.apply(p)
        if life != float("inf"):
            assert cluster.active(OLD) == instances
        if not p.actions and not steered.changes and (after is None or after.phase is RolloutPhase.ABORTED):
            break
    final = records.get(ECHO)
    if life == float("inf"):
        assert final is None and cluster.active(NEW) == instances and cluster.active(OLD) == 0, final
    else:
        assert final is not None and final.phase is RolloutPhase.ABORTED, final
        assert re.match(r"\d+ new instances? failed: ", final.reason), final.reason
        assert cluster.active(OLD) == instances
