"""Slice lifecycle planning. Pure: (recorded state, what runs locally) → the steps to take.

A recorded state (command, -ING or outcome) names a target phase; the local phase is what this node
really runs. The plan walks from one to the other; each step names the -ING state written before it (or
none) and the outcome written after the last step. An activation that directly follows the load in the
same plan writes no ACTIVATING: the LOADING before it keeps the command (ACTIVATE), so a node that
restarts mid-way still knows where it was going, and the next write is the outcome, ACTIVE (one KV
write, and every watch delivery of it, fewer per instance placed). Whether the LOADING is written at
once or only if the load is slow is the shell's choice (`_deployment._loading_deferred`).
"""

from __future__ import annotations

import enum

import attrs

from ..core._records import SliceState


class Phase(enum.Enum):
    NONE = "none"  # no host process
    LOADED = "loaded"  # host process up, slice imported, not started
    ACTIVE = "active"  # started, endpoints published
    GONE = "gone"  # the record is to be deleted


class StepKind(enum.Enum):
    LOAD = "load"
    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"
    UNLOAD = "unload"


@attrs.frozen
class Step:
    kind: StepKind
    working: SliceState | None  # written before the step (None: nothing to write)


STEP_WORKING = {
    StepKind.LOAD: SliceState.LOADING,
    StepKind.ACTIVATE: SliceState.ACTIVATING,
    StepKind.DEACTIVATE: SliceState.DEACTIVATING,
    StepKind.UNLOAD: SliceState.UNLOADING,
}

_TARGETS = {
    SliceState.LOAD: Phase.LOADED,
    SliceState.LOADING: Phase.LOADED,
    SliceState.LOADED: Phase.LOADED,
    SliceState.DEACTIVATE: Phase.LOADED,
    SliceState.DEACTIVATING: Phase.LOADED,
    SliceState.ACTIVATE: Phase.ACTIVE,
    SliceState.ACTIVATING: Phase.ACTIVE,
    SliceState.ACTIVE: Phase.ACTIVE,
    SliceState.UNLOAD: Phase.GONE,
    SliceState.UNLOADING: Phase.GONE,
}

OUTCOME = {Phase.LOADED: SliceState.LOADED, Phase.ACTIVE: SliceState.ACTIVE}


def target_phase(state: SliceState | None) -> Phase | None:
    """The phase a recorded state asks for; None for FAILED (leave it as it is)."""
    if state is None:  # the key was deleted
        return Phase.GONE
    return _TARGETS.get(state)


def plan(target: Phase, local: Phase) -> tuple[Step, ...]:
    """Steps from `local` to `target`. Deactivation always precedes unloading; activation needs a load,
    and one right after the load writes no working state of its own."""
    kinds: list[StepKind] = []
    if target is Phase.ACTIVE:
        if local is Phase.NONE:
            kinds.append(StepKind.LOAD)
        if local is not Phase.ACTIVE:
            kinds.append(StepKind.ACTIVATE)
    elif target is Phase.LOADED:
        if local is Phase.NONE:
            kinds.append(StepKind.LOAD)
        elif local is Phase.ACTIVE:
            kinds.append(StepKind.DEACTIVATE)
    elif target is Phase.GONE:
        if local is Phase.ACTIVE:
            kinds.append(StepKind.DEACTIVATE)
        kinds.append(StepKind.UNLOAD)
    steps = [Step(kind, STEP_WORKING[kind]) for kind in kinds]
    if kinds == [StepKind.LOAD, StepKind.ACTIVATE]:
        steps[1] = Step(StepKind.ACTIVATE, None)  # the LOADING before it (command ACTIVATE) says it all
    return tuple(steps)


def outcome_to_record(target: Phase, recorded: SliceState | None) -> SliceState | None:
    """The outcome state to write once the local phase matches the target, if the record says otherwise."""
    outcome = OUTCOME.get(target)
    return outcome if outcome is not None and recorded is not outcome else None
