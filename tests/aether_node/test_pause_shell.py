"""`aether slice pause|resume` in process, on the memory store: the management API's operation (what it
stores, what it refuses, and that a refusal writes nothing), the leader holding a paused update where it
stands on trio's virtual clock, and the events of `cluster/paused/`."""

from __future__ import annotations

import attrs
import pytest
import test_handlers
import trio
from shell_support import apply, hold, instances, register
from trio.testing import MockClock

from aether_kv import Event, EventKind, KeyValue, MemoryStore
from aether_node.api._handlers import Handlers
from aether_node.api._operations import Operations
from aether_node.control._cluster_manager import ClusterDeploymentManager, LeadershipMonitor
from aether_node.core._blueprint import SliceSpec
from aether_node.core._errors import RequestError
from aether_node.core._records import PausedRollout, SliceState, encode_record
from aether_node.core._schema import paused_key
from aether_node.core._update_spec import UpdateSpec, UpdateStrategy
from aether_node.observe._events import describe, needs_time
from support import wait_until

ECHO_ID = "org.example:echo"
OLD, NEW = f"{ECHO_ID}:1.0", f"{ECHO_ID}:2.0"


@pytest.fixture
def kv() -> MemoryStore:
    return MemoryStore(clock=trio.current_time, address="n1")


handlers = test_handlers.handlers  # the management API's handlers on `kv`


async def test_pause_and_resume_through_the_api(kv: MemoryStore, handlers: Handlers) -> None:
    operations = Operations(handlers)
    await apply(kv, "web", SliceSpec(artifact=OLD, instances=2))
    paused = await operations.pause(ECHO_ID, "pause")
    assert (paused.artifact, paused.paused) == (ECHO_ID, True)
    assert paused.status.startswith("no version change in progress")
    assert await kv.get(paused_key(ECHO_ID)) is not None
    again = await operations.pause(ECHO_ID, "pause")  # idempotent: the first time stays
    assert again.since == paused.since
    resumed = await operations.pause(ECHO_ID, "resume")
    assert (resumed.paused, await kv.get(paused_key(ECHO_ID))) == (False, None)


async def test_pause_is_refused_for_an_unknown_slice_and_a_canary(
    kv: MemoryStore, handlers: Handlers
) -> None:
    operations = Operations(handlers)
    canary = UpdateSpec(strategy=UpdateStrategy.CANARY)
    await apply(kv, "web", SliceSpec(artifact=OLD, instances=2, update=canary))
    for artifact, kind, message in [
        ("org.example:nope", "not_found", "no blueprint deploys org.example:nope: apply one that does first"),
        (
            ECHO_ID,
            "conflict",
            "org.example:echo updates by canary, not rolling: promote or abort its rollout instead",
        ),
        ("no-colon", "bad_request", None),
    ]:
        with pytest.raises(RequestError) as caught:
            await operations.pause(artifact, "pause")
        assert caught.value.kind.value == kind
        if message is not None:
            assert caught.value.message == message
    assert (await kv.range("cluster/paused/")).kvs == ()  # nothing written


async def test_the_leader_holds_a_paused_update_where_it_stands(
    autojump_clock: MockClock, kv: MemoryStore
) -> None:
    for node_id in ("n1", "n2"):
        await register(kv, node_id)
    await apply(kv, "web", SliceSpec(artifact=OLD, instances=2))
    async with trio.open_nursery() as nursery:
        leadership = LeadershipMonitor(kv, period=0.1)
        nursery.start_soon(leadership.run)
        nursery.start_soon(ClusterDeploymentManager(kv, "n1", clock=trio.current_time).run, leadership)

        async def count(state: SliceState | None = None, version: str = OLD) -> int:
            found = await instances(kv)
            return sum(
                1 for k, r in found.items() if f"/{version}/" in k and (state is None or r.state is state)
            )

        async def two_old() -> bool:
            return await count(version=OLD) == 2

        await wait_until(two_old, timeout=60, what="two 1.0 instances")
        for key, record in (await instances(kv)).items():
            await kv.put(key, encode_record(attrs.evolve(record, state=SliceState.ACTIVE)))
        await kv.put(paused_key(ECHO_ID), encode_record(PausedRollout(since=trio.current_time())))
        await apply(kv, "web", SliceSpec(artifact=NEW, instances=2))
        await hold(30)  # many passes: nothing of 2.0 is placed, both 1.0 instances stay
        assert (await count(version=NEW), await count(SliceState.ACTIVE, OLD)) == (0, 2)
        problem = await kv.get(f"cluster/problems/{ECHO_ID}")
        assert problem is not None and problem.value.decode().startswith("paused: the update to 2.0 stays")
        await kv.delete(paused_key(ECHO_ID))  # resumed

        async def started() -> bool:
            return await count(version=NEW) >= 1

        await wait_until(started, timeout=60, what="the update going on")
        nursery.cancel_scope.cancel()


def _kv(key: str, value: bytes, revision: int) -> KeyValue:
    return KeyValue(key=key, value=value, create_revision=revision, mod_revision=revision, version=1)


def test_the_events_of_a_pause_and_a_resume() -> None:
    key = paused_key(ECHO_ID)
    record = encode_record(PausedRollout(since=10.0))
    (event,) = describe(Event(kind=EventKind.PUT, kv=_kv(key, record, 3), prev=None, revision=3))
    assert (event.kind, event.timestamp, event.artifact) == ("rollout_paused", 10.0, ECHO_ID)
    gone = Event(kind=EventKind.DELETE, kv=_kv(key, b"", 4), prev=_kv(key, record, 3), revision=4)
    assert needs_time(gone)
    (event,) = describe(gone, at=20.0)
    assert (event.kind, event.message) == ("rollout_resumed", "rolling update of org.example:echo resumed")
