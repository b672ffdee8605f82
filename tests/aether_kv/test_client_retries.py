"""The KV client's retry bookkeeping, against servers that speak the real client protocol (`_wire`) and
answer from a script: "not applied" is said only when no attempt may have reached a server unanswered."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

import aether_kv._endpoint_order
from aether_kv import (
    ConnectionLostError,
    DiskFullError,
    KVClient,
    OutcomeUnknownError,
    Status,
    UnavailableError,
    open_client,
)
from aether_kv._ports import free_port
from aether_kv._pysyncobj_patches import DISK_FULL, FOLLOWER_DISK_FULL
from aether_kv._raft import translate_fail_reason
from aether_kv._wire import FramedStream, encode, error_body, server_handshake
from support import wait_until

SECRET = "a-test-secret"

# What a scripted server does with the n-th request it receives (counted over all its connections).
Script = Callable[[int, dict[str, Any]], dict[str, Any] | None]  # the reply, or None: never answer


@asynccontextmanager
async def scripted_server(
    script: Script, *, hold: Callable[[dict[str, Any]], float] = lambda message: 0.0
) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """`hold(message)`: how long the server takes before it answers (a status wait holds its request)."""
    received: list[dict[str, Any]] = []

    async def handle(stream: trio.SocketStream) -> None:
        framed = FramedStream(stream)
        if not await server_handshake(framed, SECRET, "scripted"):
            return
        while (message := await framed.receive()) is not None:
            received.append(message)
            reply = script(len(received), message)
            await trio.sleep(hold(message))
            if reply is not None:
                await framed.send({"id": message["id"], **reply})

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"127.0.0.1:{port}", received
        nursery.cancel_scope.cancel()


def unavailable(_n: int, _message: dict[str, Any]) -> dict[str, Any]:
    return {"error": error_body(UnavailableError("not applied: no leader; safe to retry"))}


def unavailable_then_silent(n: int, message: dict[str, Any]) -> dict[str, Any] | None:
    return unavailable(n, message) if n == 1 else None


async def test_a_write_whose_retry_was_sent_and_timed_out_has_an_unknown_outcome() -> None:
    """Attempt 1 is refused (certainly not applied); attempt 2 is sent and never answered: it may have
    been applied, so the client must not say UnavailableError."""
    async with (
        scripted_server(unavailable_then_silent) as (endpoint, received),
        open_client([endpoint], SECRET, request_timeout=1.0) as client,
    ):
        with pytest.raises(OutcomeUnknownError, match="may or may not have been applied"):
            await client.put("k", b"v")
    assert [m["op"] for m in received] == ["put", "put"]


async def test_a_write_refused_on_every_attempt_was_not_applied() -> None:
    """The control: when every attempt was answered "not applied", the client says so."""
    async with (
        scripted_server(unavailable) as (endpoint, received),
        open_client([endpoint], SECRET, request_timeout=2.0) as client,  # room to retry on a busy machine
    ):
        with pytest.raises(UnavailableError):
            await client.put("k", b"v")
    assert len(received) >= 2


def follower_full(address: str) -> Script:
    """A follower whose disk is full: it refuses every write, naming itself."""

    def refuse(_n: int, _message: dict[str, Any]) -> dict[str, Any]:
        error = UnavailableError(
            f"not applied: the disk of KV replica {address} is full; another replica can take it",
            replicas=(address,),
        )
        return {"error": error_body(error)}

    return refuse


async def test_a_write_every_replica_refuses_for_want_of_room_is_refused_as_disk_full_at_once() -> None:
    """Each full follower says "another replica can take it", true of none when every endpoint says so:
    the client says what stops the write (DiskFullError naming them all), without waiting for its
    deadline."""
    async with (
        scripted_server(follower_full("10.0.0.1:4100")) as (first, _),
        scripted_server(follower_full("10.0.0.2:4100")) as (second, _),
        open_client([first, second], SECRET, request_timeout=30.0) as client,
    ):
        with trio.fail_after(10), pytest.raises(DiskFullError) as raised:
            await client.put("k", b"v")
    assert raised.value.replicas == ("10.0.0.1:4100", "10.0.0.2:4100")
    assert "10.0.0.1:4100 and 10.0.0.2:4100 is full" in raised.value.message


async def test_a_write_one_replica_refuses_for_another_reason_stays_unavailable() -> None:
    """One endpoint full, the other without a leader (but with room: it may yet take the write): not a
    disk-full error, only "unavailable", as before."""
    async with (
        scripted_server(follower_full("10.0.0.1:4100")) as (first, _),
        scripted_server(unavailable) as (second, _),
        open_client([first, second], SECRET, request_timeout=1.0) as client,
    ):
        with pytest.raises(UnavailableError) as raised:
            await client.put("k", b"v")
    assert not isinstance(raised.value, DiskFullError)


async def test_a_request_an_earlier_attempt_may_have_applied_is_never_said_refused_for_want_of_room() -> None:
    """The first attempt of an idempotent write is sent and never answered (it may have been applied);
    every later one is refused for want of room: not DiskFullError ("not applied"), but outcome unknown."""

    def silent_then_full(n: int, message: dict[str, Any]) -> dict[str, Any] | None:
        return None if n == 1 else follower_full("10.0.0.1:4100")(n, message)

    async with (
        scripted_server(silent_then_full) as (endpoint, received),
        open_client([endpoint], SECRET, request_timeout=6.0) as client,
    ):
        with pytest.raises(OutcomeUnknownError):
            await client.lease_keepalive(7)
    assert len(received) >= 2


def test_a_follower_names_a_full_disk_as_its_own_only_when_it_is() -> None:
    """A full follower's refusal carries the replica (the client counts that endpoint as full); one it
    passes on from the leader (a full leader handing over) does not: it says nothing of its own room."""
    reason = (FOLLOWER_DISK_FULL, ("10.0.0.1:4100",))
    own = translate_fail_reason(reason, "10.0.0.1:4100")
    passed_on = translate_fail_reason(reason, "10.0.0.2:4100")
    assert isinstance(own, UnavailableError) and own.replicas == ("10.0.0.1:4100",)
    assert isinstance(passed_on, UnavailableError) and passed_on.replicas == ()
    assert "10.0.0.1:4100 is full" in passed_on.message
    full = translate_fail_reason((DISK_FULL, ("10.0.0.1:4100",)), "10.0.0.2:4100")
    assert isinstance(full, DiskFullError) and full.replicas == ("10.0.0.1:4100",)


async def test_a_retried_read_is_answered_by_the_next_attempt() -> None:
    def refuse_first(n: int, message: dict[str, Any]) -> dict[str, Any] | None:
        if n == 1:
            return unavailable(n, message)
        return {"ok": {"revision": 7}}

    async with (
        scripted_server(refuse_first) as (endpoint, _received),
        open_client([endpoint], SECRET, request_timeout=2.0) as client,
    ):
        assert await client.barrier() == 7


def silent(_n: int, _message: dict[str, Any]) -> None:
    return None


def gives_up(_n: int, message: dict[str, Any]) -> dict[str, Any]:
    """The server's own deadline passed (or its leader changed) before it could answer."""
    error = OutcomeUnknownError(f"{message['op']} timed out after 5 s: it may or may not have been applied")
    return {"error": error_body(error)}


@pytest.mark.parametrize("script", [silent, gives_up])
async def test_a_read_without_an_answer_is_unavailable_not_of_unknown_outcome(script: Script) -> None:
    """A read changes nothing: when no answer comes (the client's deadline, or the server's), it is
    "unavailable, safe to retry", never "may or may not have been applied"."""
    async with (
        scripted_server(script) as (endpoint, received),
        open_client([endpoint], SECRET, request_timeout=1.0) as client,
    ):
        reads = (
            lambda: client.get("k"),
            lambda: client.range("p/", linearizable=True),
            client.barrier,
            client.status,
        )
        for read in reads:
            with pytest.raises(
                UnavailableError, match="a read changes nothing, so it is safe to retry"
            ) as raised:
                await read()
            assert "applied" not in raised.value.message
    assert {m["op"] for m in received} == {"get", "range", "barrier", "status"}


async def test_a_read_the_server_gave_up_on_is_asked_again_within_the_deadline() -> None:
    """A leader change fails the reads in flight at once (the server's "outcome unknown"); a read changes
    nothing, so the client asks again, and the new leader answers: the caller never sees the change (a
    node's management operation used to fail "the store is not available" on it)."""

    def gives_up_once(n: int, message: dict[str, Any]) -> dict[str, Any]:
        return gives_up(n, message) if n == 1 else {"ok": {"revision": 7}}

    async with (
        scripted_server(gives_up_once) as (endpoint, received),
        open_client([endpoint], SECRET, request_timeout=2.0) as client,
    ):
        assert await client.barrier() == 7
    assert [m["op"] for m in received] == ["barrier", "barrier"]


async def test_a_write_whose_answer_the_server_gave_up_on_stays_of_unknown_outcome() -> None:
    """The control: the same answer to a write still says its outcome is unknown."""
    async with (
        scripted_server(gives_up) as (endpoint, _received),
        open_client([endpoint], SECRET, request_timeout=1.0) as client,
    ):
        with pytest.raises(OutcomeUnknownError, match="may or may not have been applied"):
            await client.put("k", b"v")


async def test_a_watch_cancelled_before_the_server_confirmed_it_leaves_nothing_behind() -> None:
    """A watch whose owner is cancelled while it subscribes (a cache that ends as its node stops leading)
    is cancelled on the server too, and what the server still sends for it is dropped: left registered,
    the client would keep that watch's events for nobody (`watch_backlog` grows with every change)."""

    def script(_n: int, message: dict[str, Any]) -> dict[str, Any] | None:
        if message["op"] == "cancel":  # a batch already on its way when the cancel arrives
            return {"id": message["id"], "events": []}
        if message["op"] == "ping":
            return {"ok": "pong"}
        return None  # the subscription is never confirmed

    async with (
        scripted_server(script) as (endpoint, received),
        open_client([endpoint], SECRET, request_timeout=1.0) as client,
    ):

        async def subscribed() -> bool:
            return any(m["op"] == "watch" for m in received)

        async def cancelled() -> bool:
            return any(m["op"] == "cancel" and m["id"] == watch_id for m in received)

        watch = client.watch("p/", 1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(anext, watch)
            await wait_until(subscribed, timeout=10, what="the subscription to reach the server")
            nursery.cancel_scope.cancel()
        await watch.aclose()
        (watch_id,) = (m["id"] for m in received if m["op"] == "watch")
        await wait_until(cancelled, timeout=10, what=f"the server to get a cancel of watch {watch_id}")
        # the late batch it answered the cancel with came before this reply: it is dropped, not kept
        await client.raw({"op": "ping"})
        assert client.watch_backlog() == 0


STATUS = Status(
    self_address="scripted",
    leader="scripted",
    is_leader=False,
    term=3,
    commit_index=1,
    last_applied=1,
    revision=1,
    compact_revision=0,
    has_quorum=True,
    members=(),
    keys=0,
    leases=0,
)


async def test_a_status_wait_may_outlast_the_request_timeout_and_the_server_is_told_how_long() -> None:
    """The server holds a status wait up to its max_wait; the client's request timeout counts from the
    end of that wait, so a quiet wait longer than the timeout is not taken for a dead endpoint. (The
    client is connected first: a connect that outlasts its share of the timeout on a busy machine fails
    the first attempt before it is sent, and the retry rightly asks for no wait.)"""
    async with (
        scripted_server(lambda n, m: {"ok": encode(STATUS)}, hold=lambda m: m.get("max_wait", 0.0)) as (
            endpoint,
            received,
        ),
        open_client([endpoint], SECRET, request_timeout=0.5) as client,
    ):

        async def connected() -> bool:
            with contextlib.suppress(ConnectionLostError, OutcomeUnknownError):
                await client.raw({"op": "ping"})
                return True
            return False

        await wait_until(connected, timeout=30, what="the client to connect")
        status = await client.wait_status_change(False, 3, max_wait=1.5)
    assert status == STATUS
    assert [(m["op"], m["max_wait"]) for m in received if m["op"] == "status"] == [("status", 1.5)]


async def test_a_status_wait_on_a_dead_endpoint_gives_up_within_the_request_timeout() -> None:
    """Nothing listens: no server holds the wait, so the client gives it back and says so in about its
    request timeout, not after the 60 s it asked to wait."""
    async with open_client([f"127.0.0.1:{free_port()}"], SECRET, request_timeout=0.3) as client:
        with trio.fail_after(30), pytest.raises(ConnectionLostError):
            await client.wait_status_change(False, 3, max_wait=60.0)


async def test_an_endpoint_that_accepts_but_never_answers_is_passed_over_within_one_request() -> None:
    """A paused replica (SIGSTOP): its kernel completes TCP handshakes, but nothing answers the protocol's.
    With a request timeout shorter than the connect timeout (a node's lease client: 0.75 s), every
    request used to spend its whole time connecting there and the client never moved on, so the node's
    lease lapsed while two other replicas served (chaos soak, 2026-12-04). Each request must be answered
    by the next endpoint instead."""
    paused = trio.socket.socket()
    await paused.bind(("127.0.0.1", 0))
    paused.listen(16)  # never accepted
    try:
        async with (
            scripted_server(lambda n, m: {"ok": encode(STATUS)}) as (endpoint, _received),
            open_client(
                [f"127.0.0.1:{paused.getsockname()[1]}", endpoint], SECRET, request_timeout=0.75
            ) as client,
        ):
            for _ in range(3):
                assert await client.status() == STATUS
            assert client.endpoint == endpoint
    finally:
        paused.close()


@attrs.define
class SlowReader:
    """A server that completes the handshake and then reads nothing until `reading` is set (its receive
    buffer kept small): the client's socket fills. It answers each request with the length of its `pad`."""

    endpoint: str
    reading: trio.Event
    accepted: list[trio.SocketStream]
    received: list[dict[str, Any]]


@asynccontextmanager
async def slow_reader() -> AsyncIterator[SlowReader]:
    server = SlowReader("", trio.Event(), [], [])

    async def handle(stream: trio.SocketStream) -> None:
        server.accepted.append(stream)
        stream.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 64 * 1024)
        framed = FramedStream(stream)
        if not await server_handshake(framed, SECRET, "slow reader"):
            return
        await server.reading.wait()
        while (message := await framed.receive()) is not None:
            server.received.append(message)
            await framed.send({"id": message["id"], "ok": len(message.get("pad", ""))})

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        server.endpoint = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        yield server
        nursery.cancel_scope.cancel()


BIG = {"op": "big", "pad": "p" * 2_000_000}


async def _fill_the_socket(client: KVClient, nursery: trio.Nursery, answers: list[Any]) -> Any:
    """Four big requests on `client`'s connection, one writing and the others waiting their turn; the
    connection."""

    async def ask_big() -> None:
        try:
            answers.append(await client.raw(BIG))
        except (OutcomeUnknownError, UnavailableError) as error:
            answers.append(error)

    for _ in range(4):
        nursery.start_soon(ask_big)

    def held_up() -> bool:
        connection = client._connection
        return connection is not None and connection.framed._send_lock.statistics().tasks_waiting > 0

    await wait_until(held_up, timeout=10, what="the big requests to fill the socket")
    return client._connection


async def test_a_request_cancelled_while_a_full_socket_holds_up_its_send_leaves_the_connection_in_use() -> (
    None
):
    """A replica that reads slowly fills the client's socket with earlier requests; one more request,
    cancelled while it waits its turn to be written (a caller's timeout), wrote nothing. The connection
    goes on: the requests on it are answered there, and the next one too. It used to be marked closed
    (a watch's `aclose` under a 1 s bound did this): the next request opened a second connection, and the
    first stayed open beside it with whatever it carried."""
    answers: list[Any] = []
    async with (
        slow_reader() as server,
        open_client([server.endpoint], SECRET, request_timeout=30.0) as client,
    ):
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                connection = await _fill_the_socket(client, nursery, answers)
                with trio.move_on_after(0.2) as waited:
                    await client.raw({"op": "small"})
                assert waited.cancelled_caught
                assert connection.framed._send_lock.locked()  # (a big one still going out: it waited)
                assert not connection.closed
                server.reading.set()
            assert answers == [2_000_000] * 4
            assert await client.raw({"op": "after"}) == 0
            assert client._connection is connection
        assert len(server.accepted) == 1
        assert [message["op"] for message in server.received] == ["big"] * 4 + ["after"]


async def test_a_write_that_timed_out_waiting_for_its_turn_on_a_full_socket_was_not_applied() -> None:
    """Its own deadline passed before its first byte was written: "not applied" (UnavailableError),
    not "may or may not have been applied", and the connection that made no progress is left for the
    next request (retired: it closes once the requests on it have had their time)."""
    answers: list[Any] = []
    async with slow_reader() as server, open_client([server.endpoint], SECRET, request_timeout=5.0) as client:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                connection = await _fill_the_socket(client, nursery, answers)
                client.request_timeout = 1.0  # (its deadline passes before theirs)
                with pytest.raises(UnavailableError, match="could not be sent within 1 s"):
                    await client.raw({"op": "small"})
                client.request_timeout = 5.0  # (before the retired connection's close is timed from it)
                assert client._connection is not connection
                server.reading.set()
            assert answers == [2_000_000] * 4  # (the connection retired, not closed: they were answered)
        assert "small" not in [message["op"] for message in server.received]


def confirms_watches(_n: int, message: dict[str, Any]) -> dict[str, Any] | None:
    if message["op"] == "watch":
        return {"watching": {"start_revision": message["start_revision"]}}
    return {"ok": "pong"} if message["op"] == "ping" else None


async def test_a_watch_closed_in_the_finally_of_a_cancelled_task_is_cancelled_on_the_server() -> None:
    """`aclose` waits for nothing and is not cancelled: the `finally` of a cancelled consumer calls it as
    it is. (It sent the cancel itself: unshielded, a cancelled task sent nothing and the server went on
    streaming; the node shielded it in eight places, two of them bounded.)"""
    async with (
        scripted_server(confirms_watches) as (endpoint, received),
        open_client([endpoint], SECRET, request_timeout=5.0) as client,
    ):
        watch = client.watch("p/", 7)

        async def consume() -> None:
            try:
                async for _batch in watch:
                    pass
            finally:
                await watch.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await wait_until(lambda: watch._receive is not None, timeout=10, what="the watch confirmed")
            nursery.cancel_scope.cancel()
        (watch_id,) = (m["id"] for m in received if m["op"] == "watch")
        await wait_until(
            lambda: any(m["op"] == "cancel" and m["id"] == watch_id for m in received),
            timeout=10,
            what=f"the server to get a cancel of watch {watch_id}",
        )
        assert await client.raw({"op": "ping"}) == "pong"
        assert client.watch_backlog() == 0


async def _consume(watch: Any, ended: trio.Event) -> None:
    """Take `watch`'s batches until its iteration ends; then set `ended`."""
    async for _batch in watch:
        pass
    ended.set()


async def test_a_watch_closed_by_another_task_ends_the_iteration_without_subscribing_again() -> None:
    async with (
        scripted_server(confirms_watches) as (endpoint, received),
        open_client([endpoint], SECRET, request_timeout=5.0) as client,
    ):
        watch = client.watch("p/", 7)
        ended = trio.Event()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_consume, watch, ended)
                await wait_until(lambda: watch._receive is not None, timeout=10, what="the watch confirmed")
                await watch.aclose()
                await ended.wait()
            await wait_until(
                lambda: any(m["op"] == "cancel" for m in received), timeout=10, what="the cancel sent"
            )
            assert [m["op"] for m in received] == ["watch", "cancel"]  # (not subscribed again)


async def test_a_watch_closed_while_it_subscribes_again_ends_there_and_its_connection_goes_on() -> None:
    """A watch's connection dropped; while its new subscription waits for the server's confirmation,
    another task closes it: the iteration ends, the server gets the cancel of that subscription (its id
    is the new connection's), and the new connection, shared by the client's other requests, goes on.
    (The closed subscription ended as if its connection had failed: the client dropped that connection,
    failing the requests in flight on it, and subscribed yet again.)"""
    received: list[tuple[int, dict[str, Any]]] = []  # (the connection's number, the message)

    async def handle(stream: trio.SocketStream) -> None:
        number = len({n for n, _ in received}) + 1
        framed = FramedStream(stream)
        if not await server_handshake(framed, SECRET, "scripted"):
            return
        while (message := await framed.receive()) is not None:
            received.append((number, message))
            if message["op"] == "watch" and number == 1:  # confirmed, then the connection drops
                await framed.send({"id": message["id"], "watching": {"start_revision": 1}})
                return
            if message["op"] == "ping":
                await framed.send({"id": message["id"], "ok": "pong"})

    async with trio.open_nursery() as servers:
        listeners = await servers.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        endpoint = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        async with open_client([endpoint], SECRET, request_timeout=5.0) as client:
            watch = client.watch("p/", 1)
            ended = trio.Event()

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_consume, watch, ended)
                    await wait_until(
                        lambda: [n for n, m in received if m["op"] == "watch"] == [1, 2],
                        timeout=10,
                        what="the watch subscribing again on a second connection",
                    )
                    await watch.aclose()
                    await ended.wait()
                (again,) = (m["id"] for n, m in received if n == 2 and m["op"] == "watch")
                await wait_until(
                    lambda: (2, {"id": again, "op": "cancel"}) in received,
                    timeout=10,
                    what="the cancel of the second subscription",
                )
                assert await client.raw({"op": "ping"}) == "pong"
            assert [(n, m["op"]) for n, m in received] == [
                (1, "watch"),
                (2, "watch"),
                (2, "cancel"),
                (2, "ping"),
            ]
        servers.cancel_scope.cancel()


async def test_a_hung_endpoint_is_passed_over_for_a_while_once_it_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replica that accepts connections and answers nothing (a stalled machine: its kernel still
    accepts) cost the client its connect timeout each time its round of endpoints came back to it; now,
    once it failed, a new connection goes past it while it is passed over (a minute here, so that a slow
    machine cannot outlast it between the two requests)."""
    monkeypatch.setattr(aether_kv._endpoint_order, "PASS_OVER_START", 60.0)
    hung: list[trio.SocketStream] = []

    async def accept_and_hang(stream: trio.SocketStream) -> None:
        hung.append(stream)
        await trio.sleep_forever()

    async def answer_or_drop(stream: trio.SocketStream) -> None:
        framed = FramedStream(stream)
        if not await server_handshake(framed, SECRET, "drops on request"):
            return
        while (message := await framed.receive()) is not None:
            if message["op"] == "drop":
                await stream.aclose()
                return
            await framed.send({"id": message["id"], "ok": message["op"]})

    async with trio.open_nursery() as servers:
        endpoints = []
        for handler in (accept_and_hang, answer_or_drop):
            listeners = await servers.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
            endpoints.append(f"127.0.0.1:{listeners[0].socket.getsockname()[1]}")
        hung_endpoint, endpoint = endpoints
        async with open_client(
            [hung_endpoint, endpoint], SECRET, request_timeout=5.0, connect_timeout=0.5
        ) as client:
            with trio.fail_after(30):
                assert await client.raw({"op": "first"}) == "first"  # (past the hung one, after its timeout)
                assert len(hung) == 1 and client.endpoint == endpoint
                with pytest.raises(OutcomeUnknownError):
                    await client.raw({"op": "drop"})  # (the connection drops: the round moves on)
                assert await client.raw({"op": "second"}) == "second"
                assert len(hung) == 1  # (not asked again: passed over)
        servers.cancel_scope.cancel()
