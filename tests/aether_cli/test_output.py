"""The CLI's human renderings (`aether_cli._output`): text that comes from the cluster prints as itself —
never read as rich markup (which would drop it, restyle the table, or fail with a MarkupError) nor as
emoji codes (`org.aether:rocket:1.0.0` is a coordinate, not a rocket)."""

from __future__ import annotations

import io
import time

import attrs
import pytest

from aether_cli import _output
from aether_node.client import (
    BlueprintInfo,
    BlueprintStatus,
    ClusterEvent,
    ClusterStatus,
    InstanceInfo,
    KeptForRollback,
    NodeInfo,
    RolloutInfo,
    SliceStatus,
    SliceSummary,
)

ARTIFACT = "org.aether:rocket:1.0.0"
REASON = "cannot open [/tmp/data]: [red]denied[/red] :warning:"


@pytest.fixture
def printed(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """What the module's own console prints, without colours, 300 columns wide."""
    out = io.StringIO()
    monkeypatch.setattr(_output.console, "file", out)
    monkeypatch.setattr(_output.console, "width", 300)
    return out


def instance(state: str = "FAILED", reason: str = REASON) -> InstanceInfo:
    return InstanceInfo(node_id="node-[1]", artifact=ARTIFACT, instance=1, state=state, reason=reason)


def node(node_id: str = "node-1") -> NodeInfo:
    return NodeInfo(
        node_id=node_id,
        ingress="127.0.0.1:8080",
        management="127.0.0.1:9090",
        peer="127.0.0.1:7070",
        cpu=2.0,
        memory_mib=512,
        role="voter",
        started_at=0.0,
        instances=1,
        active=0,
        leader=True,
    )


def test_instances_print_artifacts_and_reasons_verbatim(printed: io.StringIO) -> None:
    _output.instances([instance(), instance(state="[b]WEIRD", reason="")])
    text = printed.getvalue()
    assert ARTIFACT in text
    assert REASON in text
    assert "node-[1]" in text
    assert "[b]WEIRD" in text
    assert "🚀" not in text and "⚠" not in text


def test_an_instance_its_node_restarted_shows_the_count_and_how_the_last_process_ended(
    printed: io.StringIO,
) -> None:
    exited = "memory: 80 MiB (PSS), over the 64 MiB its slice declares"
    restarted = attrs.evolve(instance(state="ACTIVE", reason=""), restarts=2, last_exit=exited)
    _output.instances(
        [restarted, attrs.evolve(instance(state="LOADING", reason="restart 1 of 4"), restarts=1)]
    )
    lines = printed.getvalue().splitlines()
    (active,) = [line for line in lines if "ACTIVE" in line]
    assert " 2 " in active and f"last exit: {exited}" in active, active
    (loading,) = [line for line in lines if "LOADING" in line]
    assert "restart 1 of 4" in loading and "last exit" not in loading, loading  # its own reason first


def test_blueprint_status_and_list_print_names_and_problems_verbatim(printed: io.StringIO) -> None:
    status = BlueprintStatus(
        name="demo [prod]",
        slices=(
            SliceStatus(artifact=ARTIFACT, desired=2, active=0, instances=(instance(),), problem=REASON),
        ),
    )
    _output.blueprint_status(status)
    _output.blueprints(
        [
            BlueprintInfo(
                name="[bold]x",
                slices=(SliceSummary(artifact=ARTIFACT, instances=2, strategy="spread"),),
                timestamp=0.0,
            )
        ]
    )
    text = printed.getvalue()
    assert "blueprint demo [prod]: converging" in text
    assert text.count(REASON) == 2  # the slice's problem and the instance's reason
    assert "[bold]x" in text
    assert f"{ARTIFACT} x2" in text


def test_a_wide_blueprint_list_shows_each_slices_own_health_checks(printed: io.StringIO) -> None:
    slices = (
        SliceSummary(artifact=ARTIFACT, instances=2, strategy="spread", health="off"),
        SliceSummary(artifact="org.aether:echo:1.0.0", instances=1, strategy="round_robin"),
    )
    _output.blueprints([BlueprintInfo(name="demo", slices=slices, timestamp=0.0)], wide=True)
    text = printed.getvalue()
    assert f"{ARTIFACT} x2 (spread; health checks off)" in text
    assert "org.aether:echo:1.0.0 x1 (round_robin)" in text


def test_cluster_status_nodes_and_events_print_names_and_messages_verbatim(printed: io.StringIO) -> None:
    status = ClusterStatus(
        leader="[node-1]",
        term=2,
        revision=9,
        has_quorum=True,
        healthy=False,
        nodes=(node("[node-1]"),),
        blueprints=1,
        instances=1,
        active=0,
        failed=1,
    )
    _output.cluster_status(status)
    _output.event(
        ClusterEvent(
            revision=9,
            timestamp=0.0,
            kind="instance_state",
            subject=ARTIFACT,
            message=f"{ARTIFACT}: {REASON}",
        )
    )
    text = printed.getvalue()
    assert "cluster unhealthy: leader [node-1], quorum yes, term 2, revision 9" in text
    assert "│ [node-1] │ *" in text
    assert f"--:--:-- #9 instance_state {ARTIFACT}: {REASON}" in text


def test_a_rollout_prints_its_reason_as_text_in_the_blueprint_status(printed: io.StringIO) -> None:
    rollout = RolloutInfo(
        artifact="org.aether:rocket",
        strategy="canary",
        stable="1.0.0",
        candidate="2.0.0",
        phase="ABORTED",
        share=0,
        reason=REASON,
    )
    status = SliceStatus(artifact=ARTIFACT, desired=1, active=1, instances=(instance("ACTIVE", ""),))
    _output.blueprint_status(BlueprintStatus(name="demo", slices=(attrs.evolve(status, rollout=rollout),)))
    assert (
        "rollout of org.aether:rocket (canary) 1.0.0 → 2.0.0: ABORTED, 0% of calls on 2.0.0 — " + REASON
    ) in printed.getvalue()


def test_an_aborted_rollout_is_the_slices_problem_and_the_blueprints_verdict(
    printed: io.StringIO,
) -> None:
    rollout = RolloutInfo(
        artifact="org.aether:rocket", strategy="canary", stable="0.9.0", candidate="1.0.0", phase="ABORTED"
    )
    old = InstanceInfo(node_id="n1", artifact="org.aether:rocket:0.9.0", instance=1, state="ACTIVE")
    status = SliceStatus(artifact=ARTIFACT, desired=1, active=0, instances=(old,))
    aborted = attrs.evolve(status, rollout=attrs.evolve(rollout, reason="error rate 50%"))
    _output.blueprint_status(BlueprintStatus(name="demo", slices=(aborted,)))
    text = printed.getvalue()
    assert "blueprint demo: rollout aborted" in text
    assert (
        "│ rollout aborted (error rate 50%); 0.9.0 serves (apply it, or another" in text
    )  # the PROBLEM column
    printed.truncate(0)
    _output.blueprint_status(BlueprintStatus(name="demo", slices=(status,)))  # a rolling update on its way
    assert "blueprint demo: converging" in printed.getvalue()


def test_a_switched_blue_green_rollout_converged_and_says_until_when_the_old_set_stays(
    printed: io.StringIO,
) -> None:
    switched = RolloutInfo(
        artifact="org.aether:rocket",
        strategy="blue_green",
        stable="0.9.0",
        candidate="1.0.0",
        phase="SWITCHED",
        until=1_800_000_000.0,
    )
    old = InstanceInfo(node_id="n1", artifact="org.aether:rocket:0.9.0", instance=1, state="ACTIVE")
    status = SliceStatus(
        artifact=ARTIFACT, desired=1, active=1, instances=(old, instance("ACTIVE", "")), rollout=switched
    )
    _output.blueprint_status(BlueprintStatus(name="demo", slices=(status,)))
    until = time.strftime("%H:%M:%S", time.localtime(1_800_000_000.0))
    text = printed.getvalue()
    assert "blueprint demo: converged" in text
    assert f"org.aether:rocket: old set (0.9.0) kept until {until} for rollback" in text
    assert (
        _output.rollback_notes([attrs.evolve(status, rollout=attrs.evolve(switched, phase="PROMOTED"))]) == []
    )


def test_the_cluster_status_says_until_when_a_switched_blue_green_rollout_keeps_its_old_set(
    printed: io.StringIO,
) -> None:
    """The same note as `slice status` and `blueprint status` print, from the cluster status'
    `kept_for_rollback` (a healthy cluster: information, not a reason)."""
    kept = KeptForRollback(artifact="org.aether:rocket", stable="0.9.0", until=1_800_000_000.0)
    status = ClusterStatus(
        leader="n1",
        term=2,
        revision=9,
        has_quorum=True,
        healthy=True,
        nodes=(node("n1"),),
        blueprints=1,
        instances=2,
        active=2,
        failed=0,
        kept_for_rollback=(kept, attrs.evolve(kept, artifact="org.aether:echo", until=0.0)),
    )
    _output.cluster_status(status)
    until = time.strftime("%H:%M:%S", time.localtime(1_800_000_000.0))
    lines = printed.getvalue().splitlines()
    assert lines[0].startswith("cluster healthy")
    assert lines[2:4] == [
        f"org.aether:rocket: old set (0.9.0) kept until {until} for rollback",
        "org.aether:echo: old set (0.9.0) kept until its grace period ends for rollback",
    ]
    printed.truncate(0)
    printed.seek(0)
    _output.cluster_status(attrs.evolve(status, kept_for_rollback=()))
    assert "for rollback" not in printed.getvalue()


CONTROL = "start \x1b]0;PWNED\x07\x1b[31mRED\x1b[0m \rfailed"  # a slice's exception message
SHOWN = "start \\x1b]0;PWNED\\x07\\x1b[31mRED\\x1b[0m \\rfailed"


def test_control_characters_from_the_cluster_print_as_escapes_never_raw(
    printed: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = instance(reason=CONTROL)
    _output.blueprint_status(
        BlueprintStatus(
            name="demo",
            slices=(
                SliceStatus(artifact=ARTIFACT, desired=1, active=0, instances=(failed,), problem=CONTROL),
            ),
        )
    )
    _output.event(
        ClusterEvent(revision=9, timestamp=0.0, kind="instance_state", subject=ARTIFACT, message=CONTROL)
    )
    _output.slice_status(SliceStatus(artifact=ARTIFACT, desired=1, active=0, instances=(), problem=CONTROL))
    text = printed.getvalue() + capsys.readouterr().out
    assert "\x1b" not in text and "\r" not in text, repr(text)
    assert text.count(SHOWN) == 4, text


def test_an_event_is_one_line_whatever_line_breaks_its_text_holds(printed: io.StringIO) -> None:
    """A refused request's target is audited as sent: a viewer could make a path with a line break and
    a made-up event after it, and `cluster events` printed it as a line of its own."""
    forged = "node-1\n19:07:59 #200 audit admin: DELETE all keys → 200\t/cordon\u2028\u202e"
    _output.event(ClusterEvent(revision=9, timestamp=0.0, kind="audit\n", subject="x", message=forged))
    lines = printed.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].endswith(
        "audit\\n node-1\\n19:07:59 #200 audit admin: DELETE all keys → 200\\t/cordon\\u2028\\u202e"
    )
