"""Large calls do not stall the node (`core/_off_loop.py`): parsing a call's JSON body and writing its frame
to the instance took the node's event loop ~0.8 s per 6 MB; four such calls at once held it for seconds,
the node's lease lapsed, its endpoints were withdrawn and every call to it failed (404) until it had
registered again. Big JSON is now worked on in a thread, and the loop keeps serving meanwhile."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from node_support import ECHO, activate, client_node, invoke, invoke_raw, kv_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_large_bodies_at_once_leave_the_node_its_lease_and_its_endpoints(
    sample_index: Path, tmp_path: Path
) -> None:
    # ~10 MB under the ingress's 16 MiB limit; its numbers grow as the frame writes them again, over the
    # frame limit: each call does all the work, then is refused as the caller's (400)
    body = ("[" + ",".join(["1e9"] * 2_500_000) + "]").encode()
    with client_node(tmp_path, sample_index) as node:
        async with kv_client(node) as kv:
            await activate(kv, node, ECHO, 1)
            answers: list[int] = []

            async def large() -> None:
                answers.append((await invoke_raw(node.ingress, "org.aether:echo", "echo", body)).status_code)

            for _ in range(2):
                async with trio.open_nursery() as nursery:
                    for _ in range(4):
                        nursery.start_soon(large)
                small = await invoke(node.ingress, "org.aether:echo", "echo", [1])
                assert (small.status_code, small.json()) == (200, [1]), small.text
    assert answers == [400] * 8
    assert "lease expired" not in node.log() and "registering again" not in node.log(), node.log_tail()
