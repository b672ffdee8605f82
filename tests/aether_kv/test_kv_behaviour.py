"""One behaviour, every store: the same tests run on the in-process Raft replica (`open_store`, one real
replica) and on `MemoryStore`, so the memory store the shell's unit tests use behaves like the real one.
The network client is held to the same interface (`KV`) and to these behaviours by tests/integration."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from aether_kv import (
    KV,
    CompactedError,
    Compare,
    CompareOp,
    CompareTarget,
    EventKind,
    InvalidRequestError,
    KVClient,
    KVStore,
    KVWatch,
    LeaseNotFoundError,
    MemoryStore,
    OutcomeUnknownError,
    Put,
    RaftConfig,
    UnavailableError,
    open_store,
    wait_for_leader,
)
from aether_kv._ports import free_port
from support import wait_until

HISTORY = 10


@attrs.define
class Backend:
    kv: KV
    #: let `seconds` pass for the store's lease clock (real time for a replica; a fake clock's step for
    #: the memory store, whose due leases then expire)
    advance: Callable[[float], Awaitable[None]]


@pytest.fixture(params=["memory", "replica"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "memory":
        now = [1_000_000.0]
        store = MemoryStore(clock=lambda: now[0], history_events=HISTORY)

        async def step(seconds: float) -> None:
            now[0] += seconds
            store.expire_due_leases()
            await trio.lowlevel.checkpoint()

        yield Backend(store, step)
        return
    address = f"127.0.0.1:{free_port()}"
    config = RaftConfig(
        raft_address=address,
        peers=(address,),
        data_dir=tmp_path / "r",
        secret="a-test-secret-of-some-length",
        history_events=HISTORY,
        durable=False,
    )
    async with open_store(config, lease_grace=0.0) as replica:
        await wait_for_leader(replica)
        yield Backend(replica, trio.sleep)


def test_every_store_satisfies_the_interface() -> None:
    for cls in (KVStore, KVClient, MemoryStore):
        missing = [name for name in dir(KV) if not name.startswith("_") and not hasattr(cls, name)]
        assert not missing, f"{cls.__name__} lacks {missing}"
    assert isinstance(MemoryStore(), KV)
    assert isinstance(MemoryStore().watch("a/"), KVWatch)


async def test_put_get_range_delete(backend: Backend) -> None:
    kv = backend.kv
    first = await kv.put("app/a", b"1")
    await kv.put("app/b", b"2")
    await kv.put("other", b"3")
    again = await kv.put("app/a", b"4")
    assert again.revision > first.revision and again.prev is not None and again.prev.value == b"1"
    found = await kv.get("app/a", linearizable=True)
    assert found is not None and (found.value, found.version, found.create_revision) == (
        b"4",
        2,
        first.revision,
    )
    listing = await kv.range("app/")
    assert [(x.key, x.value) for x in listing.kvs] == [("app/a", b"4"), ("app/b", b"2")]
    assert (await kv.range("app/", limit=1)).more
    assert (await kv.delete_prefix("app/")).deleted == 2
    assert (await kv.delete("other")).deleted == 1
    assert (await kv.range("")).kvs == ()
    assert (await kv.status()).keys == 0


async def test_compare_and_swap_has_one_winner(backend: Backend) -> None:
    kv = backend.kv
    written = await kv.put("k", b"v0")

    async def swap(value: bytes) -> bool:
        unchanged = Compare(
            key="k", target=CompareTarget.MOD_REVISION, op=CompareOp.EQ, operand=written.revision
        )
        return (await kv.txn([unchanged], [Put(key="k", value=value)])).succeeded

    outcomes = [await swap(b"a"), await swap(b"b")]
    assert outcomes == [True, False]
    assert (await kv.get("k")).value == b"a"  # type: ignore[union-attr]


async def test_bad_input_is_refused_and_changes_nothing(backend: Backend) -> None:
    kv = backend.kv
    before = (await kv.status()).revision
    with pytest.raises(InvalidRequestError, match="key"):
        await kv.put("", b"x")
    with pytest.raises(InvalidRequestError, match="ttl"):
        await kv.lease_grant(-1)
    with pytest.raises(LeaseNotFoundError):
        await kv.put("k", b"x", lease=999)
    for start in (-5, 10**30):
        with pytest.raises(InvalidRequestError, match=r"start_revision: must be a revision from 0"):
            async with kv.watch("k", start) as watch:
                await watch.__anext__()
    assert (await kv.status()).revision == before


async def test_watch_delivers_every_event_once_in_order(backend: Backend) -> None:
    kv = backend.kv
    start = (await kv.put("w/0", b"0")).revision
    watch = kv.watch("w/", start)
    await kv.put("elsewhere", b"x")
    await kv.put("w/1", b"1")
    await kv.delete("w/0")
    seen = []
    with trio.fail_after(5):
        async for events in watch:
            seen += [(e.kind, e.kv.key) for e in events]
            if len(seen) == 3:
                break
    await watch.aclose()
    assert seen == [(EventKind.PUT, "w/0"), (EventKind.PUT, "w/1"), (EventKind.DELETE, "w/0")]


async def test_a_watch_behind_the_history_raises_compacted(backend: Backend) -> None:
    kv = backend.kv
    for i in range(HISTORY + 5):
        await kv.put(f"c/{i}", b"x")
    with trio.fail_after(5), pytest.raises(CompactedError):
        await kv.watch("c/", 1).__anext__()


async def test_an_expired_lease_takes_its_keys_and_a_kept_one_does_not(backend: Backend) -> None:
    kv = backend.kv
    kept, lapsing = (await kv.lease_grant(2.0)).lease, (await kv.lease_grant(0.5)).lease
    await kv.put("l/kept", b"k", lease=kept)
    await kv.put("l/lapsing", b"l", lease=lapsing)
    watch = kv.watch("l/")

    async def lapsed() -> bool:
        await kv.lease_keepalive(kept)
        await backend.advance(0.3)
        return await kv.get("l/lapsing") is None

    await wait_until(lapsed, timeout=10, what="the lease to expire", interval=0.01)
    with trio.fail_after(5):
        events = await watch.__anext__()
    assert [(e.kind, e.kv.key) for e in events] == [(EventKind.DELETE, "l/lapsing")]
    assert await kv.get("l/kept") is not None
    with pytest.raises(LeaseNotFoundError):
        await kv.lease_keepalive(lapsing)
    assert (await kv.lease_revoke(kept)).deleted == 1


# ---------------------------------------------------------------- the memory store's own fault hooks


async def test_injected_faults_fail_the_next_calls_then_stop() -> None:
    kv = MemoryStore()
    kv.fail_next(2, operations={"put"})
    for _ in range(2):
        with pytest.raises(UnavailableError):
            await kv.put("k", b"x")
    assert await kv.get("k") is None  # reads were not aimed at, and nothing was applied
    await kv.put("k", b"x")
    kv.fail_next(error=OutcomeUnknownError, applied=True)
    with pytest.raises(OutcomeUnknownError):
        await kv.put("k", b"y")
    assert (await kv.get("k")).value == b"y"  # type: ignore[union-attr]  # applied, answer lost


async def test_without_a_leader_writes_are_unavailable_and_views_agree_on_who_leads() -> None:
    first = MemoryStore(address="a")
    second = first.replica("b")
    assert (await first.status()).is_leader and not (await second.status()).is_leader
    first.set_leader(None)
    with pytest.raises(UnavailableError):
        await second.put("k", b"x")
    assert await second.get("k") is None  # a serializable read still answers
    first.set_leader("b")
    status = await second.status()
    assert status.is_leader and status.term == 3
    await second.put("k", b"x")
    assert (await first.get("k")).value == b"x"  # type: ignore[union-attr]


async def test_a_status_wait_answers_at_once_when_the_status_differs_and_after_max_wait_when_not(
    backend: Backend,
) -> None:
    now = await backend.kv.status()
    differs = await backend.kv.wait_status_change(not now.is_leader, now.term, max_wait=30)
    assert (differs.is_leader, differs.term) == (now.is_leader, now.term)
    with trio.fail_after(10):  # nothing changes: it answers after max_wait, as it is
        same = await backend.kv.wait_status_change(now.is_leader, now.term, max_wait=0.2)
    assert (same.is_leader, same.term) == (now.is_leader, now.term)


async def test_a_status_wait_wakes_when_another_view_takes_the_lead() -> None:
    first = MemoryStore(address="a")
    second = first.replica("b")
    before = await second.status()
    answers: list[object] = []

    async def wait() -> None:
        answers.append(await second.wait_status_change(before.is_leader, before.term, max_wait=3600))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            assert answers == []
            first.set_leader("b")
    [after] = answers
    assert after.is_leader and after.term == before.term + 1  # type: ignore[attr-defined]


async def test_a_fault_hook_names_a_bad_operation_clearly() -> None:
    with pytest.raises(InvalidRequestError, match=r"no such operation.*'gett'"):
        MemoryStore().fail_next(operations={"gett"})


async def test_a_delay_applies_nothing_if_the_caller_gives_up() -> None:
    kv = MemoryStore()
    kv.latency = 10.0
    with trio.move_on_after(0.01):
        await kv.put("k", b"x")
    kv.latency = 0.0
    assert await kv.get("k") is None


async def test_expire_lease_and_compact_hooks() -> None:
    kv = MemoryStore()
    lease = (await kv.lease_grant(60)).lease
    await kv.put("k", b"x", lease=lease)
    assert kv.expire_lease(lease).deleted == 1
    assert await kv.get("k") is None
    kv.compact()
    with pytest.raises(CompactedError):
        await kv.watch("", 1).__anext__()


async def test_a_memory_watch_wakes_only_for_its_prefix_and_for_a_compaction() -> None:
    kv = MemoryStore()
    watch = kv.watch("w/")
    woken: list[float] = []  # task steps of the watching task, counted by an instrument

    class Steps(trio.abc.Instrument):
        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            if task is watcher:
                woken.append(trio.current_time())

    async def follow(task_status: trio.TaskStatus[trio.lowlevel.Task]) -> None:
        task_status.started(trio.lowlevel.current_task())
        with pytest.raises(CompactedError):
            async for _ in watch:
                pass

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            watcher = await nursery.start(follow)
            await trio.testing.wait_all_tasks_blocked()
            trio.lowlevel.add_instrument(Steps())
            for i in range(50):  # changes elsewhere: the watch sleeps on
                await kv.put(f"elsewhere/{i}", b"x")
            await trio.testing.wait_all_tasks_blocked()
            assert woken == []
            kv.compact()  # it must look: its next revision is gone
    assert woken
