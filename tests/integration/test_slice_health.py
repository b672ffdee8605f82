"""A slice's own health checks (`[slices.health]`) over the node's `[health]`, with real `aether-node`
processes and the `faulty` sample slice: short settings find a hung instance (SIGSTOP) that the node's
own would leave for minutes, and it is replaced; longer settings, or checks turned off, leave an
instance whose sync entry point blocks (without CPU) longer than the node's own checks allow; and, on a
cluster with its leader, a blueprint that changes only the table restarts nothing, while the running
instance is checked by the new settings from then on.

The nodes' own settings are short (or long) so that each test takes seconds. The first tests' node is a
client of a KV replica run beside it: the test writes the blueprint record and the command states as
an operator and a leader would (`node_support`).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from node_support import (
    ECHO,
    FAULTY,
    KVReplicaProcess,
    NodeProcess,
    activate,
    apply_blueprint,
    collect_events,
    host_of,
    kv_client,
    node_cleanup,
    slice_key,
    started_node,
    unload_everything,
    wait_for_active_instance,
)

from aether_kv import Event, KVClient, open_client
from aether_node import HealthSpec, SliceRecord, decode_record
from aether_node.client import ApiClient
from support import process_ended, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# the node's own checks: quick ones find an instance blocked for 2 s; slow ones nothing within a test
QUICK_NODE = "[health]\ninterval = 0.5\ntimeout = 0.5\nfailures = 2\n"
SLOW_NODE = "[health]\ninterval = 600\ntimeout = 60\nfailures = 3\n"
SHORT = HealthSpec(interval=0.5, timeout=0.5, failures=2)
HUNG = "hung: 2 health checks in a row unanswered within 0.5 s each"
BLOCK_S = 3  # how long the `block` call holds the instance's event loop: a handful of quick checks


@contextlib.asynccontextmanager
async def node_after_blueprint(
    root: Path, index: Path, node_config: str, health: HealthSpec, config: dict[str, Any] | None = None
) -> AsyncIterator[tuple[NodeProcess, KVClient]]:
    """A node started after the blueprint that deploys faulty with `health` (and `config`) was written
    (so its first checks already read it), a client of a KV replica run beside it; all ended afterwards."""
    replica = KVReplicaProcess(root / "kv")
    try:
        replica.start()
        async with open_client([replica.endpoint], replica.secret, request_timeout=10.0) as kv:
            spec = {"artifact": FAULTY, "instances": 1, "health": health, "config": config or {}}
            await apply_blueprint(kv, "health", [spec])
            node = NodeProcess(
                root / "node",
                index=str(index),
                secret=replica.secret,
                kv_endpoints=(replica.endpoint,),
                config_text=node_config,
            )
            with node_cleanup(node):
                await trio.to_thread.run_sync(node.start)
                yield node, kv
                await unload_everything(kv, node.node_id)
    finally:
        replica.stop()


async def replaced_as_hung(kv: KVClient, node: NodeProcess, instance: int, pid: int, since: int) -> None:
    """Wait until faulty's `instance` (process `pid`) was killed as hung and is ACTIVE again (its record
    written after revision `since`), another process."""
    key = slice_key(node.node_id, FAULTY, instance)

    def active_again(events: list[Event]) -> bool:
        return any(b'"state":"ACTIVE"' in e.kv.value for e in events)

    events = await collect_events(kv, key, since + 1, until=active_again, timeout=30)
    reasons = [decode_record(key, e.kv.value, SliceRecord).reason for e in events if e.kv.value]
    assert any(HUNG in reason for reason in reasons), reasons
    await wait_until(lambda: process_ended(pid), timeout=10, what=f"the hung instance {pid} to end")
    new = host_of(node.data_dir, FAULTY, instance)
    assert new is not None and new.pid != pid


async def test_short_slice_settings_find_a_hung_instance_the_nodes_own_would_not(
    tmp_path: Path, sample_index: Path
) -> None:
    async with node_after_blueprint(tmp_path, sample_index, SLOW_NODE, SHORT) as (node, kv):
        await activate(kv, node, FAULTY, 0)
        old = host_of(node.data_dir, FAULTY, 0)
        assert old is not None
        before = (await kv.get_with_revision(slice_key(node.node_id, FAULTY, 0))).revision

        os.kill(old.pid, signal.SIGSTOP)

        await replaced_as_hung(kv, node, 0, old.pid, before)


@pytest.mark.parametrize(
    "health",
    [
        pytest.param(HealthSpec(timeout=30.0), id="long-timeout"),
        pytest.param(HealthSpec(enabled=False), marks=pytest.mark.long, id="disabled"),  # (`nox -s long`)
    ],
)
async def test_a_blocking_call_longer_than_the_nodes_checks_allow_is_left_alone(
    tmp_path: Path, sample_index: Path, health: HealthSpec
) -> None:
    """The node's own checks would kill the instance within about 2 s of the block; the call ends after
    BLOCK_S s with its answer, from the same process, its record untouched."""
    async with node_after_blueprint(tmp_path, sample_index, QUICK_NODE, health) as (node, kv):
        await activate(kv, node, FAULTY, 0)
        first = host_of(node.data_dir, FAULTY, 0)
        assert first is not None
        key = slice_key(node.node_id, FAULTY, 0)
        before = await kv.get(key)

        async with httpx.AsyncClient(timeout=60.0) as client:
            response = await client.post(
                f"http://{node.ingress}/invoke/org.aether:faulty/block?timeout=30", json=BLOCK_S
            )

        assert response.status_code == 200 and response.json() >= BLOCK_S, response.text
        after = await kv.get(key)
        assert after is not None and before is not None and after.mod_revision == before.mod_revision
        now = host_of(node.data_dir, FAULTY, 0)
        assert now is not None and now.pid == first.pid


async def test_a_call_timed_out_behind_a_blocked_loop_says_so(tmp_path: Path, sample_index: Path) -> None:
    """A slice author's sync entry point that sleeps holds every call of its instance, and the calls
    timed out naming only themselves ("set did not answer within 30 s"): the node says the instance left
    its health checks unanswered too, and what to do. (Many failures allowed: it is not killed here.)"""
    patient = HealthSpec(interval=0.5, timeout=0.5, failures=100)
    async with node_after_blueprint(tmp_path, sample_index, SLOW_NODE, patient) as (node, kv):
        await activate(kv, node, FAULTY, 0)
        async with httpx.AsyncClient(timeout=60.0) as client:
            response = await client.post(
                f"http://{node.ingress}/invoke/org.aether:faulty/block?timeout=2.5", json=BLOCK_S
            )
        assert response.status_code == 504, response.text
        message = response.json()["error"]["message"]
        assert (
            "block did not answer within 2.5 s (the instance has answered nothing, a health check" in message
        )
        assert "make it async, or run the wait in asyncio.to_thread" in message, message


async def test_a_call_that_times_out_while_its_instance_answers_blames_no_loop(
    tmp_path: Path, sample_index: Path
) -> None:
    """An async entry point that waits past its timeout leaves the loop free: its health checks are
    answered, and the timeout says nothing of a blocked loop."""
    patient = HealthSpec(interval=0.5, timeout=0.5, failures=100)
    slow = {"mode": "slow_work", "work_delay": BLOCK_S}
    async with node_after_blueprint(tmp_path, sample_index, SLOW_NODE, patient, slow) as (node, kv):
        await activate(kv, node, FAULTY, 0, slow)
        async with httpx.AsyncClient(timeout=60.0) as client:
            response = await client.post(
                f"http://{node.ingress}/invoke/org.aether:faulty/work?timeout=2.5", json=1
            )
        assert response.status_code == 504, response.text
        assert response.json()["error"]["message"].endswith("work did not answer within 2.5 s"), response.text


def blueprint(health: str, echo_instances: int) -> str:
    return (
        'name = "health"\n\n[[slices]]\nartifact = "org.aether:faulty:1.0.0"\ninstances = 1\n\n'
        f"[slices.health]\n{health}\n\n"
        f'[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = {echo_instances}\n'
    )


async def test_a_change_of_only_the_health_table_restarts_nothing_and_applies_to_the_running_instance(
    tmp_path: Path, sample_index: Path
) -> None:
    """On a one-node cluster (its own leader): checks off, then short. The second blueprint also asks
    for an echo instance: once it is ACTIVE the leader has acted on that revision, and faulty's record
    and process are still the same. Then a stopped faulty is found by the new settings."""
    with started_node(
        tmp_path, sample_index, config_text=SLOW_NODE, with_management=True, extra_args=("--dev-mode",)
    ) as node:
        api = ApiClient([f"http://{node.management}"])
        async with kv_client(node) as kv:
            await trio.to_thread.run_sync(api.apply_blueprint, blueprint("enabled = false", 0))
            number = await wait_for_active_instance(kv, node.node_id, FAULTY, timeout=60)
            old = host_of(node.data_dir, FAULTY, number)
            assert old is not None
            key = slice_key(node.node_id, FAULTY, number)
            before = await kv.get(key)
            change = blueprint("interval = 0.5\ntimeout = 0.5\nfailures = 2", 1)

            diff = await trio.to_thread.run_sync(api.diff_blueprint, change)
            faulty = next(s for s in diff.slices if s.artifact == "org.aether:faulty")
            assert (faulty.change, faulty.replaced, faulty.added, faulty.removed) == ("changed", 0, 0, 0)
            assert faulty.health == "off -> interval 0.5 s, timeout 0.5 s, failures 2", faulty
            await trio.to_thread.run_sync(api.apply_blueprint, change)
            await wait_for_active_instance(kv, node.node_id, ECHO, timeout=60)
            shown = await trio.to_thread.run_sync(api.get_blueprint, "health")
            assert shown.slices[0].health == "interval 0.5 s, timeout 0.5 s, failures 2", shown

            after = await kv.get_with_revision(key)
            assert before is not None and after.kv is not None
            assert (after.kv.value, after.kv.mod_revision) == (before.value, before.mod_revision)
            still = host_of(node.data_dir, FAULTY, number)
            assert still is not None and still.pid == old.pid

            os.kill(old.pid, signal.SIGSTOP)

            await replaced_as_hung(kv, node, number, old.pid, after.revision)
