"""Bad input to a running aether-kv cluster: a specific error, nothing changed, everyone else served."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import trio

from aether_kv import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    AuthenticationError,
    InvalidRequestError,
    LocalCluster,
    open_client,
)
from aether_kv._wire import FramedStream, proof

pytestmark = pytest.mark.integration


async def _raw_connection(endpoint: str, secret: str) -> FramedStream:
    host, _, port = endpoint.rpartition(":")
    framed = FramedStream(await trio.open_tcp_stream(host, int(port)))
    hello = await framed.receive()
    assert hello is not None
    await framed.send({"auth": proof(secret, hello["nonce"])})
    assert "ok" in (await framed.receive() or {})
    return framed


async def _revision(cluster: LocalCluster) -> int:
    async with open_client(cluster.endpoints, cluster.secret) as client:
        return (await client.get_with_revision("anything", linearizable=True)).revision


BAD_REQUESTS = [
    ({"op": "launch_missiles"}, "unknown operation 'launch_missiles'"),
    ({"op": "put", "key": "k"}, "put: missing field 'value'"),
    ({"op": "put", "key": 7, "value": "eA=="}, "put.key: must be str, got int"),
    ({"op": "put", "key": "k", "value": "***"}, "put.value: not valid base64"),
    ({"op": "put", "key": "", "value": "eA=="}, "key: must not be empty"),
    (
        {"op": "put", "key": "k" * (MAX_KEY_BYTES + 1), "value": "eA=="},
        "key: 1025 bytes is over the limit",
    ),
    ({"op": "put", "key": "k", "value": "eA==", "lease": 99}, "lease 99 not found"),
    ({"op": "lease_grant", "ttl": -1}, "ttl: must be in (0, 86400] seconds, got -1"),
    ({"op": "range", "prefix": "a", "limit": -2}, "limit: must be a non-negative integer"),
    ({"op": "txn", "compares": [{"key": "k", "target": "color"}]}, "target: must be one of"),
    ({"op": "txn", "success": [{"op": "explode", "key": "k"}]}, "txn.success[0]: unknown op 'explode'"),
    (
        {"op": "txn", "success": [{"op": "put", "key": "k", "value": ""}, {"op": "delete", "key": "k"}]},
        "txn.success[1].key: 'k' is written twice in one branch",
    ),
    ({"op": "get"}, "get: missing field 'key'"),
]


async def test_a_bad_request_gets_a_specific_error_and_changes_nothing(kv_cluster: LocalCluster) -> None:
    before = await _revision(kv_cluster)
    framed = await _raw_connection(kv_cluster.endpoints[0], kv_cluster.secret)
    for number, (request_body, expected) in enumerate(BAD_REQUESTS, start=1):
        await framed.send({"id": number, **request_body})
        reply = await framed.receive()
        assert reply is not None and reply["id"] == number
        assert expected in reply["error"]["message"], (request_body, reply)
        assert reply["error"]["code"] in ("invalid_request", "lease_not_found")
    await framed.send({"id": 0, "op": "status"})  # the same connection keeps working
    assert "ok" in (await framed.receive() or {})
    await framed.aclose()
    assert await _revision(kv_cluster) == before


@pytest.mark.long
async def test_an_oversized_value_is_refused_by_the_client_api_and_nothing_changes(
    kv_cluster: LocalCluster,
) -> None:
    before = await _revision(kv_cluster)
    async with open_client(kv_cluster.endpoints, kv_cluster.secret) as client:
        with pytest.raises(InvalidRequestError, match="value: 1048577 bytes is over the limit"):
            await client.put("big", b"x" * (MAX_VALUE_BYTES + 1))
        assert await client.get("big", linearizable=True) is None
    assert await _revision(kv_cluster) == before


async def test_garbage_frames_close_only_that_connection(kv_cluster: LocalCluster) -> None:
    endpoint = kv_cluster.endpoints[0]
    host, _, port = endpoint.rpartition(":")
    async with open_client([endpoint], kv_cluster.secret) as bystander:
        await bystander.put("bystander", b"1")
        for payload in (
            struct.pack(">I", 5) + b"{nope",  # not JSON
            struct.pack(">I", 2) + b"[]",  # JSON, not an object
            struct.pack(">I", 64 * 1024 * 1024) + b"x",  # announces 64 MiB
        ):
            framed = await _raw_connection(endpoint, kv_cluster.secret)
            await framed.stream.send_all(payload)
            reply = await framed.receive()
            assert reply is not None and reply["error"]["code"] == "invalid_request", reply
            assert await framed.receive() is None  # the server hung up on this connection only
            await framed.aclose()
        stream = await trio.open_tcp_stream(host, int(port))  # no handshake at all
        await stream.send_all(b"GET / HTTP/1.1\r\n\r\n")
        await stream.aclose()
        # before the handshake, a frame over a few KiB is refused before its payload is read: a stranger
        # cannot make the replica hold megabytes per connection
        stranger = FramedStream(await trio.open_tcp_stream(host, int(port)))
        assert "nonce" in (await stranger.receive() or {})
        await stranger.stream.send_all(struct.pack(">I", 1024 * 1024) + b"x")  # announces 1 MiB
        with trio.fail_after(10):
            refused = await stranger.receive()
        assert refused is not None and refused["error"]["code"] == "invalid_request", refused
        assert await stranger.receive() is None
        await stranger.aclose()
        assert (await bystander.get("bystander", linearizable=True)).value == b"1"  # type: ignore[union-attr]


async def test_a_malformed_status_wait_is_refused_with_what_is_wrong(kv_cluster: LocalCluster) -> None:
    framed = await _raw_connection(kv_cluster.endpoints[0], kv_cluster.secret)
    try:
        for number, (fields, says) in enumerate(
            (
                ({"wait_change": True, "max_wait": 1}, "status.wait_change: must be dict"),
                ({"wait_change": {"is_leader": 1, "term": 1}, "max_wait": 1}, "is_leader: boolean"),
                ({"wait_change": {"is_leader": True, "term": "2"}, "max_wait": 1}, "term: integer"),
                ({"wait_change": {"is_leader": True, "term": 2}}, "status: missing field 'max_wait'"),
                ({"wait_change": {"is_leader": True, "term": 2}, "max_wait": 61}, "0 to 60 seconds, got 61"),
                ({"wait_change": {"is_leader": True, "term": 2}, "max_wait": -1}, "0 to 60 seconds, got -1"),
            ),
            start=1,
        ):
            await framed.send({"id": number, "op": "status", **fields})
            reply = await framed.receive()
            assert reply is not None and reply["id"] == number, reply
            assert reply["error"]["code"] == "invalid_request" and says in reply["error"]["message"], reply
    finally:
        await framed.aclose()


async def test_a_wrong_secret_is_refused(kv_cluster: LocalCluster) -> None:
    with pytest.raises(AuthenticationError, match="refused the cluster secret"):
        async with open_client(kv_cluster.endpoints[:1], "not-the-secret-at-all!!") as client:
            await client.status()


class _Exploit:
    """If the Raft port ever unpickled this, it would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


async def test_the_raft_port_does_not_unpickle_anything_without_the_secret(
    kv_cluster: LocalCluster, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    payload = zlib.compress(pickle.dumps(_Exploit(marker)), 3)
    for replica in kv_cluster.replicas:
        host, _, port = replica.raft_address.rpartition(":")
        for frame in (struct.pack("i", len(payload)) + payload, payload):
            stream = await trio.open_tcp_stream(host, int(port))
            try:
                await stream.send_all(frame)
                with trio.move_on_after(1.0):  # the replica drops us; an open socket is fine too
                    while await stream.receive_some(4096):
                        pass
            except trio.BrokenResourceError:
                pass
            finally:
                await stream.aclose()
    async with open_client(kv_cluster.endpoints, kv_cluster.secret) as client:
        await client.put("still", b"serving")  # the cluster is unharmed
        status = await client.status()
        assert status.has_quorum
    assert not marker.exists(), "the Raft port unpickled data from a stranger"
    assert json.dumps(status.leader)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--log-compaction-entries", "1", "--log-compaction-entries: at least 2, got 1"),
        ("--raft", "nowhere", "--raft: expected host:port, got 'nowhere'"),
    ],
)
def test_a_replica_started_with_a_bad_option_says_which_and_creates_nothing(
    tmp_path: Path, option: str, value: str, message: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("a-test-secret-of-16+\n")
    options = {"--raft": "127.0.0.1:1", "--client": "127.0.0.1:2", option: value}
    command = [sys.executable, "-m", "aether_kv", "serve", "--id", "kv1", "--data-dir", str(tmp_path / "d")]
    command += [item for pair in options.items() for item in pair] + ["--secret-file", str(secret)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"aether-kv: error: {message}"
    assert not (tmp_path / "d").exists()
