"""A real `aether-node` with `--ingress-server fast`: calls to a real slice through the ingress worker
process, the same errors as the trio ingress, the calls counted in the node's /metrics, a worker that is
killed (the node starts a new one and keeps serving), and a graceful stop that leaves no worker behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest
from node_support import (
    ECHO,
    activate,
    client_node,
    ingress_workers,
    invoke,
    invoke_raw,
    kv_client,
)
from prometheus_client.parser import text_string_to_metric_families

from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def calls_counted(management: str, entry: str, source: str = "ingress") -> float:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"http://{management}/metrics")
    assert answer.status_code == 200, answer.text
    total = 0.0
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "aether_invocations_total"
                and labels.get("artifact") == "org.aether:echo"
                and labels.get("entry") == entry
                and labels.get("source") == source
            ):
                total += sample.value
    return total


async def test_a_node_with_the_fast_ingress(sample_index: Path, tmp_path: Path) -> None:
    args = ("--ingress-server", "fast", "--dev-mode")
    with client_node(tmp_path, sample_index, extra_args=args, with_management=True) as node:
        management = node.management
        (first_worker,) = ingress_workers(node)
        async with kv_client(node) as kv:
            await activate(kv, node, ECHO, 1)

        for n in range(5):
            answer = await invoke(node.ingress, "org.aether:echo", "echo", {"n": n, "text": "é"})
            assert (answer.status_code, answer.json()) == (200, {"n": n, "text": "é"}), answer.text
        bad_json = await invoke_raw(node.ingress, "org.aether:echo", "echo", b'{"unterminated": ')
        assert bad_json.status_code == 400, bad_json.text
        assert bad_json.json()["error"]["kind"] == "bad_request"
        unknown = await invoke(node.ingress, "org.aether:nosuch", "echo", {})
        assert unknown.status_code == 404, unknown.text
        assert unknown.json()["error"]["kind"] == "no_endpoint"
        no_entry = await invoke(node.ingress, "org.aether:echo", "shout", {})
        assert no_entry.status_code == 404, no_entry.text
        assert "shout" in no_entry.json()["error"]["message"]
        # the node routed and counted the calls, as for the trio ingress
        assert await calls_counted(management, "echo") == 5

        # a killed worker: the node starts a new one and serves again; the node itself runs on
        os.kill(first_worker, signal.SIGKILL)

        async def serves_again() -> bool:
            try:
                answer = await invoke(node.ingress, "org.aether:echo", "echo", [1])
            except httpx.TransportError:
                return False
            return answer.status_code == 200 and answer.json() == [1]

        await wait_until(serves_again, timeout=60, what="the ingress to serve again after its worker died")
        assert ingress_workers(node) not in ([], [first_worker])
        assert node.returncode() is None
        assert "starting service ingress again" in node.log()

        # a graceful stop ends the worker with the node
        node.signal(signal.SIGTERM)
        assert await node.wait_exit(60) == 0, node.log_tail()
        assert ingress_workers(node) == []
