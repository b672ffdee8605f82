"""Why a call found no endpoint (`routing/_no_endpoint.py`, pure): a typo'd slice or entry point is a 404
`no_endpoint`, a deployed slice with no ACTIVE instance now a 503 `unavailable` that says what its
blueprints ask for."""

from __future__ import annotations

import pytest

from aether_node.core._blueprint import Blueprint, SliceSpec
from aether_node.core._error_kinds import http_status
from aether_node.core._errors import NoEndpointError
from aether_node.routing._no_endpoint import deployments, no_endpoint_error

ECHO = "org.aether:echo"


def test_deployments_are_per_artifact_id_whatever_the_version_with_each_blueprints_count() -> None:
    blueprints = [
        Blueprint(name="b", slices=(SliceSpec(artifact="org.aether:echo:1.0.0", instances=3),)),
        Blueprint(
            name="a",
            slices=(
                SliceSpec(artifact="org.aether:echo:2.0.0", instances=0),
                SliceSpec(artifact="org.aether:greeter:1.0.0", instances=1),
            ),
        ),
    ]
    assert deployments(blueprints) == {ECHO: (("a", 0), ("b", 3)), "org.aether:greeter": (("a", 1),)}
    assert deployments([]) == {}


@pytest.mark.parametrize(
    ("entries", "deployed", "kind", "message"),
    [
        # nothing knows the slice: a typo in its name, most often
        (set(), (), "no_endpoint", f"no blueprint deploys {ECHO} and no instance of it runs"),
        # instances publish their entry points: one they do not have is a typo, deployed or not
        (
            {"echo", "info"},
            (("demo", 2),),
            "no_endpoint",
            f"{ECHO} has no entry point 'shout' (it has: echo, info)",
        ),
        ({"echo", "info"}, (), "no_endpoint", "has no entry point 'shout'"),
        # deployed, no instance publishes: it is starting or restarting
        (
            set(),
            (("demo", 3),),
            "unavailable",
            f"no ACTIVE instance of {ECHO} now: blueprint demo asks for 3 instances, starting or restarting"
            f" (`aether slice status {ECHO}`); try again shortly",
        ),
        (
            set(),
            (("a", 1), ("b", 0)),
            "unavailable",
            "blueprint a asks for 1 instance, blueprint b asks for 0",
        ),
        # deployed with none at all: still a slice that exists, not a typo
        (
            set(),
            (("demo", 0),),
            "unavailable",
            f"no instance of {ECHO} runs: blueprint demo asks for 0 instances",
        ),
        # not deployed, but recorded instances (on nodes not registered now): not a typo either
        ({"shout"}, (), "unavailable", f"no ACTIVE instance of {ECHO} on a registered node now"),
    ],
)
def test_the_answer_to_a_call_that_found_no_endpoint(
    entries: set[str], deployed: tuple[tuple[str, int], ...], kind: str, message: str
) -> None:
    error = no_endpoint_error(ECHO, "shout", entries=entries, deployed=deployed)
    assert isinstance(error, NoEndpointError)
    assert error.kind == kind and message in error.message, error.message
    assert http_status(error.kind) == {"no_endpoint": 404, "unavailable": 503}[kind]
