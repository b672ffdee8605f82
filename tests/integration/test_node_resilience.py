"""No error from a peer, the KV, a slice or a client ends a node (issue 11, defects 1, 2 and 5).

Each test injects one kind of failure into a real `aether-node` process at a point where it talks to the
outside (its peer port, its ingress, its lease, its KV) and then checks that the process is still
running and serving: the failure cost at most the one request or connection it hit.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import node_support
import pytest
import trio
from node_support import (
    ECHO,
    FAULTY,
    NodeProcess,
    activate,
    build_wheel,
    client_node,
    endpoint_keys,
    invoke,
    kv_client,
    peer_connection,
    peer_request,
    slice_key,
    started_node,
    wait_for_active_instance,
)

from aether_kv import FramedStream, KVClient
from aether_node import SliceState
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def node(sample_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node that is a client of a KV replica run beside it (the test writes the command states)."""
    root = tmp_path_factory.mktemp("resilience-node")
    with client_node(root, sample_index) as started:
        yield started


def assert_running(node: NodeProcess) -> None:
    assert node.returncode() is None, f"the node exited with {node.returncode()}:\n{node.log_tail(60)}"


async def echo_serves(node: NodeProcess) -> None:
    response = await invoke(node.ingress, "org.aether:echo", "echo", {"still": "here"})
    assert (response.status_code, response.json()) == (200, {"still": "here"}), response.text


def reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER on, timeout 0): what a killed peer's kernel sends."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def peer_serves(node: NodeProcess) -> None:
    """A fresh peer connection gets an answer (the node's call statistics)."""
    async with peer_connection(node) as (_, framed):
        reply = await peer_request(framed, {"id": 1, "op": "stats"})
        assert "ok" in reply, reply


def invoke_request(request_id: int, coordinates: str, entry: str, **more: Any) -> dict[str, Any]:
    return {
        "id": request_id,
        "op": "invoke",
        "coordinates": coordinates,
        "instance": 0,
        "entry": entry,
        "payload": {"n": request_id},
        **more,
    }


# ---------------------------------------------------------------- defect 1: a peer that resets


async def test_a_peer_connection_reset_after_a_call_does_not_end_the_node(
    node: NodeProcess, kv: KVClient
) -> None:
    await activate(kv, node, ECHO, 0)
    for _ in range(3):
        async with peer_connection(node) as (stream, framed):
            reply = await peer_request(framed, invoke_request(7, ECHO, "echo"))
            assert reply == {"id": 7, "ok": {"n": 7}}, reply
            await framed.send(invoke_request(8, ECHO, "echo"))  # one more, then the reset
            reset(stream.socket)
        await peer_serves(node)
        assert_running(node)
    await echo_serves(node)


async def test_a_peer_connection_reset_during_a_call_does_not_end_the_node(
    node: NodeProcess, kv: KVClient
) -> None:
    await activate(kv, node, FAULTY, 0, {"mode": "hang_work"})
    await activate(kv, node, ECHO, 0)
    async with peer_connection(node) as (stream, framed):
        await framed.send(invoke_request(1, FAULTY, "work", timeout=2.0))
        reset(stream.socket)  # the node answers with a 504 in 2 s, on a connection that is gone
    with trio.move_on_after(3):  # past the call's timeout: the node tries to send its answer
        while True:
            await peer_serves(node)
            await trio.sleep(0.2)
    assert_running(node)
    await echo_serves(node)


async def test_garbage_from_an_authenticated_peer_costs_only_its_connection(
    node: NodeProcess, kv: KVClient
) -> None:
    await activate(kv, node, ECHO, 0)
    requests = [
        {"id": 1, "op": "invoke", "coordinates": ECHO, "instance": "not a number", "entry": "echo"},
        {"id": 2, "op": "invoke", "coordinates": ECHO, "instance": 0, "entry": "echo", "timeout": "soon"},
        {"id": 3, "op": "invoke", "coordinates": "no coordinates", "instance": 0, "entry": "echo"},
    ]
    async with peer_connection(node) as (_, framed):
        for request in requests:
            reply = await peer_request(framed, request)
            assert reply["id"] == request["id"] and reply["error"]["kind"] == "bad_request", reply
    await peer_serves(node)
    assert_running(node)
    await echo_serves(node)


async def test_a_stranger_announcing_a_large_frame_before_the_handshake_is_refused_unread(
    node: NodeProcess,
) -> None:
    """Before the secret is proved the peer port takes a few KiB per message: a stranger announcing 1 MiB
    is answered with an error and dropped without the node reading (or holding) the megabyte."""
    stream = await trio.open_tcp_stream("127.0.0.1", node.peer_port)
    stranger = FramedStream(stream)
    try:
        with trio.fail_after(10):
            assert "nonce" in (await stranger.receive() or {})
            await stream.send_all(struct.pack(">I", 1024 * 1024) + b"x")  # announces 1 MiB, sends 1 byte
            refused = await stranger.receive()
            assert refused is not None and refused["error"]["code"] == "invalid_request", refused
            assert await stranger.receive() is None
    finally:
        with contextlib.suppress(OSError):
            stream.socket.close()
    await peer_serves(node)
    assert_running(node)


# ---------------------------------------------------------------- clients that go away


async def test_an_ingress_client_that_resets_mid_request_does_not_end_the_node(
    node: NodeProcess, kv: KVClient
) -> None:
    await activate(kv, node, FAULTY, 0, {"mode": "hang_work"})
    await activate(kv, node, ECHO, 0)
    body = b'{"n": 1}'
    for head in (
        # the whole request, then a reset while the slice works on it
        b"POST /invoke/org.aether:faulty/work?timeout=1 HTTP/1.1\r\nhost: x\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body),
        # half a body, then a reset
        b'POST /invoke/org.aether:echo/echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"n"',
    ):
        sock = socket.create_connection(("127.0.0.1", node.ingress_port))
        sock.sendall(head)
        await trio.sleep(0.2)  # (not a wait for an outcome: lets the request reach the slice first)
        reset(sock)
    with trio.move_on_after(2):  # past the hanging call's timeout: the node answers a closed socket
        while True:
            await echo_serves(node)
            await trio.sleep(0.2)
    assert_running(node)


# ---------------------------------------------------------------- defect 2: the node's lease lapses


async def node_lease(client: KVClient, node: NodeProcess) -> int:
    registration = await client.get(f"nodes/{node.node_id}", linearizable=True)
    assert registration is not None, "the node is not registered"
    return registration.lease


async def wait_registered_again(client: KVClient, node: NodeProcess, old: set[int], timeout: float) -> int:
    """The node's new lease, once it registered with one that is not in `old`."""
    found = 0

    async def registered() -> bool:
        nonlocal found
        registration = await client.get(f"nodes/{node.node_id}", linearizable=True)
        found = registration.lease if registration is not None else 0
        return bool(found) and found not in old

    await wait_until(registered, timeout=timeout, what=f"{node.node_id} to register with a new lease")
    return found


async def wait_endpoints_on_lease(
    client: KVClient, coordinates: str, expected: set[str], timeout: float
) -> None:
    """Until exactly `expected` endpoint keys of `coordinates` exist, each bound to the node's lease."""

    async def published() -> bool:
        registration = await client.get("nodes/n1", linearizable=True)
        listing = await client.range(f"endpoints/{coordinates}/", linearizable=True)
        keys = {item.key for item in listing.kvs}
        return (
            registration is not None
            and keys == expected
            and all(item.lease == registration.lease for item in listing.kvs)
        )

    await wait_until(published, timeout=timeout, what=f"endpoints {sorted(expected)} on the node's lease")


async def test_a_lease_revoked_again_while_the_node_republishes_does_not_end_the_node(
    node: NodeProcess, kv: KVClient
) -> None:
    """Revoke the node's lease, then each new lease as soon as the node registers it, while it
    republishes the endpoints of many instances: the node registers again each time and, once left
    alone, publishes every endpoint on its latest lease."""
    instances = 10
    async with trio.open_nursery() as nursery:
        for number in range(instances):
            nursery.start_soon(activate, kv, node, ECHO, number)
    expected = {f"endpoints/{ECHO}/{n}" for n in range(instances)}
    await wait_endpoints_on_lease(kv, ECHO, expected, timeout=30)
    revoked: set[int] = set()
    for _ in range(4):
        lease = (
            await node_lease(kv, node)
            if not revoked
            else await wait_registered_again(kv, node, revoked, timeout=30)
        )
        await kv.lease_revoke(lease)
        revoked.add(lease)
    await wait_registered_again(kv, node, revoked, timeout=30)
    await wait_endpoints_on_lease(kv, ECHO, expected, timeout=30)
    assert_running(node)
    await echo_serves(node)
    assert "lease expired" in node.log() or "lease was lost" in node.log()


@pytest.fixture
def own_node(sample_index: Path, tmp_path: Path) -> Iterator[NodeProcess]:
    """A node with its own KV replica: its cluster's leader."""
    with started_node(tmp_path / "node", sample_index) as started:
        yield started


@pytest.mark.long
async def test_a_node_stopped_past_its_lease_registers_again_and_serves(own_node: NodeProcess) -> None:
    node = own_node
    async with kv_client(node) as client:
        await node_support.apply_blueprint(client, "test", [{"artifact": ECHO, "instances": 3}])

        async def three_active() -> bool:
            found = await node_support.active_instances(client, node.node_id, ECHO)
            return len(found) == 3 and len(await endpoint_keys(client, ECHO)) == 3

        await wait_until(three_active, timeout=90, what="3 ACTIVE echo instances with their endpoints")
        lease = await node_lease(client, node)

        node.signal(signal.SIGSTOP)  # its KV replica runs on: the lease lapses, the registration goes
        try:

            async def unregistered() -> bool:
                return await client.get(f"nodes/{node.node_id}", linearizable=True) is None

            await wait_until(unregistered, timeout=30, what="the stopped node's lease to lapse")
        finally:
            node.signal(signal.SIGCONT)

        await wait_registered_again(client, node, {lease}, timeout=30)
        await wait_until(three_active, timeout=60, what="3 ACTIVE echo instances again")

        async def serves() -> bool:
            response = await invoke(node.ingress, "org.aether:echo", "echo", {"back": True})
            return response.status_code == 200

        await wait_until(serves, timeout=30, what="echo to answer again")
        assert_running(node)


# ---------------------------------------------------------------- the KV goes away and comes back


@pytest.mark.long
async def test_the_kv_stopped_and_started_again_does_not_end_the_node(
    sample_index: Path, tmp_path: Path
) -> None:
    replica = node_support.KVReplicaProcess(tmp_path / "kv")
    try:
        replica.start()
        with started_node(
            tmp_path / "node", sample_index, secret=replica.secret, kv_endpoints=(replica.endpoint,)
        ) as node:
            await _kv_stopped_and_started(node, replica)
    finally:
        replica.stop()


async def _kv_stopped_and_started(node: NodeProcess, replica: node_support.KVReplicaProcess) -> None:
    async with kv_client(node) as client:
        await activate(client, node, ECHO, 0)
        lease = await node_lease(client, node)
    replica.stop()

    async def noticed() -> bool:
        return "keep-alive failed" in node.log()

    await wait_until(noticed, timeout=30, what="the node to notice that the KV is gone")
    replica.start()
    async with kv_client(node) as client:
        # the lease outlives a stop of the whole KV, or else the node registers again: either way
        await wait_endpoints_on_lease(client, ECHO, {f"endpoints/{ECHO}/0"}, timeout=60)
        assert await node_lease(client, node) >= lease
        await echo_serves(node)
        # it still follows its slice records: a new command is carried out
        key = slice_key(node.node_id, ECHO, 1)
        await node_support.write_command(client, key, SliceState.ACTIVATE, {})
        await node_support.wait_for_state(client, key, SliceState.ACTIVE, timeout=60)
    assert_running(node)


# ---------------------------------------------------------------- a slice that sends nonsense

RUDE_MODULE = '''"""A slice that calls another slice with a timeout that is not a number."""

from aether_slice import EntryPoint, hookimpl


@hookimpl
def aether_entry_points(context):
    async def rude(payload):
        return await context.call("org.aether:echo", "echo", payload, timeout="soon")

    return [EntryPoint(name="rude", function=rude, idempotent=True)]
'''


def build_rude_slice(project: Path, out: Path) -> None:
    build_wheel(
        project,
        out,
        name="org.aether.rude",
        version="1.0.0",
        entry_point="org.aether:rude",
        source=RUDE_MODULE,
    )


async def test_a_slice_call_with_a_malformed_timeout_does_not_end_the_node(
    sample_index: Path, tmp_path: Path
) -> None:
    index = node_support.copy_index(sample_index, tmp_path / "index")
    build_rude_slice(tmp_path / "rude", index)
    with client_node(tmp_path / "cluster", index) as node:
        async with kv_client(node) as client:
            await activate(client, node, ECHO, 0)
            await activate(client, node, "org.aether:rude:1.0.0", 0)
        for _ in range(3):
            response = await invoke(node.ingress, "org.aether:rude", "rude", {"n": 1})
            assert response.status_code == 500, response.text  # the slice's own call raised in it
            assert_running(node)
        await echo_serves(node)
        assert_running(node)


# ---------------------------------------------------------------- the management API's clients


async def test_management_clients_that_reset_do_not_end_the_node(sample_index: Path, tmp_path: Path) -> None:
    extra = ("--dev-mode",)
    with started_node(tmp_path / "node", sample_index, extra_args=extra, with_management=True) as node:
        base = f"http://{node.management}"
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"{base}/healthz")).status_code == 200
        for head in (
            # an event stream that is being followed, then a reset
            b"GET /api/v1/events/stream HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n",
            # half a request body, then a reset
            b'POST /api/v1/blueprints HTTP/1.1\r\nhost: x\r\ncontent-length: 500\r\n\r\n{"name"',
        ):
            sock = socket.create_connection(("127.0.0.1", node.management_port))
            sock.sendall(head)
            if head.startswith(b"GET"):
                sock.settimeout(10)
                assert sock.recv(4096).startswith(b"HTTP/1.1 200"), "the stream did not start"
            reset(sock)
        async with kv_client(node) as client:  # the stream's watch sees a change after the reset
            await node_support.apply_blueprint(client, "after-reset", [{"artifact": ECHO, "instances": 1}])
            await wait_for_active_instance(client, node.node_id, ECHO, 60)
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"{base}/healthz")).status_code == 200
            events = await http.get(f"{base}/api/v1/events")
            assert events.status_code == 200, events.text
        await echo_serves(node)
        assert_running(node)
