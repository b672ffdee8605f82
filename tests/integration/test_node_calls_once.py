"""Node-to-node calls run a non-idempotent entry point at most once (issue 11, defect 5, node side).

Two nodes, clients of one KV replica run beside them (the test writes the command states): n1 holds
the instances of org.aether:faulty that hang, n2 is the node the test calls. Entry `record` is not
idempotent and appends a line per execution to a file, so the test counts executions. A call that may
have run is never sent to another instance: when n1's instance does not answer in time, the caller gets
n1's own 504; when n1 dies during the call, the caller gets a 503 that says it was not resent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from node_support import FAULTY, NodeProcess, activate, executions, kv_client, two_nodes

from aether_node import EndpointRecord, decode_record
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def call(node: NodeProcess, entry: str, payload: Any, timeout: float) -> httpx.Response:
    async with httpx.AsyncClient(timeout=timeout + 30) as http:
        return await http.post(
            f"http://{node.ingress}/invoke/org.aether:faulty/{entry}?timeout={timeout:g}", json=payload
        )


async def wait_known(node: NodeProcess, instances: int) -> None:
    """Until `node`'s endpoint table has `instances` endpoints of faulty's `record` (it asks its ingress
    for an entry point that does not exist: the answer lists the known ones, and nothing runs)."""

    async def known() -> bool:
        response = await call(node, "nope", None, 5)
        return "record" in response.text

    await wait_until(known, timeout=30, what=f"{node.node_id} to learn faulty's endpoints")

    async def records() -> int:
        async with kv_client(node) as client:
            listing = await client.range(f"endpoints/{FAULTY}/")
            return sum("record" in decode_record(i.key, i.value, EndpointRecord).entries for i in listing.kvs)

    # the table holds whole KV revisions: all of them, once one is there
    await wait_until(
        records,
        until=lambda found: found == instances,
        timeout=30,
        interval=0.1,
        what=f"{instances} endpoints",
    )


async def test_a_remote_call_that_times_out_runs_once_and_answers_the_remotes_504(
    sample_index: Path, tmp_path: Path
) -> None:
    record = tmp_path / "executions.txt"
    with two_nodes(tmp_path, sample_index) as (n1, n2):
        async with kv_client(n1) as client:
            for number in (0, 1):  # two instances: a resend would have somewhere to go
                await activate(
                    client, n1, FAULTY, number, {"mode": "hang_work", "executions_file": str(record)}
                )
        await wait_known(n2, 2)
        response = await call(n2, "record", {"id": "once"}, timeout=2)
        assert response.status_code == 504, response.text
        error = response.json()["error"]
        assert error["kind"] == "timeout", error
        assert "record did not answer within 2 s" in error["message"], error  # n1's instance said so
        assert len(executions(record, "once")) == 1, record.read_text()


async def test_a_remote_node_that_dies_during_a_non_idempotent_call_is_not_resent(
    sample_index: Path, tmp_path: Path
) -> None:
    record = tmp_path / "executions.txt"
    with two_nodes(tmp_path, sample_index) as (n1, n2):
        config = {"executions_file": str(record)}
        async with kv_client(n1) as client:
            await activate(client, n1, FAULTY, 0, {"mode": "hang_work", **config})
            await activate(client, n2, FAULTY, 1, {"mode": "ok", **config})  # where a resend could go
        await wait_known(n2, 2)
        outcome: dict[str, httpx.Response] = {}
        for attempt in range(10):  # until a call goes to n1 (n2 answers its own calls at once)
            request_id = f"call-{attempt}"
            async with trio.open_nursery() as nursery:

                async def send(request_id: str = request_id) -> None:
                    outcome[request_id] = await call(n2, "record", {"id": request_id}, timeout=60)

                nursery.start_soon(send)

                async def ran(request_id: str = request_id) -> bool:
                    return bool(executions(record, request_id))

                await wait_until(ran, timeout=30, what=f"{request_id} to run somewhere")
                if executions(record, request_id) == ["0"]:  # on n1, where it hangs
                    n1.kill()
            if executions(record, request_id) == ["0"]:
                break
        else:
            pytest.fail(f"no call went to n1 in 10 tries: {record.read_text()}")
        response = outcome[request_id]
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["kind"] == "unavailable", error
        assert "not idempotent, so it was not retried" in error["message"], error
        assert executions(record, request_id) == ["0"], record.read_text()
        assert n2.returncode() is None, n2.log_tail()
