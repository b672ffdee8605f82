"""TxnBatcher (group commit of KV transactions): what goes into one batch (pure), and against three real
KV replicas that every caller gets its own transaction's outcome."""

from __future__ import annotations

import trio

from aether_kv import Compare, CompareOp, CompareTarget, Delete, KeyValue, LocalCluster, Put, open_client
from aether_node.core._kv_batch import TxnBatcher, _Request, holds, pack
from support import wait_until


def _unchanged(key: str, revision: int) -> Compare:
    return Compare(key=key, target=CompareTarget.MOD_REVISION, op=CompareOp.EQ, operand=revision)


def _request(compares: list[Compare], operations: list[Put | Delete]) -> _Request:
    return _Request(compares=tuple(compares), operations=tuple(operations))


FENCE = _unchanged("cluster/leader", 7)


def test_a_batch_takes_requests_in_order_up_to_the_limit_counting_a_shared_compare_once() -> None:
    queue = [_request([FENCE], [Put(key=f"k{i}", value=b"v")]) for i in range(10)]
    # 1 shared compare (and its read on failure) + 1 put each: 6 fit in 8
    assert pack(queue, limit=8) == queue[:6]
    assert pack(queue, limit=128) == queue


def test_requests_on_a_key_of_the_batch_wait_for_the_next_one() -> None:
    first = _request([_unchanged("a", 1)], [Put(key="a", value=b"1")])
    again = _request([_unchanged("a", 2)], [Put(key="a", value=b"2")])
    reads_a = _request([_unchanged("a", 1)], [Put(key="b", value=b"x")])
    other = _request([], [Delete(key="c")])
    assert pack([first, again, reads_a, other]) == [first, other]
    assert pack([again, reads_a]) == [again]


def test_a_request_too_big_for_any_batch_goes_alone() -> None:
    big = _request([], [Put(key=f"k{i}", value=b"v") for i in range(10)])
    small = _request([], [Put(key="x", value=b"v")])
    assert pack([big, small], limit=4) == [big]
    assert pack([small, big], limit=4) == [small]


async def test_concurrent_writes_share_transactions_and_each_gets_its_own_outcome(
    kv_cluster: LocalCluster,
) -> None:
    async with open_client(kv_cluster.endpoints, kv_cluster.secret) as kv, trio.open_nursery() as nursery:
        revisions = {f"key/{i}": (await kv.put(f"key/{i}", b"0")).revision for i in range(60)}
        batcher = TxnBatcher(kv)
        await nursery.start(batcher.run)
        outcomes: dict[str, bool] = {}

        async def write(key: str, revision: int) -> None:
            result = await batcher.txn([_unchanged(key, revision)], [Put(key=key, value=b"1")])
            outcomes[key] = result.succeeded

        async with trio.open_nursery() as writers:
            for key, revision in revisions.items():
                # key/0 is compared against a revision it does not have: it alone must fail
                writers.start_soon(write, key, revision + 1000 if key == "key/0" else revision)
        assert outcomes == {key: key != "key/0" for key in revisions}
        assert batcher.batches <= 4, "the writes did not share transactions"
        for key in revisions:
            stored = await kv.get(key)
            assert stored is not None and stored.value == (b"0" if key == "key/0" else b"1")
        nursery.cancel_scope.cancel()


def test_a_compare_holds_locally_as_the_kv_decides() -> None:
    kv = KeyValue(key="a", value=b"x", create_revision=3, mod_revision=5, version=2, lease=0)
    assert holds(_unchanged("a", 5), kv) and not holds(_unchanged("a", 4), kv)
    absent = Compare(key="a", target=CompareTarget.EXISTS, op=CompareOp.EQ, operand=False)
    assert holds(absent, None) and not holds(absent, kv)
    assert holds(_unchanged("a", 0), None)
    newer = Compare(key="a", target=CompareTarget.VERSION, op=CompareOp.GT, operand=1)
    assert holds(newer, kv) and not holds(newer, None)
    other_value = Compare(key="a", target=CompareTarget.VALUE, op=CompareOp.NE, operand=b"y")
    assert holds(other_value, kv) and holds(other_value, None)


async def test_a_stopped_batcher_fails_what_it_never_sent_and_then_lets_requests_go_alone() -> None:
    # The graceful stop withdraws endpoints after the deployment manager (and its batcher) stopped: no
    # request may wait for a batcher that no longer runs.
    from aether_kv import MemoryStore, UnavailableError

    kv = MemoryStore()
    batcher = TxnBatcher(kv)
    outcome: list[object] = []
    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as inner:
            await inner.start(batcher.run)

            async def one() -> None:
                try:
                    outcome.append(await batcher.txn([], [Put(key="a", value=b"1")]))
                except UnavailableError as error:
                    outcome.append(error)

            outer.start_soon(one)  # queued from outside the batcher's scope
            inner.cancel_scope.cancel()  # stopped before it could send anything
        await wait_until(lambda: outcome, timeout=5, interval=0.01, what="the queued request's outcome")
    assert len(outcome) == 1 and (isinstance(outcome[0], UnavailableError) or (await kv.get("a")) is not None)
    with trio.fail_after(5):
        result = await batcher.txn([], [Put(key="b", value=b"2")])  # alone, now
    assert result.succeeded and (await kv.get("b")) is not None
