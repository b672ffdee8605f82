"""Results and payloads JSON cannot carry, on a real `aether-node` with each ingress server and a real
slice host: a slice that returns NaN, Infinity, a set or more than 16 MiB is answered 502 `bad_result`,
naming the entry point as the `slice_host` fixture does, by the ingress (the fast one's direct path, and
its node path) and by the management API's invoke; a payload holding NaN, Infinity or 1e400 is refused
400 saying why, on both ingress servers. Before, NaN came back as a plain-text 500 "Internal Server
Error", and the others as `raised` with type TypeError (500), even a result over the size limit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from node_support import FAULTY, NodeProcess, activate, client_node, kv_client, paused

from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ODD_RESULT = "/invoke/org.aether:faulty/odd_result"
NOT_JSON = "the message is not JSON"
NOT_FINITE = f"{NOT_JSON}: it holds NaN or Infinity, which JSON has no value for"
ODD = {
    b'"nan"': NOT_FINITE,
    b'"infinity"': NOT_FINITE,
    b'"set"': f"{NOT_JSON}: Object of type set is not JSON serializable",
    b'"huge"': "bytes is over the limit of 16777216",
}
NOT_PAYLOADS = {
    b"NaN": "NaN is not a JSON value",
    b'{"x": [1, -Infinity]}': "-Infinity is not a JSON value",
    b'{"x": 1e400}': "1e400 is too large for a number",
}
PAUSE = 3.0  # seconds a call waits for its answer while the node is paused


def assert_bad_result(answer: httpx.Response, why: str) -> None:
    assert answer.status_code == 502, answer.text[:500]
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert error["kind"] == "bad_result", error
    assert error["message"].startswith("the result of entry point 'odd_result' cannot be sent: "), error
    assert why in error["message"], error


async def answered_directly(http: httpx.AsyncClient, node: NodeProcess, body: bytes) -> httpx.Response | None:
    """The fast ingress's answer to a call while the node is paused: only its worker's direct path can
    answer it then. None if it did not answer in time (the worker does not call the instance yet)."""
    with paused(node):
        try:
            return await http.post(f"http://{node.ingress}{ODD_RESULT}", content=body, timeout=PAUSE)
        except httpx.TransportError:
            return None


@pytest.mark.parametrize("server", ["trio", "fast"])
async def test_a_result_json_cannot_carry_is_a_bad_result_and_such_a_payload_a_bad_request(
    server: str, sample_index: Path, tmp_path: Path
) -> None:
    # (a lease that outlives the pauses of the direct path's check)
    args = ("--ingress-server", server, "--dev-mode", "--lease-ttl", "60")
    with client_node(tmp_path, sample_index, extra_args=args, with_management=True) as node:
        management = node.management
        async with kv_client(node) as kv:
            await activate(kv, node, FAULTY, 1)
        ingress = f"http://{node.ingress}{ODD_RESULT}"
        urls = {
            "ingress": ingress,
            "ingress through the node": f"{ingress}?timeout=30",  # (an option: never the direct path)
            "management API": f"http://{management}/api/v1/slices/org.aether:faulty/invoke/odd_result",
        }
        async with httpx.AsyncClient(timeout=60) as http:
            for body, why in ODD.items():
                for name, url in urls.items():
                    answer = await http.post(url, content=body)
                    with _saying(f"{name}, result {body.decode()}"):
                        assert_bad_result(answer, why)
            # a lone surrogate: the host frames it (its frames carry them), the node cannot answer it
            # (the management API's answer failed: a bare 500)
            for name, url in urls.items():
                answer = await http.post(url, content=b'"surrogate"')
                with _saying(f"{name}, result surrogate"):
                    assert answer.status_code == 502, answer.text[:500]
                    assert answer.json()["error"]["kind"] == "bad_result", answer.text
            if server == "fast":
                direct = await wait_until(
                    lambda: answered_directly(http, node, b'"nan"'),
                    until=lambda answer: answer is not None,
                    timeout=60,
                    what="the fast ingress's worker to answer a call directly",
                )
                assert direct is not None
                assert_bad_result(direct, NOT_FINITE)
            for body, why in NOT_PAYLOADS.items():
                for url in (ingress, urls["ingress through the node"]):
                    answer = await http.post(url, content=body)
                    assert answer.status_code == 400, answer.text
                    message = f"the request body is not valid JSON: {why}"
                    assert answer.json() == {"error": {"kind": "bad_request", "message": message}}
            answer = await http.post(ingress, content=b"[1.5]")
            assert (answer.status_code, answer.json()) == (200, [1.5])  # the instance serves on
        assert node.process is not None and node.process.poll() is None


@contextlib.contextmanager
def _saying(what: str) -> Iterator[None]:
    """Name the case in a failed assertion's message."""
    try:
        yield
    except AssertionError as error:
        raise AssertionError(f"{what}: {error}") from None
