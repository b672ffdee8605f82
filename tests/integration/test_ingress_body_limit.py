"""Bodies over the limit on a real `aether-node`, with each ingress server: a call whose body is over
MAX_BODY (declared, or sent in chunks) is refused with the same 400 by both, the node reads no more of
it than it must and serves the next call; the management API refuses a body over its own limit. Before,
the trio ingress and the management API read any body whole into the node's memory (a client sending
gigabytes could end the node)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from node_support import ECHO, activate, client_node, invoke, kv_client

from aether_node.routing import MAX_BODY, MAX_MANAGEMENT_BODY

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHUNK = b"a" * (1 << 20)


async def _chunks(total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = CHUNK[: total - sent]
        sent += len(piece)
        yield piece


def _refused(answer: httpx.Response, limit: int) -> None:
    assert answer.status_code == 400, answer.text[:300]
    error = answer.json()["error"]
    assert (error["kind"], error["message"]) == ("bad_request", f"the request body is over {limit} bytes")


@pytest.mark.parametrize("server", ["trio", "fast"])
async def test_a_call_body_over_the_limit_is_refused_by_either_ingress(
    server: str, sample_index: Path, tmp_path: Path
) -> None:
    args = ("--ingress-server", server, "--dev-mode")
    with client_node(tmp_path, sample_index, extra_args=args, with_management=True) as node:
        management = node.management
        async with kv_client(node) as kv:
            await activate(kv, node, ECHO, 1)
        url = f"http://{node.ingress}/invoke/org.aether:echo/echo"
        async with httpx.AsyncClient(timeout=60) as http:
            declared = await http.post(
                url, content=_chunks(MAX_BODY + 1), headers={"content-length": str(MAX_BODY + 1)}
            )
            _refused(declared, MAX_BODY)
            chunked = await http.post(url, content=_chunks(MAX_BODY + len(CHUNK)))  # no length: chunked
            _refused(chunked, MAX_BODY)
            blueprint = await http.post(
                f"http://{management}/api/v1/blueprints",
                content=_chunks(MAX_MANAGEMENT_BODY + 1),
                headers={"content-length": str(MAX_MANAGEMENT_BODY + 1)},
            )
            _refused(blueprint, MAX_MANAGEMENT_BODY)
        answer = await invoke(node.ingress, "org.aether:echo", "echo", {"after": True})
        assert (answer.status_code, answer.json()) == (200, {"after": True})
        assert node.process.poll() is None
