"""`aether blueprint diff` and rollouts (`control/_diff.py`): the rollout in flight and how a change would
go by the slice's update strategy, by the leader's own rule (`_strategies.advance`). Pure."""

from __future__ import annotations

import attrs
from test_node_operations import node, observed

from aether_node.client import SliceChange
from aether_node.control._diff import diff_blueprint
from aether_node.core._blueprint import Blueprint, SliceSpec
from aether_node.core._records import RolloutPhase, RolloutRecord
from aether_node.core._update_spec import UpdateSpec, UpdateStrategy

OLD, NEW = "org.example:echo:1.0", "org.example:echo:2.0"
NODES = [node("a"), node("b"), node("c")]
RUNNING = [observed("a", 1), observed("b", 2), observed("c", 3)]
CANARY = UpdateSpec(strategy=UpdateStrategy.CANARY, steps=(25, 100), step_window_s=30.0)
BLUE_GREEN = UpdateSpec(strategy=UpdateStrategy.BLUE_GREEN, grace_s=120.0)


def change(
    artifact: str, update: UpdateSpec | None, *, rollouts=None, paused=frozenset(), running=RUNNING
) -> SliceChange:
    stored = Blueprint(name="web", slices=(SliceSpec(artifact=OLD, instances=3, update=update),), revision=1)
    new = Blueprint(name="web", slices=(SliceSpec(artifact=artifact, instances=3, update=update),))
    diff = diff_blueprint(new, [stored], NODES, running, now=0.0, rollouts=rollouts, paused=paused)
    (slice_change,) = diff.slices
    return slice_change


def test_a_rolling_change_says_its_surge_and_floor() -> None:
    found = change(NEW, UpdateSpec(max_surge=2))
    assert found.rollout == ""
    assert found.update == (
        "rolling to 2.0: up to 2 new instances at a time beyond the count to keep; an old one goes once the"
        " ACTIVE count allows, never below the floor of 2 (a new instance counts once it has stayed ACTIVE"
        " 2 s)"
    )
    assert change(NEW, None).update.startswith("rolling to 2.0: up to 1 new instance at a time")
    assert change(NEW, UpdateSpec(min_ready_s=0)).update.endswith("never below the floor of 2")


def test_a_paused_rolling_change_says_it_holds() -> None:
    found = change(NEW, None, paused={"org.example:echo"})
    assert found.update.endswith("; paused: it holds until `aether slice resume`")


def test_a_canary_and_a_blue_green_change_say_their_steps() -> None:
    assert change(NEW, CANARY).update == (
        "canary 1.0 -> 2.0: steps 25%, 100% of the calls (a new instance counts once it has stayed ACTIVE"
        " 2 s), each judged over 30 s (error rate, p99); 1.0 keeps its instances until promoted; a failing"
        " step aborts"
    )
    assert change(NEW, BLUE_GREEN).update == (
        "blue-green 1.0 -> 2.0: 3 new instances beside the old set, then every call at once (a new"
        " instance counts once it has stayed ACTIVE 2 s); the old set stays 120 s"
    )
    assert change(NEW, attrs.evolve(BLUE_GREEN, min_ready_s=0)).update == (
        "blue-green 1.0 -> 2.0: 3 new instances beside the old set, then every call at once; the old set"
        " stays 120 s"
    )


def test_the_rollout_in_flight_and_what_a_change_does_to_it() -> None:
    record = RolloutRecord(
        artifact_id="org.example:echo",
        strategy="canary",
        stable="1.0",
        candidate="2.0",
        phase=RolloutPhase.OBSERVING,
        share=25,
        reason="step 1 of 2",
    )
    rollouts = {"org.example:echo": record}
    running = [*RUNNING, observed("a", 4, artifact=NEW)]
    going_on = change(NEW, CANARY, rollouts=rollouts, running=running)
    assert going_on.rollout == "canary 1.0 -> 2.0: OBSERVING, 25% of calls on 2.0 (step 1 of 2)"
    assert going_on.update == "the rollout to 2.0 in flight goes on (OBSERVING)"
    back = change(OLD, CANARY, rollouts=rollouts, running=running)
    assert back.update == "undoes the rollout to 2.0 in flight: every call back on 1.0, the 2.0 instances go"
    third = change("org.example:echo:3.0", CANARY, rollouts=rollouts, running=running)
    assert third.update.startswith("replaces the rollout to 2.0 in flight; canary 1.0 -> 3.0: steps 25%")


def test_an_unchanged_slice_says_nothing_of_updates() -> None:
    found = change(OLD, CANARY)
    assert (found.change, found.rollout, found.update) == ("unchanged", "", "")
