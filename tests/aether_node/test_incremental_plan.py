"""The leader's incremental view: the instance index it keeps from the watch (`InstanceDecoder.update`
with the keys `KVCache.touched` reports) against one built afresh from every record, after random
sequences of record changes; and every planner's decisions on it against their decisions on the plain
list of records (a full pass). This fails when the incremental bookkeeping goes wrong (a record left in
a bucket of its old state, a count not lowered, a deleted number still counted as the highest, ...)."""

from __future__ import annotations

import attrs
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from aether_kv import KeyValue, MemoryStore
from aether_node.control._allocation import NodeCapacity
from aether_node.control._cluster_manager import InstanceDecoder, observed_instance
from aether_node.control._instance_index import InstanceIndex
from aether_node.control._pause import pause_specs
from aether_node.control._rebalance import node_delays
from aether_node.control._reconcile import ObservedInstance, plan
from aether_node.control._strategies import rollouts
from aether_node.core._blueprint import SliceSpec
from aether_node.core._coordinates import Coordinates
from aether_node.core._kv_cache import KVCache
from aether_node.core._reconcile_spec import ResolvedPolicy
from aether_node.core._records import PausedRollout, SliceRecord, SliceState, encode_record
from aether_node.core._schema import InstanceKey

NODES = ("n1", "n2", "n3")
VERSIONS = ("org.example:echo:1.0", "org.example:echo:2.0", "org.example:other:1.0")


def record(key: str, state: SliceState, moved_from: str, revision: int) -> KeyValue:
    value = encode_record(SliceRecord(state=state, moved_from=moved_from, timestamp=float(revision)))
    return KeyValue(key=key, value=value, create_revision=1, mod_revision=revision, version=1, lease=0)


changes = st.lists(
    st.tuples(
        st.sampled_from((*NODES, "gone")),
        st.sampled_from(VERSIONS),
        st.integers(1, 8),  # instance number
        st.sampled_from([*SliceState, None]),  # None: delete the record
        st.sampled_from(["", "", "n1"]),  # moved_from
        st.booleans(),  # a record that does not decode
    ),
    min_size=1,
    max_size=12,
)


def snapshot(index: InstanceIndex) -> object:
    """Everything the planners read from an index, in a comparable form."""
    groups = {
        a: (
            {n: {c: {s: dict(b) for s, b in st.items()} for c, st in v.items()} for n, v in g.nodes.items()},
            g.highest(),
            g.count,
        )
        for a in index.artifact_ids()
        if (g := index.artifact(a))
    }
    return groups, dict(index.moves), {n: dict(c) for n, c in index.per_node()}, len(index)


def decisions(instances: InstanceIndex | list[ObservedInstance], now: float) -> object:
    specs = [SliceSpec(artifact="org.example:echo:2.0", instances=4, min_available=2)]
    nodes = [NodeCapacity(node_id=n, cpu=8.0, memory_mib=8192) for n in NODES]
    steered = rollouts(specs, instances, {}, now=now)
    policies = {"org.example:echo": ResolvedPolicy(rebalance_delay_s=30.0, max_moves=1)}
    paused = pause_specs(specs, instances, {"org.example:echo": PausedRollout(since=0.0)})
    return (
        steered,
        node_delays(instances, set(NODES), policies),
        paused,
        plan(
            steered.specs,
            nodes,
            instances,
            now=now,
            draining={"n3"},
            held=steered.held,
            lost={"gone": now - 10.0},
            policies=policies,
        ),
    )


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(changes, min_size=1, max_size=8), now=st.sampled_from([5.0, 100.0]))
def test_the_index_kept_from_touched_keys_equals_one_built_afresh_and_plans_the_same(
    steps: list[list[tuple[str, str, int, SliceState | None, str, bool]]], now: float
) -> None:
    raw: dict[str, KeyValue] = {}
    kept = InstanceDecoder()
    revision = 0
    for step in steps:
        touched = set()
        for node, coordinates, number, state, moved_from, garbled in step:
            key = InstanceKey(node, Coordinates.parse(coordinates), number).key
            touched.add(key)
            revision += 1
            if state is None:
                raw.pop(key, None)
            elif garbled:
                raw[key] = KeyValue(
                    key=key, value=b"{", create_revision=1, mod_revision=revision, version=1, lease=0
                )
            else:
                raw[key] = record(key, state, moved_from, revision)
        index = kept.update(raw, touched)
        every = [i for key, kv in raw.items() if (i := observed_instance(key, kv)) is not None]
        assert snapshot(index) == snapshot(InstanceIndex.of(every))
        assert decisions(index, now) == decisions(every, now)


async def test_the_cache_reports_the_keys_touched_since_it_was_last_asked() -> None:
    kv = MemoryStore()
    await kv.put("p/a", b"1")
    cache = KVCache(kv, ["p/"])
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)
        assert cache.touched("p/") is None  # listed: every key may have changed
        assert cache.touched("p/") == set()
        await kv.put("p/b", b"2")
        written = (await kv.delete("p/a")).revision
        await cache.caught_up("p/", written)
        assert cache.touched("p/") == {"p/a", "p/b"} and cache.data["p/"].keys() == {"p/b"}
        assert cache.touched("p/") == set()
        nursery.cancel_scope.cancel()


def test_a_planner_given_a_list_sees_what_it_sees_in_an_index_of_it() -> None:
    instances = [
        ObservedInstance(
            node_id="n1",
            coordinates=Coordinates.parse("org.example:echo:2.0"),
            instance=number,
            state=SliceState.ACTIVE,
            key=f"slices/n1/org.example:echo:2.0/{number}",
            mod_revision=number,
        )
        for number in (1, 2)
    ]
    index = InstanceIndex.of(instances)
    assert attrs.asdict(decisions(index, 5.0)[3]) == attrs.asdict(decisions(instances, 5.0)[3])
