"""The cluster's health verdict (pure): healthy only with a quorum, a leader, every expected node
registered, every blueprint converged, nothing FAILED and every KV replica connected; each gap is a
reason a person can act on."""

from __future__ import annotations

import attrs
from shell_support import kv_status, node_info

from aether_node import config_digest
from aether_node.api._handlers import Handlers
from aether_node.client import InstanceInfo, RolloutInfo
from aether_node.core._blueprint import Blueprint, SliceSpec

ECHO = "org.aether:echo:1.0.0"


def instance(node_id: str, number: int, state: str = "ACTIVE", artifact: str = ECHO) -> InstanceInfo:
    return InstanceInfo(
        node_id=node_id,
        artifact=artifact,
        instance=number,
        state=state,
        reason="why",
        config_digest=config_digest({}),  # the config it was created with: the blueprint's
    )


BLUEPRINTS = {"demo": Blueprint(name="demo", slices=(SliceSpec(artifact=ECHO, instances=2),))}
NODES = [node_info("n1", leader=True), node_info("n2")]
RUNNING = [instance("n1", 1), instance("n2", 2)]


def test_healthy_when_everything_is_there() -> None:
    summary = Handlers._summary(kv_status(), NODES, RUNNING, BLUEPRINTS, ["n1", "n2"])
    assert summary.healthy and summary.reasons == ()
    assert (summary.expected_nodes, summary.missing_nodes, summary.unconverged) == (("n1", "n2"), (), ())


def test_a_missing_node_is_a_reason_even_when_the_blueprint_converged_without_it() -> None:
    summary = Handlers._summary(kv_status(), NODES, RUNNING, BLUEPRINTS, ["n1", "n2", "n3"])
    assert not summary.healthy
    assert summary.missing_nodes == ("n3",)
    assert summary.reasons == ("2 of 3 expected nodes are registered; missing: n3",)


def test_every_other_gap_is_named() -> None:
    failed = [instance("n1", 1), instance("n2", 2, "FAILED")]
    nodes = [node_info("n1"), node_info("n2")]
    summary = Handlers._summary(kv_status(connected=False), nodes, failed, BLUEPRINTS, [])
    assert summary.reasons == (
        "no node leads the cluster (a leader is being elected)",
        f"blueprint demo has not converged: {ECHO} 1/2 ACTIVE",
        f"1 instance FAILED: {ECHO}#2 on n2: why",
        "KV replica a:1 is not connected to b:1",
    )
    assert summary.unconverged == ("demo",) and summary.disconnected_replicas == ("b:1",)
    old = [instance("n1", 1), instance("n2", 2, artifact="org.aether:echo:0.9.0")]
    summary = Handlers._summary(kv_status(quorum=False), NODES, old, BLUEPRINTS, ["n1", "n2"])
    assert summary.reasons == (
        "the KV store has no quorum: it cannot commit anything",
        f"blueprint demo has not converged: {ECHO} 1/2 ACTIVE, 1 of another version",
    )


def test_the_old_set_a_switched_blue_green_rollout_keeps_is_no_reason_but_an_aborted_rollout_is() -> None:
    new = "org.aether:echo:2.0.0"
    blueprints = {"demo": Blueprint(name="demo", slices=(SliceSpec(artifact=new, instances=2),))}
    both = [*RUNNING, instance("n1", 3, artifact=new), instance("n2", 4, artifact=new)]
    switched = RolloutInfo(
        artifact="org.aether:echo", strategy="blue_green", stable="1.0.0", candidate="2.0.0", phase="SWITCHED"
    )
    summary = Handlers._summary(
        kv_status(), NODES, both, blueprints, [], rollouts={"org.aether:echo": switched}
    )
    assert summary.healthy and summary.reasons == () and summary.unconverged == ()
    aborted = attrs.evolve(switched, phase="ABORTED", reason="2 new instances failed")
    summary = Handlers._summary(
        kv_status(), NODES, RUNNING, blueprints, [], rollouts={"org.aether:echo": aborted}
    )
    assert summary.reasons == (
        f"blueprint demo has not converged: {new} 0/2 ACTIVE, 2 of another version;"
        " rollout aborted (2 new instances failed); 1.0.0 serves (apply it, or another version, to go on)",
    )
