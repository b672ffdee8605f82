"""The version that last served each slice (`control/_serving.py`, `cluster/serving/`) and the planner's
use of it: while an update cannot place its new version and lost nodes took every old instance, the
recorded version is brought back (`_reconcile.plan(served=...)`)."""

from __future__ import annotations

from aether_kv import Delete, KeyValue, Put
from aether_node.control._allocation import NodeCapacity
from aether_node.control._instance_index import InstanceIndex
from aether_node.control._reconcile import CreateInstance, ObservedInstance, plan
from aether_node.control._serving import decode_serving, serving_changes
from aether_node.core._blueprint import SliceSpec
from aether_node.core._config_digest import config_digest
from aether_node.core._coordinates import Coordinates
from aether_node.core._records import ServingVersion, SliceState, decode_record, encode_record
from aether_node.core._schema import serving_key

ECHO = "org.example:echo"


def instance(
    node_id: str, version: str, number: int, state: SliceState, config: dict | None = None
) -> ObservedInstance:
    coordinates = f"{ECHO}:{version}"
    return ObservedInstance(
        node_id=node_id,
        coordinates=Coordinates.parse(coordinates),
        instance=number,
        state=state,
        reason="load failed" if state is SliceState.FAILED else "",
        key=f"slices/{node_id}/{coordinates}/{number}",
        mod_revision=1,
        config=config or {},
        config_digest=config_digest(config or {}),
    )


def spec(version: str, instances: int, config: dict | None = None, floor: int | None = None) -> SliceSpec:
    return SliceSpec(
        artifact=f"{ECHO}:{version}", instances=instances, config=config or {}, min_available=floor
    )


def record(version: str, config: dict | None = None) -> ServingVersion:
    return ServingVersion(coordinates=f"{ECHO}:{version}", config=config or {})


LIVE = ("a", "b", "c")


def changes(specs, found, recorded=None, present=()):  # type: ignore[no-untyped-def]
    return serving_changes(specs, InstanceIndex.of(found), LIVE, recorded or {}, present)


def test_a_version_is_recorded_once_its_floor_is_active_and_not_again() -> None:
    config = {"x": 1}
    starting = [
        instance("a", "1.0", 1, SliceState.ACTIVE, config),
        instance("b", "1.0", 2, SliceState.ACTIVATE, config),
    ]
    assert changes([spec("1.0", 3, config)], starting) == []  # 1 ACTIVE, floor 2 (more than half of 3)
    found = [
        instance("a", "1.0", 1, SliceState.ACTIVE, config),
        instance("b", "1.0", 2, SliceState.ACTIVE, config),
    ]
    (put,) = changes([spec("1.0", 3, config)], found)
    assert isinstance(put, Put) and put.key == serving_key(ECHO)
    assert decode_record(put.key, put.value, ServingVersion) == record("1.0", config)
    # recorded so already: nothing; recorded with another config: recorded again
    assert changes([spec("1.0", 3, config)], found, {ECHO: record("1.0", config)}, [ECHO]) == []
    assert changes([spec("1.0", 3, config)], found, {ECHO: record("1.0")}, [ECHO]) == [put]


def test_an_update_that_came_before_the_leader_saw_the_old_version_serve_records_the_old_version() -> None:
    """1.0 went ACTIVE and the upgrade to 2.0 came before a pass of the leader saw 1.0 as the wanted
    version: while 2.0 has not its floor ACTIVE, the version that serves is 1.0, and it is recorded."""
    old = [
        instance("a", "1.0", 1, SliceState.ACTIVE, {"x": 1}),
        instance("b", "1.0", 2, SliceState.ACTIVE, {"x": 1}),
    ]
    (put,) = changes([spec("2.0", 2)], [*old, instance("c", "2.0", 3, SliceState.FAILED)])
    assert decode_record(put.key, put.value, ServingVersion) == record("1.0", {"x": 1})
    # once 2.0 has its floor (2 of 2) ACTIVE, it is the one
    new = [instance("a", "2.0", 4, SliceState.ACTIVE), instance("c", "2.0", 5, SliceState.ACTIVE)]
    (put,) = changes([spec("2.0", 2)], [*old, *new], {ECHO: record("1.0", {"x": 1})}, [ECHO])
    assert decode_record(put.key, put.value, ServingVersion) == record("2.0")


def test_instances_on_nodes_that_are_gone_do_not_count() -> None:
    found = [instance("z", "1.0", 1, SliceState.ACTIVE), instance("y", "1.0", 2, SliceState.ACTIVE)]
    assert changes([spec("1.0", 2)], found) == []


def test_the_record_of_a_slice_in_no_blueprint_is_deleted_and_a_bad_one_is_left_out() -> None:
    assert changes([], [], {ECHO: record("1.0")}, [ECHO]) == [Delete(key=serving_key(ECHO))]
    raw = {
        serving_key(ECHO): KeyValue(
            key=serving_key(ECHO), value=b"{not json", mod_revision=3, create_revision=3, version=1
        ),
        serving_key("org.example:other"): KeyValue(
            key=serving_key("org.example:other"),
            value=encode_record(record("2.0")),
            mod_revision=4,
            create_revision=4,
            version=1,
        ),
    }
    assert decode_serving(raw) == {"org.example:other": record("2.0")}


NODES = [NodeCapacity(node_id=n, cpu=64.0, memory_mib=65536) for n in ("a", "b")]
FAILED_EVERYWHERE = [instance(n, "2.0", i, SliceState.FAILED) for i, n in enumerate(("a", "b"), start=5)]


def test_a_stuck_update_whose_old_instances_were_all_lost_brings_the_recorded_version_back() -> None:
    """Every node where 1.0 ran is gone (none of its records is left), and 2.0 fails on both live
    nodes: 1.0, with the config it served with, is created at the count to keep."""
    served = {ECHO: record("1.0", {"x": 1})}
    p = plan([spec("2.0", 2)], NODES, FAILED_EVERYWHERE, served=served)
    made = [a for a in p.actions if isinstance(a, CreateInstance)]
    assert sorted((c.node_id, str(c.coordinates), dict(c.config)) for c in made) == [
        ("a", f"{ECHO}:1.0", {"x": 1}),
        ("b", f"{ECHO}:1.0", {"x": 1}),
    ]
    assert all(c.why == "replacing a lost instance of 1.0: upgrade to 2.0 is stuck" for c in made), made


def test_nothing_old_is_brought_back_while_the_update_is_not_stuck_or_nothing_else_served() -> None:
    served = {ECHO: record("1.0")}
    fresh = plan([spec("2.0", 2)], NODES, [], served=served)  # nothing failed: 2.0 is placed
    assert {str(a.coordinates) for a in fresh.actions if isinstance(a, CreateInstance)} == {f"{ECHO}:2.0"}
    # the version recorded is the one wanted (its config too): nothing to bring back
    same = plan([spec("2.0", 2)], NODES, FAILED_EVERYWHERE, served={ECHO: record("2.0")})
    assert [a for a in same.actions if isinstance(a, CreateInstance)] == []
