"""`aether slice retry` in the shell, in process on the memory store and trio's virtual clock: the real
leader and two nodes' deployment managers over simulated slice processes (`FakeSliceStore`). A slice that
cannot be installed fails on both nodes, and both are kept out for `failed_retry_after` (60 s); fixed and
retried, it is placed again at once and comes up, long before the 60 s; the API refuses a slice no
blueprint deploys, lets go of nothing when nothing failed, and a late copy lets go of no later failure;
the retry's event."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from shell_support import FakeSliceStore, apply, handlers_over, hold, instances, register
from trio.testing import MockClock

from aether_kv import Event, EventKind, KeyValue, MemoryStore
from aether_node.api._handlers import Handlers
from aether_node.api._slice_retry import SliceRetry
from aether_node.control._cluster_manager import ClusterDeploymentManager, LeadershipMonitor
from aether_node.core._blueprint import SliceSpec
from aether_node.core._coordinates import Coordinates
from aether_node.core._errors import RequestError
from aether_node.core._policies import RestartPolicy
from aether_node.core._records import RetryRequest, SliceRecord, SliceState, decode_record, encode_record
from aether_node.core._schema import InstanceKey, retry_key
from aether_node.observe._events import describe
from aether_node.runtime._deployment import NodeDeploymentManager
from support import wait_until

ECHO = "org.example:echo:1.0"
ECHO_ID = "org.example:echo"
POLICY = RestartPolicy(max_restarts=3, window=60.0, initial=0.25, maximum=1.0)


@pytest.fixture
def kv() -> MemoryStore:
    return MemoryStore(clock=trio.current_time, address="n1")


@pytest.fixture
async def handlers(kv: MemoryStore) -> AsyncIterator[Handlers]:
    async with handlers_over(kv) as handlers:
        yield handlers


async def failed_on(kv: MemoryStore) -> set[str]:
    return {k.split("/")[1] for k, r in (await instances(kv)).items() if r.state is SliceState.FAILED}


async def active(kv: MemoryStore) -> int:
    return sum(1 for r in (await instances(kv)).values() if r.state is SliceState.ACTIVE)


@pytest.fixture
async def broken(kv: MemoryStore) -> AsyncIterator[list[FakeSliceStore]]:
    """A leader and nodes n1, n2 whose slice stores cannot install ECHO; a blueprint of 2 of it, FAILED
    on both nodes. Yields the stores (clear their `broken` to fix the slice)."""
    stores = [FakeSliceStore(broken={ECHO}) for _ in range(2)]
    async with trio.open_nursery() as nursery:
        for node_id, store in zip(("n1", "n2"), stores, strict=True):
            lease = await register(kv, node_id)
            manager = NodeDeploymentManager(
                kv, node_id, store, lease=lease, restart_policy=POLICY, clock=trio.current_time
            )
            await nursery.start(manager.run)
        leadership = LeadershipMonitor(kv, period=0.1)
        nursery.start_soon(leadership.run)
        nursery.start_soon(
            ClusterDeploymentManager(kv, "n1", interval=1.0, clock=trio.current_time).run, leadership
        )
        await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=2))

        async def both_failed() -> bool:
            return await failed_on(kv) == {"n1", "n2"}

        await wait_until(both_failed, timeout=30, what="ECHO FAILED on both nodes")
        yield stores
        nursery.cancel_scope.cancel()


async def test_a_fixed_slice_retried_comes_up_at_once_not_after_the_retry_time(
    autojump_clock: MockClock, kv: MemoryStore, handlers: Handlers, broken: list[FakeSliceStore]
) -> None:
    for store in broken:
        store.broken.clear()  # the missing dependency published, say
    await hold(20)  # fixed, but within the 60 s both nodes stay out: nothing is tried
    assert await failed_on(kv) == {"n1", "n2"} and await active(kv) == 0
    asked = trio.current_time()
    retried = await SliceRetry(handlers).retry(ECHO_ID)
    assert retried.artifact == ECHO_ID
    assert sorted((i.node_id, i.state) for i in retried.let_go) == [("n1", "FAILED"), ("n2", "FAILED")]

    async def up() -> bool:
        return await active(kv) == 2 and not await failed_on(kv)

    await wait_until(up, timeout=10, what="both instances ACTIVE after the retry")
    assert trio.current_time() - asked < 10  # (virtual time: the leader's next pass, not the 60 s)


async def test_a_retry_that_fails_again_keeps_the_nodes_out_for_the_retry_time(
    autojump_clock: MockClock, kv: MemoryStore, handlers: Handlers, broken: list[FakeSliceStore]
) -> None:
    first = {k: r for k, r in (await instances(kv)).items()}
    assert len((await SliceRetry(handlers).retry(ECHO_ID)).let_go) == 2  # not fixed: fails again

    async def failed_again() -> bool:
        now = await instances(kv)
        return await failed_on(kv) == {"n1", "n2"} and not set(now) & set(first)

    await wait_until(failed_again, timeout=10, what="new FAILED records on both nodes")
    again = set(await instances(kv))
    await hold(30)  # the new failures keep both out: no start, fail, start loop
    assert set(await instances(kv)) == again


async def test_the_api_refuses_an_undeployed_slice_and_lets_go_of_nothing_when_nothing_failed(
    kv: MemoryStore, handlers: Handlers
) -> None:
    retry = SliceRetry(handlers)
    with pytest.raises(RequestError) as refused:
        await retry.retry(ECHO_ID)
    assert (refused.value.kind.value, refused.value.message) == (
        "not_found",
        "no blueprint deploys org.example:echo: nothing of it to retry",
    )
    with pytest.raises(RequestError) as refused:
        await retry.retry("org.example")
    assert refused.value.kind.value == "bad_request"
    await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=2))
    with pytest.raises(RequestError) as refused:
        await retry.retry(f"{ECHO_ID}:0.9")  # a version no blueprint deploys: a mistake, not a filter
    assert refused.value.kind.value == "bad_request"
    nothing = await retry.retry(ECHO_ID)
    assert (nothing.artifact, nothing.let_go) == (ECHO_ID, ())
    assert await kv.get(retry_key(ECHO_ID)) is None  # nothing written


async def test_a_late_copy_lets_go_of_no_failure_after_the_revision_it_was_made_from(
    kv: MemoryStore, handlers: Handlers
) -> None:
    retry = SliceRetry(handlers)
    await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=2))
    before = await handlers.current_revision()  # what a late copy's client read
    failed = encode_record(SliceRecord(state=SliceState.FAILED, reason="load: boom"))
    await kv.put(InstanceKey("n1", Coordinates.parse(ECHO), 1).key, failed)
    late = await retry.retry(ECHO_ID, since=before)
    assert late.let_go == () and await kv.get(retry_key(ECHO_ID)) is None
    read = await handlers.current_revision()
    await kv.put(InstanceKey("n2", Coordinates.parse(ECHO), 2).key, failed)  # after the read
    first = await retry.retry(ECHO_ID, since=read)
    assert [i.node_id for i in first.let_go] == ["n1"]

    async def covers() -> int:
        found = await kv.get(retry_key(ECHO_ID))
        assert found is not None
        return decode_record(found.key, found.value, RetryRequest).covers

    assert await covers() == read
    everything = await retry.retry(ECHO_ID)  # asked now: n2's failure too
    assert [i.node_id for i in everything.let_go] == ["n1", "n2"] and await covers() > read
    mark = await covers()
    again = await retry.retry(ECHO_ID, since=read)  # a late copy after it: the mark never goes back
    assert [i.node_id for i in again.let_go] == ["n1"] and await covers() == mark


def test_the_retry_s_event() -> None:
    key = retry_key(ECHO_ID)
    value = encode_record(RetryRequest(requested_at=300.0, covers=7))
    kv = KeyValue(key=key, value=value, create_revision=8, mod_revision=8, version=1)
    (event,) = describe(Event(kind=EventKind.PUT, kv=kv, prev=None, revision=8))
    assert (event.kind, event.subject, event.artifact, event.timestamp) == (
        "retry_requested",
        ECHO_ID,
        ECHO_ID,
        300.0,
    )
    assert event.message == "org.example:echo retried: its failures are let go, their nodes tried again now"
