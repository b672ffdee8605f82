"""The fast ingress's direct path with a real `aether-node --ingress-server fast` and real slice hosts: the
worker calls this node's instances itself (proven by pausing the node with SIGSTOP: calls are answered
all the same), the node still counts every call in /metrics, an instance taken away (the table updated)
costs no call, a restarted worker calls directly again, an idempotent call whose instance dies mid-call
is routed again (through the node) and answered, a non-idempotent one is answered 503 and never resent."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from node_support import (
    ECHO,
    FAULTY,
    NodeProcess,
    activate,
    client_node,
    executions,
    host_of,
    ingress_workers,
    kv_client,
    paused,
    slice_key,
    wait_for_state,
    write_command,
)
from prometheus_client.parser import text_string_to_metric_families

from aether_node import SliceState
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAUSE = 3.0  # seconds a call waits for its answer while the node is paused
# a lease that outlives the pauses (with the default, a paused node is rightly taken for dead)
ARGS = ("--ingress-server", "fast", "--dev-mode", "--lease-ttl", "60")


async def post(
    node: NodeProcess, artifact: str, entry: str, payload: Any, timeout: float = 30
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=timeout) as http:
        return await http.post(f"http://{node.ingress}/invoke/{artifact}/{entry}", json=payload)


async def answered_while_paused(node: NodeProcess, artifact: str, entry: str, payload: Any) -> bool:
    """Whether a call is answered 200 while the node is paused (the worker decided it alone)."""
    with paused(node):
        try:
            response = await post(node, artifact, entry, payload, timeout=PAUSE)
        except httpx.TransportError:  # no answer in time (or no worker listening yet)
            return False
    return response.status_code == 200


async def wait_every_instance_direct(
    node: NodeProcess, artifact: str, entry: str, instances: set[int]
) -> None:
    """Wait until calls the worker decides alone (the node paused) have reached each of `instances` (`entry`
    answers which instance it is): the worker's table then routes to all of them. An instance is ACTIVE
    and routable in one commit, but the table follows the node's cache of it a moment later: one pushed
    before the last instance's endpoint reached that cache routes to the others only."""
    seen: set[int] = set()

    async def reached_all() -> bool:
        with paused(node):
            try:
                response = await post(node, artifact, entry, {}, timeout=PAUSE)
            except httpx.TransportError:  # no answer in time (or no worker listening yet)
                return False
        if response.status_code == 200:
            seen.add(response.json()["instance"])
        return seen >= instances

    await wait_until(
        reached_all, timeout=60, what=f"the worker to call {artifact} {sorted(instances)} directly"
    )


async def wait_direct(node: NodeProcess, artifact: str, entry: str, payload: Any) -> None:
    async def direct() -> bool:
        return await answered_while_paused(node, artifact, entry, payload)

    await wait_until(direct, timeout=60, what=f"the worker to call {artifact}/{entry} directly")


async def calls_counted(management: str, entry: str) -> float:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"http://{management}/metrics")
    assert answer.status_code == 200, answer.text
    return sum(
        sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if sample.name == "aether_invocations_total"
        and sample.labels.get("entry") == entry
        and sample.labels.get("source") == "ingress"
    )


def ingress_worker(node: NodeProcess) -> int:
    workers = ingress_workers(node)
    assert workers, "the node has no ingress worker"
    return workers[0]


async def test_calls_go_straight_to_local_instances_and_are_still_counted(
    sample_index: Path, tmp_path: Path
) -> None:
    with client_node(tmp_path, sample_index, extra_args=ARGS, with_management=True) as node:
        management = node.management
        async with kv_client(node) as kv:
            for number in (1, 2):
                await activate(kv, node, ECHO, number)
        await wait_every_instance_direct(node, "org.aether:echo", "info", {1, 2})

        # with the node paused, both instances answer (round-robin, decided by the worker)
        with paused(node):
            seen = set()
            for n in range(6):
                response = await post(node, "org.aether:echo", "info", {"n": n}, timeout=PAUSE)
                assert response.status_code == 200, response.text
                seen.add(response.json()["instance"])
        assert seen == {1, 2}

        # every call is counted by the node, as if it had routed it
        before = await calls_counted(management, "echo")
        for n in range(20):
            response = await post(node, "org.aether:echo", "echo", {"n": n})
            assert (response.status_code, response.json()) == (200, {"n": n}), response.text

        async def counted() -> bool:
            return await calls_counted(management, "echo") == before + 20

        await wait_until(counted, timeout=10, what="the node to count the 20 direct calls")

        # an instance taken away while calls run: no call fails, and the rest go to the other instance
        failures: list[str] = []
        stop = trio.Event()

        async def keep_calling() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                response = await post(node, "org.aether:echo", "echo", [n])
                if response.status_code != 200 or response.json() != [n]:
                    failures.append(f"{response.status_code} {response.text}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_calling)
            async with kv_client(node) as kv:
                key = slice_key(node.node_id, ECHO, 1)
                await write_command(kv, key, SliceState.DEACTIVATE)
                await wait_for_state(kv, key, SliceState.LOADED, timeout=60)
            stop.set()
        assert failures == []

        async def only_the_second() -> bool:
            with paused(node):
                answers = [await post(node, "org.aether:echo", "info", None, timeout=PAUSE) for _ in range(4)]
            return all(a.status_code == 200 and a.json()["instance"] == 2 for a in answers)

        await wait_until(only_the_second, timeout=30, what="calls to go to instance 2 only, directly")

        # a restarted worker attaches the instances again and calls them directly
        os.kill(ingress_worker(node), signal.SIGKILL)
        await wait_direct(node, "org.aether:echo", "echo", ["again"])
        assert node.returncode() is None, node.log_tail()


async def test_an_instance_that_dies_mid_call_retries_idempotent_calls_only(
    sample_index: Path, tmp_path: Path
) -> None:
    record = tmp_path / "executions.txt"
    hangs = {"mode": "hang_work", "executions_file": str(record)}
    with client_node(tmp_path, sample_index, extra_args=ARGS) as node:
        async with kv_client(node) as kv:
            await activate(kv, node, FAULTY, 1, hangs)
            await activate(kv, node, FAULTY, 2, {"mode": "ok", "executions_file": str(record)})

        await wait_every_instance_direct(node, "org.aether:faulty", "imported", {1, 2})  # (it never hangs)
        outcome: dict[str, httpx.Response] = {}

        async def send(entry: str, request_id: str) -> None:
            outcome[request_id] = await post(node, "org.aether:faulty", entry, {"id": request_id}, timeout=60)

        # Idempotent: 4 calls in a row go 2 and 2 (round-robin); instance 2 answers its two with the node
        # paused, the other two hang on instance 1 (its log, drained by the node, cannot show it while the
        # node is paused). Instance 1 is killed with them in flight: the worker hands them to the node,
        # which answers them from instance 2 once it runs again.
        async with trio.open_nursery() as nursery:
            with paused(node):
                for n in range(4):
                    nursery.start_soon(send, "work", f"work-{n}")

                async def two_answered() -> bool:
                    return len(outcome) == 2

                await wait_until(two_answered, timeout=30, what="instance 2 to answer its 2 calls")
                host = host_of(node.data_dir, FAULTY, 1)
                assert host is not None
                os.kill(host.pid, signal.SIGKILL)
        assert {key: (r.status_code, r.json()) for key, r in outcome.items()} == {
            f"work-{n}": (200, "ok") for n in range(4)
        }

        # Non-idempotent: instance 3 hangs too; calls until one runs on a hanging instance, all with the
        # node paused; that instance is killed mid-call and the worker answers 503 itself, not resending it.
        async with kv_client(node) as kv:
            await activate(kv, node, FAULTY, 3, hangs)
        await wait_every_instance_direct(node, "org.aether:faulty", "imported", {3})
        with paused(node):
            async with trio.open_nursery() as nursery:
                for attempt in range(6):
                    request_id = f"record-{attempt}"
                    nursery.start_soon(send, "record", request_id)

                    async def ran(request_id: str = request_id) -> bool:
                        return bool(executions(record, request_id))

                    await wait_until(ran, timeout=30, what=f"{request_id} to run (directly)")
                    if executions(record, request_id) != ["2"]:
                        break
                else:
                    pytest.fail(f"no call went to a hanging instance: {record.read_text()}")
                (where,) = executions(record, request_id)
                host = host_of(node.data_dir, FAULTY, int(where))
                assert host is not None
                os.kill(host.pid, signal.SIGKILL)
        response = outcome[request_id]
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["kind"] == "unavailable", error
        assert "died during invoke" in error["message"], error
        assert executions(record, request_id) == [where], record.read_text()
        assert node.returncode() is None, node.log_tail()


async def test_a_direct_call_that_outlives_its_timeout_is_answered_504_by_the_worker(
    sample_index: Path, tmp_path: Path
) -> None:
    config = "[timeouts]\ninvoke = 1.5\n"
    with client_node(tmp_path, sample_index, extra_args=ARGS, config_text=config) as node:
        async with kv_client(node) as kv:
            await activate(kv, node, FAULTY, 1, {"mode": "hang_work"})

        async def answered_504_while_paused() -> bool:  # the node's invoker cannot answer while paused
            with paused(node):
                try:
                    response = await post(node, "org.aether:faulty", "work", None, timeout=PAUSE)
                except httpx.TransportError:
                    return False
            if response.status_code != 504:
                return False
            error = response.json()["error"]
            assert error["kind"] == "timeout", error
            assert error["message"].endswith("work did not answer within 1.5 s"), error
            return True

        await wait_until(answered_504_while_paused, timeout=60, what="the worker to time a direct call out")
