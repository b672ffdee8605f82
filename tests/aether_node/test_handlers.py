"""The management API's handlers in process, on the memory store: what they store, what they refuse (with
the kind the HTTP layer maps to a status) and that a refused or failed request changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from shell_support import FakeSliceStore, handlers_over, register

from aether_kv import MemoryStore, OutcomeUnknownError
from aether_node.api._cluster_view import ClusterView
from aether_node.api._handlers import Handlers, _whole_revisions
from aether_node.api._operations import Operations
from aether_node.control._membership import member_key
from aether_node.core._blueprint import Blueprint
from aether_node.core._blueprint_toml import MAX_INSTANCES, MAX_STORED_BYTES, parse_blueprint
from aether_node.core._error_kinds import ErrorKind
from aether_node.core._errors import RequestError
from aether_node.core._kv_cache import KVCache
from aether_node.core._kv_errors import FAILOVER_TIME
from aether_node.core._models_cluster import KeptForRollback
from aether_node.core._models_events import ClusterEvent
from aether_node.core._records import (
    RolloutPhase,
    RolloutRecord,
    SliceRecord,
    SliceState,
    decode_record,
    encode_record,
)
from aether_node.core._schema import (
    BLUEPRINT_REVISIONS,
    BLUEPRINTS,
    PROBLEMS_PREFIX,
    ROLLOUTS,
    SLICE_CLAIMS,
    TOMBSTONES,
    rollout_key,
)
from aether_node.observe._events import EventFilter
from aether_node.routing._endpoints import EndpointRegistry
from aether_node.routing._invoker import ClusterInvoker
from aether_node.routing._peers import PeerClients

DEMO = """
name = "demo"

[[slices]]
artifact = "org.example:echo:1.0"
instances = 2
"""


# a canary rollout of echo from 1.0 to 2.0, its first step observed
OBSERVING = RolloutRecord(
    artifact_id="org.example:echo",
    strategy="canary",
    stable="1.0",
    candidate="2.0",
    phase=RolloutPhase.OBSERVING,
    share=10,
)


@pytest.fixture
async def kv() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def handlers(kv: MemoryStore) -> AsyncIterator[Handlers]:
    async with handlers_over(kv) as handlers:
        yield handlers


async def test_apply_stores_the_blueprint_then_updates_it(kv: MemoryStore, handlers: Handlers) -> None:
    first = await handlers.apply_blueprint(DEMO, "demo.toml")
    assert (first.name, first.created, first.slices) == ("demo", True, 1)
    again = await handlers.apply_blueprint(DEMO.replace("instances = 2", "instances = 3"), "demo.toml")
    assert not again.created and again.revision > first.revision
    assert (await handlers.get_blueprint("demo")).slices[0].instances == 3  # type: ignore[attr-defined]


async def test_a_bad_blueprint_is_refused_with_where_and_nothing_is_stored(
    kv: MemoryStore, handlers: Handlers
) -> None:
    with pytest.raises(RequestError) as refused:
        await handlers.apply_blueprint(DEMO.replace("instances = 2", "instances = -3"), "demo.toml")
    assert refused.value.kind == "bad_request" and "demo.toml" in refused.value.message
    assert (await kv.range(BLUEPRINTS)).kvs == ()


def big(comment: int, blob: int = 300_000) -> str:
    """DEMO with a config string of `blob` characters (stored twice: source and config) and a comment of
    `comment` characters (stored once)."""
    return DEMO + f'# {"c" * comment}\n[slices.config]\nblob = "{"x" * blob}"\n'


async def test_a_blueprint_too_big_to_store_is_refused_by_validate_and_apply_and_nothing_is_stored(
    kv: MemoryStore, handlers: Handlers
) -> None:
    text = big(0, blob=650_000)  # the store's own refusal named no file and no limit of blueprints
    for refuse in (handlers.validate_blueprint, handlers.apply_blueprint):
        with pytest.raises(RequestError) as refused:
            await refuse(text, "shop.toml")
        assert refused.value.kind == "bad_request"
        assert refused.value.message.startswith("shop.toml: the blueprint takes 1.2 MiB stored ("), (
            refused.value.message
        )
        assert "over the 1020 KiB (1,044,480 bytes) a blueprint may take" in refused.value.message
    assert (await kv.range(BLUEPRINTS)).kvs == ()


async def test_a_blueprint_at_the_size_limit_is_applied_and_scaled(handlers: Handlers) -> None:
    """The limit leaves room for what storing adds: its time stamp, revision and a scale's change."""
    at_limit = big(MAX_STORED_BYTES - len(encode_record(parse_blueprint(big(0), "x"))))
    assert len(encode_record(parse_blueprint(at_limit, "x"))) == MAX_STORED_BYTES  # (time stamp 0.0)
    handlers.clock = lambda: 1.0e12 / 3  # (a time stamp as long as one gets)
    await handlers.apply_blueprint(at_limit, "demo.toml")
    scaled = await Operations(handlers).scale("org.example:echo", MAX_INSTANCES)
    assert scaled.blueprint_revision == 2
    assert instances(await handlers.get_blueprint("demo")) == MAX_INSTANCES


async def test_a_slice_owned_by_another_blueprint_is_refused(kv: MemoryStore, handlers: Handlers) -> None:
    await handlers.apply_blueprint(DEMO, "demo.toml")
    with pytest.raises(RequestError, match="already deployed by blueprint 'demo'") as refused:
        await handlers.apply_blueprint(DEMO.replace('"demo"', '"other"'), "other.toml")
    assert refused.value.kind == "bad_request"
    assert [item.key for item in (await kv.range(BLUEPRINTS)).kvs] == [BLUEPRINTS + "demo"]


class Interleaved(MemoryStore):
    """The memory store, running `before_txn` (once) just before the next transaction: another writer's
    change landing between a handler's reads and its write."""

    before_txn: Callable[[], Awaitable[Any]] | None = None

    async def txn(self, *args: Any, **kwargs: Any) -> Any:
        before, self.before_txn = self.before_txn, None
        if before is not None:
            await before()
        return await super().txn(*args, **kwargs)


@pytest.mark.parametrize("how", ["apply", "rollback"])
async def test_two_blueprints_given_one_slice_at_once_do_not_both_get_it(how: str) -> None:
    """Two writes that give one slice to two blueprints, each checked before the other landed (three
    applies at once on three nodes left three blueprints deploying one slice): the second is checked
    again after the first, and refused."""
    kv = Interleaved()
    async with handlers_over(kv) as handlers:
        other = DEMO.replace('"demo"', '"other"')
        if how == "rollback":  # other's revision 1 deploys echo; it was deleted since
            await handlers.apply_blueprint(other, "other.toml")
            await handlers.delete_blueprint("other")
        kv.before_txn = lambda: handlers.apply_blueprint(DEMO, "demo.toml")
        with pytest.raises(RequestError, match="already deployed by blueprint 'demo'"):
            if how == "apply":
                await handlers.apply_blueprint(other, "other.toml")
            else:
                await Operations(handlers).rollback("other", 1)
        assert [item.key for item in (await kv.range(BLUEPRINTS)).kvs] == [BLUEPRINTS + "demo"]


class ClaimsAlwaysMoving(MemoryStore):
    """The memory store, where another blueprint is given slices just before every transaction (a stream
    of applies on other nodes, each getting through first)."""

    async def txn(self, compares: Any, operations: Any) -> Any:
        if any(getattr(op, "key", None) == SLICE_CLAIMS for op in operations):
            await super().put(SLICE_CLAIMS, b"elsewhere")
        return await super().txn(compares, operations)


async def test_an_apply_that_loses_every_race_for_the_claims_ends_refused(handlers: Handlers) -> None:
    """Every apply moves cluster/slice-claims: an apply that another blueprint's write beats each time is
    checked again a few times, then refused (409, try again), never retried for ever."""
    handlers.kv = kv = ClaimsAlwaysMoving()
    with trio.fail_after(30), pytest.raises(RequestError, match="kept changing") as refused:
        await handlers.apply_blueprint(DEMO, "demo.toml")
    assert refused.value.kind is ErrorKind.CONFLICT
    assert not (await kv.range(BLUEPRINTS)).kvs


async def test_a_scale_sent_with_no_revision_does_not_write_over_a_later_apply() -> None:
    """A scale read its blueprint, then an apply took a slice out of it and another blueprint was given
    that slice: the scaled copy (a client that sent no revision of its own) is refused, not written over
    them, which put the slice back and left two blueprints deploying it."""
    kv = Interleaved()
    async with handlers_over(kv) as handlers:
        both = DEMO + '\n[[slices]]\nartifact = "org.example:hello:1.0"\ninstances = 1\n'
        await handlers.apply_blueprint(both, "demo.toml")

        async def meanwhile() -> None:
            await handlers.apply_blueprint(DEMO, "demo.toml")  # hello taken out of demo
            other = DEMO.replace('"demo"', '"other"').replace("echo", "hello")
            await handlers.apply_blueprint(other, "other.toml")  # and given to other

        kv.before_txn = meanwhile
        with pytest.raises(RequestError) as refused:
            await Operations(handlers).scale("org.example:echo", 3)
        assert refused.value.kind is ErrorKind.CONFLICT
        deploying = {
            item.key: [s.artifact for s in decode_record(item.key, item.value, Blueprint).slices]
            for item in (await kv.range(BLUEPRINTS)).kvs
        }
        assert deploying == {
            BLUEPRINTS + "demo": ["org.example:echo:1.0"],
            BLUEPRINTS + "other": ["org.example:hello:1.0"],
        }


async def test_an_unavailable_store_is_a_503_and_changes_nothing(
    kv: MemoryStore, handlers: Handlers, autojump_clock: trio.testing.MockClock
) -> None:
    kv.set_leader(None)  # and for longer than an apply waits for one (FAILOVER_TIME)
    with pytest.raises(RequestError) as refused:
        await handlers.apply_blueprint(DEMO, "demo.toml")
    assert refused.value.kind == "unavailable"
    assert "could not store the blueprint" in refused.value.message and "no leader" in refused.value.message
    with pytest.raises(RequestError) as refused:
        await handlers.list_blueprints()
    assert refused.value.kind == "unavailable" and "not available" in refused.value.message
    kv.set_leader(kv.address)
    assert (await kv.range(BLUEPRINTS)).kvs == ()


@pytest.mark.parametrize("landed", [True, False])
async def test_an_apply_whose_outcome_is_unknown_goes_again_and_adds_one_revision(
    kv: MemoryStore, handlers: Handlers, landed: bool
) -> None:
    """A leader change while the write was in flight: the node tries again (a write that landed is found
    with the same content and adds no second revision)."""
    kv.fail_next(1, error=OutcomeUnknownError, applied=landed, operations={"txn"})
    result = await handlers.apply_blueprint(DEMO, "demo.toml")
    assert (result.name, result.created, result.blueprint_revision) == ("demo", True, 1)
    assert [item.key for item in (await kv.range(BLUEPRINTS)).kvs] == [BLUEPRINTS + "demo"]
    assert len((await kv.range(BLUEPRINT_REVISIONS)).kvs) == 1


class AnswerLost:
    """The memory store, but the answer to its first transaction is lost (OutcomeUnknownError, the write
    applied or not, as a leader change leaves it) and `meanwhile` runs before the error reaches the caller:
    another writer's turn, between the node's attempt and its retry."""

    def __init__(self, kv: MemoryStore, *, landed: bool, meanwhile: Callable[[], Awaitable[object]]) -> None:
        self.kv = kv
        self.landed = landed
        self.meanwhile: Callable[[], Awaitable[object]] | None = meanwhile

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kv, name)

    async def txn(self, *args: Any, **kwargs: Any) -> Any:
        if self.meanwhile is None:
            return await self.kv.txn(*args, **kwargs)
        meanwhile, self.meanwhile = self.meanwhile, None
        if self.landed:
            await self.kv.txn(*args, **kwargs)
        await meanwhile()
        raise OutcomeUnknownError("txn: the leader changed while the request was in flight")


async def test_an_apply_outlasts_a_leader_change_and_answers_503_only_past_the_failover_time(
    kv: MemoryStore, handlers: Handlers, autojump_clock: trio.testing.MockClock
) -> None:
    """A barrier or read that fails while a new leader is elected, or a write whose answer is lost, is
    tried again; a store that stays without a leader for longer than FAILOVER_TIME gets a 503 that says
    a write may have landed."""
    kv.fail_next(3, error=OutcomeUnknownError, operations={"barrier"})  # a leader change under the barrier
    kv.fail_next(2, operations={"get", "range"})  # no leader to confirm the reads
    await handlers.apply_blueprint(DEMO, "demo.toml")
    assert kv.pending_faults == 0 and len((await kv.range(BLUEPRINT_REVISIONS)).kvs) == 1

    async def leader_lost() -> None:
        kv.set_leader(None)  # and no new one comes

    lossy = Handlers(AnswerLost(kv, landed=False, meanwhile=leader_lost), handlers.invoker)  # type: ignore[arg-type]
    start = trio.current_time()
    with pytest.raises(RequestError) as refused:
        await lossy.apply_blueprint(DEMO.replace("instances = 2", "instances = 3"), "demo.toml")
    assert trio.current_time() - start >= FAILOVER_TIME
    assert refused.value.kind == "unavailable"
    assert refused.value.message.startswith(f"could not store the blueprint in {FAILOVER_TIME:g} s of trying")
    assert "may have landed: read the blueprint before applying again" in refused.value.message
    assert "no leader" in refused.value.message
    kv.set_leader(kv.address)
    assert (await handlers.get_blueprint("demo")).slices[0].instances == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize("landed", [True, False])
async def test_a_resent_apply_never_overwrites_an_apply_that_came_in_between(
    kv: MemoryStore, handlers: Handlers, landed: bool
) -> None:
    """Apply A's write goes unanswered; apply B (other content) lands before A is sent again. Sending A
    again would overwrite B (or apply A a second time, after B): A ends 409 and B stands."""
    await handlers.apply_blueprint(DEMO, "demo.toml")
    a, b = (DEMO.replace("instances = 2", f"instances = {n}") for n in (3, 4))
    lossy = Handlers(
        AnswerLost(kv, landed=landed, meanwhile=lambda: handlers.apply_blueprint(b, "b.toml")),  # type: ignore[arg-type]
        handlers.invoker,
    )
    with pytest.raises(RequestError, match="changed by another writer") as refused:
        await lossy.apply_blueprint(a, "a.toml")
    assert refused.value.kind == "conflict"
    assert (await handlers.get_blueprint("demo")).slices[0].instances == 4  # type: ignore[attr-defined]
    kept = [
        decode_record(item.key, item.value, Blueprint).slices[0].instances
        for item in (await kv.range(BLUEPRINT_REVISIONS)).kvs
    ]
    assert kept == ([2, 3, 4] if landed else [2, 4])


async def test_a_resent_create_does_not_bring_back_a_blueprint_deleted_in_between(
    kv: MemoryStore, handlers: Handlers
) -> None:
    """The first blueprint of its name: the create lands, its answer is lost, and it is deleted before
    the node tries again. The key is absent again, as before the create: only its tombstone tells."""
    lossy = Handlers(
        AnswerLost(kv, landed=True, meanwhile=lambda: handlers.delete_blueprint("demo")),  # type: ignore[arg-type]
        handlers.invoker,
    )
    with pytest.raises(RequestError, match="now removed") as refused:
        await lossy.apply_blueprint(DEMO, "demo.toml")
    assert refused.value.kind == "conflict" and await kv.get(BLUEPRINTS + "demo") is None


async def test_a_resent_apply_that_landed_is_answered_once_when_nothing_came_in_between(
    kv: MemoryStore, handlers: Handlers
) -> None:
    """The control: with nobody else writing, the resent apply finds its own write and adds nothing."""
    await handlers.apply_blueprint(DEMO, "demo.toml")
    a = DEMO.replace("instances = 2", "instances = 3")
    lossy = Handlers(AnswerLost(kv, landed=True, meanwhile=trio.lowlevel.checkpoint), handlers.invoker)  # type: ignore[arg-type]
    result = await lossy.apply_blueprint(a, "a.toml")
    assert (result.created, result.blueprint_revision) == (False, 2)
    assert len((await kv.range(BLUEPRINT_REVISIONS)).kvs) == 2


# A change sent "as of" a revision (`since`, control/_write_guard.py): the client resent it to another
# node, which ran it, and the operator went on; the first node, frozen with it unread, runs it later.


def instances(blueprint: Any) -> int:
    return blueprint.slices[0].instances  # type: ignore[no-any-return]


async def test_a_late_apply_does_not_undo_the_apply_that_came_after_it(handlers: Handlers) -> None:
    await handlers.apply_blueprint(DEMO, "demo.toml")
    read = await handlers.current_revision()
    b, c = (DEMO.replace("instances = 2", f"instances = {n}") for n in (3, 4))
    landed = await handlers.apply_blueprint(b, "b.toml", since=read)  # the resend, elsewhere
    again = await handlers.apply_blueprint(b, "b.toml", since=read)  # the first copy, nothing since
    assert (again.blueprint_revision, again.revision) == (landed.blueprint_revision, landed.revision)
    await handlers.apply_blueprint(c, "c.toml", since=await handlers.current_revision())
    with pytest.raises(RequestError) as refused:
        await handlers.apply_blueprint(b, "b.toml", since=read)  # the first copy, after C
    assert refused.value.kind == "conflict"
    assert refused.value.message.startswith("blueprint 'demo' was changed at revision ")
    assert f"after revision {read} that this request was made from" in refused.value.message
    assert instances(await handlers.get_blueprint("demo")) == 4


async def test_a_late_apply_does_not_bring_back_a_blueprint_deleted_after_it(
    kv: MemoryStore, handlers: Handlers
) -> None:
    await handlers.apply_blueprint(DEMO, "demo.toml")
    read = await handlers.current_revision()
    await handlers.delete_blueprint("demo", since=await handlers.current_revision())
    with pytest.raises(RequestError, match="blueprint 'demo' was deleted, after revision") as refused:
        await handlers.apply_blueprint(DEMO.replace("instances = 2", "instances = 3"), "b.toml", since=read)
    assert refused.value.kind == "conflict" and await kv.get(BLUEPRINTS + "demo") is None
    # applied again by the operator (a fresh read): the tombstone goes with the new blueprint
    await handlers.apply_blueprint(DEMO, "demo.toml", since=await handlers.current_revision())
    assert (await kv.range(TOMBSTONES)).kvs == ()


async def test_a_late_delete_does_not_remove_a_blueprint_made_again_after_it(
    kv: MemoryStore, handlers: Handlers
) -> None:
    await handlers.apply_blueprint(DEMO, "demo.toml")
    read = await handlers.current_revision()
    await handlers.delete_blueprint("demo", since=read)  # the resend
    with pytest.raises(RequestError) as gone:
        await handlers.delete_blueprint("demo", since=read)  # the first copy, nothing since: done
    assert gone.value.kind == "not_found"  # (what a client that resent the delete takes as done)
    await handlers.apply_blueprint(DEMO, "demo.toml", since=await handlers.current_revision())
    with pytest.raises(RequestError, match="changed at revision") as refused:
        await handlers.delete_blueprint("demo", since=read)  # the first copy, after the new one
    assert refused.value.kind == "conflict" and await kv.get(BLUEPRINTS + "demo") is not None


async def test_a_late_scale_does_not_undo_the_scale_that_came_after_it(handlers: Handlers) -> None:
    operations = Operations(handlers)
    await handlers.apply_blueprint(DEMO, "demo.toml")
    read = await handlers.current_revision()
    await operations.scale("org.example:echo", 3, since=read)
    done = await operations.scale("org.example:echo", 3, since=read)  # nothing since: done, no new one
    assert done.blueprint_revision == 2
    await operations.scale("org.example:echo", 5, since=await handlers.current_revision())
    with pytest.raises(RequestError, match="was changed at revision") as refused:
        await operations.scale("org.example:echo", 3, since=read)
    assert refused.value.kind == "conflict"
    assert instances(await handlers.get_blueprint("demo")) == 5


async def test_the_same_blueprint_applied_again_is_said_unchanged(handlers: Handlers) -> None:
    first = await handlers.apply_blueprint(DEMO, "demo.toml")
    again = await handlers.apply_blueprint(DEMO, "demo.toml")
    assert (first.created, first.unchanged) == (True, False)
    assert (again.created, again.unchanged) == (False, True)
    assert again.blueprint_revision == first.blueprint_revision


async def test_a_scale_to_the_count_it_has_says_nothing_changed(handlers: Handlers) -> None:
    operations = Operations(handlers)
    await handlers.apply_blueprint(DEMO, "demo.toml")
    first = await operations.scale("org.example:echo", 3)
    assert first.notes == ()
    same = await operations.scale("org.example:echo", 3)
    assert same.blueprint_revision == first.blueprint_revision and same.change == first.change
    assert same.notes == ("org.example:echo has 3 instances already: nothing changed",)
    assert same.unchanged and not first.unchanged  # (it said false, with an earlier change's text)


async def test_a_restart_of_a_node_that_is_not_running_says_how_to_start_it(
    kv: MemoryStore, handlers: Handlers
) -> None:
    """A node stopped with `aether node stop` is not registered: it cannot restart itself (a restart runs
    in its own process). The refusal says so, and how to start it (an operator read `node restart` as the
    way to bring a stopped node back)."""
    operations = Operations(handlers)
    await register(kv, "n2")
    with pytest.raises(RequestError) as refused:
        await operations.node_operation("n3", "restart")
    assert (refused.value.kind, refused.value.message) == (
        "not_found",
        "no node 'n3' is registered (registered: n2); a node that is not running is started where it runs"
        " (`aether-node run` with its configuration; a dev cluster: `aether dev down`, then `aether dev up`)",
    )
    with pytest.raises(RequestError) as refused:
        await operations.node_operation("n3", "cordon")
    assert refused.value.message == "no node 'n3' is registered (registered: n2)"


async def test_a_late_cordon_does_not_undo_the_uncordon_that_came_after_it(
    kv: MemoryStore, handlers: Handlers
) -> None:
    operations = Operations(handlers)
    await register(kv, "n2")
    read = await handlers.current_revision()
    assert (await operations.node_operation("n2", "cordon", since=read)).state == "CORDONED"
    assert (await operations.node_operation("n2", "cordon", since=read)).state == "CORDONED"  # done
    await operations.node_operation("n2", "uncordon", since=await handlers.current_revision())
    ended = r"node n2's cordon or drain was ended \(uncordoned\), after"
    with pytest.raises(RequestError, match=ended) as refused:
        await operations.node_operation("n2", "cordon", since=read)
    assert refused.value.kind == "conflict"
    assert (await operations.node_operation("n2", "uncordon", since=read)).state == "ON_DUTY"  # holds
    # and the other way round: a late uncordon after a drain that came after it
    read = await handlers.current_revision()
    await operations.node_operation("n2", "cordon", since=read)
    await operations.node_operation("n2", "drain", since=await handlers.current_revision())
    with pytest.raises(RequestError, match="node n2's cordon or drain was changed at revision"):
        await operations.node_operation("n2", "uncordon", since=read)
    assert (await operations.node_operation("n2", "drain")).state in ("DRAINING", "DRAINED")


async def test_a_late_pause_does_not_undo_the_resume_that_came_after_it(handlers: Handlers) -> None:
    operations = Operations(handlers)
    await handlers.apply_blueprint(DEMO, "demo.toml")
    read = await handlers.current_revision()
    assert (await operations.pause("org.example:echo", "pause", since=read)).paused
    await operations.pause("org.example:echo", "resume", since=await handlers.current_revision())
    ended = r"the pause of org\.example:echo's update was ended \(resumed\)"
    with pytest.raises(RequestError, match=ended) as refused:
        await operations.pause("org.example:echo", "pause", since=read)
    assert refused.value.kind == "conflict"
    assert not (await operations.pause("org.example:echo", "resume")).paused


async def three_replicas(kv: MemoryStore) -> None:
    """memory-1 (the replica the handlers ask), memory-2 and memory-3, of nodes n1, n2 and n3."""
    for n in (2, 3):
        kv.replica(f"memory-{n}")
    for n in (1, 2, 3):
        await register(kv, f"n{n}", raft=f"memory-{n}")


async def test_a_stop_is_refused_when_another_node_is_leaving_or_asked_to_stop_already(
    kv: MemoryStore, handlers: Handlers
) -> None:
    """Two stops at once: the second counts the first's replica as gone (it would leave 1 of 3)."""
    operations = Operations(handlers)
    await three_replicas(kv)
    await kv.put("cluster/node-stop/n2", b"{}")  # (asked already: only its key's presence counts)
    with pytest.raises(RequestError, match="would leave 1 of the KV store's 3 replicas up") as refused:
        await operations.node_operation("n3", "stop")
    assert refused.value.kind == "conflict" and await kv.get("cluster/node-stop/n3") is None
    await kv.delete("cluster/node-stop/n2")
    await register(kv, "n2", raft="memory-2", leaving=True)  # stopping gracefully
    with pytest.raises(RequestError, match="would leave 1 of the KV store's 3 replicas up"):
        await operations.node_operation("n3", "restart")
    assert await kv.get("cluster/node-stop/n3") is None


async def test_a_late_stop_leaves_the_run_started_after_it_alone_and_one_leaving_is_done(
    kv: MemoryStore, handlers: Handlers
) -> None:
    operations = Operations(handlers)
    await three_replicas(kv)
    read = await handlers.current_revision()
    await kv.delete("nodes/n2")  # restarted (by the resend): its lease revoked, then a new registration
    await register(kv, "n2", raft="memory-2")
    with pytest.raises(RequestError, match="node n2 registered again at revision") as refused:
        await operations.node_operation("n2", "restart", since=read)  # the first copy, late
    assert refused.value.kind == "conflict" and await kv.get("cluster/node-stop/n2") is None
    await register(kv, "n3", raft="memory-3", leaving=True)
    done = await operations.node_operation("n3", "stop", since=await handlers.current_revision())
    assert done.state == "LEAVING" and await kv.get("cluster/node-stop/n3") is None


async def test_deleting_an_unknown_blueprint_is_not_found(handlers: Handlers) -> None:
    with pytest.raises(RequestError) as refused:
        await handlers.delete_blueprint("nope")
    assert refused.value.kind == "not_found"


async def test_blueprint_status_counts_active_instances_and_says_the_problem(
    kv: MemoryStore, handlers: Handlers
) -> None:
    await handlers.apply_blueprint(DEMO, "demo.toml")
    await kv.put("slices/n1/org.example:echo:1.0/1", encode_record(SliceRecord(state=SliceState.ACTIVE)))
    await kv.put("slices/n2/org.example:echo:1.0/2", encode_record(SliceRecord(state=SliceState.LOADING)))
    await kv.put(PROBLEMS_PREFIX + "org.example:echo", b"1 of 2 instances fit on no live node")
    status = await handlers.blueprint_status("demo")
    (echo,) = status.slices
    assert (echo.desired, echo.active, len(echo.instances)) == (2, 1, 2)
    assert "fit on no live node" in echo.problem and not status.converged


BLUE_GREEN_DEMO = (
    DEMO.replace("echo:1.0", "echo:2.0") + '\n[slices.update]\nstrategy = "blue_green"\ngrace_s = 60\n'
)


async def test_a_blue_green_rollout_switched_has_converged_in_every_status(
    kv: MemoryStore, handlers: Handlers
) -> None:
    """Every call goes to the new set, ACTIVE at its full count; the old set only stays its grace period as
    a rollback path: `blueprint status`, `slice status` and the cluster status (read from the KV and from
    the watch-fed view) all say converged, and say until when the old set stays (the cluster status, and
    the overview the dashboard reads, name it with `kept_for_rollback`)."""
    await handlers.apply_blueprint(BLUE_GREEN_DEMO, "demo.toml")
    for number, version in enumerate(("1.0", "1.0", "2.0", "2.0"), 1):
        key = f"slices/n{number}/org.example:echo:{version}/{number}"
        await kv.put(key, encode_record(SliceRecord(state=SliceState.ACTIVE)))
    deploying = attrs.evolve(
        OBSERVING, strategy="blue_green", phase=RolloutPhase.DEPLOYING, share=0, since=1000.0
    )
    await kv.put(rollout_key("org.example:echo"), encode_record(deploying))
    view = ClusterView(kv)
    async with trio.open_nursery() as nursery:
        await nursery.start(view.run)
        viewed = Handlers(kv, handlers.invoker, view=view)

        async def statuses() -> list[bool]:
            await trio.testing.wait_all_tasks_blocked()  # (the view follows the last write)
            return [
                (await handlers.blueprint_status("demo")).converged,
                (await handlers.slice_status("org.example:echo")).converged,
                (await handlers.cluster_status()).unconverged == (),
                (await viewed.cluster_status()).unconverged == (),
            ]

        assert await statuses() == [False] * 4  # the new set is not serving yet
        switched = attrs.evolve(deploying, phase=RolloutPhase.SWITCHED, share=100)
        await kv.put(rollout_key("org.example:echo"), encode_record(switched))
        assert await statuses() == [True] * 4
        (echo,) = (await handlers.blueprint_status("demo")).slices
        assert echo.kept_for_rollback and echo.rollout is not None and echo.rollout.until == 1060.0
        assert (await handlers.slice_status("org.example:echo")).rollout == echo.rollout
        # The cluster status (from the KV and from the view) and the dashboard's overview say it too.
        kept = (KeptForRollback(artifact="org.example:echo", stable="1.0", until=1060.0),)
        assert (await handlers.cluster_status()).kept_for_rollback == kept
        assert (await viewed.cluster_status()).kept_for_rollback == kept
        assert (await handlers.overview()).status.kept_for_rollback == kept
        await kv.put(rollout_key("org.example:echo"), encode_record(deploying))  # (not switched: nothing)
        await trio.testing.wait_all_tasks_blocked()
        assert (await handlers.cluster_status()).kept_for_rollback == ()
        assert (await viewed.cluster_status()).kept_for_rollback == ()
        nursery.cancel_scope.cancel()


async def test_forget_node_refuses_a_registered_node_and_an_unknown_one(
    kv: MemoryStore, handlers: Handlers
) -> None:
    await register(kv, "n2")
    await kv.put(member_key("n2"), b"{}")
    await kv.put(member_key("n3"), b"{}")
    with pytest.raises(RequestError) as refused:
        await handlers.forget_node("n2")
    assert refused.value.kind == "conflict"
    assert refused.value.message == (  # (it ended on "before", cut short)
        "node n2 is registered: a running node is not forgotten; stop it (`aether node stop n2`) and it"
        " leaves by itself"
    )
    with pytest.raises(RequestError) as refused:
        await handlers.forget_node("n9")
    assert refused.value.kind == "not_found"
    assert await handlers.forget_node("n3") == {"forgotten": "n3"}
    assert await kv.get(member_key("n3")) is None and await kv.get(member_key("n2")) is not None


async def test_promote_and_abort_change_the_rollout_record_and_refuse_what_its_phase_cannot_take(
    kv: MemoryStore, handlers: Handlers
) -> None:
    operations = Operations(handlers)
    with pytest.raises(RequestError, match=r"no blueprint deploys org\.example:echo") as refused:
        await operations.rollout("org.example:echo", "abort")
    assert refused.value.kind == "not_found"
    await handlers.apply_blueprint(DEMO, "demo.toml")
    with pytest.raises(RequestError, match="has no canary or blue-green rollout in progress") as refused:
        await operations.rollout("org.example:echo", "promote")
    assert refused.value.kind == "conflict"
    assert (await kv.range(ROLLOUTS)).kvs == ()
    with pytest.raises(RequestError, match="no rollout operation 'pause'") as refused:
        await operations.rollout("org.example:echo", "pause")
    assert refused.value.kind == "not_found"

    await kv.put(rollout_key("org.example:echo"), encode_record(OBSERVING))
    await handlers.apply_blueprint(DEMO.replace(":1.0", ":2.0"), "demo.toml")
    aborted = await operations.rollout("org.example:echo:2.0", "abort")
    assert (aborted.phase, aborted.share, aborted.reason) == (
        "ABORTED",
        0,
        "aborted by an operator in OBSERVING",
    )
    status = await handlers.slice_status("org.example:echo")
    assert status.rollout == aborted
    assert (await handlers.blueprint_status("demo")).slices[0].rollout == aborted
    before = await kv.get(rollout_key("org.example:echo"))
    with pytest.raises(RequestError, match="already ABORTED; to go back, roll the blueprint back") as refused:
        await operations.rollout("org.example:echo", "abort")
    assert refused.value.kind == "conflict"
    assert await kv.get(rollout_key("org.example:echo")) == before


async def test_a_late_promote_does_not_promote_the_rollout_that_came_after_it(
    kv: MemoryStore, handlers: Handlers
) -> None:
    operations = Operations(handlers)
    key = rollout_key("org.example:echo")
    await handlers.apply_blueprint(DEMO.replace(":1.0", ":2.0"), "demo.toml")
    await kv.put(key, encode_record(OBSERVING))
    read = await handlers.current_revision()
    assert (await operations.rollout("org.example:echo", "promote", since=read)).phase == "PROMOTED"
    # the first copy, nothing since but its own resend: done
    assert (await operations.rollout("org.example:echo", "promote", since=read)).phase == "PROMOTED"
    # the next rollout (to 3.0) starts; the first copy of the promote, late, must not promote it
    await kv.put(key, encode_record(attrs.evolve(OBSERVING, stable="2.0", candidate="3.0")))
    with pytest.raises(RequestError, match=r"the rollout of org\.example:echo was changed at") as refused:
        await operations.rollout("org.example:echo", "promote", since=read)
    assert refused.value.kind == "conflict"
    assert decode_record(key, (await kv.get(key)).value, RolloutRecord).phase is RolloutPhase.OBSERVING


async def test_a_promote_lands_on_the_rollout_it_was_read_from_that_the_leader_only_advanced(
    kv: MemoryStore, handlers: Handlers
) -> None:
    """The leader rewrites a rollout's record as it goes (its reason, its step): a promote or abort read
    before that is still meant for it (a dashboard page, or the CLI between its read and its write, was
    refused for no change of the rollout's); one ended and started again in between is another."""
    operations = Operations(handlers)
    key = rollout_key("org.example:echo")
    await handlers.apply_blueprint(DEMO.replace(":1.0", ":2.0"), "demo.toml")
    await kv.put(key, encode_record(OBSERVING))
    read = await handlers.current_revision()
    await kv.put(key, encode_record(attrs.evolve(OBSERVING, reason="3 calls so far, fewer than 20")))
    await kv.put(key, encode_record(attrs.evolve(OBSERVING, step=1, share=50, reason="step 2")))
    promoted = await operations.rollout("org.example:echo", "promote", since=read)
    assert (promoted.phase, promoted.step) == ("PROMOTED", 1)

    # aborted and started again (the same versions) after the read: not the rollout it was read from
    await kv.put(key, encode_record(OBSERVING))
    read = await handlers.current_revision()
    await kv.put(key, encode_record(attrs.evolve(OBSERVING, phase=RolloutPhase.ABORTED, share=0)))
    await kv.put(key, encode_record(attrs.evolve(OBSERVING, reason="started again")))
    with pytest.raises(RequestError, match=r"the rollout of org\.example:echo was changed at") as refused:
        await operations.rollout("org.example:echo", "promote", since=read)
    assert refused.value.kind == "conflict"
    # replaced by the next rollout (the key written over, not deleted) after the read: another rollout
    await kv.put(key, encode_record(OBSERVING))
    read = await handlers.current_revision()
    await kv.put(key, encode_record(attrs.evolve(OBSERVING, stable="2.0", candidate="3.0", reason="next")))
    await kv.put(key, encode_record(attrs.evolve(OBSERVING, stable="2.0", candidate="3.0", step=1)))
    with pytest.raises(RequestError, match=r"the rollout of org\.example:echo was changed at"):
        await operations.rollout("org.example:echo", "promote", since=read)
    # deleted and made again after the read: another rollout too
    read = await handlers.current_revision()
    await kv.delete(key)
    await kv.put(key, encode_record(OBSERVING))
    with pytest.raises(RequestError, match=r"the rollout of org\.example:echo was changed at"):
        await operations.rollout("org.example:echo", "abort", since=read)
    assert decode_record(key, (await kv.get(key)).value, RolloutRecord).phase is RolloutPhase.OBSERVING


async def test_a_store_failure_during_abort_is_unavailable_and_changes_nothing(
    kv: MemoryStore, handlers: Handlers
) -> None:
    switched = attrs.evolve(OBSERVING, strategy="blue_green", phase=RolloutPhase.SWITCHED, share=100)
    await kv.put(rollout_key("org.example:echo"), encode_record(switched))
    await handlers.apply_blueprint(DEMO.replace(":1.0", ":2.0"), "demo.toml")
    before = await kv.get(rollout_key("org.example:echo"))
    kv.fail_next(1, operations={"txn"})
    with pytest.raises(RequestError, match=r"could not abort the rollout of org\.example:echo") as refused:
        await Operations(handlers).rollout("org.example:echo", "abort")
    assert refused.value.kind == "unavailable"
    assert await kv.get(rollout_key("org.example:echo")) == before
    switched_back = await Operations(handlers).rollout("org.example:echo", "abort")  # the store is back
    assert (switched_back.phase, switched_back.share) == ("ABORTED", 0)


async def test_invoke_tells_a_typo_from_a_deployed_slice_even_before_this_nodes_copy_has_the_deploy(
    kv: MemoryStore,
) -> None:
    """A call that found no endpoint: 404 for a slice nothing deploys, 503 for a deployed one, also while
    the node's copy of the store (its EndpointRegistry's) has not seen the deploy yet (here: never)."""
    async with trio.open_nursery() as nursery:
        behind = KVCache(kv, EndpointRegistry.PREFIXES)  # never filled: a copy that lags
        invoker = ClusterInvoker(
            "n1", FakeSliceStore(), EndpointRegistry(behind), PeerClients(nursery, "s" * 32)
        )  # type: ignore[arg-type]
        handlers = Handlers(kv, invoker)
        with pytest.raises(RequestError) as refused:
            await handlers.invoke("org.example:echo", "echo", None)
        assert (refused.value.kind, refused.value.message) == (
            "no_endpoint",
            "no blueprint deploys org.example:echo and no instance of it runs (`aether blueprint list`)",
        )
        await handlers.apply_blueprint(DEMO, "demo.toml")
        with pytest.raises(RequestError) as refused:
            await handlers.invoke("org.example:echo", "echo", None)
        assert refused.value.kind == "unavailable"
        assert "blueprint demo asks for 2 instances, starting or restarting" in refused.value.message
        with pytest.raises(RequestError) as refused:
            await handlers.invoke("org.example:greeter", "greet", None)
        assert refused.value.kind == "no_endpoint"
        nursery.cancel_scope.cancel()


async def test_a_version_given_with_a_slice_must_be_the_one_deployed(
    kv: MemoryStore, handlers: Handlers
) -> None:
    """A slice is named group:artifact; a version given was dropped (`slice scale g:a:0.1.0` scaled the
    0.5.0 deployed; found by an adversarial operator): one that is not deployed is refused, changing
    nothing; the deployed one, and no version, are as before."""
    operations = Operations(handlers)
    await handlers.apply_blueprint(DEMO, "demo.toml")
    before = await kv.get("blueprints/demo")
    wrong = "org.example:echo:0.1"
    expected = (
        f"{wrong}: org.example:echo runs at version 1.0, not 0.1; name the slice without a version"
        " (org.example:echo): a version is not a filter"
    )
    for refused_call in (
        operations.scale(wrong, 3),
        operations.pause(wrong, "pause"),
        operations.rollout(wrong, "promote"),
        handlers.invoke(wrong, "echo", None),
    ):
        with pytest.raises(RequestError) as refused:
            await refused_call
        assert (refused.value.kind, refused.value.message) == ("bad_request", expected)
    assert await kv.get("blueprints/demo") == before
    assert (await operations.scale("org.example:echo:1.0", 3)).name == "demo"
    assert (await operations.scale("org.example:echo", 4)).name == "demo"


async def test_events_after_a_revision_read_on_in_order_missing_none(
    kv: MemoryStore, handlers: Handlers
) -> None:
    """An agent that polls gives the last revision it saw: the first events after it, oldest first, the
    filter applied; a revision the history has moved past is refused, saying where it starts now."""
    await handlers.apply_blueprint(DEMO, "demo.toml")
    start = await handlers.current_revision()
    for count in (3, 4, 5):
        await handlers.apply_blueprint(DEMO.replace("instances = 2", f"instances = {count}"), "demo.toml")
        await kv.put("unrelated/key", b"x")  # revisions without events in between
    applied = EventFilter.parse(["blueprint_applied"], None, None)
    first_two = await handlers.events_after(start, 2, applied)
    assert [e.kind for e in first_two] == ["blueprint_applied"] * 2
    assert all(start < e.revision for e in first_two)
    assert first_two[0].revision < first_two[1].revision
    rest = await handlers.events_after(first_two[-1].revision, 50, applied)
    assert len(rest) == 1 and rest[0].revision > first_two[-1].revision
    assert await handlers.events_after(rest[0].revision, 50, applied) == []
    recent, _ = await handlers.recent_events(3, applied)
    assert recent == [*first_two, *rest]

    kv.compact(await handlers.current_revision())
    with pytest.raises(RequestError) as refused:
        await handlers.events_after(start, 10)
    assert refused.value.kind is ErrorKind.BAD_REQUEST
    assert f"since: revision {start} is no longer in the history" in str(refused.value)


def test_a_page_of_events_ends_at_a_whole_revision() -> None:
    """One change can say several things: a page cut inside its revision would lose the rest for a reader
    going on after that revision."""
    events = [
        (False, ClusterEvent(revision=r, timestamp=0.0, kind="audit", subject=str(i), message=""))
        for i, r in enumerate((5, 6, 6, 6, 7))
    ]
    assert [e.subject for _, e in _whole_revisions(events, 2)] == ["0", "1", "2", "3"]
    assert [e.subject for _, e in _whole_revisions(events, 4)] == ["0", "1", "2", "3"]
    assert [e.subject for _, e in _whole_revisions(events, 1)] == ["0"]
    assert _whole_revisions(events, 9) == events and _whole_revisions([], 3) == []
