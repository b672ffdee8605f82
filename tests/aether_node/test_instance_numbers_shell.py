"""The leader keeps instance numbers in the KV (`cluster/instance-numbers/`, `_instance_numbers.py`): it
writes a slice's next number in the very transaction that creates the instances it numbered, so a new
leader goes on after it and a removed instance's number is never given again. The ClusterDeploymentManager
in process, on the memory store and trio's virtual clock; a task plays the nodes' part (an instance the
leader creates goes ACTIVE, one it unloads is deleted)."""

from __future__ import annotations

import attrs
import pytest
import trio
from shell_support import apply, instances, register
from test_cluster_manager import claimed_by, lead
from trio.testing import MockClock

from aether_kv import MAX_TXN_OPS, CompareTarget, KeyValue, MemoryStore, Put
from aether_node.control import _instance_numbers
from aether_node.control._instance_numbers import CHUNK, creation_txns, decode_numbers
from aether_node.core._blueprint import SliceSpec
from aether_node.core._records import InstanceNumbers, SliceRecord, SliceState, decode_record, encode_record
from aether_node.core._schema import SLICES, instance_numbers_key
from support import wait_until

ECHO_ID = "org.example:echo"
ECHO = f"{ECHO_ID}:1.0"
NUMBERS = instance_numbers_key(ECHO_ID)


@pytest.fixture
def kv() -> MemoryStore:
    return MemoryStore(clock=trio.current_time, address="n1")


async def play_the_nodes(kv: MemoryStore) -> None:
    """What the nodes do with the leader's commands: ACTIVATE → ACTIVE, UNLOAD → deleted. Runs until
    cancelled (a fake node, woken by each change of the instance records)."""
    while True:
        listing = await kv.range(SLICES)
        for item in listing.kvs:
            record = decode_record(item.key, item.value, SliceRecord)
            if record.state is SliceState.ACTIVATE:
                await kv.put(item.key, encode_record(attrs.evolve(record, state=SliceState.ACTIVE)))
            elif record.state is SliceState.UNLOAD:
                await kv.delete(item.key)
        watch = kv.watch(SLICES, listing.revision + 1)  # (what changed since the listing, ours included)
        try:
            await watch.__anext__()
        finally:
            await watch.aclose()


async def numbers_in_use(kv: MemoryStore) -> list[int]:
    return sorted(int(key.rsplit("/", 1)[1]) for key in await instances(kv))


async def settled_at(kv: MemoryStore, numbers: list[int]) -> None:
    async def all_active() -> tuple[list[int], bool]:
        found = await instances(kv)
        settled = all(r.state is SliceState.ACTIVE for r in found.values())
        return sorted(int(k.rsplit("/", 1)[1]) for k in found), settled

    await wait_until(
        all_active, until=lambda seen: seen == (numbers, True), timeout=60, what=f"instances {numbers}"
    )


async def next_number(kv: MemoryStore) -> int | None:
    found = await kv.get(NUMBERS)
    return None if found is None else decode_record(NUMBERS, found.value, InstanceNumbers).next


async def test_the_next_number_is_written_with_the_instances_and_a_new_leader_goes_on_after_it(
    autojump_clock: MockClock, kv: MemoryStore
) -> None:
    other = kv.replica("n2")
    for node_id in ("n1", "n2", "n3"):
        await register(kv, node_id)
    await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=3))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(play_the_nodes, kv)
        await lead(nursery, kv, "n1")
        await lead(nursery, other, "n2")
        await settled_at(kv, [1, 2, 3])
        assert await next_number(kv) == 4
        record = await kv.get(NUMBERS)
        assert record is not None
        for key in await instances(kv):  # one transaction: the number and the instances it numbered
            created = await kv.get(key)
            assert created is not None and created.create_revision == record.mod_revision

        await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=1))
        await settled_at(kv, [1])  # the newest went
        await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=3))
        await settled_at(kv, [1, 4, 5])  # not 2 and 3 again
        assert await next_number(kv) == 6

        await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=1))
        await settled_at(kv, [1])
        kv.set_leader("n2")  # n2 takes over: it knows nothing of n1's numbers but what the KV says
        await wait_until(lambda: claimed_by(kv, "n2"), timeout=60, what="n2's claim")
        await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=3))
        await settled_at(kv, [1, 6, 7])
        assert await next_number(kv) == 8
        nursery.cancel_scope.cancel()


async def test_a_cluster_without_the_record_goes_on_from_its_highest_number_and_writes_it(
    autojump_clock: MockClock, kv: MemoryStore
) -> None:
    """A cluster whose instances were numbered before the record existed (or whose record does not
    decode: it is written over)."""
    for node_id in ("n1", "n2", "n3"):
        await register(kv, node_id)
    for node_id, number in (("n1", 2), ("n2", 5)):
        await kv.put(f"slices/{node_id}/{ECHO}/{number}", encode_record(SliceRecord(state=SliceState.ACTIVE)))
    await kv.put(NUMBERS, b"{not json")
    await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=3))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(play_the_nodes, kv)
        await lead(nursery, kv, "n1")
        await settled_at(kv, [2, 5, 6])
        assert await next_number(kv) == 7
        nursery.cancel_scope.cancel()


async def test_a_pass_of_more_creations_than_a_chunk_numbers_them_all_in_the_first_transaction(
    autojump_clock: MockClock, kv: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_instance_numbers, "CHUNK", 2)
    await register(kv, "n1")
    await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=5, max_per_node=5))
    async with trio.open_nursery() as nursery:
        await lead(nursery, kv, "n1")
        await wait_until(
            lambda: numbers_in_use(kv), until=lambda n: n == [1, 2, 3, 4, 5], timeout=60, what="5 instances"
        )
        assert await next_number(kv) == 6
        record = await kv.get(NUMBERS)
        assert record is not None
        created = [await kv.get(key) for key in await instances(kv)]
        revisions = sorted(found.create_revision for found in created if found is not None)
        # the first transaction numbers them all and creates two; the rest go after it
        assert revisions[:2] == [record.mod_revision] * 2 and min(revisions[2:]) > record.mod_revision
        nursery.cancel_scope.cancel()


def test_the_transactions_of_a_slice_s_creations_number_them_in_the_first() -> None:
    fence = _instance_numbers._absent("cluster/leader")  # (any compare stands for the fence here)
    records = [(f"slices/n1/{ECHO}/{n}", b"{}") for n in range(1, CHUNK + 3)]
    first, second = creation_txns(ECHO_ID, records, CHUNK + 3, 17, fence)
    compares, puts = first
    assert compares[0] == fence and compares[1].key == NUMBERS
    assert compares[1].target is CompareTarget.MOD_REVISION and compares[1].operand == 17
    assert puts[0] == Put(key=NUMBERS, value=encode_record(InstanceNumbers(next=CHUNK + 3)))
    assert [p.key for p in puts[1:]] == [k for k, _ in records[:CHUNK]]
    assert [c.key for c in compares[2:]] == [k for k, _ in records[:CHUNK]]
    assert 2 * len(compares) + len(puts) <= MAX_TXN_OPS  # (each compare is read back on a failure)
    compares, puts = second
    assert NUMBERS not in {c.key for c in compares} | {p.key for p in puts}
    assert [p.key for p in puts] == [k for k, _ in records[CHUNK:]] and compares[0] == fence


def test_records_decode_and_one_that_does_not_counts_as_absent_but_keeps_its_revision() -> None:
    def stored(key: str, value: bytes, revision: int) -> KeyValue:
        return KeyValue(key=key, value=value, create_revision=1, mod_revision=revision, version=1, lease=0)

    bad = instance_numbers_key("org.example:bad")
    numbers = decode_numbers(
        {NUMBERS: stored(NUMBERS, encode_record(InstanceNumbers(next=9)), 4), bad: stored(bad, b"[", 6)}
    )
    assert numbers.next == {ECHO_ID: 9}
    assert numbers.revisions == {ECHO_ID: 4, "org.example:bad": 6}
