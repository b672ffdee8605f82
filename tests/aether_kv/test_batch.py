"""Group commit (`_batcher.py`, `Batch` in the state machine): concurrent writes share Raft entries, and
each still behaves exactly as if proposed alone."""

from __future__ import annotations

import pytest
import trio

from aether_kv import LocalCluster, open_client
from aether_kv._batcher import MAX_BATCH_BYTES, ProposalBatcher, _split, value_bytes
from aether_kv._errors import UnavailableError
from aether_kv._records import (
    MAX_BATCH_COMMANDS,
    Batch,
    BatchResult,
    Delete,
    ErrorResult,
    LeaseRevoke,
    Put,
    PutResult,
    Txn,
)
from aether_kv._state import KVState
from support import known_leader


def test_each_command_of_a_batch_gets_its_own_revision_and_result() -> None:
    state = KVState()
    result = state.apply(
        Batch(commands=(Put(key="a", value=b"1"), Put(key="a", value=b"2"), Delete(key="missing")))
    )
    assert isinstance(result, BatchResult)
    first, second, delete = result.results
    assert isinstance(first, PutResult) and isinstance(second, PutResult)
    assert (first.revision, second.revision, second.prev.value) == (1, 2, b"1")  # type: ignore[union-attr]
    assert delete.deleted == 0  # type: ignore[union-attr]
    assert [e.revision for e in state.events_since("", 1)] == [1, 2]


def test_a_failing_command_fails_alone() -> None:
    state = KVState()
    result = state.apply(
        Batch(commands=(Put(key="a", value=b"1"), LeaseRevoke(lease=7), Put(key="b", value=b"2")))
    )
    assert isinstance(result, BatchResult)
    assert isinstance(result.results[1], ErrorResult) and result.results[1].code == "lease_not_found"
    assert sorted(state.data) == ["a", "b"]


@pytest.mark.parametrize(
    ("commands", "message"),
    [
        ((), "1 to"),
        (tuple(Put(key=f"k{i}", value=b"") for i in range(MAX_BATCH_COMMANDS + 1)), "1 to"),
        ((Batch(commands=(Put(key="a", value=b""),)),), "batch[0]: a batch may not hold a batch"),
    ],
)
def test_a_malformed_batch_is_refused_whole_and_changes_nothing(commands: tuple, message: str) -> None:
    state = KVState()
    result = state.apply(Batch(commands=commands))
    assert isinstance(result, ErrorResult) and message in result.message
    assert (state.revision, len(state.data)) == (0, 0)


def test_a_failed_entry_fails_every_caller_of_the_batch_alike() -> None:
    got: list[tuple[object, object]] = []
    done = _split([lambda r, e: got.append((r, e)), lambda r, e: got.append((r, e))])
    error = UnavailableError("not applied: no leader; safe to retry")
    done(None, error)
    assert got == [(None, error), (None, error)]


async def test_commands_submitted_together_are_proposed_as_one_batch_and_large_ones_alone() -> None:
    proposed: list[object] = []
    batcher = ProposalBatcher(lambda command, callback: proposed.append(command))
    for i in range(3):
        batcher.submit(Put(key=f"k{i}", value=b"x"), lambda r, e: None)
    big = Put(key="big", value=b"x" * MAX_BATCH_BYTES)
    assert value_bytes(big) == MAX_BATCH_BYTES
    batcher.submit(big, lambda r, e: None)
    await trio.sleep(0)  # the scheduled flush runs
    await trio.sleep(0)
    assert proposed[0] is big
    assert isinstance(proposed[1], Batch) and [c.key for c in proposed[1].commands] == ["k0", "k1", "k2"]
    assert value_bytes(Txn(success=(Put(key="a", value=b"12"), Delete(key="b")))) == 2


@pytest.mark.integration
async def test_concurrent_writes_share_log_entries_and_keep_their_own_revisions(
    kv_cluster: LocalCluster,
) -> None:
    leader = await known_leader(kv_cluster)
    async with open_client([kv_cluster.spec(leader).client_address], kv_cluster.secret) as client:
        await client.put("warm", b"x")
        before = await client.status()
        results: list[PutResult] = []

        async def put(i: int) -> None:
            results.append(await client.put(f"batch/{i}", str(i).encode()))

        async with trio.open_nursery() as nursery:
            for i in range(64):
                nursery.start_soon(put, i)
        after = await client.status()
        assert sorted(r.revision for r in results) == list(range(before.revision + 1, before.revision + 65))
        assert after.commit_index - before.commit_index < 64  # fewer entries than writes
        stored = await client.range("batch/", linearizable=True)
        assert {kv.key: kv.value for kv in stored.kvs} == {f"batch/{i}": str(i).encode() for i in range(64)}
