"""Large calls do not stall the node (`core/_off_loop.py`): parsing a call's JSON body and writing its frame
to the instance took the node's event loop ~0.8 s per 6 MB; four such calls at once held it for seconds,
the node's lease lapsed, its endpoints were withdrawn and every call to it failed (404) until it had
registered again. Big JSON is now worked on in a thread, and the loop keeps serving meanwhile."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from node_support import (
    ECHO,
    NodeProcess,
    activate,
    client_node,
    invoke,
    invoke_raw,
    kv_client,
    two_nodes,
)

from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# ~10 MB under the ingress's 16 MiB limit; its numbers grow as the frame to the instance writes them again,
# over the frame limit: each call does all the work, then is refused as the caller's (400)
BODY = ("[" + ",".join(["1e9"] * 2_500_000) + "]").encode()


async def large_calls_then_a_small_one(ingress: str) -> list[int]:
    """Twice: four large calls at once to `ingress`, then a small one, which must be answered."""
    answers: list[int] = []

    async def large() -> None:
        answers.append((await invoke_raw(ingress, "org.aether:echo", "echo", BODY)).status_code)

    for _ in range(2):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(large)
        small = await invoke(ingress, "org.aether:echo", "echo", [1])
        assert (small.status_code, small.json()) == (200, [1]), small.text
    return answers


def assert_kept_its_lease(node: NodeProcess) -> None:
    log = node.log()
    assert "lease expired" not in log and "registering again" not in log, node.log_tail()


@pytest.mark.long  # (in `nox -s long`: the default run keeps this module's other tests)
async def test_large_bodies_at_once_leave_the_node_its_lease_and_its_endpoints(
    sample_index: Path, tmp_path: Path
) -> None:
    with client_node(tmp_path, sample_index) as node:
        async with kv_client(node) as kv:
            await activate(kv, node, ECHO, 1)
            assert await large_calls_then_a_small_one(node.ingress) == [400] * 8
    assert_kept_its_lease(node)


@pytest.mark.long  # (in `nox -s long`: the default run keeps this module's other tests)
async def test_large_calls_to_another_nodes_instance_leave_both_nodes_their_leases(
    sample_index: Path, tmp_path: Path
) -> None:
    """n2 holds no instance: it sends each call to n1 over the peer link (encoded and decoded there too)."""
    with two_nodes(tmp_path, sample_index) as (n1, n2):
        async with kv_client(n1) as kv:
            await activate(kv, n1, ECHO, 1)

        async def routed() -> int:
            return (await invoke(n2.ingress, "org.aether:echo", "echo", [0])).status_code

        await wait_until(routed, until=lambda status: status == 200, timeout=30, what="n2 to route to n1")
        answers = await large_calls_then_a_small_one(n2.ingress)
        assert answers == [400] * 8
        assert_kept_its_lease(n1)
        assert_kept_its_lease(n2)


async def test_a_big_result_through_the_fast_ingress_from_another_node_comes_back_whole(
    sample_index: Path, tmp_path: Path
) -> None:
    """n2's fast ingress sends the call over its link to the node, on to n1; the ~3 MB result comes back
    over the peer link and the ingress link, each written in pieces in a worker thread."""
    with two_nodes(tmp_path, sample_index, extra_args=("--ingress-server", "fast")) as (n1, n2):
        async with kv_client(n1) as kv:
            await activate(kv, n1, ECHO, 1)

        async def routed() -> int:
            return (await invoke(n2.ingress, "org.aether:echo", "echo", [0])).status_code

        await wait_until(routed, until=lambda status: status == 200, timeout=30, what="n2 to route to n1")
        payload = {"rows": [{"n": number, "text": f"row {number} é"} for number in range(100_000)]}
        answer = await invoke(n2.ingress, "org.aether:echo", "echo", payload)
        assert answer.status_code == 200 and answer.json() == payload, answer.text[:300]
        assert_kept_its_lease(n1)
        assert_kept_its_lease(n2)
