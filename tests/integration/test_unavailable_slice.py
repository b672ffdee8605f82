"""A call to a deployed slice with no ACTIVE instance now, on a real node (its own KV replica: the leader
places what the blueprint asks for): 503 `unavailable` with `Retry-After: 1`, through the ingress (each
server) and the management API, and the same kind for a slice's call to it; a slice nothing deploys stays
a 404 `no_endpoint` (a typo), as does an entry point a live slice does not have.

The deployed slice never becomes ACTIVE, by construction: org.aether:faulty in mode `hang_start`, whose
start never returns (it stays LOADING, times out, is started again: never ACTIVE), so every call to it
meets the window a restart leaves, not a race with one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import node_support
import pytest
from node_support import (
    FAULTY,
    NodeProcess,
    apply_blueprint,
    build_wheel,
    endpoint_keys,
    kv_client,
    started_node,
    wait_for_active_instance,
)

from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CALLER = "org.aether:caller:1.0.0"
CALLER_MODULE = '''"""A slice whose entry `call` calls the slice and entry its payload names and answers
the kind of the SliceCallError it got (or the result)."""

from aether_slice import EntryPoint, SliceCallError, hookimpl


@hookimpl
def aether_entry_points(context):
    async def call(payload):
        try:
            return {"result": await context.call(payload["artifact"], payload["entry"], None)}
        except SliceCallError as error:
            return {"kind": error.kind, "message": error.message}

    return [EntryPoint(name="call", function=call, idempotent=False)]
'''


@pytest.fixture(scope="module", params=["trio", "fast"])
def node(
    request: pytest.FixtureRequest, sample_index: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeProcess]:
    """A node (each ingress server) whose blueprint deploys the caller (ACTIVE) and faulty (never ACTIVE)."""
    root = tmp_path_factory.mktemp(f"unavailable-{request.param}")
    index = node_support.copy_index(sample_index, root / "index")
    build_wheel(
        root / "caller",
        index,
        name="org.aether.caller",
        version="1.0.0",
        entry_point="org.aether:caller",
        source=CALLER_MODULE,
    )
    args = ("--ingress-server", request.param, "--dev-mode")
    with started_node(root / "node", index, extra_args=args, with_management=True) as started:
        yield started


async def deployed(node: NodeProcess) -> None:
    """The blueprint applied; the caller ACTIVE, faulty's instance placed (starting), none of it ACTIVE."""
    async with kv_client(node) as kv:
        await apply_blueprint(
            kv,
            "demo",
            [
                {"artifact": CALLER, "instances": 1},
                {"artifact": FAULTY, "instances": 1, "config": {"mode": "hang_start"}},
            ],
        )
        await wait_for_active_instance(kv, node.node_id, CALLER, 90)

        async def placed() -> list[str]:
            return [kv.key for kv in (await kv.range(f"slices/{node.node_id}/{FAULTY}/")).kvs]

        await wait_until(placed, timeout=30, what="faulty's instance placed on the node")
        assert await endpoint_keys(kv, FAULTY) == []


async def faulty_still_not_active(node: NodeProcess) -> None:
    async with kv_client(node) as kv:
        assert await endpoint_keys(kv, FAULTY) == [], "faulty became ACTIVE: the test's premise broke"


async def ingress_call(node: NodeProcess, artifact: str, entry: str, payload: Any = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"http://{node.ingress}/invoke/{artifact}/{entry}", json=payload)


async def api_call(node: NodeProcess, artifact: str, entry: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"http://{node.management}/api/v1/slices/{artifact}/invoke/{entry}")


async def both(node: NodeProcess, artifact: str, entry: str) -> list[httpx.Response]:
    """The call through the ingress, then through the management API."""
    return [await ingress_call(node, artifact, entry), await api_call(node, artifact, entry)]


def error_of(answer: httpx.Response) -> dict[str, Any]:
    assert answer.headers["content-type"] == "application/json", answer.text
    return answer.json()["error"]


async def test_a_deployed_slice_with_no_active_instance_is_503_and_a_typo_404(node: NodeProcess) -> None:
    await deployed(node)
    for answer in await both(node, "org.aether:faulty", "work"):
        assert answer.status_code == 503, answer.text
        error = error_of(answer)
        assert error["kind"] == "unavailable"
        assert error["message"].startswith(
            "no ACTIVE instance of org.aether:faulty now: blueprint demo asks for 1 instance, starting or"
            " restarting"
        ), error
        assert answer.headers["retry-after"] == "1"

    for answer in await both(node, "org.aether:nosuch", "work"):
        assert answer.status_code == 404, answer.text
        assert error_of(answer) == {
            "kind": "no_endpoint",
            "message": "no blueprint deploys org.aether:nosuch and no instance of it runs"
            " (`aether blueprint list`)",
        }
        assert "retry-after" not in answer.headers

    for answer in await both(node, "org.aether:caller", "cal"):
        assert answer.status_code == 404, answer.text
        assert error_of(answer) == {
            "kind": "no_endpoint",
            "message": "org.aether:caller has no entry point 'cal' (it has: call)",
        }
    await faulty_still_not_active(node)


async def test_a_slices_call_to_a_deployed_slice_with_no_active_instance_is_unavailable(
    node: NodeProcess,
) -> None:
    await deployed(node)
    answer = await ingress_call(
        node, "org.aether:caller", "call", {"artifact": "org.aether:faulty", "entry": "work"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["kind"] == "unavailable"
    assert "blueprint demo asks for 1 instance" in answer.json()["message"]
    answer = await ingress_call(
        node, "org.aether:caller", "call", {"artifact": "org.aether:nosuch", "entry": "work"}
    )
    assert (answer.status_code, answer.json()["kind"]) == (200, "no_endpoint"), answer.text
    await faulty_still_not_active(node)
