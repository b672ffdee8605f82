"""The compare each removal carries (`control/_blueprint_fence.py`): the blueprint that deploys its slice
as the pass read it; for a slice in no blueprint, `cluster/slice-claims` (moved by any write that may
give a blueprint a slice). Checked against the memory store: a change after the read fails the compare."""

from __future__ import annotations

from aether_kv import MemoryStore, Put
from aether_node.control._blueprint_fence import BlueprintFence
from aether_node.core._blueprint import Blueprint, SliceSpec
from aether_node.core._records import decode_record, encode_record
from aether_node.core._schema import BLUEPRINTS, SLICE_CLAIMS

ECHO = "org.example:echo"


async def read(kv: MemoryStore) -> BlueprintFence:
    listing = await kv.range(BLUEPRINTS)
    records = {item.key: item for item in listing.kvs}
    blueprints = [decode_record(key, kv.value, Blueprint) for key, kv in records.items()]
    return BlueprintFence.of(blueprints, records, await kv.get(SLICE_CLAIMS))


async def holds(kv: MemoryStore, fence: BlueprintFence, instance_key: str) -> bool:
    return (await kv.txn([fence.removal(instance_key)], [Put(key="probe", value=b"")])).succeeded


async def test_a_removal_holds_only_while_its_slice_s_blueprint_or_the_claims_are_unchanged() -> None:
    kv = MemoryStore()
    demo = Blueprint(name="demo", slices=(SliceSpec(artifact=f"{ECHO}:1.0", instances=2),))
    await kv.put(BLUEPRINTS + "demo", encode_record(demo))
    await kv.put(BLUEPRINTS + "other", encode_record(Blueprint(name="other", slices=())))
    fence = await read(kv)
    deployed, unwanted = f"slices/n1/{ECHO}:2.0/7", "slices/n1/org.example:gone:1.0/3"
    assert await holds(kv, fence, deployed) and await holds(kv, fence, unwanted)
    await kv.put(BLUEPRINTS + "other", encode_record(Blueprint(name="other", slices=())))
    assert await holds(kv, fence, deployed)  # another blueprint's change: not this slice's
    await kv.put(BLUEPRINTS + "demo", encode_record(demo))
    assert not await holds(kv, fence, deployed)  # its own blueprint written again: planned on the old
    assert await holds(kv, fence, unwanted)
    await kv.put(SLICE_CLAIMS, b"demo")  # an apply that may give a blueprint a slice
    assert not await holds(kv, fence, unwanted)
    fresh = await read(kv)
    assert await holds(kv, fresh, deployed) and await holds(kv, fresh, unwanted)
