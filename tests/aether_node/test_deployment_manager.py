"""The NodeDeploymentManager, in process: the leader's commands (records in the memory store) become steps
on simulated slice processes, and every state is written back; crashes are restarted, then end FAILED;
a newer command wins; KV faults are checked and retried; a restart forgets the failures of the run before.
Each test takes `autojump_clock` (trio's virtual time)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from shell_support import MISSING, FakeSliceStore, instances, register
from trio.testing import MockClock

from aether_kv import LeaseNotFoundError, MemoryStore, OutcomeUnknownError, UnavailableError
from aether_node.core._coordinates import Coordinates
from aether_node.core._policies import RestartPolicy
from aether_node.core._records import SliceRecord, SliceState, decode_record, encode_record
from aether_node.core._schema import ENDPOINTS, InstanceKey, endpoint_key
from aether_node.runtime._deployment import LOADING_DELAY, LOADS_AT_ONCE, NodeDeploymentManager
from support import wait_until

KEY = InstanceKey("n1", Coordinates.parse("org.example:echo:1.0"), 0)
POLICY = RestartPolicy(max_restarts=3, window=60.0, initial=0.25, maximum=1.0)
SLOW = 2 * LOADING_DELAY  # a step that takes longer than a load may before it writes LOADING


@attrs.define
class Node:
    kv: MemoryStore
    store: FakeSliceStore
    manager: NodeDeploymentManager
    nursery: trio.Nursery

    async def command(self, state: SliceState, key: InstanceKey = KEY) -> None:
        """Write a command as the leader does (a new record, or a change of the current one)."""
        found = await self.kv.get(key.key)
        old = decode_record(key.key, found.value, SliceRecord) if found else SliceRecord(state=state)
        await self.kv.put(key.key, encode_record(attrs.evolve(old, state=state, command=None)))

    async def state(self, key: InstanceKey = KEY) -> SliceState | None:
        return getattr((await instances(self.kv)).get(key.key), "state", None)

    async def reaches(self, state: SliceState | None, key: InstanceKey = KEY) -> None:
        async def there() -> bool:
            return await self.state(key) is state

        await wait_until(there, timeout=60, what=f"{key.label} {state}")

    async def endpoints(self) -> list[str]:
        return [item.key for item in (await self.kv.range(ENDPOINTS)).kvs]


async def start_node(nursery: trio.Nursery, kv: MemoryStore, store: FakeSliceStore) -> Node:
    lease = await register(kv, "n1")
    manager = NodeDeploymentManager(
        kv, "n1", store, lease=lease, restart_policy=POLICY, clock=trio.current_time
    )
    await nursery.start(manager.run)
    return Node(kv, store, manager, nursery)


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with trio.open_nursery() as nursery:
        yield await start_node(nursery, MemoryStore(clock=trio.current_time), FakeSliceStore())
        nursery.cancel_scope.cancel()


@pytest.fixture
async def slow_node() -> AsyncIterator[Node]:
    """A node whose every step takes SLOW (a load says LOADING before it ends)."""
    async with trio.open_nursery() as nursery:
        yield await start_node(nursery, MemoryStore(clock=trio.current_time), FakeSliceStore(step_time=SLOW))
        nursery.cancel_scope.cancel()


async def test_activate_runs_the_instance_publishes_it_and_unload_removes_everything(
    autojump_clock: MockClock, node: Node
) -> None:
    await node.command(SliceState.ACTIVATE)
    await node.reaches(SliceState.ACTIVE)
    assert node.store.get(KEY).phase.value == "active"  # type: ignore[union-attr]
    endpoints = await node.endpoints()
    assert endpoints == [endpoint_key(KEY.coordinates, 0)]  # one record for the instance
    published = await node.kv.get(endpoints[0])
    assert published is not None and published.lease == node.manager.lease  # they go with the node
    await node.command(SliceState.UNLOAD)
    await node.reaches(None)
    assert node.store.get(KEY) is None
    assert await node.endpoints() == []


async def test_a_slice_that_cannot_be_installed_ends_failed_with_the_reason(
    autojump_clock: MockClock, node: Node
) -> None:
    node.store.broken.add(str(KEY.coordinates))
    await node.command(SliceState.ACTIVATE)
    await node.reaches(SliceState.FAILED)
    record = (await instances(node.kv))[KEY.key]
    assert MISSING in record.reason and record.reason.startswith("load")
    assert node.store.get(KEY) is None and await node.endpoints() == []


async def test_a_crashed_process_is_restarted_and_a_crash_loop_ends_failed(
    autojump_clock: MockClock, node: Node
) -> None:
    await node.command(SliceState.ACTIVATE)
    await node.reaches(SliceState.ACTIVE)
    node.store.crash(KEY)

    async def restarted() -> bool:
        instance = node.store.get(KEY)
        return instance is not None and instance.alive and await node.state() is SliceState.ACTIVE

    await wait_until(restarted, timeout=60, what="the instance restarted")
    assert node.store.loads == 2
    record = (await instances(node.kv))[KEY.key]  # what `slice status` shows: restarts, and how it died
    assert (record.restarts, record.last_exit, record.reason) == (1, "killed by signal 9", "")
    for _ in range(POLICY.max_restarts - 1):  # the max_restarts-th death within the window ends it
        await wait_until(restarted, timeout=60, what="the instance running again")
        node.store.crash(KEY)
    await node.reaches(SliceState.FAILED)
    record = (await instances(node.kv))[KEY.key]
    assert "crash loop" in record.reason and "killed by signal 9" in record.reason
    assert record.restarts == POLICY.max_restarts - 1  # (the last death started nothing again)
    assert node.store.get(KEY) is None


async def test_a_newer_command_wins_over_the_step_in_progress(
    autojump_clock: MockClock, slow_node: Node
) -> None:
    node = slow_node
    await node.command(SliceState.ACTIVATE)
    await node.reaches(SliceState.LOADING)
    await node.command(SliceState.UNLOAD)  # the leader changed its mind mid-load
    await node.reaches(None)
    assert node.store.get(KEY) is None


async def test_an_instance_that_dies_while_it_is_unloaded_is_gone_not_failed(
    autojump_clock: MockClock, slow_node: Node
) -> None:
    """Its process ends during the deactivation on the way to UNLOAD (the kernel ended it at a memory
    limit lowered under what it held; it crashed in its stop hook): what was asked, nothing running here,
    is what there is. The record was written FAILED, the UNLOAD with it gone, and it stayed so."""
    node = slow_node
    await node.command(SliceState.ACTIVATE)
    await node.reaches(SliceState.ACTIVE)
    await node.command(SliceState.UNLOAD)
    await trio.testing.wait_all_tasks_blocked()  # the deactivation under way (it takes SLOW)
    assert await node.state() is SliceState.DEACTIVATING
    node.store.crash(KEY)
    await node.reaches(None)
    assert node.store.get(KEY) is None and await node.endpoints() == []
    # the UNLOADING on the way out says that its stop failed and where its log is (the slice's author
    # saw nothing of it: the instance, and with it `aether slice logs`, was gone at once)
    said = []
    async for events in node.kv.watch(KEY.key, 1):
        said += [decode_record(KEY.key, e.kv.value, SliceRecord) for e in events if e.kind == "put"]
        if any(e.kind == "delete" for e in events):
            break
    (unloading,) = [r for r in said if r.state is SliceState.UNLOADING]
    assert unloading.reason.startswith("its stop failed on the way out: the slice process is gone"), unloading
    assert "; log: /nonexistent/" in unloading.reason, unloading


async def test_a_load_sends_start_with_it_and_a_command_mid_load_still_gets_the_start_hook_stopped(
    autojump_clock: MockClock, slow_node: Node
) -> None:
    """An activation right after the load sends START with LOAD (one exchange with the slice process):
    the activation then always follows, so that a command arriving meanwhile (UNLOAD) finds an ACTIVE
    instance and stops it (its stop hook) before unloading it, never one whose start hook ran alone."""
    node = slow_node
    await node.command(SliceState.ACTIVATE)
    await node.reaches(SliceState.LOADING)
    await node.command(SliceState.UNLOAD)
    await node.reaches(None)
    assert node.store.started_with_load == 1
    assert node.store.unloaded_started == []
    assert await node.endpoints() == []


@pytest.mark.parametrize(("error", "applied"), [(UnavailableError, False), (OutcomeUnknownError, True)])
async def test_a_state_write_that_fails_is_checked_and_retried(
    autojump_clock: MockClock, error: type[UnavailableError], applied: bool
) -> None:
    kv = MemoryStore(clock=trio.current_time)
    own = kv.replica(kv.address)  # the node's own view of the store: the faults are its alone
    async with trio.open_nursery() as nursery:
        node = await start_node(nursery, own, FakeSliceStore())
        own.fail_next(2, error=error, applied=applied, operations={"txn"})
        await node.command(SliceState.ACTIVATE)
        await attrs.evolve(node, kv=kv).reaches(SliceState.ACTIVE)
        nursery.cancel_scope.cancel()


async def history(kv: MemoryStore, key: InstanceKey = KEY) -> list[SliceRecord]:
    """The records put at `key` so far, oldest first (from the store's history)."""
    found: list[SliceRecord] = []
    last = (await kv.get(key.key)).mod_revision  # type: ignore[union-attr]
    async for events in kv.watch(key.key, 1):
        for event in events:
            if event.kind == "put" and event.kv.key == key.key:  # (a watch is of a prefix: 1 is 10's)
                found.append(decode_record(key.key, event.kv.value, SliceRecord))
        if events and events[-1].kv.mod_revision >= last:
            return found
    raise AssertionError("the watch ended")


async def test_an_activation_right_after_the_load_writes_no_activating_and_a_later_one_does(
    autojump_clock: MockClock, node: Node
) -> None:
    """A quick load writes no LOADING (the record says ACTIVATE, the leader's command, until ACTIVE: two
    writes fewer per instance placed than LOADING, ACTIVATING, ACTIVE). An activation of a loaded
    instance (after DEACTIVATE) still says ACTIVATING first."""
    await node.command(SliceState.ACTIVATE)
    await node.reaches(SliceState.ACTIVE)
    placed = await history(node.kv)
    assert [r.state for r in placed] == [SliceState.ACTIVATE, SliceState.ACTIVE]
    await node.command(SliceState.DEACTIVATE)
    await node.reaches(SliceState.LOADED)
    await node.command(SliceState.ACTIVATE)
    await node.reaches(SliceState.ACTIVE)
    assert [r.state for r in (await history(node.kv))[2:]] == [
        SliceState.DEACTIVATE,
        SliceState.DEACTIVATING,
        SliceState.LOADED,
        SliceState.ACTIVATE,
        SliceState.ACTIVATING,
        SliceState.ACTIVE,
    ]


async def test_a_load_that_takes_a_while_says_loading_once_it_has_taken_the_delay(
    autojump_clock: MockClock, slow_node: Node
) -> None:
    """LOADING (keeping the command ACTIVATE) is written once the load has run LOADING_DELAY, not
    before; then straight to ACTIVE."""
    node = slow_node
    await node.command(SliceState.ACTIVATE)
    asked = trio.current_time()
    await node.reaches(SliceState.LOADING)
    assert trio.current_time() - asked >= LOADING_DELAY
    await node.reaches(SliceState.ACTIVE)
    placed = await history(node.kv)
    assert [r.state for r in placed] == [SliceState.ACTIVATE, SliceState.LOADING, SliceState.ACTIVE]
    assert placed[1].command is SliceState.ACTIVATE


async def test_loads_begun_together_or_apart_each_say_loading_once_when_late_and_quick_ones_never(
    autojump_clock: MockClock, slow_node: Node
) -> None:
    """The node's one timer of loads: of slow loads begun together and later ones, each says LOADING once
    it has taken the delay; the quick loads between them, never (the timer skips a load that ended)."""
    node = slow_node
    slow = [InstanceKey("n1", KEY.coordinates, n) for n in range(4)]
    quick = [InstanceKey("n1", Coordinates.parse("org.example:quick:1.0"), n) for n in range(3)]
    for key in slow[:2]:
        await node.command(SliceState.ACTIVATE, key)
    await trio.sleep(LOADING_DELAY / 2)
    node.store.step_time = 0.0
    for key in quick:
        await node.command(SliceState.ACTIVATE, key)
    for key in quick:
        await node.reaches(SliceState.ACTIVE, key)
    node.store.step_time = SLOW
    for key in slow[2:]:
        await node.command(SliceState.ACTIVATE, key)
    for key in slow:
        await node.reaches(SliceState.ACTIVE, key)
    for key in slow:
        states = [r.state for r in await history(node.kv, key)]
        assert states == [SliceState.ACTIVATE, SliceState.LOADING, SliceState.ACTIVE], key.label
    for key in quick:
        assert [r.state for r in await history(node.kv, key)] == [SliceState.ACTIVATE, SliceState.ACTIVE]


async def test_a_node_carries_out_so_many_loads_at_once_and_one_waiting_its_turn_is_not_late(
    autojump_clock: MockClock,
) -> None:
    """Thousands of instances asked of a node at once: it loads LOADS_AT_ONCE at a time. Loads begun all
    together each took the time of all of them (they share the machine), so most ran past the delay and
    wrote LOADING too, a KV write and its watch deliveries on every node more per instance. A load's
    delay counts from its turn: here each turn's loads end within it, and none says LOADING."""
    count = 2 * LOADS_AT_ONCE
    store = FakeSliceStore(step_time=0.9 * LOADING_DELAY / LOADS_AT_ONCE, one_cpu=True)
    keys = [InstanceKey("n1", KEY.coordinates, n) for n in range(count)]
    async with trio.open_nursery() as nursery:
        node = await start_node(nursery, MemoryStore(clock=trio.current_time), store)
        for key in keys:
            await node.command(SliceState.ACTIVATE, key)

        async def all_active() -> bool:
            states = {record.state for record in (await instances(node.kv)).values()}
            return len(await instances(node.kv)) == count and states == {SliceState.ACTIVE}

        await wait_until(all_active, timeout=60, what=f"{count} instances ACTIVE")
        assert store.most_under_way == LOADS_AT_ONCE
        for key in keys:
            assert [r.state for r in await history(node.kv, key)] == [SliceState.ACTIVATE, SliceState.ACTIVE]
        nursery.cancel_scope.cancel()


async def test_a_version_whose_loads_hang_holds_back_no_load_of_another(autojump_clock: MockClock) -> None:
    """The turns are per slice version: more loads of one version than it has turns hang (an install or
    an import that never ends), and another slice's instance still loads and becomes ACTIVE (a
    replacement restoring its availability floor must not wait for another slice's load timeouts)."""
    stuck = Coordinates.parse("org.example:stuck:1.0")
    store = FakeSliceStore(hung={str(stuck)})
    async with trio.open_nursery() as nursery:
        node = await start_node(nursery, MemoryStore(clock=trio.current_time), store)
        for n in range(LOADS_AT_ONCE + 1):
            await node.command(SliceState.ACTIVATE, InstanceKey("n1", stuck, n))
        await wait_until(
            lambda: store.under_way == LOADS_AT_ONCE, timeout=60, what="the stuck version's turns all held"
        )
        await node.command(SliceState.ACTIVATE)
        await node.reaches(SliceState.ACTIVE)
        assert store.under_way == LOADS_AT_ONCE  # (its 65th still waits its turn)
        nursery.cancel_scope.cancel()


async def test_a_command_taken_in_as_the_timer_decides_to_say_loading_is_not_overwritten(
    autojump_clock: MockClock, slow_node: Node
) -> None:
    """The leader's UNLOAD comes in after the node's timer decided a slow load should say LOADING and
    before its write began: LOADING is not written over the command (it compared on the command's
    revision and won, and the instance ran on, the UNLOAD lost), and the UNLOAD is carried out."""
    node = slow_node
    say_loading = node.manager._say_loading

    async def command_in_between(load: Any) -> None:
        await node.command(SliceState.UNLOAD)
        await wait_until(
            lambda: load.slot.record is not None and load.slot.record.state is SliceState.UNLOAD,
            timeout=60,
            what="the worker's slot to take in the UNLOAD",
        )
        await say_loading(load)

    node.manager._say_loading = command_in_between  # type: ignore[method-assign]
    await node.command(SliceState.ACTIVATE)
    await node.reaches(None)
    assert node.store.get(KEY) is None


async def test_a_slow_load_that_fails_says_loading_then_failed(
    autojump_clock: MockClock, slow_node: Node
) -> None:
    """The LOADING written during a slow load that then fails does not stop FAILED from being written
    (it compares on the revision LOADING got); a quick failure goes from the command straight to FAILED."""
    kv = MemoryStore(clock=trio.current_time)
    async with trio.open_nursery() as nursery:
        node = await start_node(nursery, kv, FakeSliceStore(step_time=SLOW, broken={str(KEY.coordinates)}))
        await node.command(SliceState.ACTIVATE)
        await node.reaches(SliceState.FAILED)
        assert [r.state for r in await history(kv)] == [
            SliceState.ACTIVATE,
            SliceState.LOADING,
            SliceState.FAILED,
        ]
        nursery.cancel_scope.cancel()
    kv = MemoryStore(clock=trio.current_time)
    async with trio.open_nursery() as nursery:
        node = await start_node(nursery, kv, FakeSliceStore(broken={str(KEY.coordinates)}))
        await node.command(SliceState.ACTIVATE)
        await node.reaches(SliceState.FAILED)
        assert [r.state for r in await history(kv)] == [SliceState.ACTIVATE, SliceState.FAILED]
        nursery.cancel_scope.cancel()


async def test_a_restart_says_loading_with_its_reason_at_once_however_quick(
    autojump_clock: MockClock, node: Node
) -> None:
    """The record said ACTIVE when the process died: during the restart's load that would be false, and
    the restart's reason must show, so LOADING goes first, before the load."""
    await node.command(SliceState.ACTIVATE)
    await node.reaches(SliceState.ACTIVE)
    node.store.crash(KEY)
    await wait_until(lambda: node.store.loads == 2, what="the restart's load", timeout=60)
    await node.reaches(SliceState.ACTIVE)
    restarted = (await history(node.kv))[2:]
    assert [r.state for r in restarted] == [SliceState.LOADING, SliceState.ACTIVE]
    assert "restart 1 of 2 after the slice process died" in restarted[0].reason


async def test_a_dead_process_s_record_leaves_active_before_the_restart_s_backoff(
    autojump_clock: MockClock,
) -> None:
    """No process runs during the backoff before a restart (up to seconds): the record says LOADING, with
    the restart's reason, from the death on — never ACTIVE, which the leader would count as serving and
    as staying up (`[slices.update] min_ready_s`). It still works toward ACTIVE (its command), and the
    load writes no second LOADING."""
    kv = MemoryStore(clock=trio.current_time)
    slow_restarts = RestartPolicy(max_restarts=3, window=600.0, initial=100.0, maximum=100.0)
    async with trio.open_nursery() as nursery:
        lease = await register(kv, "n1")
        manager = NodeDeploymentManager(
            kv, "n1", FakeSliceStore(), lease=lease, restart_policy=slow_restarts, clock=trio.current_time
        )
        await nursery.start(manager.run)
        node = Node(kv, manager.store, manager, nursery)  # type: ignore[arg-type]
        await node.command(SliceState.ACTIVATE)
        await node.reaches(SliceState.ACTIVE)
        died = trio.current_time()
        node.store.crash(KEY)
        await node.reaches(SliceState.LOADING)
        assert trio.current_time() - died < 100.0 and node.store.loads == 1  # within the backoff, no load
        record = (await instances(kv))[KEY.key]
        assert "restart 1 of 2 after the slice process died" in record.reason
        assert record.intent is SliceState.ACTIVATE
        await wait_until(lambda: node.store.loads == 2, what="the restart's load", timeout=600)
        await node.reaches(SliceState.ACTIVE)
        assert [r.state for r in (await history(kv))[2:]] == [SliceState.LOADING, SliceState.ACTIVE]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("error", [UnavailableError, OutcomeUnknownError])
async def test_endpoints_that_fail_to_publish_for_a_moment_are_put_again(
    autojump_clock: MockClock, error: type[UnavailableError]
) -> None:
    """The puts are idempotent: a KV error on the way (an unknown outcome too) is tried again, and the
    instance becomes ACTIVE and routable instead of FAILED."""
    kv = MemoryStore(clock=trio.current_time)
    own = kv.replica(kv.address)
    async with trio.open_nursery() as nursery:
        node = await start_node(nursery, own, FakeSliceStore(step_time=SLOW))
        await node.command(SliceState.ACTIVATE)
        await attrs.evolve(node, kv=kv).reaches(SliceState.LOADING)
        own.fail_next(2, error=error, applied=error is OutcomeUnknownError, operations={"txn"})
        await attrs.evolve(node, kv=kv).reaches(SliceState.ACTIVE)
        assert await node.endpoints() == [endpoint_key(KEY.coordinates, 0)]
        nursery.cancel_scope.cancel()


async def test_after_a_restart_a_failure_of_the_run_before_is_forgotten_and_the_rest_resumes(
    autojump_clock: MockClock,
) -> None:
    kv = MemoryStore(clock=trio.current_time)
    other = InstanceKey("n1", Coordinates.parse("org.example:other:1.0"), 0)
    await kv.put(KEY.key, encode_record(SliceRecord(state=SliceState.FAILED, reason="load: boom")))
    await kv.put(other.key, encode_record(SliceRecord(state=SliceState.ACTIVE)))
    async with trio.open_nursery() as nursery:
        node = await start_node(nursery, kv, FakeSliceStore())
        await node.reaches(None)  # the FAILED record is gone: the leader places the work again

        async def running_again() -> bool:  # the record said ACTIVE all along: wait for the process
            instance = node.store.get(other)
            return instance is not None and instance.alive and await node.state(other) is SliceState.ACTIVE

        await wait_until(
            running_again, timeout=60, what=f"{other.label} running again"
        )  # nothing ran after the restart
        assert node.store.loads == 1  # only `other` ran: the FAILED one waits for the leader
        nursery.cancel_scope.cancel()


async def test_a_graceful_stop_stops_every_process_and_forgets_the_records(
    autojump_clock: MockClock, node: Node
) -> None:
    await node.command(SliceState.ACTIVATE)
    await node.reaches(SliceState.ACTIVE)
    node.manager.stop()
    await node.manager.withdraw_all()
    await node.store.close_all()
    await node.manager.forget_all()
    assert await instances(node.kv) == {}
    assert await node.endpoints() == []
    assert node.store.instances == {}


async def test_a_republish_on_a_lease_that_is_gone_raises_the_kv_error_itself(
    autojump_clock: MockClock, node: Node
) -> None:
    """The caller (the node's republishing task) retries on `except KVError`: an ExceptionGroup from the
    concurrent puts would pass it by and end the task (its restart then skipped the latest lease)."""
    await node.command(SliceState.ACTIVATE)
    await node.reaches(SliceState.ACTIVE)
    with pytest.raises(LeaseNotFoundError):
        await node.manager.republish(424242)  # never granted
    fresh = await node.kv.lease_grant(10.0)
    await node.manager.republish(fresh.lease)
    published = await node.kv.get((await node.endpoints())[0])
    assert published is not None and published.lease == fresh.lease


async def test_an_instance_whose_record_the_leader_deleted_is_stopped_and_withdrawn(
    autojump_clock: MockClock, node: Node
) -> None:
    """The leader forgets the records of a node it takes for gone (its lease lapsed) while the node goes
    on: the instance must stop and its endpoints go, though there is no record left to write a state to
    (found by the shell simulation: the worker tried DEACTIVATING against the deleted key, failed its
    compare and waited forever, the process running and its endpoints published)."""
    await node.command(SliceState.ACTIVATE)
    await node.reaches(SliceState.ACTIVE)
    assert await node.endpoints()
    await node.kv.delete(KEY.key)

    async def stopped() -> bool:
        return node.store.get(KEY) is None and not await node.endpoints()

    await wait_until(stopped, timeout=60, what="the instance stopped and its endpoints withdrawn")
    assert await node.state() is None  # nothing was written back for the forgotten instance


async def test_the_active_record_and_the_endpoints_are_one_commit(
    autojump_clock: MockClock, node: Node
) -> None:
    """An instance becomes ACTIVE and routable at once: the endpoint record goes in the transaction that
    writes ACTIVE (they were two commits in turn, a batch's round trip apart under load)."""
    await node.command(SliceState.ACTIVATE)
    await node.reaches(SliceState.ACTIVE)
    record = await node.kv.get(KEY.key)
    endpoint = await node.kv.get(endpoint_key(KEY.coordinates, 0))
    assert record is not None and endpoint is not None
    assert endpoint.mod_revision == record.mod_revision
    assert endpoint.lease == node.manager.lease


async def test_an_activation_whose_lease_lapsed_is_active_and_its_endpoints_follow_the_new_lease(
    autojump_clock: MockClock, slow_node: Node
) -> None:
    """The node's lease lapses during a load: the transaction of ACTIVE and the endpoints fails as a
    whole (nothing of it applied), the record is written alone, and the endpoints go on the lease the
    node registers next (its republish), never on the lapsed one."""
    node = slow_node
    await node.command(SliceState.ACTIVATE)
    await node.reaches(SliceState.LOADING)
    await node.kv.lease_revoke(node.manager.lease)
    await node.reaches(SliceState.ACTIVE)
    assert await node.endpoints() == []
    fresh = await node.kv.lease_grant(10.0)
    await node.manager.republish(fresh.lease)
    published = await node.kv.get(endpoint_key(KEY.coordinates, 0))
    assert published is not None and published.lease == fresh.lease


async def test_a_command_during_the_activation_leaves_the_instance_routable_once_active(
    autojump_clock: MockClock, slow_node: Node
) -> None:
    """The leader writes its command again while the instance loads: the pass's ACTIVE (with the
    endpoints) is not written over it, so the endpoints go on their own, and the next pass writes ACTIVE:
    the instance must end ACTIVE and routable, not ACTIVE with no endpoint."""
    node = slow_node
    await node.command(SliceState.ACTIVATE)
    await node.reaches(SliceState.LOADING)
    await node.command(SliceState.ACTIVATE)
    await node.reaches(SliceState.ACTIVE)
    assert await node.endpoints() == [endpoint_key(KEY.coordinates, 0)]
