"""A replica's watch fan-out (`_fanout.py`, `_server.py`): every event a watch sends is encoded once and
its bytes shared by all the watches that send it, and watching keeps its semantics: each watch gets the
events of its prefix once, in order, whatever the other watches on the replica do (overlapping prefixes,
a watch cancelled in the middle of a batch, a watcher that stops reading), and a start revision the
history no longer reaches is refused. Real replica, real sockets (plain and mutual TLS), in this process.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import json
import logging
import random
import struct
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import aether_kv._fanout
from aether_kv import (
    CompactedError,
    Event,
    EventKind,
    KeyValue,
    KVClient,
    KVStore,
    KVWatch,
    Put,
    RaftConfig,
    ReloadingTLS,
    open_client,
    open_store,
    wait_for_leader,
)
from aether_kv._fanout import WatchFanout
from aether_kv._ports import free_port
from aether_kv._server import serve_clients
from aether_kv._tls import client_identity, connect_tls
from aether_kv._wire import (
    MAX_MESSAGE_BYTES,
    FramedStream,
    client_handshake,
    decode_events,
    encode_events,
    events_message,
)
from support import wait_until

SECRET = "the watch fan-out test secret, 32+"
HISTORY = 800


@attrs.frozen
class Served:
    store: KVStore
    endpoint: str
    tls: ReloadingTLS | None  # the client's identity, with TLS

    def client(self) -> Any:
        return open_client([self.endpoint], SECRET, request_timeout=10.0, tls=self.tls)


@pytest.fixture(params=["plain", "tls"])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    address = f"127.0.0.1:{free_port()}"
    config = RaftConfig(
        raft_address=address,
        peers=(address,),
        data_dir=tmp_path / "replica",
        secret=SECRET,
        history_events=HISTORY,
        durable=False,
    )
    tls = request.param == "tls"
    server_tls = client_identity(SECRET, tmp_path / "server", hosts=("127.0.0.1",)) if tls else None
    client_tls = client_identity(SECRET, tmp_path / "client") if tls else None
    async with open_store(config) as store, trio.open_nursery() as nursery:
        await wait_for_leader(store)
        serve = functools.partial(serve_clients, tls=server_tls)
        host, port = await nursery.start(serve, store, SECRET, "127.0.0.1", 0)
        yield Served(store=store, endpoint=f"{host}:{port}", tls=client_tls)
        nursery.cancel_scope.cancel()


Seen = tuple[int, str, str, bytes]  # revision, kind, key, value


async def _collect(client: KVClient, prefix: str, start: int, until: int | str) -> list[Seen]:
    """The events of a watch on `prefix` from `start` until one reaches revision `until` (or, given a
    string, until one on a key ending with it)."""
    seen: list[Seen] = []
    async with contextlib.aclosing(client.watch(prefix, start)) as watch:
        async for events in watch:
            seen += [(e.revision, str(e.kind), e.kv.key, e.kv.value) for e in events]
            if isinstance(until, str) and any(e.kv.key.endswith(until) for e in events):
                return seen
            if isinstance(until, int) and seen[-1][0] >= until:
                return seen
    return seen


@contextlib.asynccontextmanager
async def _raw_connection(served: Served, *, reset: bool = False) -> AsyncIterator[FramedStream]:
    """A connection to the replica that speaks the protocol by hand (past the handshake): what it reads,
    and when, is the test's. `reset`: closed with a reset (SO_LINGER 0), as by a client that crashed."""
    host, port = served.endpoint.rsplit(":", 1)
    socket = await trio.open_tcp_stream(host, int(port))
    if reset:
        socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0))
    framed = FramedStream(await connect_tls(socket, served.tls, host), max_receive=MAX_MESSAGE_BYTES)
    try:
        await client_handshake(framed, SECRET, served.endpoint)
        yield framed
    finally:
        await trio.aclose_forcefully(framed.stream)


async def _watched_from_here(writer: KVClient, raw: FramedStream, prefix: str) -> int:
    """The revision of a key `prefix`start put now, from which `raw` asks to watch `prefix` (as id 1)."""
    start = (await writer.put(f"{prefix}start", b"")).revision
    await raw.send({"id": 1, "op": "watch", "prefix": prefix, "start_revision": start})
    return start


async def _put_all(client: KVClient, keys: list[str], value: Callable[[str], bytes], writers: int = 8) -> int:
    """Put every key (`writers` at a time, so the replica commits them in batches); the last revision."""
    pending = list(keys)
    revisions: list[int] = []

    async def writer() -> None:
        while pending:
            key = pending.pop(0)
            revisions.append((await client.put(key, value(key))).revision)

    async with trio.open_nursery() as nursery:
        for _ in range(writers):
            nursery.start_soon(writer)
    return max(revisions)


PREFIXES = ("", "a/", "a/b/", "a/b/c", "a/c/", "z/")


async def test_watches_on_overlapping_prefixes_each_get_their_events_once_in_order(served: Served) -> None:
    """24 watches on six nested and disjoint prefixes over three connections, some live while the
    writes happen, some from the history, while three writers commit transactions of several puts."""
    async with served.client() as writer, served.client() as one, served.client() as two:
        start = (await writer.put("start", b"")).revision + 1
        expected: list[tuple[int, int, str, str, bytes]] = []  # revision, order in it, kind, key, value
        keys = [f"{p}k{n}" for p in ("a/", "a/b/", "a/b/c", "a/b/cd/", "a/c/", "z/", "y/") for n in range(6)]

        async def write(seed: int) -> None:
            chooser = random.Random(seed)
            for n in range(20):
                chosen = chooser.sample(keys, chooser.randint(1, 4))
                ops = [Put(key=key, value=f"{seed}-{n}".encode()) for key in chosen]
                revision = (await writer.txn([], ops)).revision
                expected.extend((revision, i, "put", op.key, op.value) for i, op in enumerate(ops))

        results: dict[int, list[Seen]] = {}
        clients = (writer, one, two)
        written = trio.Event()

        async def watch(index: int, prefix: str) -> None:
            if index % 2:  # half of them only start once everything is written (from the history)
                await written.wait()
            results[index] = await _collect(clients[index % 3], prefix, start, until="end")

        watches = list(enumerate(PREFIXES * 4))
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for index, prefix in watches:
                    nursery.start_soon(watch, index, prefix)
                async with trio.open_nursery() as writers:
                    for seed in range(3):
                        writers.start_soon(write, seed)
                deleted = await writer.delete_prefix("a/b/")  # many deletes in one revision
                expected.extend(
                    (deleted.revision, i, "delete", kv.key, b"") for i, kv in enumerate(deleted.prev)
                )
                ends = [Put(key=key, value=b"") for key in ("a/b/cend", "a/c/end", "z/end")]  # every prefix
                ended = (await writer.txn([], ends)).revision
                expected.extend((ended, i, "put", op.key, b"") for i, op in enumerate(ends))
                written.set()
        expected.sort()
        for index, prefix in watches:
            wanted = [(r, kind, key, value) for r, _, kind, key, value in expected if key.startswith(prefix)]
            assert results[index] == wanted, f"watch {index} on {prefix!r}"


async def test_each_event_is_encoded_once_however_many_watches_send_it(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: collections.Counter[tuple[int, str]] = collections.Counter()
    encode = aether_kv._fanout.encode_event

    def counting(event: Any) -> bytes:
        encoded[(event.revision, event.kv.key)] += 1
        return encode(event)

    monkeypatch.setattr(aether_kv._fanout, "encode_event", counting)
    async with served.client() as writer, served.client() as reader:
        start = (await writer.put("start", b"")).revision + 1
        keys = [f"k/{'ab'[n % 2]}/{n}" for n in range(60)]
        prefixes = ("", "k/", "k/", "k/a/", "k/b/", "k/a/", "", "k/")
        results: list[list[Seen]] = []
        written = trio.Event()

        async def watch(n: int, prefix: str) -> None:
            if n % 2:  # half of them live, half from the history
                await written.wait()
            results.append(await _collect((writer, reader)[n % 2], prefix, start, until="end"))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for n, prefix in enumerate(prefixes):
                    nursery.start_soon(watch, n, prefix)
                await _put_all(writer, keys, lambda key: key.encode())
                await writer.txn([], [Put(key="k/a/end", value=b""), Put(key="k/b/end", value=b"")])
                written.set()
    assert sorted(len(seen) for seen in results) == [31] * 3 + [62] * 5
    assert set(encoded) == {(r, key) for seen in results for r, _, key, _ in seen}
    assert set(encoded.values()) == {1}, "an event was encoded more than once"


async def test_a_watch_cancelled_in_the_middle_of_a_batch_leaves_the_others_whole(served: Served) -> None:
    """A batch of 700 events goes as three messages (256 events each at most); a watch cancelled after
    the first leaves its connection, and the watch sharing its messages there, unharmed."""
    async with served.client() as writer, served.client() as reader:
        start = (await writer.put("m/start", b"")).revision
        last = await _put_all(writer, [f"m/{n:04}" for n in range(699)], lambda key: key.encode())
        with trio.fail_after(30):
            async with contextlib.aclosing(reader.watch("m/", start)) as cancelled:
                first = await cancelled.__anext__()
            assert len(first) == 256 and first[0].revision == start
            whole = await _collect(reader, "m/", start, until=last)
            assert (await reader.get("m/0001")) is not None  # the connection still serves
            again = await _collect(reader, "m/", start, until=last)
        assert [seen[0] for seen in whole] == list(range(start, last + 1))
        assert again == whole


async def test_a_watch_dropped_without_aclose_is_cancelled_at_its_next_event(served: Served) -> None:
    """A consumer whose task ends without `aclose` (cancelled, or an error on its way out) drops its
    watch: the next event for it finds no reader, and the client cancels it on the server. Left
    registered, it took every event until its buffer filled, 1,024 batches later, and the replica encoded
    and sent them all (seen: a replica's CPU per round of writes grew round after round, 0.5 to 1.8 ms
    per instance's writes in 20 rounds, as four such watches a round added up)."""
    async with served.client() as client:
        start = (await client.put("d/start", b"")).revision + 1
        dropped: list[tuple[Any, int, Any]] = []  # its connection, its id, a weak reference to it

        async def take_one_batch(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            watch = client.watch("d/", start)
            task_status.started()
            await watch.__anext__()
            dropped.append((watch._connection, watch._id, weakref.ref(watch)))
            await trio.sleep_forever()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(take_one_batch)
                await client.put("d/1", b"x")
                await wait_until(lambda: bool(dropped), timeout=10, what="the first batch taken")
                nursery.cancel_scope.cancel()  # (no aclose)
            ((connection, request_id, gone),) = dropped
            assert gone() is None  # (no longer referenced: collected at once)
            assert request_id in connection.watches
            await client.put("d/2", b"x")
            await wait_until(
                lambda: request_id not in connection.watches, timeout=10, what="the dropped watch cancelled"
            )
            await client.put("d/3", b"x")
            await _collect(client, "d/", start, until="d/3")  # (a live watch there after it: d/3 delivered)
        assert client.watch_backlog() == 0  # (nothing kept for the dropped one)


async def test_a_watch_dropped_without_aclose_on_a_quiet_prefix_is_cancelled_at_the_next_request(
    served: Served,
) -> None:
    """No event comes to find it dropped: the connection's next request cancels it (it stayed registered
    on the replica until the connection ended)."""
    async with served.client() as client:
        subscribed = trio.Event()

        async def watch_quietly() -> None:
            watch = client.watch("quiet/")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(anext, watch)
                await wait_until(lambda: watch._receive is not None, timeout=10, what="the watch confirmed")
                subscribed.set()
                await trio.sleep_forever()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_quietly)
                await subscribed.wait()
                assert (await client.status()).watches == 1
                nursery.cancel_scope.cancel()  # (no aclose: the watch is collected with its task's frame)
            gc.collect()
            await wait_until(
                lambda: _watches_served(client, 0),
                timeout=10,
                what="the dropped watch cancelled on the replica",
            )


async def _watches_served(client: KVClient, count: int) -> bool:
    return (await client.status()).watches == count


async def test_a_watcher_that_stops_reading_holds_up_only_itself(served: Served) -> None:
    """A connection whose watcher reads nothing fills its socket; the server's other watches go on.
    Read again, it gets its events from its start, once, in order: all of them, or those up to where the
    history was cut under it and then the compaction error (the limit of today)."""
    async with _raw_connection(served) as slow:
        async with served.client() as writer:
            start = await _watched_from_here(writer, slow, "s/")
            keys = [f"s/{n:04}" for n in range(900)]
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_put_all, writer, keys, lambda key: key.encode() * 2000)
                    last = start + len(keys)
                    fast = await _collect(writer, "s/", start, until=last)
                assert [seen[0] for seen in fast] == list(range(start, last + 1))
                revisions: list[int] = []
                error: dict[str, Any] | None = None
                while not revisions or revisions[-1] < last:
                    message = await slow.receive()
                    assert message is not None and message["id"] == 1
                    if "error" in message:
                        error = message["error"]
                        break
                    if "events" in message:
                        revisions += [e.revision for e in decode_events(message["events"])]
        assert revisions == list(range(start, start + len(revisions)))
        if error is not None:
            assert error["code"] == "compacted" and error["compact_revision"] >= revisions[-1]
        else:
            assert revisions[-1] == last


async def test_a_watch_cancelled_while_its_message_waits_on_a_full_socket_ends_after_that_message(
    served: Served,
) -> None:
    """A client that reads slowly fills its socket in the middle of a watch message and then cancels the
    watch (as the client does for a watch dropped without `aclose`): the message is finished, not cut
    short, and the connection goes on answering. Cut short, the next bytes (a reply) were read as the
    rest of it: garbage, or a wait for bytes that never came, and the request unanswered."""
    async with _raw_connection(served) as slow:
        async with served.client() as writer:
            start = await _watched_from_here(writer, slow, "f/")
            keys = [f"f/{n:04}" for n in range(400)]
            with trio.fail_after(60):
                # ~12 MiB, 16 as base64: a socket whose reader stopped takes ~0.2 MiB here, 8 at most
                await _put_all(writer, keys, lambda key: key.encode() * 5000)
                await _collect(writer, "f/", start, until=start + len(keys))  # (sent on as far as it goes)
                await slow.send({"id": 1, "op": "cancel"})
                await slow.send({"id": 2, "op": "get", "key": "f/start"})
                revisions: list[int] = []
                while True:
                    message = await slow.receive()  # (garbage: InvalidRequestError)
                    assert message is not None
                    if message["id"] == 2:
                        break
                    assert message["id"] == 1, message
                    if "watching" in message:  # (its confirmation)
                        continue
                    assert "events" in message, message
                    revisions += [e.revision for e in decode_events(message["events"])]
        assert "ok" in message, message
        assert revisions == list(range(start, start + len(revisions)))  # whole messages, in order
        assert len(revisions) < len(keys) + 1  # (cancelled before the last of them: the case wanted)


async def test_a_watch_cancelled_right_behind_its_request_sends_no_event(served: Served) -> None:
    """The client cancels a watch it gave up on before the server confirmed it (`_subscribe`), so the
    cancel can come right behind the request: whichever of their tasks the server runs first, the watch
    ends. (It was registered only once its confirmation was sent: a cancel run first found nothing, and
    the watch streamed until the connection closed.) A second watch of an id in use is refused."""
    async with _raw_connection(served) as raw:
        async with served.client() as writer:
            for request_id in range(10, 30):
                await raw.send({"id": request_id, "op": "watch", "prefix": "g/", "start_revision": 0})
                await raw.send({"id": request_id, "op": "cancel"})
            await raw.send({"id": 5, "op": "watch", "prefix": "g/", "start_revision": 0})
            await raw.send({"id": 5, "op": "watch", "prefix": "g/", "start_revision": 0})
            with trio.fail_after(30):
                revision = (await writer.put("g/x", b"x")).revision
                await _collect(writer, "g/", revision, until=revision)
                await raw.send({"id": 99, "op": "get", "key": "g/x"})
                seen: list[dict[str, Any]] = []
                while (message := await raw.receive()) is not None and message["id"] != 99:
                    seen.append(message)
        assert [m["id"] for m in seen if "events" in m] == [5], seen  # (the one watch of id 5 alone)
        assert [m["error"]["code"] for m in seen if "error" in m] == ["invalid_request"], seen


async def test_a_start_revision_the_history_no_longer_reaches_is_refused_to_every_watch(
    served: Served,
) -> None:
    async with served.client() as writer, served.client() as reader:
        first = (await writer.put("c/first", b"")).revision
        last = await _put_all(writer, [f"c/{n:04}" for n in range(HISTORY + 50)], lambda key: b"x")
        compacted = (await writer.status()).compact_revision
        assert compacted >= first
        with trio.fail_after(30):
            for client in (writer, reader, reader):  # the same refusal however many ask alike
                with pytest.raises(CompactedError) as info:
                    async with contextlib.aclosing(client.watch("c/", first)) as watch:
                        await watch.__anext__()
                assert info.value.compact_revision == compacted
            rest = await _collect(reader, "c/", compacted + 1, until=last)
        assert [seen[0] for seen in rest] == list(range(compacted + 1, last + 1))


# ------------------------------------------------------------------------ the fan-out's bookkeeping (pure)


def _events(prefix: str, revisions: range, value: bytes = b"v") -> list[Event]:
    return [
        Event(
            kind=EventKind.PUT,
            kv=KeyValue(key=f"{prefix}{r}", value=value, create_revision=r, mod_revision=r, version=1),
            prev=None,
            revision=r,
        )
        for r in revisions
    ]


def test_a_batch_is_encoded_once_for_every_watch_that_takes_it() -> None:
    fanout = WatchFanout()
    batch = _events("p/", range(1, 6))
    bodies = fanout.bodies("p/", batch)
    assert fanout.bodies("p/", list(batch)) is bodies  # another watch's list of the very same events
    assert json.loads(events_message(3, bodies[0])) == {"id": 3, "events": encode_events(batch)}
    assert fanout.encoded(batch[2]) is fanout.encoded(batch[2])
    # the same prefix and revisions, but other event objects (a state restored from a snapshot): built anew
    rebuilt = _events("p/", range(1, 6))
    assert fanout.bodies("p/", rebuilt) is not bodies and fanout.bodies("p/", rebuilt) == bodies
    assert fanout.bodies("p/", []) == []


def test_the_fan_out_keeps_a_bounded_number_of_events_and_bytes() -> None:
    fanout = WatchFanout(keep_events=3, keep_batches=2, keep_bytes=10_000)
    events = _events("p/", range(1, 6))
    first = fanout.encoded(events[0])
    for event in events[1:]:
        fanout.encoded(event)
    assert fanout.encoded(events[0]) is not first  # the oldest was let go, and is encoded again
    assert fanout.encoded(events[0]) == first
    big = _events("b/", range(1, 4), value=b"x" * 6000)  # ~8 KB each: only one fits in 10,000 bytes
    kept = fanout.bodies("b/", big[:1])
    fanout.bodies("b/", big[1:2])
    assert fanout.bodies("b/", big[:1]) is not kept


async def test_watches_on_one_prefix_at_one_point_share_one_read_of_the_history(tmp_path: Path) -> None:
    """Between two applied changes, the watches that ask alike (prefix, next revision) read the replica's
    history once (under its apply lock); each still gets a list of its own."""
    address = f"127.0.0.1:{free_port()}"
    config = RaftConfig(
        raft_address=address, peers=(address,), data_dir=tmp_path / "r", secret=SECRET, durable=False
    )
    async with open_store(config) as store:
        await wait_for_leader(store)
        start = (await store.put("s/0", b"x")).revision
        replica = store._replica
        reads = [0]
        read = replica.read

        def counting(reader: Callable[[Any], Any]) -> Any:
            reads[0] += 1
            return read(reader)

        replica.read = counting  # type: ignore[method-assign]
        watches = [store.watch("s/", start) for _ in range(5)]
        with trio.fail_after(10):
            batches = [await watch.__anext__() for watch in watches]
        assert reads == [1]
        assert all(batch == batches[0] for batch in batches) and [e.kv.key for e in batches[0]] == ["s/0"]
        batches[0].clear()
        assert batches[1] and batches[1] is not batches[2]
        await store.put("s/1", b"y")  # a change applied: the next reads see it
        with trio.fail_after(10):
            assert [e.kv.key for e in await watches[0].__anext__()] == ["s/1"]
        assert reads[0] >= 2


async def test_the_replica_reports_the_client_connections_and_watches_it_serves(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """`Status.clients` and `Status.watches`: what the replica's server serves now, up as they open and
    down as they end (a watch closed, a connection reset). A figure that only grows is a client that
    leaks them: a dropped watch used to cost its replica every event until its buffer filled. A client
    that resets its connection is no error of the replica's (it logged one, with a traceback)."""
    async with served.client() as client:

        async def serving(clients: int, watches: int) -> bool:
            status = await client.status()
            return (status.clients, status.watches) == (clients, watches)

        async def consume(watch: KVWatch) -> None:
            async for _events in watch:
                pass

        await wait_until(lambda: serving(1, 0), timeout=10, what="one client, no watch")
        first, second = client.watch("a/"), client.watch("b/")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume, first)
            nursery.start_soon(consume, second)
            await wait_until(lambda: serving(1, 2), timeout=10, what="two watches")
            async with _raw_connection(served, reset=True) as raw:
                await raw.send({"id": 1, "op": "watch", "prefix": "c/", "start_revision": 0})
                await wait_until(lambda: serving(2, 3), timeout=10, what="a second client and its watch")
            await wait_until(lambda: serving(1, 2), timeout=10, what="the second client gone, its watch too")
            await first.aclose()
            await wait_until(lambda: serving(1, 1), timeout=10, what="a watch closed")
            await second.aclose()
        await wait_until(lambda: serving(1, 0), timeout=10, what="no watch left")
    assert not [r for r in caplog.records if r.name.startswith("aether_kv") and r.levelno >= logging.WARNING]


async def test_a_watch_of_the_replica_itself_delivers_nothing_once_closed(served: Served) -> None:
    """The in-process store's watch (what the server streams from) keeps `KVWatch`'s word too."""
    watch = served.store.watch("z/")
    await served.store.put("z/1", b"x")
    assert [e.kv.key for e in await watch.__anext__()] == ["z/1"]
    await served.store.put("z/2", b"x")
    await watch.aclose()
    with pytest.raises(StopAsyncIteration):
        await watch.__anext__()
