"""A change of a slice's `[slices.config]` rolls out to the running instances (`_reconcile`,
`_strategies`, `_diff`, `core/_config_digest`): an instance whose config is not the blueprint's is stale,
exactly like one of an old version, and its update strategy replaces it. Pure: over the simulated
`slices/` records of test_reconcile's `Cluster` (which gives each new record its action's config).

Properties (hypothesis): configs compare by value (key order, a JSON round trip, an int written as a
float: one config), so a cluster that runs the blueprint's config is left alone, whatever form its
records' configs come back in; a rolling config change never takes the ACTIVE count below the number to
keep and ends with every instance on the new config.
"""

from __future__ import annotations

import json
import random

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from test_events import put
from test_reconcile import Cluster, creates, node, removes
from test_strategies import BLUE_GREEN, CANARY, ECHO, PASS, Rollout

from aether_node.api._handlers import config_notes
from aether_node.control._canary_verdict import CONFIG_ONLY_VERDICT
from aether_node.control._diff import diff_blueprint
from aether_node.control._pause import pause_specs
from aether_node.control._rebalance import await_lost
from aether_node.control._reconcile import plan
from aether_node.control._strategies import command, planned_spec
from aether_node.core._blueprint import Blueprint, SliceSpec
from aether_node.core._config_digest import canonical_config, config_change, config_digest
from aether_node.core._reconcile_spec import ResolvedPolicy
from aether_node.core._records import PausedRollout, RolloutPhase, RolloutRecord, SliceState
from aether_node.core._schema import rollout_key
from aether_node.core._update_spec import UpdateSpec
from aether_node.observe._events import describe

PROPERTY = settings(max_examples=60, deadline=None)
OLD_VERSION, NEW_VERSION = f"{ECHO}:1.0", f"{ECHO}:2.0"
HI, HELLO = {"greeting": "hi", "limits": {"burst": 5}}, {"greeting": "hello", "limits": {"burst": 5}}
NODES = [node("a"), node("b"), node("c")]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)
configs = st.dictionaries(st.text(max_size=6), json_values, max_size=5)


def reshaped(value: object, rng: random.Random) -> object:
    """The same value by JSON's measure: keys in another order, an int written as a float."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: reshaped(v, rng) for k, v in items}
    if isinstance(value, list):
        return [reshaped(v, rng) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.5:
        return float(value)
    return value


def slice_spec(
    config: dict, *, artifact: str = OLD_VERSION, instances: int = 3, update: UpdateSpec | None = None
) -> SliceSpec:
    return SliceSpec(artifact=artifact, instances=instances, update=update, config=config)


def configs_running(cluster: Cluster, state: SliceState | None = SliceState.ACTIVE) -> list[str]:
    return sorted(canonical_config(r.config) for r in cluster.of(ECHO) if state is None or r.state is state)


def roll(cluster: Cluster, specs: list[SliceSpec], *, keep: int, rounds: int = 100) -> list[str]:
    """Plan, apply (new instances start ACTIVATE), promote one starting instance a round, until nothing is
    left to do; the ACTIVE count never goes below `keep`. Returns the removals' reasons."""
    why = []
    for _ in range(rounds):
        result = cluster.plan(specs)
        if not result.actions and not any(r.state is SliceState.ACTIVATE for r in cluster.records.values()):
            return why
        why += [r.why for r in removes(result)]
        cluster.apply(result, start=SliceState.ACTIVATE)
        assert len(configs_running(cluster)) >= keep
        cluster.promote_one()
    raise AssertionError(f"no convergence in {rounds} rounds: {cluster.records}")


# ---------------------------------------------------------------------------- configs by value


def test_configs_compare_by_value_not_by_form() -> None:
    assert config_digest({"a": 1, "b": [1, 2.0]}) == config_digest({"b": [1.0, 2], "a": 1.0})
    assert config_digest({"x": {"b": 1, "a": 2}}) == config_digest({"x": {"a": 2, "b": 1}})
    assert config_digest({"a": True}) != config_digest({"a": 1})  # a bool is no number
    assert config_digest({"a": "1"}) != config_digest({"a": 1})
    assert config_digest({"a": 1.5}) != config_digest({"a": 1})
    assert config_change(HI, HELLO) == "greeting changed"
    assert config_change({"a": 1, "b": 2}, {"a": 1.0, "c": 3}) == "c added; b removed"
    assert config_change(HI, dict(reversed(HI.items()))) == ""


@PROPERTY
@given(configs, st.randoms(use_true_random=False))
def test_a_config_read_back_from_the_kv_is_the_same_config(config: dict, rng: random.Random) -> None:
    back = json.loads(json.dumps(reshaped(config, rng)))
    assert config_digest(back) == config_digest(config)
    assert config_change(config, back) == ""


@PROPERTY
@given(configs, st.randoms(use_true_random=False), st.integers(1, 4))
def test_instances_running_the_blueprints_config_are_left_alone(
    config: dict, rng: random.Random, instances: int
) -> None:
    """No churn: a converged slice whose records' configs come back reordered, through JSON, with ints
    as floats (another node, a restart, a new leader decoding them) gets no action."""
    cluster = Cluster(NODES)
    specs = [slice_spec(config, instances=instances)]
    cluster.converge(specs)
    for key, record in list(cluster.records.items()):
        cluster.records[key] = attrs.evolve(record, config=json.loads(json.dumps(reshaped(config, rng))))
    assert cluster.plan(specs).actions == ()


# ---------------------------------------------------------------------------- rolling


def test_a_config_change_replaces_every_running_instance_new_one_active_first() -> None:
    cluster = Cluster(NODES)
    cluster.converge([slice_spec(HI)])
    why = roll(cluster, [slice_spec(HELLO)], keep=3)
    assert configs_running(cluster, None) == [canonical_config(HELLO)] * 3
    assert why == ["replaced: config changed"] * 3
    assert cluster.plan([slice_spec(HELLO)]).actions == ()


@PROPERTY
@given(configs, configs, st.integers(1, 4), st.integers(1, 3))
def test_a_rolling_config_change_keeps_every_instance_serving_and_ends_on_the_new_config(
    old: dict, new: dict, instances: int, max_surge: int
) -> None:
    cluster = Cluster([*NODES, node("d")])
    update = UpdateSpec(max_surge=max_surge)
    cluster.converge([slice_spec(old, instances=instances, update=update)])
    roll(cluster, [slice_spec(new, instances=instances, update=update)], keep=instances)
    assert configs_running(cluster, None) == [canonical_config(new)] * instances


def test_a_version_and_a_config_change_together_are_one_rollout() -> None:
    cluster = Cluster(NODES)
    cluster.converge([slice_spec(HI)])
    new = [slice_spec(HELLO, artifact=NEW_VERSION)]
    created = 0
    for _ in range(60):
        result = cluster.plan(new)
        created += len(creates(result))
        if not result.actions:
            break
        cluster.apply(result)
    assert created == 3  # each old instance replaced once, not once for its version and again for its config
    assert {str(r.coordinates) for r in cluster.records.values()} == {NEW_VERSION}
    assert configs_running(cluster) == [canonical_config(HELLO)] * 3


def test_a_failing_new_config_keeps_the_old_instances_serving_and_says_so() -> None:
    cluster = Cluster(NODES, broken_configs={config_digest(HELLO)})
    cluster.converge([slice_spec(HI)])
    for _ in range(10):
        result = cluster.plan([slice_spec(HELLO)])
        cluster.apply(result)
        assert configs_running(cluster) == [canonical_config(HI)] * 3  # nothing old goes
    (problem,) = cluster.plan([slice_spec(HELLO)]).problems
    assert "config change of 1.0 is stuck: 3 new instances failed" in problem.message
    assert "1.0 (old config) keeps serving (3 ACTIVE)" in problem.message


def test_going_back_to_the_old_config_mid_rollout_converges_back() -> None:
    cluster = Cluster(NODES)
    cluster.converge([slice_spec(HI)])
    cluster.apply(cluster.plan([slice_spec(HELLO)]), start=SliceState.ACTIVATE)  # one new one starting
    cluster.promote_one()
    cluster.apply(cluster.plan([slice_spec(HELLO)]), start=SliceState.ACTIVATE)  # an old one goes
    assert canonical_config(HELLO) in configs_running(cluster, None)
    roll(cluster, [slice_spec(HI)], keep=2)
    assert configs_running(cluster, None) == [canonical_config(HI)] * 3


def test_a_node_lost_during_a_config_rollout_is_replaced_with_the_new_config() -> None:
    cluster = Cluster([*NODES, node("d")])
    specs = [slice_spec(HI, instances=3)]
    cluster.converge(specs)
    cluster.apply(cluster.plan([slice_spec(HELLO)]), start=SliceState.ACTIVATE)
    cluster.nodes = [n for n in cluster.nodes if n.node_id != "a"]  # a dies mid-rollout
    roll(cluster, [slice_spec(HELLO)], keep=1)
    assert configs_running(cluster, None) == [canonical_config(HELLO)] * 3


# ---------------------------------------------------------------------------- canary, blue-green


def test_a_canary_of_a_config_change_holds_the_old_config_and_abort_goes_back_to_it() -> None:
    cluster = Cluster(NODES)
    cluster.converge([slice_spec(HI, instances=4, update=CANARY)])
    rollout = Rollout(cluster, slice_spec(HELLO, instances=4, update=CANARY))
    rollout.step()
    record = rollout.record
    assert (record.stable, record.candidate, record.stable_config) == ("1.0", "1.0", HI)
    assert record.candidate_config == config_digest(HELLO)
    for _ in range(5):
        rollout.step()
    assert rollout.record.phase is RolloutPhase.OBSERVING
    assert configs_running(cluster).count(canonical_config(HI)) == 4  # held
    assert configs_running(cluster).count(canonical_config(HELLO)) == 1
    rollout.record = command(rollout.record, "abort", now=rollout.now, artifact_id=ECHO)
    planned, hold = planned_spec(rollout.spec, rollout.record)
    assert (planned.config, hold) == (HI, False)
    for _ in range(10):
        rollout.step()
    assert configs_running(cluster, None) == [canonical_config(HI)] * 4


def test_a_node_lost_in_a_config_canary_has_its_old_config_instances_replaced_with_the_old_config() -> None:
    cluster = Cluster(NODES)
    cluster.converge([slice_spec(HI, instances=4, update=CANARY)])
    rollout = Rollout(cluster, slice_spec(HELLO, instances=4, update=CANARY))
    for _ in range(5):
        rollout.step()
    assert rollout.record.phase is RolloutPhase.OBSERVING
    cluster.nodes = [n for n in cluster.nodes if n.node_id != "c"]  # c dies, with its old-config instances
    for _ in range(5):
        rollout.step()
    assert rollout.record.phase is RolloutPhase.OBSERVING
    running = configs_running(cluster)
    assert (running.count(canonical_config(HI)), running.count(canonical_config(HELLO))) == (4, 1)
    assert {r.node_id for r in cluster.of(ECHO)} <= {"a", "b"}


def test_a_canary_of_a_config_change_is_promoted_to_the_new_config() -> None:
    cluster = Cluster(NODES)
    cluster.converge([slice_spec(HI, instances=4, update=CANARY)])
    rollout = Rollout(cluster, slice_spec(HELLO, instances=4, update=CANARY))
    for _ in range(4):
        rollout.step()
    rollout.record = command(rollout.record, "promote", now=rollout.now, artifact_id=ECHO)
    for _ in range(20):
        rollout.step()
    assert rollout.record is None
    assert configs_running(cluster, None) == [canonical_config(HELLO)] * 4


def test_the_blueprint_going_back_to_the_old_config_aborts_a_canary() -> None:
    cluster = Cluster(NODES)
    cluster.converge([slice_spec(HI, instances=4, update=CANARY)])
    rollout = Rollout(cluster, slice_spec(HELLO, instances=4, update=CANARY))
    for _ in range(3):
        rollout.step()
    rollout.spec = slice_spec(dict(reversed(HI.items())), instances=4, update=CANARY)  # the same, reordered
    rollout.step()
    assert rollout.record.phase is RolloutPhase.ABORTED
    assert rollout.record.reason == "the blueprint went back to the config 1.0 ran with"
    for _ in range(10):
        rollout.step()
    assert rollout.record is None
    assert configs_running(cluster, None) == [canonical_config(HI)] * 4


def test_a_failing_config_aborts_a_canary_with_the_old_config_serving() -> None:
    cluster = Cluster(NODES, broken_configs={config_digest(HELLO)})
    cluster.converge([slice_spec(HI, instances=4, update=CANARY)])
    rollout = Rollout(cluster, slice_spec(HELLO, instances=4, update=CANARY))
    for _ in range(4):
        rollout.step()
        assert configs_running(cluster) == [canonical_config(HI)] * 4
    assert rollout.record.phase is RolloutPhase.ABORTED
    assert rollout.record.reason.startswith("1 new instance failed")


def test_a_blue_green_config_change_switches_then_ends_on_the_new_config() -> None:
    cluster = Cluster(NODES)
    cluster.converge([slice_spec(HI, update=BLUE_GREEN)])
    rollout = Rollout(cluster, slice_spec(HELLO, update=BLUE_GREEN))
    for _ in range(6):
        rollout.step()
    assert rollout.record.phase is RolloutPhase.SWITCHED
    assert configs_running(cluster).count(canonical_config(HI)) == 3
    rollout.now += BLUE_GREEN.grace_s
    for _ in range(10):
        rollout.step(PASS)
    assert rollout.record is None
    assert configs_running(cluster, None) == [canonical_config(HELLO)] * 3


def test_a_config_canary_has_no_figures_of_its_own_to_judge() -> None:
    assert CONFIG_ONLY_VERDICT.passed is None


# ---------------------------------------------------------------------------- diff, apply's note


def test_diff_shows_a_config_change_and_the_instances_it_replaces() -> None:
    cluster = Cluster(NODES)
    cluster.converge([slice_spec(HI)])
    stored = Blueprint(name="web", slices=(slice_spec(HI),), revision=1)
    (found,) = diff_blueprint(
        Blueprint(name="web", slices=(slice_spec(HELLO),)), [stored], NODES, cluster.view(), now=0.0
    ).slices
    assert (found.change, found.replaced) == ("changed", 3)
    assert found.config == "greeting changed; 3 running instances with another config replaced"
    assert found.update.startswith("rolling to 1.0")
    same = diff_blueprint(
        Blueprint(name="web", slices=(slice_spec(dict(reversed(HI.items()))),)),
        [stored],
        NODES,
        cluster.view(),
        now=0.0,
    )
    assert not same.changed
    assert (same.slices[0].replaced, same.slices[0].config) == (0, "")


def test_apply_says_a_config_change_is_rolled_out() -> None:
    before = Blueprint(name="web", slices=(slice_spec(HI),))
    assert config_notes(before, Blueprint(name="web", slices=(slice_spec(HELLO),))) == (
        f"{ECHO}: config changed (greeting changed): the running instances are replaced with it"
        " (rolling update)",
    )
    assert config_notes(before, Blueprint(name="web", slices=(slice_spec(dict(reversed(HI.items()))),))) == ()


def test_a_canary_of_a_config_change_says_how_it_goes_in_the_diff() -> None:
    cluster = Cluster(NODES)
    cluster.converge([slice_spec(HI, update=CANARY)])
    stored = Blueprint(name="web", slices=(slice_spec(HI, update=CANARY),), revision=1)
    new = Blueprint(name="web", slices=(slice_spec(HELLO, update=CANARY),))
    (found,) = diff_blueprint(new, [stored], NODES, cluster.view(), now=0.0).slices
    assert found.update.startswith(
        "canary 1.0 -> 1.0 (config changed): steps 10%, 50%, 100% of the instances, the calls split by"
        " instance count (a new instance counts once it has stayed ACTIVE 2 s); each step waits for"
        " `aether slice promote` or `abort`"
    ), found.update


# ---------------------------------------------------------------------------- what it says


def test_new_instances_say_what_rolls_out_and_old_ones_why_they_go() -> None:
    cluster = Cluster(NODES)
    cluster.converge([slice_spec(HI)])
    assert {c.why for c in creates(cluster.plan([slice_spec(HELLO)]))} == {"rolling out: config changed"}
    both = creates(cluster.plan([slice_spec(HELLO, artifact=NEW_VERSION)]))
    assert {c.why for c in both} == {"rolling out version 2.0 (config changed)"}
    version_only = creates(cluster.plan([slice_spec(HI, artifact=NEW_VERSION)]))
    assert {c.why for c in version_only} == {"rolling out version 2.0"}
    assert {c.why for c in creates(cluster.plan([slice_spec(HI, instances=4)]))} == {""}  # a scale-up


def test_a_rollout_event_says_the_config_changed() -> None:
    record = RolloutRecord(
        artifact_id=ECHO,
        strategy="canary",
        stable="1.0",
        candidate="1.0",
        phase=RolloutPhase.DEPLOYING,
        since=10.0,
        candidate_config=config_digest(HELLO),
        stable_config=HI,
    )
    (started,) = describe(put(rollout_key(ECHO), record, 5))
    assert started.message.startswith(f"rollout of {ECHO} (canary) 1.0 -> 1.0 (config changed): started")


def test_a_paused_config_change_holds_both_configs_and_says_so() -> None:
    cluster = Cluster(NODES)
    cluster.converge([slice_spec(HI)])
    cluster.apply(cluster.plan([slice_spec(HELLO)]))  # one instance of the new config, ACTIVE
    paused = pause_specs([slice_spec(HELLO)], cluster.view(), {ECHO: PausedRollout(since=1.0)})
    assert paused.held == {ECHO}
    (problem,) = paused.problems
    assert problem.message.startswith(
        "paused: the update to 1.0 stays where it is (1 of 3 ACTIVE on 1.0; 1.0 (old config) keeps 3 ACTIVE"
    ), problem.message
    held = plan([slice_spec(HELLO)], NODES, cluster.view(), held=paused.held, frozen=paused.held)
    assert held.actions == ()


def test_instances_of_the_old_config_on_a_lost_node_are_not_awaited() -> None:
    """A lost node's instances keep their place within the rebalance delay only if they run what the
    blueprint asks: stale ones would be replaced anyway."""
    cluster = Cluster(NODES)
    cluster.converge([slice_spec(HI)])
    policies = {ECHO: ResolvedPolicy(rebalance_delay_s=60.0, max_moves=0)}
    live = {"b", "c"}
    same = await_lost([slice_spec(HI)], cluster.view(), live, {"a": 0.0}, policies, now=1.0)
    assert same.specs[0].instances == 2 and ECHO in same.messages
    changed = await_lost([slice_spec(HELLO)], cluster.view(), live, {"a": 0.0}, policies, now=1.0)
    assert changed.specs[0].instances == 3 and ECHO not in changed.messages
