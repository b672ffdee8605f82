"""Instances that neither answer nor die, with a real `aether-node` process: a process stopped (SIGSTOP)
while ACTIVE is found by the node's health checks, killed and restarted; one stopped when it is
unloaded is killed, not left behind; one whose event loop computes for seconds (a sync entry point)
is left alone; what an instance started of its own ends with it; one that ended while a process it
forked holds its connection open is over at once (the template's word); and a slice template left
without instances is stopped, and started again for the next one.

Each test starts a node that is a client of a KV replica run beside it, and writes the command states
as a cluster leader would (`node_support`).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from node_support import (
    ECHO,
    FAULTY,
    NodeProcess,
    activate,
    client_node,
    collect_events,
    host_of,
    invoke,
    slice_key,
    template_of,
    wait_for_deleted,
    write_command,
)

from aether_kv import Event, KVClient
from aether_node import SliceRecord, SliceState, decode_record
from support import process_ended, wait_until, woken

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUICK_CHECKS = "[health]\ninterval = 0.5\ntimeout = 0.5\nfailures = 2\n"
# health checks that cannot find anything within a test; a stop hook that gives up after 1 s; a slice
# template left without instances stopped after 1 s
NO_CHECKS = "[health]\ninterval = 600\n[timeouts]\ndeactivate = 1\ntemplate_idle = 1\n"


@pytest.fixture
def node(request: pytest.FixtureRequest, sample_index: Path, tmp_path: Path) -> Iterator[NodeProcess]:
    """A node with the config text the test's `node` parameter gives (QUICK_CHECKS or NO_CHECKS)."""
    with client_node(tmp_path, sample_index, config_text=request.param) as started:
        yield started


checked = pytest.mark.parametrize("node", [QUICK_CHECKS], indirect=True, ids=["quick-checks"])
unchecked = pytest.mark.parametrize("node", [NO_CHECKS], indirect=True, ids=["no-checks"])


@checked
async def test_a_stopped_instance_is_killed_and_restarted(node: NodeProcess, kv: KVClient) -> None:
    await activate(kv, node, ECHO, 0)
    old = host_of(node.data_dir, ECHO, 0)
    assert old is not None
    key = slice_key(node.node_id, ECHO, 0)
    before = (await kv.get_with_revision(key)).revision

    os.kill(old.pid, signal.SIGSTOP)

    def active_again(events: list[Event]) -> bool:
        return any(b'"state":"ACTIVE"' in e.kv.value for e in events)

    events = await collect_events(kv, key, before + 1, until=active_again, timeout=30)
    reasons = [decode_record(key, e.kv.value, SliceRecord).reason for e in events if e.kv.value]
    assert any("hung: 2 health checks in a row unanswered" in r for r in reasons), reasons
    await wait_until(
        lambda: process_ended(old.pid), timeout=10, what=f"the stopped instance {old.pid} to end"
    )
    new = host_of(node.data_dir, ECHO, 0)
    assert new is not None and new.pid != old.pid
    response = await invoke(node.ingress, "org.aether:echo", "echo", {"after": "restart"})
    assert (response.status_code, response.json()) == (200, {"after": "restart"}), response.text


@checked
async def test_an_idle_instance_that_answers_is_left_alone(node: NodeProcess, kv: KVClient) -> None:
    """Checked every half second for longer than two misses would take (six checks answered), it stays
    the same process."""
    await activate(kv, node, ECHO, 1)
    first = host_of(node.data_dir, ECHO, 1)
    assert first is not None
    key = slice_key(node.node_id, ECHO, 1)
    before = await kv.get(key)
    await woken(first.pid, 6, timeout=20, what="six health checks answered")
    after = await kv.get(key)
    assert after is not None and before is not None and after.mod_revision == before.mod_revision
    now = host_of(node.data_dir, ECHO, 1)
    assert now is not None and now.pid == first.pid


@checked
async def test_an_instance_computing_in_its_event_loop_is_not_taken_for_hung(
    node: NodeProcess, kv: KVClient
) -> None:
    """A sync entry point busy for 4 s leaves eight checks unanswered, its loop using CPU all along."""
    await activate(kv, node, FAULTY, 0)
    first = host_of(node.data_dir, FAULTY, 0)
    assert first is not None
    key = slice_key(node.node_id, FAULTY, 0)
    before = await kv.get(key)

    async with httpx.AsyncClient(timeout=60.0) as client:
        response = await client.post(
            f"http://{node.ingress}/invoke/org.aether:faulty/compute?timeout=30", json=4
        )

    assert response.status_code == 200 and response.json() >= 4, response.text
    after = await kv.get(key)
    assert after is not None and before is not None and after.mod_revision == before.mod_revision
    now = host_of(node.data_dir, FAULTY, 0)
    assert now is not None and now.pid == first.pid


@unchecked
async def test_an_instance_stopped_when_unloaded_is_killed(node: NodeProcess, kv: KVClient) -> None:
    await activate(kv, node, ECHO, 0)
    host = host_of(node.data_dir, ECHO, 0)
    assert host is not None
    os.kill(host.pid, signal.SIGSTOP)
    key = slice_key(node.node_id, ECHO, 0)

    await write_command(kv, key, SliceState.UNLOAD)

    # its stop hook times out: unloaded all the same (what was asked), and the process must not outlive it
    await wait_for_deleted(kv, key, timeout=30)
    said = node.log_tail(200)
    assert "deactivate failed on its way to unload" in said and "stop did not finish within 1 s" in said, said
    await wait_until(
        lambda: process_ended(host.pid), timeout=10, what=f"the stopped instance {host.pid} to end"
    )


@unchecked
async def test_what_an_instance_started_ends_with_it(node: NodeProcess, kv: KVClient) -> None:
    await activate(kv, node, FAULTY, 0)
    response = await invoke(node.ingress, "org.aether:faulty", "spawn")
    assert response.status_code == 200, response.text
    child = int(response.json())
    assert not process_ended(child)
    key = slice_key(node.node_id, FAULTY, 0)

    await write_command(kv, key, SliceState.UNLOAD)

    await wait_for_deleted(kv, key, timeout=30)
    await wait_until(
        lambda: process_ended(child), timeout=10, what=f"the instance's own process {child} to end"
    )


@unchecked
async def test_a_template_without_instances_is_stopped_and_started_again(
    node: NodeProcess, kv: KVClient
) -> None:
    await activate(kv, node, ECHO, 0)
    await activate(kv, node, FAULTY, 0)
    echo_template, faulty_template = template_of(node.data_dir, ECHO), template_of(node.data_dir, FAULTY)
    assert echo_template is not None and faulty_template is not None
    key = slice_key(node.node_id, FAULTY, 0)

    await write_command(kv, key, SliceState.UNLOAD)

    await wait_for_deleted(kv, key, timeout=30)
    await wait_until(
        lambda: template_of(node.data_dir, FAULTY),
        until=lambda found: found is None,
        timeout=10,
        what="faulty's template, without instances, to stop",
    )
    still = template_of(node.data_dir, ECHO)  # (echo has its instance: its template stays)
    assert still is not None and still.pid == echo_template.pid
    await activate(kv, node, FAULTY, 1)
    again = template_of(node.data_dir, FAULTY)
    assert again is not None and again.pid != faulty_template.pid
    response = await invoke(node.ingress, "org.aether:faulty", "work", "again")
    assert response.status_code == 200, response.text


@unchecked
async def test_an_instance_that_ended_while_a_process_it_forked_holds_its_connection_ends_at_once(
    node: NodeProcess, kv: KVClient
) -> None:
    """The forked child keeps the instance's socket to the node open: the end is the template's word,
    then what is left of the instance's process group is killed and the instance restarted, long before
    any health check (none runs here) or call timeout would have found it."""
    await activate(kv, node, FAULTY, 0)
    before = (await invoke(node.ingress, "org.aether:faulty", "imported")).json()["pid_now"]
    response = await invoke(node.ingress, "org.aether:faulty", "orphan")
    assert response.status_code == 200, response.text
    child = int(response.json())
    await wait_until(lambda: process_ended(child), timeout=10, what=f"the forked child {child} killed")

    async def restarted() -> bool:
        answer = await invoke(node.ingress, "org.aether:faulty", "imported")
        return answer.status_code == 200 and answer.json()["pid_now"] != before

    await wait_until(restarted, timeout=30, what="the instance restarted")
    assert "holds its connection open: killing them" in node.log_tail(200)


@checked
async def test_an_instance_computing_for_a_call_that_timed_out_is_taken_for_hung(
    node: NodeProcess, kv: KVClient
) -> None:
    """A sync entry point that computes on after its caller gave up (an endless loop, say) answers
    nothing and never will: its CPU use no longer excuses the checks it leaves unanswered, and it is
    killed and restarted (every call routed to it would have timed out, and a scale-down could have kept
    it over a healthy one)."""
    await activate(kv, node, FAULTY, 0)
    first = host_of(node.data_dir, FAULTY, 0)
    assert first is not None
    async with httpx.AsyncClient(timeout=30.0) as client:
        response = await client.post(
            f"http://{node.ingress}/invoke/org.aether:faulty/compute?timeout=1", json=600
        )
    assert response.status_code == 504, response.text

    def replaced() -> bool:
        now = host_of(node.data_dir, FAULTY, 0)
        return now is not None and now.pid != first.pid

    await wait_until(replaced, timeout=30, what="the instance killed as hung and started again")
    assert process_ended(first.pid)
    assert "computing since a request to it timed out" in node.log_tail(400)
