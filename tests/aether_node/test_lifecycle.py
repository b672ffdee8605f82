"""Lifecycle planning (`_lifecycle`): every (target, local) pair's steps, the target phase of every
recorded state, and the outcome written once the local phase matches."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aether_node.core._records import COMMAND_STATES, SliceState
from aether_node.runtime._lifecycle import (
    OUTCOME,
    STEP_WORKING,
    Phase,
    Step,
    StepKind,
    outcome_to_record,
    plan,
    target_phase,
)

LOAD = Step(StepKind.LOAD, SliceState.LOADING)
ACTIVATE = Step(StepKind.ACTIVATE, SliceState.ACTIVATING)
ACTIVATE_AFTER_LOAD = Step(StepKind.ACTIVATE, None)  # LOADING, then straight to ACTIVE
DEACTIVATE = Step(StepKind.DEACTIVATE, SliceState.DEACTIVATING)
UNLOAD = Step(StepKind.UNLOAD, SliceState.UNLOADING)

# what a node can really run: no process, a loaded process, an active one
LOCAL_PHASES = [Phase.NONE, Phase.LOADED, Phase.ACTIVE]

EXPECTED_PLANS = {
    (Phase.ACTIVE, Phase.NONE): (LOAD, ACTIVATE_AFTER_LOAD),
    (Phase.ACTIVE, Phase.LOADED): (ACTIVATE,),
    (Phase.ACTIVE, Phase.ACTIVE): (),
    (Phase.LOADED, Phase.NONE): (LOAD,),
    (Phase.LOADED, Phase.LOADED): (),
    (Phase.LOADED, Phase.ACTIVE): (DEACTIVATE,),
    (Phase.GONE, Phase.NONE): (UNLOAD,),  # nothing runs, but the record still has to go
    (Phase.GONE, Phase.LOADED): (UNLOAD,),
    (Phase.GONE, Phase.ACTIVE): (DEACTIVATE, UNLOAD),
    (Phase.NONE, Phase.NONE): (),
    (Phase.NONE, Phase.LOADED): (),
    (Phase.NONE, Phase.ACTIVE): (),
}

EXPECTED_TARGETS: dict[SliceState | None, Phase | None] = {
    SliceState.LOAD: Phase.LOADED,
    SliceState.LOADING: Phase.LOADED,
    SliceState.LOADED: Phase.LOADED,
    SliceState.ACTIVATE: Phase.ACTIVE,
    SliceState.ACTIVATING: Phase.ACTIVE,
    SliceState.ACTIVE: Phase.ACTIVE,
    SliceState.DEACTIVATE: Phase.LOADED,
    SliceState.DEACTIVATING: Phase.LOADED,
    SliceState.UNLOAD: Phase.GONE,
    SliceState.UNLOADING: Phase.GONE,
    SliceState.FAILED: None,  # leave it as it is
    None: Phase.GONE,  # the key was deleted
}

# what each step does to the local phase, and what it needs
TRANSITIONS = {
    StepKind.LOAD: ({Phase.NONE}, Phase.LOADED),
    StepKind.ACTIVATE: ({Phase.LOADED}, Phase.ACTIVE),
    StepKind.DEACTIVATE: ({Phase.ACTIVE}, Phase.LOADED),
    StepKind.UNLOAD: ({Phase.NONE, Phase.LOADED}, Phase.NONE),
}


def walk(target: Phase, local: Phase) -> Phase:
    """Carry out the plan on a model of the node; every step must be legal where it runs."""
    for step in plan(target, local):
        needs, reaches = TRANSITIONS[step.kind]
        assert local in needs, (target, local, step)
        local = reaches
    return local


@pytest.mark.parametrize(("target", "local"), list(itertools.product(Phase, LOCAL_PHASES)))
def test_plan_for_every_pair(target: Phase, local: Phase) -> None:
    assert plan(target, local) == EXPECTED_PLANS[(target, local)]


@pytest.mark.parametrize(("target", "local"), list(itertools.product(Phase, LOCAL_PHASES)))
def test_plan_reaches_the_target_with_legal_steps(target: Phase, local: Phase) -> None:
    reached = walk(target, local)
    expected = {Phase.GONE: Phase.NONE, Phase.NONE: local}.get(target, target)
    assert reached == expected


@pytest.mark.parametrize(("target", "local"), list(itertools.product(Phase, LOCAL_PHASES)))
def test_steps_write_their_working_state_and_deactivation_precedes_unloading(
    target: Phase, local: Phase
) -> None:
    """Every step writes its -ING state first, but an activation right after the load: LOADING (whose
    record keeps the command ACTIVATE) already says where the node is going."""
    steps = plan(target, local)
    for previous, step in zip((None, *steps), steps, strict=False):
        after_load = (
            step.kind is StepKind.ACTIVATE and previous is not None and previous.kind is StepKind.LOAD
        )
        assert step.working is (None if after_load else STEP_WORKING[step.kind])
    kinds = [s.kind for s in steps]
    assert len(kinds) == len(set(kinds))
    if StepKind.UNLOAD in kinds and StepKind.DEACTIVATE in kinds:
        assert kinds.index(StepKind.DEACTIVATE) < kinds.index(StepKind.UNLOAD)
    if StepKind.ACTIVATE in kinds and StepKind.LOAD in kinds:
        assert kinds.index(StepKind.LOAD) < kinds.index(StepKind.ACTIVATE)


@pytest.mark.parametrize("state", [*SliceState, None])
def test_target_phase_of_every_state(state: SliceState | None) -> None:
    assert target_phase(state) is EXPECTED_TARGETS[state]


def test_every_state_has_a_target() -> None:
    assert set(EXPECTED_TARGETS) == {*SliceState, None}
    assert all(target_phase(s) is not None for s in COMMAND_STATES)


def test_working_states_target_what_their_step_reaches() -> None:
    """A node that restarts mid-step finds the -ING state and finishes the same step."""
    for kind, working in STEP_WORKING.items():
        reached = TRANSITIONS[kind][1]
        assert target_phase(working) is {Phase.NONE: Phase.GONE}.get(reached, reached)


@pytest.mark.parametrize(("target", "recorded"), list(itertools.product(Phase, [*SliceState, None])))
def test_outcome_to_record(target: Phase, recorded: SliceState | None) -> None:
    outcome = outcome_to_record(target, recorded)
    if target is Phase.ACTIVE:
        assert outcome is (None if recorded is SliceState.ACTIVE else SliceState.ACTIVE)
    elif target is Phase.LOADED:
        assert outcome is (None if recorded is SliceState.LOADED else SliceState.LOADED)
    else:
        assert outcome is None  # GONE: the record is deleted; NONE: nothing to say


def test_outcome_table() -> None:
    assert OUTCOME == {Phase.LOADED: SliceState.LOADED, Phase.ACTIVE: SliceState.ACTIVE}
    assert outcome_to_record(Phase.ACTIVE, SliceState.ACTIVATING) is SliceState.ACTIVE
    assert outcome_to_record(Phase.LOADED, SliceState.DEACTIVATING) is SliceState.LOADED
    assert outcome_to_record(Phase.ACTIVE, SliceState.ACTIVE) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*SliceState, None]), min_size=1, max_size=12))
def test_following_any_sequence_of_records_stays_legal_and_converges(
    records: list[SliceState | None],
) -> None:
    """The node reacts to each record in turn; it always ends in the phase the last one asks for."""
    local = Phase.NONE
    for recorded in records:
        target = target_phase(recorded)
        if target is None:  # FAILED: nothing may run (the shell unloads)
            local = Phase.NONE
            continue
        local = walk(target, local)
        expected = Phase.NONE if target is Phase.GONE else target
        assert local is expected
        # once there, planning again does nothing (idempotent)
        assert plan(target, local) == (() if target is not Phase.GONE else (UNLOAD,))
