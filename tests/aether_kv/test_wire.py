"""Unit tests of the client protocol's wire format: the JSON codec (`encode`/`decode`), the length-prefixed
`FramedStream` over in-memory trio streams, error bodies, and the secret handshake.

No sockets and no sleeps: `trio.testing` memory streams stand in for TCP.
"""

from __future__ import annotations

import json
import struct
import threading
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from aether_kv._errors import (
    ERRORS_BY_CODE,
    AuthenticationError,
    CompactedError,
    DiskFullError,
    InvalidRequestError,
    KVError,
    UnavailableError,
)
from aether_kv._records import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    Barrier,
    BarrierResult,
    Batch,
    BatchResult,
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    DeletePrefix,
    DeleteResult,
    ErrorResult,
    Event,
    EventKind,
    Get,
    GetResult,
    KeyValue,
    LeaseExpire,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseResult,
    LeaseRevoke,
    Member,
    Put,
    PutResult,
    Range,
    RangeResult,
    RevokeResult,
    Status,
    Txn,
    TxnOp,
    TxnOpResult,
    TxnResult,
)
from aether_kv._wire import (
    DECODE_IN_THREAD,
    MAX_FRAME_BYTES,
    PROTOCOL,
    FramedStream,
    FrameTooLargeError,
    decode,
    decode_events,
    encode,
    encode_event,
    encode_events,
    encode_txn_op,
    error_body,
    error_from_body,
    events_message,
    new_nonce,
    proof,
    proof_ok,
)

# ------------------------------------------------------------------------ helpers


def through_json(record: object, cls: type[Any] | None = None) -> Any:
    """encode → JSON text → parse → decode, exactly what a record goes through on the wire."""
    text = json.dumps(encode(record))
    return decode(json.loads(text), cls if cls is not None else type(record), "test")


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


KV = KeyValue(key="k", value=b"\x00\xffbinary", create_revision=3, mod_revision=7, version=2, lease=5)
KV2 = KeyValue(key="k/é/\U0010ffff", value=b"", create_revision=1, mod_revision=1, version=1)
TOMBSTONE = KeyValue(key="k", value=b"", create_revision=0, mod_revision=8, version=0)

ALL_OPS = (
    Get(key="g"),
    Range(prefix="p/", limit=3),
    Put(key="k", value=b"v", lease=2),
    Delete(key="d"),
    DeletePrefix(prefix="dp/"),
)
ALL_COMPARES = (
    Compare(key="a", target=CompareTarget.EXISTS, op=CompareOp.EQ, operand=False),
    Compare(key="b", target=CompareTarget.VALUE, op=CompareOp.NE, operand=b"\x00\x01"),
    Compare(key="c", target=CompareTarget.VERSION, op=CompareOp.LT, operand=0),
    Compare(key="d", target=CompareTarget.MOD_REVISION, op=CompareOp.GT, operand=12),
    Compare(key="e", target=CompareTarget.CREATE_REVISION, op=CompareOp.EQ, operand=3),
)
ALL_OP_RESULTS = (
    GetResult(kv=KV, revision=9),
    GetResult(kv=None, revision=9),
    RangeResult(kvs=(KV, KV2), revision=9, more=True),
    PutResult(revision=9, prev=KV),
    PutResult(revision=9, prev=None),
    DeleteResult(deleted=2, revision=9, prev=(KV, KV2)),
)

RECORDS = [
    KV,
    KV2,
    Event(kind=EventKind.PUT, kv=KV, prev=None, revision=7),
    Event(kind=EventKind.PUT, kv=KV, prev=KV2, revision=7),
    Event(kind=EventKind.DELETE, kv=TOMBSTONE, prev=KV, revision=8),
    *ALL_COMPARES,
    *ALL_OPS,
    Range(prefix="", limit=0),
    Put(key="k", value=b""),
    Txn(),
    Txn(compares=ALL_COMPARES, success=ALL_OPS, failure=tuple(reversed(ALL_OPS))),
    LeaseGrant(ttl=2.5, now=1700000000.125),
    LeaseKeepAlive(lease=3, now=1700000001.5),
    LeaseRevoke(lease=3),
    LeaseExpire(lease=3, now=1700000002.0),
    Barrier(),
    *ALL_OP_RESULTS,
    RangeResult(kvs=(), revision=0),
    DeleteResult(deleted=0, revision=4),
    TxnResult(succeeded=True, results=ALL_OP_RESULTS, revision=9),
    TxnResult(succeeded=False, results=(), revision=0),
    LeaseResult(lease=1, ttl=10.0, expires_at=1700000010.25),
    RevokeResult(revoked=True, deleted=3, revision=11),
    RevokeResult(revoked=False, deleted=0, revision=11),
    BarrierResult(revision=11),
    ErrorResult(code="lease_not_found", message="lease 3 not found"),
    Member(raft_address="127.0.0.1:4001", connected=True),
    Status(
        self_address="127.0.0.1:4001",
        leader="127.0.0.1:4002",
        is_leader=False,
        term=4,
        commit_index=120,
        last_applied=119,
        revision=11,
        compact_revision=2,
        has_quorum=True,
        members=(
            Member(raft_address="127.0.0.1:4002", connected=True),
            Member(raft_address="127.0.0.1:4003", connected=False),
        ),
        keys=5,
        leases=1,
    ),
    Status(
        self_address="a:1",
        leader=None,
        is_leader=False,
        term=0,
        commit_index=0,
        last_applied=0,
        revision=0,
        compact_revision=0,
        has_quorum=False,
        members=(),
        keys=0,
        leases=0,
    ),
]


def _record_id(record: object) -> str:
    return type(record).__name__


# ------------------------------------------------------------------------ codec round trips


@pytest.mark.parametrize("record", RECORDS, ids=_record_id)
def test_round_trip_through_json(record: object) -> None:
    assert through_json(record) == record


def test_every_record_and_result_type_is_covered() -> None:
    from aether_kv import _records

    record_types = {
        obj
        for obj in vars(_records).values()
        if isinstance(obj, type) and obj.__module__ == _records.__name__ and hasattr(obj, "__attrs_attrs__")
    }
    internal = {Batch, BatchResult}  # only in the Raft log (group commit, `_batcher.py`), never on the wire
    assert record_types - internal == {type(r) for r in RECORDS}


@pytest.mark.parametrize(
    ("op", "tag"),
    [
        (Get(key="g"), "get"),
        (Range(prefix="p"), "range"),
        (Put(key="k", value=b"v"), "put"),
        (Delete(key="d"), "delete"),
        (DeletePrefix(prefix="p"), "delete_prefix"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_txn_ops_are_tagged_with_op(op: Any, tag: str) -> None:
    encoded = encode_txn_op(op)
    assert encoded["op"] == tag
    assert decode(json.loads(json.dumps(encoded)), TxnOp, "txn.success[0]") == op  # type: ignore[arg-type]
    # inside a Txn the union is named, so the tag is there too
    assert encode(Txn(success=(op,)))["success"] == [encoded]


@pytest.mark.parametrize(
    ("result", "tag"),
    [
        (GetResult(kv=None, revision=1), "get"),
        (RangeResult(kvs=(), revision=1), "range"),
        (PutResult(revision=1), "put"),
        (DeleteResult(deleted=0, revision=1), "delete"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_txn_op_results_are_tagged_with_type(result: Any, tag: str) -> None:
    txn_result = TxnResult(succeeded=True, results=(result,), revision=1)
    (encoded,) = encode(txn_result)["results"]
    assert encoded["type"] == tag
    assert decode(json.loads(json.dumps(encoded)), TxnOpResult, "r") == result  # type: ignore[arg-type]
    assert through_json(txn_result) == txn_result


def test_bytes_travel_as_base64_and_enums_as_their_wire_names() -> None:
    assert encode(Put(key="k", value=b"\x00\xff")) == {"key": "k", "value": "AP8=", "lease": 0}
    assert encode_txn_op(Put(key="k", value=b"\x00\xff")) == {
        "op": "put",
        "key": "k",
        "value": "AP8=",
        "lease": 0,
    }
    assert encode(Compare(key="k", target=CompareTarget.VALUE, op=CompareOp.GT, operand=b"x")) == {
        "key": "k",
        "target": "value",
        "op": ">",
        "operand": "eA==",
    }
    assert encode(Compare(key="k", target=CompareTarget.EXISTS, operand=True))["operand"] is True
    assert encode(Event(kind=EventKind.DELETE, kv=TOMBSTONE, prev=None, revision=8))["kind"] == "delete"


def test_compare_defaults_when_op_and_operand_are_omitted() -> None:
    decoded = decode({"key": "k", "target": "exists"}, Compare, "c")
    assert decoded == Compare(key="k", target=CompareTarget.EXISTS, op=CompareOp.EQ, operand=True)


def test_events_round_trip() -> None:
    events = [r for r in RECORDS if isinstance(r, Event)]
    assert decode_events(json.loads(json.dumps(encode_events(events)))) == events
    assert decode_events([]) == []


keys = st.text(min_size=1, max_size=20).filter(lambda k: "\x00" not in k)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.builds(Put, key=keys, value=st.binary(max_size=64), lease=st.integers(0, 2**63)),
        st.builds(Get, key=keys),
        st.builds(Delete, key=keys),
        st.builds(DeletePrefix, prefix=st.text(max_size=20)),
        st.builds(Range, prefix=st.text(max_size=20), limit=st.integers(0, 1000)),
    )
)
def test_any_txn_op_round_trips(op: Any) -> None:
    text = json.dumps(encode_txn_op(op))
    assert decode(json.loads(text), TxnOp, "op") == op  # type: ignore[arg-type]
    assert through_json(op) == op


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.builds(Compare, key=keys, target=st.just(CompareTarget.EXISTS), operand=st.booleans()),
        st.builds(Compare, key=keys, target=st.just(CompareTarget.VALUE), operand=st.binary(max_size=64)),
        st.builds(
            Compare,
            key=keys,
            target=st.sampled_from(
                [CompareTarget.VERSION, CompareTarget.MOD_REVISION, CompareTarget.CREATE_REVISION]
            ),
            operand=st.integers(-(2**63), 2**63),
        ),
    ),
    st.sampled_from(list(CompareOp)),
)
def test_any_compare_round_trips(compare: Compare, op: CompareOp) -> None:
    compare = Compare(key=compare.key, target=compare.target, op=op, operand=compare.operand)
    decoded = through_json(compare)
    assert decoded == compare
    assert type(decoded.operand) is type(compare.operand)


@settings(max_examples=100, deadline=None)
@given(
    st.builds(
        KeyValue,
        key=keys,
        value=st.binary(max_size=64),
        create_revision=st.integers(0, 2**40),
        mod_revision=st.integers(0, 2**40),
        version=st.integers(0, 2**40),
        lease=st.integers(0, 2**40),
    )
)
def test_any_key_value_round_trips(kv: KeyValue) -> None:
    assert through_json(kv) == kv


# ------------------------------------------------------------------------ codec errors


BAD_INPUTS = [
    pytest.param({"op": "frobnicate", "key": "k"}, TxnOp, "unknown op 'frobnicate'", id="unknown-op-tag"),
    pytest.param({"key": "k"}, TxnOp, "missing field 'op'", id="missing-op-tag"),
    pytest.param({"op": "put", "key": "k"}, TxnOp, "value", id="put-missing-value"),
    pytest.param({"op": "get"}, TxnOp, "key", id="get-missing-key"),
    pytest.param({"op": "put", "key": "k", "value": "!!not base64!!"}, TxnOp, "base64", id="invalid-base64"),
    pytest.param({"op": "put", "key": "k", "value": "eA"}, TxnOp, "base64", id="base64-missing-padding"),
    pytest.param({"op": "put", "key": "k", "value": 5}, TxnOp, "value", id="value-not-a-string"),
    pytest.param({"op": "range", "prefix": "p", "limit": "ten"}, TxnOp, "limit", id="limit-wrong-type"),
    pytest.param(
        {"op": "put", "key": "k", "value": "eA==", "lease": "x"}, TxnOp, "lease", id="lease-wrong-type"
    ),
    pytest.param("put", TxnOp, "", id="op-not-an-object"),
    pytest.param({"key": "k"}, Put, "value", id="record-missing-field"),
    pytest.param({"key": "k", "value": "***"}, Put, "value", id="record-invalid-base64"),
    pytest.param({"kv": None, "revision": "x"}, GetResult, "revision", id="result-wrong-int"),
    pytest.param({"kvs": 5, "revision": 1}, RangeResult, "kvs", id="result-wrong-container"),
    pytest.param({"lease": 1, "ttl": "soon", "expires_at": 3.0}, LeaseResult, "ttl", id="float-wrong-type"),
    pytest.param(
        {"kind": "upsert", "kv": encode(TOMBSTONE), "prev": None, "revision": 1},
        Event,
        "kind",
        id="unknown-event-kind",
    ),
    pytest.param("%%%", bytes, "base64", id="bytes-invalid-base64"),
    pytest.param(b"raw", bytes, "base64 string", id="bytes-not-a-string"),
    pytest.param(None, bytes, "base64 string", id="bytes-none"),
    pytest.param({"key": "k", "target": "size"}, Compare, "target", id="compare-unknown-target"),
    pytest.param({"key": "k", "target": "version", "op": "<="}, Compare, "op", id="compare-unknown-op"),
    pytest.param({"key": "k", "target": "exists", "extra": 1}, Compare, "extra", id="compare-unknown-field"),
    pytest.param(
        {"key": "k", "target": "value", "operand": "?"}, Compare, "base64", id="compare-bad-operand"
    ),
    pytest.param({"key": "k", "target": "value", "operand": 5}, Compare, "base64", id="compare-int-operand"),
    pytest.param(["k", "exists"], Compare, "object", id="compare-not-an-object"),
    pytest.param(
        {"compares": [], "success": {"op": "get"}, "failure": []}, Txn, "success", id="txn-ops-not-list"
    ),
]


@pytest.mark.parametrize(("data", "cls", "mentions"), BAD_INPUTS)
def test_decode_rejects_bad_input_naming_where(data: object, cls: Any, mentions: str) -> None:
    where = "txn.success[3]"
    with pytest.raises(InvalidRequestError) as info:
        decode(data, cls, where)
    assert info.value.message.startswith(f"{where}: "), info.value.message
    assert mentions in info.value.message
    assert info.value.code == "invalid_request"
    assert str(info.value) == info.value.message


def test_unknown_op_lists_the_known_ones() -> None:
    with pytest.raises(InvalidRequestError) as info:
        decode({"op": "watch", "key": "k"}, TxnOp, "op")  # type: ignore[arg-type]
    for name in ("get", "range", "put", "delete", "delete_prefix"):
        assert name in info.value.message


@pytest.mark.parametrize(
    ("data", "cls"),
    [
        pytest.param({"op": "put", "key": None, "value": "eA=="}, TxnOp, id="null-key-becomes-'None'"),
        pytest.param({"op": "put", "key": [1, 2], "value": "eA=="}, TxnOp, id="list-key-becomes-'[1, 2]'"),
        pytest.param({"op": "delete", "key": 12}, TxnOp, id="int-key-becomes-'12'"),
        pytest.param({"op": "put", "key": "k", "value": "eA==", "lease": "7"}, TxnOp, id="str-lease"),
        pytest.param(
            {"op": "put", "key": "k", "value": "eA==", "lease": 1.9}, TxnOp, id="float-lease-truncated"
        ),
        pytest.param({"op": "range", "prefix": "p", "limit": True}, TxnOp, id="bool-limit"),
        pytest.param({"succeeded": "false", "results": [], "revision": 1}, TxnResult, id="str-bool-is-true"),
    ],
)
def test_decode_rejects_wrong_primitive_types(data: object, cls: Any) -> None:
    with pytest.raises(InvalidRequestError):
        decode(data, cls, "w")


# ------------------------------------------------------------------------ error bodies


@pytest.mark.parametrize("cls", sorted(set(ERRORS_BY_CODE.values()) - {CompactedError}, key=lambda c: c.code))
def test_error_body_round_trip(cls: type[KVError]) -> None:
    body = json.loads(json.dumps(error_body(cls("something went wrong"))))
    assert body == {"code": cls.code, "message": "something went wrong"}
    error = error_from_body(body)
    assert type(error) is cls
    assert error.message == "something went wrong"


def test_compacted_error_body_keeps_the_compact_revision() -> None:
    body = json.loads(json.dumps(error_body(CompactedError("old", compact_revision=41))))
    assert body == {"code": "compacted", "message": "old", "compact_revision": 41}
    error = error_from_body(body)
    assert isinstance(error, CompactedError)
    assert error.compact_revision == 41


@pytest.mark.parametrize("cls", [UnavailableError, DiskFullError])
def test_a_refusal_for_want_of_disk_space_keeps_the_replicas_it_names(cls: type[UnavailableError]) -> None:
    body = json.loads(json.dumps(error_body(cls("full", replicas=("10.0.0.1:4100", "10.0.0.2:4100")))))
    assert body == {"code": cls.code, "message": "full", "replicas": ["10.0.0.1:4100", "10.0.0.2:4100"]}
    error = error_from_body(body)
    assert type(error) is cls
    assert error.replicas == ("10.0.0.1:4100", "10.0.0.2:4100")


@pytest.mark.parametrize("body", [None, "boom", [1], {"code": "no_such_code", "message": "m"}, {}], ids=repr)
def test_malformed_or_unknown_error_body_becomes_plain_kv_error(body: object) -> None:
    error = error_from_body(body)
    assert type(error) is KVError


# ------------------------------------------------------------------------ framed stream


async def test_framed_round_trip_several_messages() -> None:
    left, right = trio.testing.memory_stream_pair()
    sender, receiver = FramedStream(left), FramedStream(right)
    messages = [
        {"id": 1, "op": "put", "key": "k", "value": "eA=="},
        {},
        {"nested": {"list": [1, 2.5, None, True, "é\U0010ffff"]}},
        {"id": 2, "big": "x" * 200_000},
    ]
    for message in messages:
        await sender.send(message)
    assert [await receiver.receive() for _ in messages] == messages
    await left.aclose()
    assert await receiver.receive() is None


async def test_a_big_message_is_decoded_in_a_worker_thread_by_loads_big() -> None:
    """A message of DECODE_IN_THREAD bytes or more is read by `loads_big` in a worker thread (the event
    loop serves meanwhile); a smaller one by json.loads, here."""
    readers: list[str] = []

    def loads_big(text: str) -> Any:
        readers.append(threading.current_thread().name)
        return json.loads(text)

    big = {"id": 3, "text": "é" * DECODE_IN_THREAD}
    left, right = trio.testing.memory_stream_pair()
    limit = 8 * DECODE_IN_THREAD
    sender, receiver = (
        FramedStream(left, max_frame=limit),
        FramedStream(right, max_frame=limit, loads_big=loads_big),
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.send, big)  # (the memory stream holds nothing: the receiver must read)
        assert await receiver.receive() == big
        nursery.start_soon(sender.send, {"id": 4})
        assert await receiver.receive() == {"id": 4}
    assert len(readers) == 1 and readers[0] != threading.current_thread().name


async def test_framed_send_writes_a_big_endian_length_prefix() -> None:
    left, right = trio.testing.memory_stream_pair()
    await FramedStream(left).send({"a": 1})
    raw = await right.receive_some()
    assert raw == b'\x00\x00\x00\x07{"a":1}'


async def test_framed_receive_handles_several_frames_in_one_chunk() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(frame(b'{"n":1}') + frame(b'{"n":2}') + frame(b'{"n":3}')[:5])
    receiver = FramedStream(right)
    assert await receiver.receive() == {"n": 1}
    assert await receiver.receive() == {"n": 2}
    await left.send_all(frame(b'{"n":3}')[5:])
    assert await receiver.receive() == {"n": 3}


class _Trickle(trio.abc.ReceiveStream):
    """Hands out its bytes one at a time, however many are asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        chunk, self.data = self.data[:1], self.data[1:]
        return chunk

    async def aclose(self) -> None:
        pass


async def test_framed_receive_reassembles_a_frame_delivered_byte_by_byte() -> None:
    data = frame(b'{"first":true}') + frame(json.dumps({"second": "é"}).encode())
    receiver = FramedStream(_Trickle(data))  # type: ignore[arg-type]
    assert await receiver.receive() == {"first": True}
    assert await receiver.receive() == {"second": "é"}
    assert await receiver.receive() is None


async def test_concurrent_sends_do_not_interleave() -> None:
    # a lockstep stream raises BusyResourceError on concurrent send_all: the send lock must serialise them
    left, right = trio.testing.lockstep_stream_pair()
    sender, receiver = FramedStream(left), FramedStream(right)
    received: list[dict[str, Any] | None] = []

    async def receive_all() -> None:
        for _ in range(20):
            received.append(await receiver.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_all)
        for i in range(20):
            nursery.start_soon(sender.send, {"i": i, "pad": "p" * (i * 1000)})
    assert sorted(m["i"] for m in received if m is not None) == list(range(20))
    assert all(m is not None and m["pad"] == "p" * (m["i"] * 1000) for m in received)


async def _socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    left, right = trio.socket.socketpair()
    return trio.SocketStream(left), trio.SocketStream(right)


async def test_a_send_cancelled_while_another_fills_the_socket_writes_nothing_and_the_stream_goes_on() -> (
    None
):
    """Nothing of a message is written before the send lock is taken: cancelled while it waits there
    (another message fills the socket: a reader that reads slowly), the stream is still whole."""
    left, right = await _socket_pair()
    sender, receiver = FramedStream(left), FramedStream(right)
    big = {"big": "b" * 2_000_000}  # (a socket pair buffers a few hundred KB)
    async with left, right, trio.open_nursery() as nursery:
        nursery.start_soon(sender.send, big)
        await trio.testing.wait_all_tasks_blocked()
        assert sender._send_lock.locked()  # the big one holds it, its socket full
        with trio.move_on_after(0.05) as waited:
            await sender.send({"small": 1})
        assert waited.cancelled_caught and sender._send_lock.locked()  # (so it was waiting for the lock)
        assert not sender.broken
        assert await receiver.receive() == big
        await sender.send({"after": 1})
        assert await receiver.receive() == {"after": 1}


async def test_a_send_cut_short_breaks_the_stream_and_nothing_more_is_written() -> None:
    """A message cancelled in the middle of its frame leaves the reader's next bytes in that frame: any
    message written after it would be read as its rest. The stream refuses to send again."""
    left, right = await _socket_pair()
    sender = FramedStream(left)
    async with left, right:
        with trio.move_on_after(0.05) as cut:
            await sender.send({"big": "b" * 2_000_000})
        assert cut.cancelled_caught and sender.broken
        with pytest.raises(trio.BrokenResourceError, match="cut short"):
            await sender.send({"after": 1})
        await left.aclose()
        written = 0
        while chunk := await right.receive_some():
            written += len(chunk)
        assert 0 < written < 2_000_000  # only the start of the big one


async def test_oversized_frame_header_is_rejected_before_reading_the_payload() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(struct.pack(">I", MAX_FRAME_BYTES + 1))
    with pytest.raises(FrameTooLargeError) as info:
        await FramedStream(right).receive()
    assert isinstance(info.value, InvalidRequestError)
    assert str(MAX_FRAME_BYTES) in info.value.message


async def test_frame_of_exactly_the_limit_is_not_too_large() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(struct.pack(">I", MAX_FRAME_BYTES) + b"{")
    await left.aclose()
    with pytest.raises(InvalidRequestError) as info:
        await FramedStream(right).receive()
    assert not isinstance(info.value, FrameTooLargeError)
    assert "middle of a frame" in info.value.message


@pytest.mark.parametrize(
    ("payload", "mentions"),
    [
        (b"not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"a":', "not valid JSON"),
        (b"\xff\xfe\xfd", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'"text"', "must be a JSON object, got str"),
        (b"42", "must be a JSON object, got int"),
        (b"null", "must be a JSON object, got NoneType"),
    ],
    ids=lambda v: repr(v) if isinstance(v, bytes) else None,
)
async def test_garbage_payload_is_an_invalid_request(payload: bytes, mentions: str) -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(frame(payload))
    with pytest.raises(InvalidRequestError) as info:
        await FramedStream(right).receive()
    assert mentions in info.value.message


async def test_deeply_nested_payload_is_an_invalid_request() -> None:
    left, right = trio.testing.memory_stream_pair()
    depth = 100_000
    await left.send_all(frame(b'{"a":' + b"[" * depth + b"]" * depth + b"}"))
    with pytest.raises(InvalidRequestError):
        await FramedStream(right).receive()


@pytest.mark.parametrize(
    "truncated",
    [frame(b'{"a":1}')[:2], frame(b'{"a":1}')[:4], frame(b'{"a":1}')[:6]],
    ids=["in-header", "after-header", "in-payload"],
)
async def test_eof_in_the_middle_of_a_frame_is_an_invalid_request(truncated: bytes) -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(truncated)
    await left.aclose()
    with pytest.raises(InvalidRequestError) as info:
        await FramedStream(right).receive()
    assert "middle of a frame" in info.value.message


async def test_clean_eof_is_none() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(frame(b"{}"))
    await left.aclose()
    receiver = FramedStream(right)
    assert await receiver.receive() == {}
    assert await receiver.receive() is None
    assert await receiver.receive() is None


async def test_aclose_closes_the_underlying_stream() -> None:
    left, _right = trio.testing.memory_stream_pair()
    framed = FramedStream(left)
    await framed.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await framed.send({"a": 1})


# ------------------------------------------------------------------------ handshake


def test_proof_ok_accepts_the_right_secret() -> None:
    nonce = new_nonce()
    assert proof_ok("s3cret", nonce, proof("s3cret", nonce))


@pytest.mark.parametrize(
    "candidate",
    [
        pytest.param(proof("wrong", "n0nce"), id="wrong-secret"),
        pytest.param(proof("s3cret", "other-nonce"), id="wrong-nonce"),
        pytest.param(proof("s3cret", "n0nce").upper(), id="upper-case"),
        pytest.param(proof("s3cret", "n0nce")[:-1], id="truncated"),
        pytest.param("", id="empty"),
        pytest.param(None, id="none"),
        pytest.param(proof("s3cret", "n0nce").encode(), id="bytes"),
        pytest.param(12345, id="int"),
        pytest.param(["x"], id="list"),
    ],
)
def test_proof_ok_rejects_wrong_or_non_string_candidates(candidate: object) -> None:
    assert proof_ok("s3cret", "n0nce", candidate) is False


def test_proof_depends_on_secret_nonce_and_protocol() -> None:
    p = proof("s", "n")
    assert p == proof("s", "n")
    assert len(p) == 64 and int(p, 16) >= 0
    assert p not in {proof("s2", "n"), proof("s", "n2")}
    assert PROTOCOL.startswith("aether-kv/")


def test_nonces_are_fresh_hex() -> None:
    nonces = {new_nonce() for _ in range(50)}
    assert len(nonces) == 50
    assert all(len(n) == 32 and int(n, 16) >= 0 for n in nonces)


def test_authentication_error_is_what_a_bad_proof_is_reported_as() -> None:
    body = error_body(AuthenticationError("refused"))
    assert body["code"] == "unauthenticated"
    assert isinstance(error_from_body(body), AuthenticationError)


def _event(revision: int, n: int, value: bytes = b"v") -> Event:
    kv = KeyValue(
        key=f"k{revision}-{n}", value=value, create_revision=revision, mod_revision=revision, version=1
    )
    return Event(kind=EventKind.PUT, kv=kv, prev=None, revision=revision)


def _chunked(events: list[Event], **limits: int) -> list[list[Event]]:
    from aether_kv._fanout import watch_chunks

    weights = [len(encode_event(event)) for event in events]
    return [events[chunk] for chunk in watch_chunks(events, weights, **limits)]


def test_a_long_watch_batch_is_split_between_revisions_only() -> None:
    event = _event

    # revisions 1..5 of one change each, revision 6 a transaction of 4 changes, then 7 and 8
    events = [event(r, 0) for r in range(1, 6)] + [event(6, n) for n in range(4)] + [event(7, 0), event(8, 0)]
    chunks = _chunked(events, size=3)
    assert [e for chunk in chunks for e in chunk] == events
    assert [[e.revision for e in chunk] for chunk in chunks] == [[1, 2, 3], [4, 5, 6, 6, 6, 6], [7, 8]]
    assert _chunked([], size=3) == []


def test_a_watch_batch_of_large_values_is_split_by_bytes_between_revisions() -> None:
    big = b"x" * 300_000  # ~400 KB on the wire each
    # revisions 1..4 of one large change each, revision 5 a transaction of three large changes, then 6
    events = [_event(r, 0, big) for r in range(1, 5)] + [_event(5, n, big) for n in range(3)] + [_event(6, 0)]
    chunks = _chunked(events, size=256, max_bytes=1_000_000)
    assert [e for chunk in chunks for e in chunk] == events
    # a chunk closes once it holds a million bytes, never inside a revision
    assert [[e.revision for e in chunk] for chunk in chunks] == [[1, 2, 3], [4, 5, 5, 5], [6]]


# ------------------------------------------------------------------------ messages over one frame


async def test_a_message_over_a_frame_goes_as_several_frames_and_arrives_whole() -> None:
    left, right = trio.testing.memory_stream_pair()
    sender = FramedStream(left, max_frame=1000, max_send=20_000)
    receiver = FramedStream(right, max_frame=1000, max_receive=20_000)
    message = {"id": 7, "big": "é" * 2_400}  # ~14 KB (JSON escapes), cut anywhere, inside escapes too
    await sender.send(message)
    await sender.send({"id": 8})
    assert await receiver.receive() == message
    assert await receiver.receive() == {"id": 8}


async def test_a_message_in_pieces_sets_the_high_bit_on_every_frame_but_the_last() -> None:
    left, right = trio.testing.memory_stream_pair()
    await FramedStream(left, max_frame=10, max_send=100).send({"a": "0123456789"})  # 18 bytes
    await left.aclose()
    raw = b""
    while chunk := await right.receive_some():
        raw += chunk
    assert raw == struct.pack(">I", 0x8000_0000 | 10) + b'{"a":"0123' + struct.pack(">I", 8) + b'456789"}'


async def test_a_message_over_the_send_limit_is_refused_by_name_and_nothing_is_sent() -> None:
    left, right = trio.testing.memory_stream_pair()
    sender = FramedStream(left, max_frame=100, max_send=1000)
    with pytest.raises(FrameTooLargeError, match="over the limit of 1000 bytes"):
        await sender.send({"big": "x" * 2000})
    await sender.send({"small": 1})  # the connection is still in step
    assert await FramedStream(right, max_frame=100).receive() == {"small": 1}


async def test_a_message_in_pieces_over_the_receive_limit_is_refused_before_it_is_all_read() -> None:
    left, right = trio.testing.memory_stream_pair()
    piece = b"x" * 100
    # three announced pieces of 100 bytes against a limit of 250: refused at the third header
    await left.send_all(
        struct.pack(">I", 0x8000_0000 | 100) + piece + struct.pack(">I", 0x8000_0000 | 100) + piece
    )
    await left.send_all(struct.pack(">I", 100))
    with pytest.raises(FrameTooLargeError, match="more than 250 bytes"):
        await FramedStream(right, max_frame=100, max_receive=250).receive()


async def test_by_default_a_stream_takes_no_message_over_one_frame() -> None:
    """The peer link and other users of FramedStream keep one frame per message unless they ask."""
    left, right = trio.testing.memory_stream_pair()
    with pytest.raises(FrameTooLargeError):
        await FramedStream(left, max_frame=100).send({"big": "x" * 200})
    await left.send_all(struct.pack(">I", 0x8000_0000 | 80) + b"x" * 80 + struct.pack(">I", 80))
    with pytest.raises(FrameTooLargeError):
        await FramedStream(right, max_frame=100).receive()


async def test_eof_between_the_pieces_of_a_message_is_an_invalid_request() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(struct.pack(">I", 0x8000_0000 | 3) + b'{"a')
    await left.aclose()
    with pytest.raises(InvalidRequestError, match="middle of a message"):
        await FramedStream(right, max_frame=100, max_receive=1000).receive()


async def test_an_empty_piece_of_a_message_is_an_invalid_request() -> None:
    """A sender never cuts an empty piece; a peer sending endless ones must not grow the receiver's list."""
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(struct.pack(">I", 0x8000_0000) * 3)
    with trio.fail_after(5), pytest.raises(InvalidRequestError, match="empty piece"):
        await FramedStream(right, max_frame=100, max_receive=1000).receive()


def _converter_answer(data: object) -> object:
    """What the converter makes of `data` as events: the events, or its error's message."""
    try:
        return decode(data, list[Event], "events")
    except InvalidRequestError as error:
        return error.message


_key_values = st.builds(
    KeyValue,
    key=keys,
    value=st.binary(max_size=32),
    create_revision=st.integers(0, 2**40),
    mod_revision=st.integers(0, 2**40),
    version=st.integers(0, 2**40),
    lease=st.integers(0, 2**40),
)
_event_lists = st.lists(
    st.builds(
        Event,
        kind=st.sampled_from(list(EventKind)),
        kv=_key_values,
        prev=st.none() | _key_values,
        revision=st.integers(0, 2**40),
    ),
    max_size=3,
)
_odd_values = st.sampled_from([None, True, "7", 7, 7.0, "not base64!", "eA==", [], {}, "put"])


@settings(max_examples=300, deadline=None)
@given(
    _event_lists,
    st.none()
    | st.tuples(
        st.sampled_from(["kind", "revision", "prev", "kv", "kv.key", "kv.value", "kv.lease", "kv.version"]),
        st.sampled_from(["set", "drop"]),
        _odd_values,
    ),
)
def test_watch_events_decode_as_the_converter_decodes_them(
    events: list[Event], change: tuple[str, str, object] | None
) -> None:
    """`decode_events` builds well-formed events itself (the watch path of every node): it must decode
    exactly what the converter decodes, and refuse what it refuses with the same message."""
    data: Any = json.loads(json.dumps(encode_events(events)))
    if change is not None and data:
        field, how, value = change
        target = data[0]
        *path, name = field.split(".")
        for part in path:
            target = target[part]
        if how == "drop":
            target.pop(name, None)
        else:
            target[name] = value
    expected = _converter_answer(data)
    if isinstance(expected, str):
        with pytest.raises(InvalidRequestError) as info:
            decode_events(data)
        assert info.value.message == expected
    else:
        assert decode_events(data) == expected
    if change is None:
        assert decode_events(data) == events


@settings(max_examples=300, deadline=None)
@given(
    _event_lists,
    st.integers(0, 2**53),
)
def test_a_watch_message_spliced_from_encoded_events_is_the_converters_json(
    events: list[Event], request_id: int
) -> None:
    """A replica encodes each event once (`encode_event`) and splices the bytes into every watch's
    message: the message must be the JSON the converter makes of it, and decode to the same events."""
    message = events_message(request_id, b",".join(encode_event(event) for event in events))
    expected = json.loads(json.dumps({"id": request_id, "events": encode_events(events)}))
    assert json.loads(message) == expected
    assert decode_events(json.loads(message)["events"]) == events


def test_a_txn_of_two_values_at_the_value_limit_fits_one_request() -> None:
    """aether-node writes a blueprint's record and its revision's (each up to MAX_VALUE_BYTES) in one
    txn, and checks a blueprint against the value limit only (`core/_blueprint_toml.py`): such a
    request, its values in base64, with the longest keys and many more deletes than it has, must fit
    the one frame a request is sent in."""
    key = "k" * MAX_KEY_BYTES
    value = b"\xff" * MAX_VALUE_BYTES
    request = {
        "op": "txn",
        "id": 2**53,
        "compares": [
            encode(Compare(key=key, target=CompareTarget.MOD_REVISION, op=CompareOp.EQ, operand=2**53))
            for _ in range(4)
        ],
        "success": [encode_txn_op(op) for op in [Put(key=key, value=value)] * 2 + [Delete(key=key)] * 100],
        "failure": [],
    }
    assert len(json.dumps(request, separators=(",", ":")).encode()) < MAX_FRAME_BYTES
