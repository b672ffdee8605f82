"""The ClusterDeploymentManager, in process, against the memory store on trio's virtual clock (each test
takes `autojump_clock`: pytest-trio runs a test on a clock only if the test itself asks for it): it claims
the leadership key, writes the planner's actions as fenced transactions, stops when deposed, cannot write
once another leader has claimed, and rides out KV faults."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sized

import attrs
import pytest
import trio
from shell_support import apply, hold, instances, register
from trio.testing import MockClock

from aether_kv import KeyValue, MemoryStore, OutcomeUnknownError, Put, UnavailableError
from aether_node.control._cluster_manager import (
    ClusterDeploymentManager,
    InstanceDecoder,
    LeadershipMonitor,
    placements,
    removals,
)
from aether_node.control._reconcile import CreateInstance, RemoveInstance
from aether_node.control._strategies import command
from aether_node.core._blueprint import Blueprint, Resources, SliceSpec
from aether_node.core._coordinates import Coordinates
from aether_node.core._records import (
    LeaderClaim,
    RolloutPhase,
    RolloutRecord,
    SliceRecord,
    SliceState,
    decode_record,
    encode_record,
)
from aether_node.core._schema import BLUEPRINTS, LEADER_KEY, PROBLEMS_PREFIX, SLICES, rollout_key
from aether_node.core._update_spec import UpdateSpec, UpdateStrategy
from aether_node.observe._metrics import NodeMetrics
from support import wait_until

ECHO = "org.example:echo:1.0"


@pytest.fixture
def kv() -> MemoryStore:
    return MemoryStore(clock=trio.current_time, address="n1")


async def lead(
    nursery: trio.Nursery, kv: MemoryStore, node_id: str = "n1", *, metrics: NodeMetrics | None = None
) -> ClusterDeploymentManager:
    leadership = LeadershipMonitor(kv, period=0.1)
    manager = ClusterDeploymentManager(kv, node_id, interval=1.0, clock=trio.current_time, metrics=metrics)
    nursery.start_soon(leadership.run)
    nursery.start_soon(manager.run, leadership)
    return manager


def passes(metrics: NodeMetrics) -> float:
    """How many reconcile passes the manager has run (`aether_reconcile_runs_total`)."""
    return metrics.registry.get_sample_value("aether_reconcile_runs_total") or 0.0


async def claimed_by(kv: MemoryStore, node_id: str) -> bool:
    found = await kv.get(LEADER_KEY)
    return found is not None and decode_record(LEADER_KEY, found.value, LeaderClaim).node_id == node_id


async def test_the_leader_claims_and_places_what_the_blueprint_asks(
    autojump_clock: MockClock, kv: MemoryStore
) -> None:
    for node_id in ("n1", "n2", "n3"):
        await register(kv, node_id)
    await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=3))
    async with trio.open_nursery() as nursery:
        await lead(nursery, kv)
        await wait_until(lambda: claimed_by(kv, "n1"), timeout=60, what="the leader's claim")

        async def placed() -> bool:
            return len(await instances(kv)) == 3

        await wait_until(placed, timeout=60, what="three instances placed")
        records = await instances(kv)
        assert {key.split("/")[1] for key in records} == {"n1", "n2", "n3"}  # round robin: one per node
        assert {r.state for r in records.values()} == {SliceState.ACTIVATE}
        nursery.cancel_scope.cancel()


async def test_the_leader_removes_a_deleted_blueprint_s_instances_in_one_line_of_log(
    autojump_clock: MockClock, kv: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    for node_id in ("n1", "n2", "n3"):
        await register(kv, node_id)
    await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=3))
    caplog.set_level("INFO", logger="aether_node.cluster")
    async with trio.open_nursery() as nursery:
        await lead(nursery, kv)

        async def in_state(state: SliceState) -> bool:
            found = await instances(kv)
            return len(found) == 3 and {r.state for r in found.values()} == {state}

        await wait_until(lambda: in_state(SliceState.ACTIVATE), timeout=60, what="three instances placed")
        placed = await instances(kv)
        await kv.delete(BLUEPRINTS + "demo")
        await wait_until(lambda: in_state(SliceState.UNLOAD), timeout=60, what="three UNLOAD commands")
        unloaded = await instances(kv)
        assert {
            key: attrs.evolve(r, state=SliceState.ACTIVATE, reason="", timestamp=0)
            for key, r in unloaded.items()
        } == {
            key: attrs.evolve(r, reason="", timestamp=0) for key, r in placed.items()
        }  # the command only: the record as it was otherwise
        assert {r.reason for r in unloaded.values()} == {"not in any blueprint"}
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("removing")]
        assert lines == [f"removing 3 instances of {ECHO} (n1 1, n2 1, n3 1): not in any blueprint"]
        nursery.cancel_scope.cancel()


class ChangedInBetween(MemoryStore):
    """The memory store, where an operator's blueprint write (`change`) lands just before the first
    transaction that would write an UNLOAD: after the leader planned the removal, before it is written."""

    change: tuple[str, bytes] | None = None
    fired = False

    async def txn(self, compares, success=(), failure=()):  # type: ignore[no-untyped-def]
        unload = any(
            isinstance(op, Put)
            and op.key.startswith(SLICES)
            and decode_record(op.key, op.value, SliceRecord).state is SliceState.UNLOAD
            for op in success
        )
        if unload and self.change is not None and not self.fired:
            self.fired = True
            await self.put(*self.change)
        return await super().txn(compares, success, failure)


async def test_a_removal_planned_for_a_blueprint_changed_before_it_is_written_is_not_written(
    autojump_clock: MockClock,
) -> None:
    """A scale-down from 2 to 1, and the scale back to 2 lands between the leader's plan and its write:
    the UNLOAD compares the blueprint's revision the plan read, fails, and the next pass (on the new
    blueprint) removes nothing. Before, the instance was removed for nothing (and with an upgrade
    asking a floor, an old version could go below it)."""
    kv = ChangedInBetween(clock=trio.current_time, address="n1")
    await register(kv, "n1")
    two = SliceSpec(artifact=ECHO, instances=2)
    await apply(kv, "demo", two)
    metrics = NodeMetrics()
    async with trio.open_nursery() as nursery:
        await lead(nursery, kv, metrics=metrics)

        async def placed() -> dict[str, SliceRecord]:
            found = await instances(kv)
            return found if len(found) == 2 else {}

        for key in await wait_until(placed, timeout=60, what="two instances placed"):
            await kv.put(key, encode_record(SliceRecord(state=SliceState.ACTIVE)))  # as their node would
        kv.change = (BLUEPRINTS + "demo", encode_record(Blueprint(name="demo", slices=(two,))))
        await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=1))

        async def fired() -> bool:
            return kv.fired

        async def passes_run() -> float:
            return passes(metrics)

        await wait_until(fired, timeout=60, what="the scale-up in between")
        before = passes(metrics)
        await wait_until(passes_run, until=lambda n: n >= before + 3, timeout=60, what="three more passes")
        assert {r.state for r in (await instances(kv)).values()} == {SliceState.ACTIVE}
        nursery.cancel_scope.cancel()


async def test_a_deposed_leader_stops_and_its_fenced_writes_fail(
    autojump_clock: MockClock, kv: MemoryStore
) -> None:
    await register(kv, "n1")
    metrics = NodeMetrics()
    async with trio.open_nursery() as nursery:
        await lead(nursery, kv, metrics=metrics)
        await wait_until(lambda: claimed_by(kv, "n1"), timeout=60, what="the leader's claim")
        # Another node claims the cluster while this one still believes it leads (its Raft status lags):
        # every write of the old leader compares the claim's revision, so none goes through.
        other = LeaderClaim(node_id="n9", since=trio.current_time(), term=7)
        await kv.put(LEADER_KEY, encode_record(other))
        await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=2))
        before = passes(metrics)

        async def planned_on_it() -> bool:  # passes that saw the blueprint (and tried to place it)
            return passes(metrics) >= before + 5

        await wait_until(planned_on_it, timeout=60, what="five reconcile passes after the blueprint")
        assert await instances(kv) == {}
        assert (await kv.range(PROBLEMS_PREFIX)).kvs == ()  # nor any problem: "no room for 2" is fenced
        nursery.cancel_scope.cancel()


async def test_a_leader_that_steps_down_stops_reconciling_and_the_next_one_takes_over(
    autojump_clock: MockClock, kv: MemoryStore
) -> None:
    other = kv.replica("n2")
    await register(kv, "n1")
    await register(kv, "n2")
    async with trio.open_nursery() as nursery:
        await lead(nursery, kv, "n1")
        await lead(nursery, other, "n2")
        await wait_until(lambda: claimed_by(kv, "n1"), timeout=60, what="n1's claim")
        kv.set_leader("n2")
        await wait_until(lambda: claimed_by(kv, "n2"), timeout=60, what="n2's claim")
        await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=2))

        async def placed() -> bool:
            return len(await instances(kv)) == 2

        await wait_until(placed, timeout=60, what="the new leader places the instances")
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("error", [UnavailableError, OutcomeUnknownError])
async def test_kv_faults_delay_reconciliation_but_never_end_it(
    autojump_clock: MockClock, kv: MemoryStore, error: type[UnavailableError]
) -> None:
    for node_id in ("n1", "n2"):
        await register(kv, node_id)
    await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=2))
    own = kv.replica("n1")  # the leader's own view of the store: the faults are its alone
    own.fail_next(5, error=error, operations={"txn", "range", "put"})
    async with trio.open_nursery() as nursery:
        await lead(nursery, own)

        async def placed() -> bool:
            return len(await instances(kv)) == 2

        await wait_until(placed, timeout=60, what="the instances placed once the faults pass")
        nursery.cancel_scope.cancel()


async def test_an_unplaceable_slice_is_recorded_as_a_problem_and_cleared_when_it_fits(
    autojump_clock: MockClock, kv: MemoryStore
) -> None:
    await register(kv, "n1", memory_mib=256)
    big = SliceSpec(artifact=ECHO, instances=1, resources=Resources(memory_mib=1024))
    await apply(kv, "demo", big)
    async with trio.open_nursery() as nursery:
        await lead(nursery, kv)

        async def problem() -> str:
            found = await kv.get(PROBLEMS_PREFIX + "org.example:echo")
            return found.value.decode() if found else ""

        async def has_problem() -> bool:
            return bool(await problem())

        await wait_until(has_problem, timeout=60, what="the problem recorded")
        await register(kv, "n2", memory_mib=2048)

        async def cleared() -> bool:
            return not await problem() and len(await instances(kv)) == 1

        await wait_until(
            cleared, timeout=60, what="the instance placed on the new node and the problem cleared"
        )
        assert [key.split("/")[1] for key in await instances(kv)] == ["n2"]
        nursery.cancel_scope.cancel()


async def set_state(kv: MemoryStore, version: str, state: SliceState) -> None:
    """Play the nodes' part: every instance of `version` (as the leader wrote it) reaches `state`."""
    for key, record in (await instances(kv)).items():
        if key.split("/")[2].endswith(f":{version}") and record.state is SliceState.ACTIVATE:
            await kv.put(key, encode_record(attrs.evolve(record, state=state)))


async def rollout(kv: MemoryStore) -> RolloutRecord | None:
    found = await kv.get(rollout_key("org.example:echo"))
    return None if found is None else decode_record(found.key, found.value, RolloutRecord)


async def test_the_leader_removes_an_old_instance_once_the_new_one_has_stayed_active_for_min_ready_s(
    autojump_clock: MockClock, kv: MemoryStore
) -> None:
    """The leader times each new instance from when it saw it ACTIVE, by its own clock; a new instance
    whose process died (LOADING) and came back starts again. Until then the old instances all stay and
    the slice's problem says why."""
    for node_id in ("n1", "n2", "n3"):
        await register(kv, node_id)
    await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=3))
    async with trio.open_nursery() as nursery:
        await lead(nursery, kv)
        await wait_until(lambda: _eq(_len(instances(kv)), 3), timeout=60, what="the old set placed")
        await set_state(kv, "1.0", SliceState.ACTIVE)
        new = SliceSpec(artifact="org.example:echo:2.0", instances=3, update=UpdateSpec(min_ready_s=5.0))
        await apply(kv, "demo", new)
        await wait_until(lambda: _eq(_len(instances(kv)), 4), timeout=60, what="the first new instance")
        (fresh,) = [k for k in await instances(kv) if ":2.0/" in k]

        async def removing() -> list[str]:
            return sorted(k for k, r in (await instances(kv)).items() if r.state is SliceState.UNLOAD)

        async def put(state: SliceState) -> None:
            record = (await instances(kv))[fresh]
            await kv.put(fresh, encode_record(attrs.evolve(record, state=state)))

        await put(SliceState.ACTIVE)
        await hold(4.0)
        assert await removing() == []
        problem = await kv.get(PROBLEMS_PREFIX + "org.example:echo")
        assert problem is not None and problem.value.decode() == (
            "waiting for 1 new instance to stay ACTIVE for 5 s (min_ready_s) before an ACTIVE instance is"
            " removed for it"
        )
        await put(SliceState.LOADING)  # its process died: the node restarts it
        await hold(0.5)
        await put(SliceState.ACTIVE)
        await hold(4.0)  # 8.5 s after it first was ACTIVE, 4 s after it came back
        assert await removing() == []
        await wait_until(removing, timeout=60, what="an old instance removed once the new one settled")
        (old,) = await removing()
        assert ":1.0/" in old
        nursery.cancel_scope.cancel()


async def test_the_leader_runs_a_blue_green_rollout_through_its_record(
    autojump_clock: MockClock, kv: MemoryStore
) -> None:
    for node_id in ("n1", "n2"):
        await register(kv, node_id)
    blue_green = UpdateSpec(strategy=UpdateStrategy.BLUE_GREEN, grace_s=30.0)
    await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=2, update=blue_green))
    async with trio.open_nursery() as nursery:
        await lead(nursery, kv)

        async def count(version: str, state: SliceState | None = None) -> int:
            return sum(
                key.split("/")[2].endswith(f":{version}") and (state is None or r.state is state)
                for key, r in (await instances(kv)).items()
            )

        await wait_until(lambda: _eq(count("1.0"), 2), timeout=60, what="the first version placed")
        await set_state(kv, "1.0", SliceState.ACTIVE)
        assert await rollout(kv) is None  # a first deployment is no rollout

        await apply(kv, "demo", SliceSpec(artifact="org.example:echo:2.0", instances=2, update=blue_green))
        await wait_until(
            lambda: _eq(count("2.0"), 2), timeout=60, what="the full new set placed beside the old one"
        )
        record = await rollout(kv)
        assert (record.phase, record.share, record.stable, record.candidate) == (
            RolloutPhase.DEPLOYING,
            0,
            "1.0",
            "2.0",
        )
        assert await count("1.0", SliceState.ACTIVE) == 2

        await set_state(kv, "2.0", SliceState.ACTIVE)

        async def switched() -> bool:
            found = await rollout(kv)
            return found is not None and found.phase is RolloutPhase.SWITCHED

        await wait_until(switched, timeout=60, what="the switch")
        assert (await rollout(kv)).share == 100
        assert await count("1.0", SliceState.ACTIVE) == 2  # kept for the grace period

        async def old_removed() -> bool:
            return await count("1.0", SliceState.UNLOAD) == 2

        await wait_until(old_removed, timeout=60, what="the old set removed after the grace period")
        for key, record in (await instances(kv)).items():
            if record.state is SliceState.UNLOAD:
                await kv.delete(key)  # the nodes unload and delete them
        await wait_until(lambda: _eq(rollout(kv), None), timeout=60, what="the record forgotten")
        nursery.cancel_scope.cancel()


async def test_the_leader_switches_a_blue_green_set_only_once_it_has_stayed_active_for_min_ready_s(
    autojump_clock: MockClock, kv: MemoryStore
) -> None:
    """The leader times the new set by its own clock as for removals: a new instance whose process died
    (LOADING) and came back starts again; until every one has stayed ACTIVE 5 s the old set keeps every
    call, and the record says why."""
    for node_id in ("n1", "n2"):
        await register(kv, node_id)
    blue_green = UpdateSpec(strategy=UpdateStrategy.BLUE_GREEN, grace_s=30.0, min_ready_s=5.0)
    await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=2, update=blue_green))
    async with trio.open_nursery() as nursery:
        await lead(nursery, kv)
        await wait_until(lambda: _eq(_len(instances(kv)), 2), timeout=60, what="the first version placed")
        await set_state(kv, "1.0", SliceState.ACTIVE)
        await apply(kv, "demo", SliceSpec(artifact="org.example:echo:2.0", instances=2, update=blue_green))
        await wait_until(lambda: _eq(_len(instances(kv)), 4), timeout=60, what="the new set placed")
        await set_state(kv, "2.0", SliceState.ACTIVE)
        await hold(4.0)
        waiting = await rollout(kv)
        assert (waiting.phase, waiting.share) == (RolloutPhase.DEPLOYING, 0)
        assert waiting.reason == (
            "bringing up the new set (2 instances) beside the old one; waiting for 2 new instances to stay"
            " ACTIVE for 5 s (min_ready_s) before the switch"
        )
        restarted = sorted(k for k in await instances(kv) if ":2.0/" in k)[0]

        async def put(state: SliceState) -> None:
            record = (await instances(kv))[restarted]
            await kv.put(restarted, encode_record(attrs.evolve(record, state=state)))

        await put(SliceState.LOADING)  # its process died: the node restarts it
        await hold(0.5)
        await put(SliceState.ACTIVE)
        await hold(4.0)  # 8.5 s after the set was ACTIVE, 4 s after the restarted one came back
        assert (await rollout(kv)).phase is RolloutPhase.DEPLOYING

        async def switched() -> bool:
            found = await rollout(kv)
            return found is not None and found.phase is RolloutPhase.SWITCHED

        await wait_until(switched, timeout=60, what="the switch once the restarted instance settled")
        assert (await rollout(kv)).share == 100
        nursery.cancel_scope.cancel()


async def test_an_operator_abort_is_carried_out_and_the_new_set_goes(
    autojump_clock: MockClock, kv: MemoryStore
) -> None:
    await register(kv, "n1")
    canary = UpdateSpec(strategy=UpdateStrategy.CANARY, steps=(50, 100))
    await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=2, update=canary))
    async with trio.open_nursery() as nursery:
        await lead(nursery, kv)
        await wait_until(lambda: _eq(_len(instances(kv)), 2), timeout=60, what="the first version placed")
        await set_state(kv, "1.0", SliceState.ACTIVE)
        await apply(kv, "demo", SliceSpec(artifact="org.example:echo:2.0", instances=2, update=canary))
        await wait_until(
            lambda: _eq(_len(instances(kv)), 3), timeout=60, what="one canary instance (50 % of 2)"
        )
        await set_state(kv, "2.0", SliceState.ACTIVE)

        async def observing() -> bool:
            found = await rollout(kv)
            return found is not None and found.phase is RolloutPhase.OBSERVING

        await wait_until(observing, timeout=60, what="the canary step observed")
        assert (await rollout(kv)).share == 50
        found = await kv.get(rollout_key("org.example:echo"))
        aborted = command(await rollout(kv), "abort", now=trio.current_time(), artifact_id="org.example:echo")
        await kv.put(found.key, encode_record(aborted))

        async def new_removed() -> bool:
            return [r.state for k, r in (await instances(kv)).items() if ":2.0/" in k] == [SliceState.UNLOAD]

        await wait_until(new_removed, timeout=60, what="the canary instance removed")
        assert (await rollout(kv)).phase is RolloutPhase.ABORTED
        nursery.cancel_scope.cancel()


async def test_a_node_lost_mid_canary_has_its_stable_instance_replaced_and_the_canary_holds_its_step(
    autojump_clock: MockClock, kv: MemoryStore
) -> None:
    leases = {node_id: await register(kv, node_id) for node_id in ("n1", "n2", "n3")}
    canary = UpdateSpec(strategy=UpdateStrategy.CANARY, steps=(50, 100), step_window_s=3600.0)
    await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=2, update=canary))
    async with trio.open_nursery() as nursery:
        await lead(nursery, kv)
        await wait_until(lambda: _eq(_len(instances(kv)), 2), timeout=60, what="the first version placed")
        await set_state(kv, "1.0", SliceState.ACTIVE)
        await apply(kv, "demo", SliceSpec(artifact="org.example:echo:2.0", instances=2, update=canary))
        await wait_until(lambda: _eq(_len(instances(kv)), 3), timeout=60, what="one canary instance")
        await set_state(kv, "2.0", SliceState.ACTIVE)

        async def phase() -> RolloutPhase | None:
            found = await rollout(kv)
            return None if found is None else found.phase

        await wait_until(lambda: _eq(phase(), RolloutPhase.OBSERVING), timeout=60, what="the step observed")
        keys = [key.split("/") for key in await instances(kv)]
        stable_only = {k[1] for k in keys if k[2].endswith(":1.0")} - {
            k[1] for k in keys if k[2].endswith(":2.0")
        }
        lost = min(stable_only)
        await kv.lease_revoke(leases[lost])  # its registration goes with its lease: the node is lost

        async def stable_replaced() -> list[str]:
            return sorted(
                key.split("/")[1]
                for key, record in (await instances(kv)).items()
                if key.split("/")[2].endswith(":1.0") and record.state is not SliceState.UNLOAD
            )

        on = await wait_until(
            stable_replaced,
            until=lambda nodes: len(nodes) == 2 and lost not in nodes,
            timeout=60,
            what=f"the stable instance lost with {lost} replaced on a survivor",
        )
        assert set(on) <= {"n1", "n2", "n3"} - {lost}
        assert await phase() is RolloutPhase.OBSERVING  # not promoted: the canary holds its step
        nursery.cancel_scope.cancel()


async def _eq(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def _len(value: Awaitable[Sized]) -> int:
    return len(await value)


def growing_readings(failing: bool) -> Callable[[object], Awaitable[dict[str, object]]]:
    """A stand-in for the nodes' calls per version (`ClusterInvoker.version_readings`), at the seam the
    manager takes: counters that grow with the clock, 10 calls/s per version, fast; the candidate fails
    every other call if `failing`."""

    async def read(nodes: object) -> dict[str, object]:
        calls = int(trio.current_time() * 10)

        def counts(errors: int) -> dict[str, object]:
            return {"calls": calls, "errors": errors, "buckets": [[0.01, calls], [1.0, calls]]}

        snapshot = {"1.0": counts(0), "2.0": counts(calls // 2 if failing else 0)}
        return {"n1": {"org.example:echo": snapshot}}

    return read


@pytest.mark.parametrize("failing", [False, True])
async def test_a_canary_step_is_judged_from_the_nodes_calls_per_version(
    autojump_clock: MockClock, kv: MemoryStore, failing: bool
) -> None:
    await register(kv, "n1")
    canary = UpdateSpec(strategy=UpdateStrategy.CANARY, steps=(50, 100), step_window_s=10.0)
    await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=2, update=canary))
    async with trio.open_nursery() as nursery:
        leadership = LeadershipMonitor(kv, period=0.1)
        manager = ClusterDeploymentManager(
            kv, "n1", interval=1.0, clock=trio.current_time, read_versions=growing_readings(failing)
        )
        nursery.start_soon(leadership.run)
        nursery.start_soon(manager.run, leadership)
        await wait_until(lambda: _eq(_len(instances(kv)), 2), timeout=60, what="the first version placed")
        await set_state(kv, "1.0", SliceState.ACTIVE)
        await apply(kv, "demo", SliceSpec(artifact="org.example:echo:2.0", instances=2, update=canary))
        await wait_until(lambda: _eq(_len(instances(kv)), 3), timeout=60, what="one canary instance")
        await set_state(kv, "2.0", SliceState.ACTIVE)
        outcome = RolloutPhase.ABORTED if failing else RolloutPhase.DEPLOYING

        async def judged() -> bool:
            found = await rollout(kv)
            return found is not None and found.phase is outcome and (failing or found.step == 1)

        await wait_until(judged, timeout=60, what=f"the step judged: {outcome.value}")
        record = await rollout(kv)
        if failing:
            assert record.reason.startswith("step 1 (50%): error rate 50.0% > stable 0.0% + 1.0%"), record
            assert record.share == 0
        else:
            assert (record.step, record.share) == (1, 50)  # step 2's instances come up at 50 %
        nursery.cancel_scope.cancel()


async def test_a_new_leader_carries_on_a_rollout_from_its_record(
    autojump_clock: MockClock, kv: MemoryStore
) -> None:
    other = kv.replica("n2")
    await register(kv, "n1")
    await register(kv, "n2")
    blue_green = UpdateSpec(strategy=UpdateStrategy.BLUE_GREEN, grace_s=30.0)
    await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=2, update=blue_green))
    async with trio.open_nursery() as nursery:
        await lead(nursery, kv, "n1")
        await lead(nursery, other, "n2")
        await wait_until(lambda: claimed_by(kv, "n1"), timeout=60, what="n1's claim")
        await wait_until(lambda: _eq(_len(instances(kv)), 2), timeout=60, what="the first version placed")
        await set_state(kv, "1.0", SliceState.ACTIVE)
        await apply(kv, "demo", SliceSpec(artifact="org.example:echo:2.0", instances=2, update=blue_green))
        await wait_until(lambda: _eq(_len(instances(kv)), 4), timeout=60, what="the new set placed by n1")
        started = await rollout(kv)
        assert started is not None and started.phase is RolloutPhase.DEPLOYING

        kv.set_leader("n2")
        await wait_until(lambda: claimed_by(kv, "n2"), timeout=60, what="n2's claim")
        await set_state(kv, "2.0", SliceState.ACTIVE)

        async def switched() -> bool:
            found = await rollout(kv)
            return found is not None and found.phase is RolloutPhase.SWITCHED

        await wait_until(switched, timeout=60, what="n2 switches the rollout n1 started")
        assert len(await instances(kv)) == 4  # neither leader placed a second new set
        nursery.cancel_scope.cancel()


def test_the_instance_decoder_decodes_a_record_once_per_change_and_forgets_deleted_ones() -> None:
    def stored(key: str, state: SliceState, revision: int) -> KeyValue:
        value = encode_record(SliceRecord(state=state))
        return KeyValue(key=key, value=value, create_revision=1, mod_revision=revision, version=1, lease=0)

    one, two = f"slices/n1/{ECHO}/1", f"slices/n1/{ECHO}/2"
    decoder = InstanceDecoder()
    first = decoder.instances(
        {one: stored(one, SliceState.ACTIVATE, 5), two: stored(two, SliceState.ACTIVE, 6)}
    )
    assert [(i.instance, i.state) for i in first] == [(1, SliceState.ACTIVATE), (2, SliceState.ACTIVE)]
    again = decoder.instances(
        {one: stored(one, SliceState.ACTIVE, 7), two: stored(two, SliceState.FAILED, 6)}
    )
    assert again[0].state is SliceState.ACTIVE and again[0].mod_revision == 7  # changed: decoded again
    assert again[1] is first[1]  # unchanged revision: the same observation, not decoded again
    garbled = KeyValue(key=two, value=b"{", create_revision=1, mod_revision=8, version=2, lease=0)
    assert [
        i.instance for i in decoder.instances({one: stored(one, SliceState.ACTIVE, 7), two: garbled})
    ] == [1]
    assert (
        decoder.instances({}) == []
        and decoder.instances({one: stored(one, SliceState.ACTIVE, 7)})[0] is not again[0]
    )


def test_a_pass_s_new_instances_are_described_per_slice_version_and_node() -> None:
    def create(node: str, coordinates: str, number: int) -> CreateInstance:
        return CreateInstance(
            node_id=node, coordinates=Coordinates.parse(coordinates), instance=number, config={}
        )

    placed = [
        create("n2", ECHO, 1),
        create("n1", ECHO, 2),
        create("n2", ECHO, 3),
        create("n1", "org.example:b:2", 1),
    ]
    assert (
        placements(placed)
        == "1 instance of org.example:b:2 (n1 1); 3 instances of org.example:echo:1.0 (n1 1, n2 2)"
    )


def test_a_pass_s_removals_are_described_per_reason_slice_version_and_node() -> None:
    def remove(node: str, coordinates: str, number: int, why: str) -> RemoveInstance:
        return RemoveInstance(key=f"slices/{node}/{coordinates}/{number}", mod_revision=1, why=why)

    removed = [
        remove("n2", ECHO, 1, "not in any blueprint"),
        remove("n1", ECHO, 2, "not in any blueprint"),
        remove("n2", ECHO, 3, "not in any blueprint"),
        remove("n1", "org.example:b:2", 4, "surplus: the blueprint asks for 1"),
        RemoveInstance(key="slices/odd", mod_revision=1, why="not in any blueprint"),
    ]
    assert removals(removed) == [
        f"removing 3 instances of {ECHO} (n1 1, n2 2): not in any blueprint",
        "removing 1 instance of org.example:b:2 (n1 1): surplus: the blueprint asks for 1",
        "removing slices/odd (not in any blueprint)",
    ]


async def test_a_replica_that_says_it_leads_in_an_old_term_does_not_take_a_newer_leaders_claim(
    autojump_clock: MockClock, kv: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A replica paused past an election says it leads, in its old term, until it hears of the new one:
    its node must not overwrite the new leader's claim (whose fenced writes would then all fail, and
    nothing be reconciled while it led). A claim of an older term it does replace."""
    await register(kv, "n1")
    await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=1))
    term = (await kv.status()).term
    newer = encode_record(LeaderClaim(node_id="n2", since=0.0, term=term + 1))
    await kv.put(LEADER_KEY, newer)
    async with trio.open_nursery() as nursery:
        await lead(nursery, kv)
        # (its replica goes on saying it leads: after 30 s it warns, the claim untouched all along)
        await wait_until(
            lambda: f"delete the key {LEADER_KEY}" in caplog.text, timeout=60, what="the warning"
        )
        found = await kv.get(LEADER_KEY)
        assert found is not None and found.value == newer  # untouched
        assert not await instances(kv)  # and nothing written without the claim
        await kv.put(LEADER_KEY, encode_record(LeaderClaim(node_id="n2", since=0.0, term=term - 1)))
        await wait_until(lambda: claimed_by(kv, "n1"), timeout=60, what="the claim over an older term's")
        await wait_until(lambda: _eq(_len(instances(kv)), 1), timeout=60, what="the blueprint placed")
        nursery.cancel_scope.cancel()


async def test_a_leader_elected_again_in_a_new_term_between_two_looks_claims_again(
    autojump_clock: MockClock, kv: MemoryStore
) -> None:
    """Deposed and elected again between two answers of its replica, a node never saw itself not lead:
    another node may have claimed in between, taking the fence. A new term ends the pass: it claims
    again, over the other's older term, and reconciles."""
    await register(kv, "n1")
    async with trio.open_nursery() as nursery:
        await lead(nursery, kv)
        await wait_until(lambda: claimed_by(kv, "n1"), timeout=60, what="the first claim")
        term = (await kv.status()).term
        await kv.put(LEADER_KEY, encode_record(LeaderClaim(node_id="n2", since=0.0, term=term + 1)))
        kv.set_leader(None)  # (no checkpoint in between: its monitor sees only the new term)
        kv.set_leader("n1", term=term + 2)
        await wait_until(lambda: claimed_by(kv, "n1"), timeout=60, what="the claim taken back")
        await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=1))
        await wait_until(lambda: _eq(_len(instances(kv)), 1), timeout=60, what="the blueprint placed")
        nursery.cancel_scope.cancel()


async def test_a_blueprint_applied_after_a_quiet_spell_is_planned_at_once(
    autojump_clock: MockClock, kv: MemoryStore
) -> None:
    """The leader paces its passes (a pass that changed nothing is followed no sooner than 10 ms later, to
    let a burst of changes land), counted from its last pass: the first change after a quiet spell does
    not wait. On the virtual clock the manager's own work takes no time, so its instances are written at
    the very instant of the apply."""
    for node_id in ("n1", "n2"):
        await register(kv, node_id)
    async with trio.open_nursery() as nursery:
        await lead(nursery, kv)
        await wait_until(lambda: claimed_by(kv, "n1"), timeout=60, what="the leader's claim")
        await hold(0.5)  # a quiet spell: the leader's last pass is long past
        watch = kv.watch("slices/")
        applied = trio.current_time()
        await apply(kv, "demo", SliceSpec(artifact=ECHO, instances=2))
        await watch.__anext__()
        assert trio.current_time() == applied
        await watch.aclose()
        nursery.cancel_scope.cancel()
