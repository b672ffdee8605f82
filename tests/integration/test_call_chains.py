"""A slice that calls itself, through a real node (issue: a slice's own loop of calls took nodes down).

Every call a slice makes through the cluster is one step deeper in the chain that a call from outside
began; past `MAX_CALL_DEPTH` steps a call is refused, and the chain unwinds with the refusal as its answer.
Before, a slice calling itself ran on at ~2,000 calls a second, each held open on the nodes, until the
nodes' memory grew by hundreds of MiB and their loops, too busy for their lease, lost it. Here: a chain
of exactly `MAX_CALL_DEPTH` calls answers, a longer one is refused with the reason, the depth travels on
the peer link too, and the node serves on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import node_support
import pytest
from node_support import (
    ECHO,
    NodeProcess,
    activate,
    build_wheel,
    client_node,
    invoke,
    kv_client,
    peer_connection,
    peer_request,
)

from aether_slice.protocol import MAX_CALL_DEPTH

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOOP = "org.aether:loop"
LOOP_MODULE = '''"""A slice whose entry `down` calls itself `left` times, one behind the other."""

from aether_slice import EntryPoint, hookimpl


@hookimpl
def aether_entry_points(context):
    async def down(payload):
        left = payload["left"]
        if left == 0:
            return 0
        return 1 + await context.call("org.aether:loop", "down", {"left": left - 1}, timeout=60)

    return [EntryPoint(name="down", function=down, idempotent=False)]
'''


@pytest.fixture(scope="module")
def node(sample_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A node running two instances of the loop slice (a chain goes through both) and one of echo."""
    root = tmp_path_factory.mktemp("call-chains")
    index = node_support.copy_index(sample_index, root / "index")
    build_wheel(
        root / "loop", index, name="org.aether.loop", version="1.0.0", entry_point=LOOP, source=LOOP_MODULE
    )
    with client_node(root / "cluster", index) as started:
        yield started


async def test_a_chain_of_calls_up_to_the_limit_answers_and_a_longer_one_is_refused(
    node: NodeProcess,
) -> None:
    async with kv_client(node) as client:
        for instance in (0, 1):
            await activate(client, node, f"{LOOP}:1.0.0", instance)
        await activate(client, node, ECHO, 0)
    answered = await invoke(node.ingress, LOOP, "down", {"left": MAX_CALL_DEPTH})
    assert (answered.status_code, answered.json()) == (200, MAX_CALL_DEPTH), answered.text

    refused = await invoke(node.ingress, LOOP, "down", {"left": 100_000})
    assert refused.status_code == 500, refused.text  # the first call's entry point raised the refusal
    message = refused.json()["error"]["message"]
    assert f"call {MAX_CALL_DEPTH + 1} in a chain" in message and f"at most {MAX_CALL_DEPTH}" in message, (
        message
    )
    assert node.returncode() is None, node.log_tail(40)
    echoed = await invoke(node.ingress, "org.aether:echo", "echo", {"still": "here"})
    assert (echoed.status_code, echoed.json()) == (200, {"still": "here"}), echoed.text


async def test_the_depth_a_peer_sends_reaches_the_instance(node: NodeProcess) -> None:
    """A call from another node carries its depth: 30 steps in already, a chain of 5 more is refused at
    the third (the instance's own call 33)."""
    async with kv_client(node) as client:
        for instance in (0, 1):
            await activate(client, node, f"{LOOP}:1.0.0", instance)
    async with peer_connection(node) as (_, framed):
        request = {
            "id": 1,
            "op": "invoke",
            "coordinates": f"{LOOP}:1.0.0",
            "instance": 0,
            "entry": "down",
            "payload": {"left": 5},
            "timeout": 30,
        }
        within = await peer_request(framed, {**request, "payload": {"left": 2}, "depth": MAX_CALL_DEPTH - 2})
        assert within.get("ok") == 2, within
        beyond = await peer_request(framed, {**request, "id": 2, "depth": MAX_CALL_DEPTH - 2})
        assert f"call {MAX_CALL_DEPTH + 1} in a chain" in beyond["error"]["message"], beyond
        malformed = await peer_request(framed, {**request, "id": 3, "depth": -1})
        assert malformed["error"]["kind"] == "bad_request", malformed
    assert node.returncode() is None, node.log_tail(40)
