"""A slice that fires calls to other slices without waiting for their answers, through a real node.

The call depth bounds a chain of calls, not a flood: an entry point that gathers thousands of calls, or
starts them from background tasks, made the node hold a task for each. Now an instance may have
`MAX_CALLS_IN_FLIGHT` calls in flight through its node; one more is refused at once (`unavailable`,
never sent), and the node serves on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import node_support
import pytest
from node_support import ECHO, NodeProcess, activate, build_wheel, client_node, invoke, kv_client

from aether_slice.protocol import MAX_CALLS_IN_FLIGHT
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLOOD = "org.aether:flood"
FLOOD_MODULE = '''"""A slice whose entry `fan` calls its own entry `nap` `calls` times at once; every nap
waits until each call has started its nap or been refused: all let through are in flight together."""

import asyncio
import os
import select
import socket
import stat

from aether_slice import EntryPoint, SliceCallError, hookimpl, protocol


@hookimpl
def aether_entry_points(context):
    started = []
    changed = asyncio.Event()
    release = asyncio.Event()

    async def nap(payload):
        started.append(1)
        changed.set()
        await release.wait()
        return 1

    async def fan(payload):
        calls = payload["calls"]
        refused = []
        started.clear()
        release.clear()

        async def one():
            try:
                return await context.call("org.aether:flood", "nap", None, timeout=120)
            except SliceCallError as error:
                refused.append((error.kind, str(error)))
                changed.set()
                return None

        tasks = [asyncio.ensure_future(one()) for _ in range(calls)]
        while True:
            changed.clear()
            if len(started) + len(refused) >= calls:
                break
            await changed.wait()
        release.set()
        answered = await asyncio.gather(*tasks)
        return {
            "answered": answered.count(1),
            "refused": len(refused),
            "kinds": sorted({kind for kind, _ in refused}),
            "message": refused[0][1] if refused else "",
        }

    def flood_unread(payload):
        """Write `calls` CALL frames on the instance's own connection and read nothing: the loop is
        blocked here, as a slice that broke its host would leave it. Returns once the node closed it."""
        loop = asyncio.get_running_loop()
        wakeup = {loop._ssock.fileno(), loop._csock.fileno()}  # (the loop's own socket pair)
        fds = [fd for fd in map(int, os.listdir("/proc/self/fd")) if fd not in wakeup and _unix_stream(fd)]
        assert len(fds) == 1, fds
        connection = fds[0]
        frames = memoryview(b"".join(
            protocol.encode(protocol.request(f"x{i}", protocol.Kind.CALL, artifact="org.aether:flood",
                                             entry="nap", payload=None, timeout=60, depth=1))
            for i in range(payload["calls"])
        ))
        while frames:
            select.select([], [connection], [])
            try:
                frames = frames[os.write(connection, frames):]
            except BlockingIOError:
                continue
            except OSError:
                return "closed"
        # Unread: what the node answers piles up on its side until it ends the connection.
        hangup = select.poll()
        hangup.register(connection, select.POLLRDHUP)
        return "closed" if hangup.poll(60_000) else "still open"

    return [
        EntryPoint(name="fan", function=fan, idempotent=False),
        EntryPoint(name="nap", function=nap, idempotent=False),
        EntryPoint(name="flood_unread", function=flood_unread, idempotent=False),
    ]


def _unix_stream(fd):
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return False
        probe = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    try:
        return probe.family == socket.AF_UNIX and probe.type == socket.SOCK_STREAM
    finally:
        probe.close()
'''


@pytest.fixture(scope="module")
def node(sample_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("call-flood")
    index = node_support.copy_index(sample_index, root / "index")
    build_wheel(
        root / "flood",
        index,
        name="org.aether.flood",
        version="1.0.0",
        entry_point=FLOOD,
        source=FLOOD_MODULE,
    )
    with client_node(root / "cluster", index) as started:
        yield started


async def test_calls_past_the_most_an_instance_may_have_in_flight_are_refused_at_once(
    node: NodeProcess,
) -> None:
    async with kv_client(node) as client:
        await activate(client, node, f"{FLOOD}:1.0.0", 0)
    over = 40
    answered = await invoke(node.ingress, FLOOD, "fan", {"calls": MAX_CALLS_IN_FLIGHT + over})
    assert answered.status_code == 200, answered.text
    result = answered.json()
    assert (result["answered"], result["refused"], result["kinds"]) == (
        MAX_CALLS_IN_FLIGHT,
        over,
        ["unavailable"],
    )
    assert f"has {MAX_CALLS_IN_FLIGHT} calls to other slices in flight already" in result["message"], result
    assert result["message"].startswith(f"call to {FLOOD}/nap not sent: "), result
    # the count went back down as the calls were answered: a smaller flood passes whole
    again = await invoke(node.ingress, FLOOD, "fan", {"calls": 20})
    assert (again.status_code, again.json()["answered"], again.json()["refused"]) == (200, 20, 0), again.text
    assert node.returncode() is None, node.log_tail(40)


async def test_an_instance_that_floods_calls_and_reads_no_refusal_is_ended_and_the_node_serves_on(
    node: NodeProcess,
) -> None:
    """Refusals queued for an instance that reads none of them end its connection past a bound (the
    slice's nonsense costs that instance, never the node's memory)."""
    async with kv_client(node) as client:
        await activate(client, node, f"{FLOOD}:1.0.0", 1)
    flooded = await invoke(node.ingress, FLOOD, "flood_unread", {"calls": 25_000})
    assert flooded.status_code >= 500, flooded.text  # its instance's connection ended under the call
    await wait_until(
        lambda: "did not read the refusals" in node.log_tail(200),
        timeout=30,
        what="the node to end the flooding instance's connection",
    )
    assert node.returncode() is None, node.log_tail(40)
    async with kv_client(node) as client:
        await activate(client, node, ECHO, 0)
    echoed = await invoke(node.ingress, "org.aether:echo", "echo", {"still": "serving"})
    assert echoed.status_code == 200, echoed.text
