"""The API client's JSON ↔ model conversion (`to_json`, `from_json`): the same JSON as a cattrs converter
gives, both ways, for every model; unknown keys ignored; a malformed answer is a TypeError naming the model.
The client converts without cattrs so that `aether` does not import it (start-up time)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from typing import Any

import attrs
import cattrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shell_support import node_info

from aether_node import client
from aether_node.client import (
    ApplyResult,
    BlueprintStatus,
    CallStats,
    ClusterCalls,
    ClusterStatus,
    Convergence,
    DrainWatch,
    InstanceInfo,
    NodeInfo,
    RolloutInfo,
    SliceStatus,
    SliceSummary,
    from_json,
    to_json,
)

# Every model of the client module: the attrs classes of the modules it takes its models from (imported on
# first use), found rather than listed, so a model added later is checked too.
MODEL_MODULES = sorted(
    {importlib.import_module(f"aether_node.core.{m}") for m in client._MODEL_MODULES.values()}, key=str
)
MODELS = sorted(
    (
        v
        for module in MODEL_MODULES
        for v in vars(module).values()
        if isinstance(v, type) and attrs.has(v) and v.__module__ == module.__name__
    ),
    key=lambda model: model.__name__,
)
REFERENCE = cattrs.Converter()


def test_the_models_are_found() -> None:
    names = {model.__name__ for model in MODELS}
    assert {"ApplyResult", "BlueprintStatus", "ClusterStatus", "ClusterEvent", "ClusterCalls"} <= names


def test_every_model_is_a_name_of_the_client_module() -> None:
    assert {model.__name__ for model in MODELS} <= set(client._MODEL_MODULES)
    for name, module in client._MODEL_MODULES.items():
        assert getattr(client, name) is getattr(importlib.import_module(f"aether_node.core.{module}"), name)
    assert set(client._MODEL_MODULES) <= set(dir(client))


def test_a_command_builds_only_the_models_it_reads() -> None:
    """Importing the client defines no model; reading the cluster's status builds its subject's only."""
    code = (
        "import sys\n"
        "from aether_node.client import ApiClient\n"
        "before = sorted(m for m in sys.modules if '._models_' in m)\n"
        "from aether_node.client import ClusterStatus\n"
        "print(before, sorted(m for m in sys.modules if '._models_' in m))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["[]", "['aether_node.core._models_cluster']"]


def dumped(data: Any) -> str:
    return json.dumps(data, sort_keys=True)  # NaN and -0.0 compare as text


def fields_only(data: Any) -> Any:
    """`to_json`'s answer without what models add besides their fields (`JSON_PROPERTIES`: `converged`),
    which cattrs does not write."""
    if isinstance(data, dict):
        return {k: fields_only(v) for k, v in data.items() if k != "converged"}
    if isinstance(data, list):
        return [fields_only(item) for item in data]
    return data


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_to_json_and_from_json_agree_with_cattrs(model: type, data: st.DataObject) -> None:
    record = data.draw(st.from_type(model))
    as_json = to_json(record)
    assert dumped(fields_only(as_json)) == dumped(REFERENCE.unstructure(record))
    back = from_json(json.loads(json.dumps(as_json)), model)
    assert dumped(to_json(back)) == dumped(as_json)
    assert dumped(to_json(REFERENCE.structure(as_json, model))) == dumped(to_json(back))


def test_a_status_says_whether_it_converged_in_its_json_and_reads_back() -> None:
    """`converged` is worked out by one rule (`SliceStatus.converged`); a script or an agent reads it
    from the JSON (`--json`, the MCP tools, the API) instead of working it out again."""
    done = SliceStatus(artifact="a:b:1.0", desired=1, active=1, instances=())
    short = SliceStatus(artifact="c:d:1.0", desired=2, active=1, instances=())
    data = to_json(BlueprintStatus(name="x", slices=(done, short)))
    assert data["converged"] is False and [s["converged"] for s in data["slices"]] == [True, False]
    assert from_json(data, BlueprintStatus) == BlueprintStatus(name="x", slices=(done, short))


def test_nested_models_come_back_as_models_with_tuples() -> None:
    node = NodeInfo(
        node_id="node-1",
        ingress="127.0.0.1:1",
        management="127.0.0.1:2",
        peer="127.0.0.1:3",
        cpu=2.0,
        memory_mib=1024,
        role="voter",
        started_at=5.5,
        instances=2,
        active=1,
        leader=True,
    )
    status = ClusterStatus(
        leader="node-1",
        term=3,
        revision=40,
        has_quorum=True,
        healthy=True,
        nodes=(node,),
        blueprints=1,
        instances=2,
        active=1,
        failed=0,
    )
    data = to_json(status)
    assert data["nodes"] == [to_json(node)]
    assert from_json(data, ClusterStatus) == status
    assert from_json({**data, "leader": None}, ClusterStatus).leader is None


def test_fixed_tuples_and_dicts_keep_their_item_types() -> None:
    data = {
        "at": 1.5,
        "nodes": {"node-1": "ok", "node-2": "unreachable"},
        "slices": [
            {
                "artifact": "g:a:1",
                "entry": "e",
                "calls": 3,
                "errors": 0,
                "seconds": 0.5,
                "buckets": [[0.1, 2], [1, 3]],
            }
        ],
    }
    calls = from_json(data, ClusterCalls)
    assert calls.nodes == {"node-1": "ok", "node-2": "unreachable"}
    assert calls.slices == (
        CallStats(artifact="g:a:1", entry="e", calls=3, errors=0, seconds=0.5, buckets=((0.1, 2), (1.0, 3))),
    )
    assert [type(x) for x in calls.slices[0].buckets[1]] == [float, int]
    assert to_json(calls) == {**data, "slices": [{**data["slices"][0], "buckets": [[0.1, 2], [1.0, 3]]}]}
    with pytest.raises(TypeError, match="cannot read ClusterCalls"):
        from_json({**data, "slices": [{**data["slices"][0], "buckets": [[0.1, 2, 3]]}]}, ClusterCalls)


def test_plain_json_data_and_lists_of_models_pass_through() -> None:
    summary = SliceSummary(artifact="org.aether:echo:1.0.0", instances=2, strategy="round-robin")
    assert to_json([summary, {"k": (1, 2.5, None, "x")}]) == [
        {"artifact": "org.aether:echo:1.0.0", "instances": 2, "strategy": "round-robin", "health": ""},
        {"k": [1, 2.5, None, "x"]},
    ]


def test_unknown_keys_are_ignored_and_defaults_fill_missing_optional_fields() -> None:
    data = {"node_id": "n", "artifact": "g:a:1", "instance": 0, "state": "ACTIVE", "new_field": [1]}
    assert from_json(data, InstanceInfo) == InstanceInfo(
        node_id="n", artifact="g:a:1", instance=0, state="ACTIVE"
    )


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        ({"name": "x", "created": True, "revision": 1}, "slices"),  # a required field missing
        ({"name": "x", "created": True, "revision": "one", "slices": 1}, "invalid literal"),
        (["not", "an", "object"], "expected an object"),
    ],
)
def test_a_malformed_answer_is_a_type_error_naming_the_model(data: Any, detail: str) -> None:
    with pytest.raises(TypeError, match="cannot read ApplyResult") as raised:
        from_json(data, ApplyResult)
    assert detail in str(raised.value)


def test_the_client_does_not_import_cattrs_but_still_offers_its_converter() -> None:
    code = "import sys, aether_node.client as c; print('cattrs' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
    assert isinstance(client.converter, cattrs.Converter)


# ---------------------------------------------------------------- judging convergence (pure)


def _status(*states: tuple[str, str]) -> BlueprintStatus:
    instances = tuple(
        InstanceInfo(node_id="n1", artifact="org.aether:echo:1.0.0", instance=i, state=s, reason=r)
        for i, (s, r) in enumerate(states, 1)
    )
    active = sum(1 for i in instances if i.state == "ACTIVE")
    return BlueprintStatus(
        name="demo",
        slices=(
            SliceStatus(artifact="org.aether:echo:1.0.0", desired=2, active=active, instances=instances),
        ),
    )


def test_convergence_waits_while_instances_are_on_their_way() -> None:
    watch = Convergence("demo", timeout=60, now=0)
    moving = _status(("ACTIVE", ""), ("FAILED", "boom"), ("LOADING", ""))
    assert all(watch.problem(moving, now) is None for now in (0, 5, 10, 59))


def test_convergence_gives_up_on_failures_that_nothing_will_fix() -> None:
    watch = Convergence("demo", timeout=60, now=0, patience=3)
    stuck = _status(("ACTIVE", ""), ("FAILED", "boom"))
    assert watch.problem(stuck, 1) is None
    assert watch.problem(stuck, 4) is None
    assert (
        watch.problem(stuck, 4.5)
        == "blueprint 'demo' cannot converge:\n  org.aether:echo:1.0.0#2 on n1: boom"
    )


def test_convergence_patience_starts_again_when_something_moves() -> None:
    watch = Convergence("demo", timeout=60, now=0, patience=3)
    stuck, moving = _status(("FAILED", "boom")), _status(("FAILED", "boom"), ("LOADING", ""))
    assert watch.problem(stuck, 1) is None
    assert watch.problem(moving, 3) is None
    assert watch.problem(stuck, 5) is None  # stuck again since 5, not since 1
    assert watch.problem(stuck, 8.5) is not None


def test_convergence_runs_out_of_time_naming_the_failures() -> None:
    watch = Convergence("demo", timeout=10, now=100)
    moving = _status(("FAILED", "boom"), ("LOADING", ""))
    assert watch.problem(moving, 110) is None
    assert watch.problem(moving, 110.1) == (
        "blueprint 'demo' did not converge within 10 s\n  org.aether:echo:1.0.0#1 on n1: boom"
    )


def test_convergence_runs_out_of_time_naming_what_it_waits_for_when_nothing_failed() -> None:
    watch = Convergence("demo", timeout=10, now=100)
    instances = (
        InstanceInfo(node_id="n1", artifact="org.aether:echo:1.0.0", instance=1, state="ACTIVE"),
        InstanceInfo(node_id="n2", artifact="org.aether:echo:1.1.0", instance=2, state="ACTIVE"),
        InstanceInfo(node_id="n2", artifact="org.aether:echo:1.1.0", instance=3, state="LOADING"),
    )
    rollout = RolloutInfo(
        artifact="org.aether:echo",
        strategy="canary",
        stable="1.0.0",
        candidate="1.1.0",
        phase="OBSERVING",
        reason="step 1 of 2 waits for an operator: promote or abort",
    )
    waiting = BlueprintStatus(
        name="demo",
        slices=(
            SliceStatus(
                artifact="org.aether:echo:1.1.0", desired=2, active=1, instances=instances, rollout=rollout
            ),
        ),
    )
    assert watch.problem(waiting, 110.1) == (
        "blueprint 'demo' did not converge within 10 s\n  org.aether:echo:1.1.0: 1/2 ACTIVE; 1 LOADING;"
        " canary rollout OBSERVING: step 1 of 2 waits for an operator: promote or abort"
    )


def test_an_aborted_rollout_is_a_failure_that_nothing_will_fix() -> None:
    instances = (InstanceInfo(node_id="n1", artifact="org.aether:echo:1.0.0", instance=1, state="ACTIVE"),)
    rollout = RolloutInfo(
        artifact="org.aether:echo",
        strategy="canary",
        stable="1.0.0",
        candidate="2.0.0",
        phase="ABORTED",
        reason="step 1 (10%): error rate 100.0% > stable 0.0% + 1.0%",
    )
    wanted = SliceStatus(artifact="org.aether:echo:2.0.0", desired=1, active=0, instances=instances)
    status = BlueprintStatus(name="demo", slices=(attrs.evolve(wanted, rollout=rollout),))
    watch = Convergence("demo", timeout=60, now=0, patience=3)
    assert watch.problem(status, 1) is None
    assert watch.problem(status, 4.5) == (
        "blueprint 'demo' cannot converge:\n  org.aether:echo:2.0.0: rollout aborted"
        " (step 1 (10%): error rate 100.0% > stable 0.0% + 1.0%); 1.0.0 serves (apply it, or another"
        " version, to go on)"
    )
    running = BlueprintStatus(
        name="demo", slices=(attrs.evolve(wanted, rollout=attrs.evolve(rollout, phase="OBSERVING")),)
    )
    assert running.failures == []  # a rollout on its way is no failure


def _echo(version: str, number: int, state: str = "ACTIVE", digest: str = "") -> InstanceInfo:
    return InstanceInfo(
        node_id="n1",
        artifact=f"org.aether:echo:{version}",
        instance=number,
        state=state,
        config_digest=digest,
    )


OLD_AND_NEW = tuple(_echo("1.0.0", n) for n in (1, 2)) + tuple(_echo("2.0.0", n) for n in (3, 4))
BLUE_GREEN = RolloutInfo(
    artifact="org.aether:echo",
    strategy="blue_green",
    stable="1.0.0",
    candidate="2.0.0",
    phase="SWITCHED",
    share=100,
    since=1000.0,
    until=1060.0,
)


def _slice(rollout: RolloutInfo | None, *extra: InstanceInfo, active: int = 2) -> SliceStatus:
    return SliceStatus(
        artifact="org.aether:echo:2.0.0",
        desired=2,
        active=active,
        instances=OLD_AND_NEW + extra,
        rollout=rollout,
    )


def test_a_blue_green_rollout_switched_has_converged_though_it_keeps_the_old_set_for_rollback() -> None:
    switched = _slice(BLUE_GREEN)
    assert switched.converged and switched.kept_for_rollback
    assert (switched.leftover, switched.shortfall) == ((), "")
    status = BlueprintStatus(name="demo", slices=(switched,))
    assert status.converged and status.waiting == [] and status.failures == []


@pytest.mark.parametrize(
    ("slice_status", "shortfall"),
    [
        # still bringing up the new set: the old one takes every call
        (_slice(attrs.evolve(BLUE_GREEN, phase="DEPLOYING", share=0)), "2/2 ACTIVE, 2 of another version"),
        # a canary's step observed: part of the calls still go to the old version
        (
            _slice(attrs.evolve(BLUE_GREEN, strategy="canary", phase="OBSERVING", share=50)),
            "2/2 ACTIVE, 2 of",
        ),
        # promoted: the leader still has the old set to remove
        (_slice(attrs.evolve(BLUE_GREEN, phase="PROMOTED")), "2/2 ACTIVE, 2 of another version"),
        # no rollout: a rolling update on its way
        (_slice(None), "2/2 ACTIVE, 2 of another version"),
        # switched, but short of the new set's count
        (_slice(BLUE_GREEN, active=1), "1/2 ACTIVE"),
        # the switch was to another version than the blueprint asks for now
        (_slice(attrs.evolve(BLUE_GREEN, candidate="1.5.0")), "2/2 ACTIVE, 2 of another version"),
        # a version that is neither the old set nor the new one
        (_slice(BLUE_GREEN, _echo("0.9.0", 5)), "2/2 ACTIVE, 1 of another version"),
    ],
)
def test_a_slice_that_still_needs_the_leader_or_an_operator_has_not_converged(
    slice_status: SliceStatus, shortfall: str
) -> None:
    assert not slice_status.converged
    assert slice_status.shortfall.startswith(f"org.aether:echo:2.0.0 {shortfall}")


def test_a_switched_config_change_keeps_the_old_config_for_rollback() -> None:
    """A blue-green change of the config alone: the old set runs the same version with the old config."""
    instances = (_echo("1.0.0", 1, digest="old"), _echo("1.0.0", 2, digest="new"))
    rollout = attrs.evolve(BLUE_GREEN, stable="1.0.0", candidate="1.0.0", candidate_config="new")
    wanted = SliceStatus(
        artifact="org.aether:echo:1.0.0", desired=1, active=1, instances=instances, config_digest="new"
    )
    assert not wanted.converged
    assert wanted.shortfall == "org.aether:echo:1.0.0 1/1 ACTIVE, 1 with another config"
    assert attrs.evolve(wanted, rollout=rollout).converged
    assert not attrs.evolve(wanted, rollout=attrs.evolve(rollout, candidate_config="other")).converged


def test_an_aborted_rollout_has_not_converged_and_says_why() -> None:
    rollout = attrs.evolve(BLUE_GREEN, strategy="canary", phase="ABORTED", reason="step 1 (10%): errors")
    aborted = SliceStatus(
        artifact="org.aether:echo:2.0.0", desired=2, active=0, instances=OLD_AND_NEW[:2], rollout=rollout
    )
    assert not aborted.converged
    assert aborted.aborted == (
        "rollout aborted (step 1 (10%): errors); 1.0.0 serves (apply it, or another version, to go on)"
    )
    config_only = attrs.evolve(aborted, rollout=attrs.evolve(rollout, candidate=rollout.stable))
    assert config_only.aborted == (  # (applying 1.0.0 again would change nothing: its config would)
        "rollout aborted (step 1 (10%): errors); 1.0.0 serves (apply its former config, or another one,"
        " to go on)"
    )
    assert aborted.shortfall == (
        "org.aether:echo:2.0.0 0/2 ACTIVE, 2 of another version; rollout aborted (step 1 (10%): errors);"
        " 1.0.0 serves (apply it, or another version, to go on)"
    )


def test_autoscale_settings_are_all_named_and_at_least_one_is_given() -> None:
    assert client.autoscale_settings(cpu=0.7, max=None) == {
        "min": None,
        "max": None,
        "cpu": 0.7,
        "p99_ms": None,
        "calls_per_second": None,
        "in_flight": None,
    }
    with pytest.raises(ValueError, match=r"^nothing to set: give --min, --max"):
        client.autoscale_settings(min=None, cpu=None)
    with pytest.raises(ValueError, match="not an autoscale setting: p50_ms"):
        client.autoscale_settings(p50_ms=3.0)


def _node(state: str, instances: int, waiting: str = "") -> NodeInfo:
    found = node_info("n2", instances=instances, active=instances)
    return attrs.evolve(found, state=state, waiting=waiting)


def test_a_drain_watch_says_what_it_waits_for_until_drained() -> None:
    watch = DrainWatch("n2", timeout=60, now=0)
    assert watch.problem(_node("DRAINING", 2), 10) is None
    assert watch.progress(_node("DRAINING", 2)) == "2 instances left on n2"
    assert watch.progress(_node("DRAINING", 1)) == "1 instance left on n2"
    held = _node("DRAINING", 1, "org.aether:echo stays: its floor of 2 is not met elsewhere")
    assert watch.progress(held) == held.waiting
    assert watch.problem(_node("DRAINED", 0), 100) is None  # done, even late


def test_a_drain_watch_gives_up_when_the_drain_ends_otherwise_or_time_runs_out() -> None:
    watch = DrainWatch("n2", timeout=10, now=100)
    assert watch.problem(None, 101) == "n2 left the cluster before it was DRAINED"
    assert watch.problem(_node("ACTIVE", 1), 101) == (
        "the drain of n2 ended before it was DRAINED: the node is ACTIVE"
    )
    assert watch.problem(_node("DRAINING", 3), 109.9) is None
    assert watch.problem(_node("DRAINING", 3), 110) == (
        "n2 is not DRAINED after 10 s (3 instances left on n2); the drain goes on:"
        " `aether node uncordon n2` ends it"
    )


def test_instances_failed_for_the_same_reason_are_said_once() -> None:
    """A dependency missing from the index fails every instance alike: its uv message came once per
    instance (seven times over for one apply)."""
    status = _status(("FAILED", "install_failed: no humanize"), ("FAILED", "install_failed: no humanize"))
    status = attrs.evolve(
        status,
        slices=(
            attrs.evolve(
                status.slices[0],
                instances=(
                    *status.slices[0].instances,
                    InstanceInfo(node_id="n2", artifact="org.aether:echo:1.0.0", instance=3, state="FAILED",
                                 reason="crashed"),
                ),
            ),
        ),
    )  # fmt: skip
    assert status.failures == [
        "org.aether:echo:1.0.0#1 on n1, #2 on n1: install_failed: no humanize",
        "org.aether:echo:1.0.0#3 on n2: crashed",
    ]
