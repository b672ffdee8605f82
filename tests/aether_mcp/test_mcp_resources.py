"""Which MCP resources a cluster event changes (pure)."""

from __future__ import annotations

import attrs

from aether_mcp._resources import CLUSTER_STATUS, affected, known_slices, slice_owners
from aether_node.client import BlueprintInfo, ClusterEvent, InstanceInfo, SliceSummary

DEMO = BlueprintInfo(
    name="demo",
    slices=(SliceSummary(artifact="org.aether:echo:1.0.0", instances=2, strategy="round_robin"),),
    timestamp=0.0,
)


def event(kind: str, subject: str) -> ClusterEvent:
    return ClusterEvent(revision=7, timestamp=0.0, kind=kind, subject=subject, message="")


def test_an_instance_change_updates_its_slice_its_blueprint_and_the_cluster() -> None:
    uris, listed = affected(event("instance_state", "org.aether:echo:1.0.0#2"), slice_owners([DEMO]))
    assert uris == [CLUSTER_STATUS, "aether://slices/org.aether:echo", "aether://blueprints/demo"]
    assert listed is False


def test_an_instance_of_a_slice_no_blueprint_wants_may_change_the_list() -> None:
    uris, listed = affected(event("instance_removed", "org.aether:counter:1.0.0#1"), slice_owners([DEMO]))
    assert uris == [CLUSTER_STATUS, "aether://slices/org.aether:counter"] and listed is True


def test_a_rebalance_move_updates_its_slice_and_blueprint() -> None:
    move = attrs.evolve(event("rebalance_move", "org.aether:echo:1.0.0#4"), artifact="org.aether:echo:1.0.0")
    uris, listed = affected(move, slice_owners([DEMO]))
    assert uris == [CLUSTER_STATUS, "aether://slices/org.aether:echo", "aether://blueprints/demo"]
    assert listed is False


def test_blueprint_events_change_the_blueprint_and_the_list() -> None:
    for kind in ("blueprint_applied", "blueprint_deleted"):
        assert affected(event(kind, "demo"), {}) == ([CLUSTER_STATUS, "aether://blueprints/demo"], True)


def test_a_blueprint_applied_again_changes_its_slices_too() -> None:
    """A scale or an upgrade changes what a slice's resource says (its desired count, its problem) before
    any instance event: a subscriber to the slice heard nothing of it."""
    uris, listed = affected(event("blueprint_applied", "demo"), slice_owners([DEMO]))
    assert uris == [CLUSTER_STATUS, "aether://blueprints/demo", "aether://slices/org.aether:echo"]
    assert listed is True
    uris, _ = affected(event("blueprint_applied", "other"), slice_owners([DEMO]))
    assert uris == [CLUSTER_STATUS, "aether://blueprints/other"]


def test_other_events_change_the_cluster_status_only() -> None:
    for kind in ("node_joined", "node_left", "node_lost", "leader_elected", "something_new"):
        assert affected(event(kind, "node-1"), {}) == ([CLUSTER_STATUS], False)


def test_known_slices_are_the_wanted_ones_and_the_running_ones() -> None:
    running = InstanceInfo(node_id="n", artifact="org.aether:counter:1.0.0", instance=1, state="ACTIVE")
    assert known_slices([DEMO], [running]) == ["org.aether:counter", "org.aether:echo"]
