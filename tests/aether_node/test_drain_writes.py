"""The leader's view of an instance on its way out (`control/_cluster_manager.planned_state`): a node that
works on the leader's UNLOAD writes DEACTIVATING (command UNLOAD), then UNLOADING; the planner counts it
as being removed from the first of them, so a drain writes UNLOAD once per instance, not again over the
node's DEACTIVATING (which cost a write and a failed compare on the node for every instance). Pure."""

from __future__ import annotations

from test_node_operations import node, observed, removes, spread

from aether_kv import KeyValue
from aether_node.control._cluster_manager import observe_data, planned_state
from aether_node.control._reconcile import plan
from aether_node.core._records import SliceRecord, SliceState, encode_record
from aether_node.core._schema import BLUEPRINTS, NODES, SLICES

ECHO = "org.example:echo:1.0"


def record(state: SliceState, command: SliceState | None = None) -> SliceRecord:
    return SliceRecord(state=state, command=command)


def test_deactivating_on_the_way_out_is_seen_as_removed_and_nothing_else_changes() -> None:
    assert planned_state(record(SliceState.DEACTIVATING, SliceState.UNLOAD)) is SliceState.UNLOAD
    # deactivating to stay loaded (a DEACTIVATE command) is not a removal
    assert planned_state(record(SliceState.DEACTIVATING, SliceState.DEACTIVATE)) is SliceState.DEACTIVATING
    for state in SliceState:
        if state is not SliceState.DEACTIVATING:
            assert planned_state(record(state, SliceState.UNLOAD)) is state


def test_the_leader_reads_a_deactivating_instance_of_a_drain_as_removed() -> None:
    key = f"slices/c/{ECHO}/3"
    value = encode_record(record(SliceState.DEACTIVATING, SliceState.UNLOAD))
    data = {
        BLUEPRINTS: {},
        NODES: {},
        SLICES: {key: KeyValue(key=key, value=value, create_revision=5, mod_revision=9, version=3)},
    }
    _, _, (seen,), _ = observe_data(data)
    assert (seen.key, seen.state, seen.mod_revision) == (key, SliceState.UNLOAD, 9)


def test_a_drain_removes_each_old_instance_once() -> None:
    nodes = [node("a"), node("b"), node("c"), node("d")]
    running = [observed("a", 1), observed("b", 2), observed("d", 4)]
    # c's instance: the leader asked for its removal, its node is deactivating it
    leaving = observed("c", 3, SliceState.UNLOAD)
    assert not removes(plan([spread(3)], nodes, [*running, leaving], draining={"c"}))
    # what the leader sees of the node's DEACTIVATING (command UNLOAD): the same, nothing to write
    deactivating = observed("c", 3, planned_state(record(SliceState.DEACTIVATING, SliceState.UNLOAD)))
    assert plan([spread(3)], nodes, [*running, deactivating], draining={"c"}).actions == ()
