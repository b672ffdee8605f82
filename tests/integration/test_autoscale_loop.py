"""The leader's autoscaler on a real cluster. A blueprint with `[slices.autoscale]` is applied through the
management API; `benchmarks/load_gen.py` puts a load step on `org.aether:busy` (40 calls/s of 30 ms CPU
each: more than one instance can serve); the leader scales the slice up as new blueprint revisions,
every call is served, and it scales back down after the load ends. Failure paths: a node that does not
answer its usage makes the leader hold ("partial") and its recorded decision says which node; a paused
slice gets no decision, even one its bounds would force, until it is resumed.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cluster_support import REPO, exactly_active, kv_of, leader_node_id, running_cluster, wait_for

from aether_node.client import ApiClient, ApiError, AutoscaleStatus, ClusterEvent
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.long]

BUSY_ID = "org.aether:busy"
BUSY = "org.aether:busy:1.0.0"


def busy_toml(autoscale: str, *, instances: int = 1) -> str:
    return (
        'name = "busy"\n\n[[slices]]\n'
        f'artifact = "{BUSY}"\ninstances = {instances}  # the autoscaler rewrites this line\n'
        f"min_available = 1\n\n[slices.autoscale]\n{autoscale}"
    )


STEP = busy_toml(
    "min = 1\nmax = 2\np99_ms = 150\nup_after_s = 3\ndown_after_s = 6\nup_cooldown_s = 0\n"
    "down_cooldown_s = 4\ndown_below = 0.5\n"
)


async def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    return await trio.to_thread.run_sync(function, *args)


async def until(
    client: ApiClient, check: Callable[[AutoscaleStatus], bool], *, timeout: float, what: str
) -> AutoscaleStatus:
    """The slice's autoscale status once `check` holds (fails after `timeout` with the last status)."""

    async def status() -> AutoscaleStatus:
        (found,) = await in_thread(client.autoscale_status, BUSY_ID)
        return found

    return await wait_until(
        status,
        until=check,
        timeout=timeout,
        interval=0.3,
        what=what,
        describe=lambda found: f"decisions {[d.message for d in found.decisions]}",
    )


async def serving_api(cluster: Any, *, timeout: float = 30.0) -> None:
    """Until every node's management API answers (a node registers before its API listens)."""
    async with httpx.AsyncClient(timeout=5) as http:

        async def health(url: str) -> int | httpx.TransportError:
            try:
                return (await http.get(url)).status_code
            except httpx.TransportError as error:
                return error

        for node in cluster.nodes:
            url = f"http://{node.management}/healthz"
            await wait_until(
                functools.partial(health, url),
                until=lambda answer: answer == 200,
                timeout=timeout,
                interval=0.1,
                what=url,
            )


def decisions(client: ApiClient) -> list[ClusterEvent]:
    return client.events(200, kind="autoscale_decision", slice=BUSY_ID)


async def test_a_load_step_scales_up_is_served_and_scales_back_down(
    tmp_path: Path, sample_index: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, nodes=1) as cluster, kv_of(cluster) as kv:
        node = cluster.nodes[0]
        await serving_api(cluster)
        client = ApiClient([f"http://{node.management}"])
        await in_thread(client.apply_blueprint, STEP, "busy.toml")
        await wait_for(kv, exactly_active(1, BUSY), timeout=90, what="busy ×1 ACTIVE", cluster=cluster)
        load_report = tmp_path / "load.jsonl"

        async def load() -> None:
            script = str(REPO / "benchmarks" / "load_gen.py")
            command = [
                sys.executable, script, f"http://{node.ingress}", BUSY_ID, "burn", "--data", '{"ms": 30}',
                "--rate", "40", "--duration", "15", "--json", "--timeout", "30",
            ]  # fmt: skip
            with load_report.open("w") as out:
                await trio.run_process(command, stdout=out, stderr=subprocess.DEVNULL)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(load)
            # (the revision is written first, the decision's record right after it)
            up = await until(
                client,
                lambda s: s.instances == 2 and any(d.action == "up" for d in s.decisions),
                timeout=60,
                what="the leader scales busy up to 2",
            )
            await wait_for(kv, exactly_active(2, BUSY), timeout=60, what="busy ×2 ACTIVE", cluster=cluster)
            # the load generator ends by itself (15 s of load, calls answered or timed out after 30 s):
            # its last line is the summary, which a cancelled run would not have written
        down = await until(
            client,
            lambda s: s.instances == 1 and any(d.action == "down" for d in s.decisions),
            timeout=90,
            what="the leader scales busy back down to 1",
        )
        await wait_for(kv, exactly_active(1, BUSY), timeout=60, what="busy back to ×1", cluster=cluster)

        total = json.loads(load_report.read_text().splitlines()[-1])
        assert total["summary"] and total["sent"] == total["ok"] == 600 and total["errors"] == 0, total
        # Up 1 -> 2 first and down 2 -> 1 last. In between, the load may have seen a down and another up:
        # p99 is not projected onto fewer instances (`_autoscale.py`), so two instances that bring it
        # under down_below x 150 ms under a steady load scale down, and up again if it rises; how often
        # depends on the machine's speed. Every move is one of these two, each undoing the last.
        moves = [(d.action, d.current, d.target) for d in down.decisions if d.action != "hold"]
        assert moves and moves[-1] == ("down", 2, 1), down.decisions
        assert set(moves) <= {("up", 1, 2), ("down", 2, 1)}, moves
        assert all(a != b for a, b in itertools.pairwise(moves)), moves
        scaled_up = next(d for d in up.decisions if d.action == "up")
        assert (scaled_up.current, scaled_up.target) == (1, 2), scaled_up
        assert scaled_up.message.startswith("scale org.aether:busy 1 -> 2: p99 "), scaled_up.message
        assert scaled_up.message.endswith("> 150 ms for 3 s") and scaled_up.path[-1] == "scale up"
        scaled_down = next(d for d in reversed(down.decisions) if d.action == "down")
        assert scaled_down.path[-1] == "scale down" and "p99" in scaled_down.message, scaled_down
        # each move is a revision of the blueprint, as `slice scale` writes one (the decision log keeps
        # the last 20 decisions; the revisions keep every move here), and an event
        history = await in_thread(client.blueprint_history, "busy")
        up_change, down_change = (f"autoscaled {BUSY_ID} from {a} to {b}" for a, b in ((1, 2), (2, 1)))
        changes = [r.change for r in history if r.change.startswith("autoscaled")]
        assert changes and changes == [up_change, down_change] * (len(changes) // 2), changes
        assert "instances = 1  # the autoscaler rewrites this line" in history[-1].source
        events = await in_thread(decisions, client)
        assert any(e.message == scaled_up.message and "scale up" in e.reason for e in events), events


async def test_a_silent_node_holds_partial_and_a_paused_slice_gets_no_decision(
    tmp_path: Path, sample_index: Path
) -> None:
    # a long lease: the stopped node stays registered (expected) while it does not answer
    args = ("--lease-ttl", "30")
    async with (
        running_cluster(tmp_path / "cluster", sample_index, nodes=3, node_args=args) as cluster,
        kv_of(cluster) as kv,
    ):
        await serving_api(cluster)
        leader = await leader_node_id(cluster, kv)
        # the leader's API only: a request to the stopped node would wait for its timeout first
        client = ApiClient([f"http://{n.management}" for n in cluster.nodes if n.node_id == leader])
        await in_thread(client.apply_blueprint, busy_toml("min = 1\nmax = 3\ncpu = 0.7\n"), "busy.toml")
        await wait_for(kv, exactly_active(1, BUSY), timeout=90, what="busy ×1 ACTIVE", cluster=cluster)
        await until(client, lambda s: bool(s.decisions), timeout=30, what="a first decision")

        silent = next(n.node_id for n in cluster.nodes if n.node_id != leader)
        pid = cluster.processes[silent].pid
        os.kill(pid, signal.SIGSTOP)
        try:
            held = await until(
                client,
                lambda s: any("partial" in d.message and silent in d.message for d in s.decisions),
                timeout=30,
                what=f"a hold on partial data while {silent} is stopped",
            )
        finally:
            os.kill(pid, signal.SIGCONT)
        partial = next(d for d in held.decisions if "partial" in d.message)
        assert partial.action == "hold" and partial.path[-1] == "complete: partial", partial
        assert held.instances == 1
        events = await in_thread(decisions, client)
        assert any("partial" in e.message and e.reason.endswith("complete: partial") for e in events)

        # bad settings are refused, naming what is wrong (all of it at once), and change nothing
        for bad, message in (
            ({"max": 0}, f"{BUSY_ID}: max: expected a whole number in 1..10000, got 0"),
            ({"min": 5}, f"{BUSY_ID}: max: must be ≥ min (5), got 3"),
            ({"cpu": 0.5, "steps": 2}, f"{BUSY_ID}: steps: not a setting"),
            (
                {"max": 0, "cpu": -1, "p99_ms": 0},
                f"{BUSY_ID}: max: expected a whole number in 1..10000, got 0;"
                " cpu: expected a number in (0, 1024], got -1; p99_ms: expected a number in (0, 8.64e+07],"
                " got 0",
            ),
        ):
            with pytest.raises(ApiError) as refused:
                await in_thread(client.autoscale_set, BUSY_ID, bad)
            assert refused.value.status == 400 and str(refused.value).startswith(message), refused.value
        (unchanged,) = await in_thread(client.autoscale_status, BUSY_ID)
        assert (unchanged.min, unchanged.max, unchanged.settings) == (1, 3, {})
        assert unchanged.targets == {"cpu": 0.7}

        paused = await in_thread(client.autoscale_operation, BUSY_ID, "pause")
        assert paused.paused
        # min 2 would make the controller scale up at once ("below the lower bound"): paused, it must not
        raised = await in_thread(client.autoscale_set, BUSY_ID, {"min": 2})
        assert (raised.min, raised.settings) == (2, {"min": 2.0}) and raised.paused
        # the leader has run a pass with min 2 in force (its paused hold names the bounds) and held
        still = await until(
            client,
            lambda s: any(d.path == ("paused",) and "min 2" in d.message for d in s.decisions),
            timeout=30,
            what="a 'paused' hold with min 2 in force",
        )
        assert still.instances == 1 and not any(d.action == "up" for d in still.decisions), still

        await in_thread(client.autoscale_operation, BUSY_ID, "resume")
        resumed = await until(
            client,
            lambda s: s.instances == 2 and any(d.action == "up" for d in s.decisions),
            timeout=30,
            what="busy up to 2 on resume",
        )
        assert not resumed.paused
        up = next(d for d in resumed.decisions if d.action == "up")
        assert up.path == ("bounds: below the lower bound",) and (up.current, up.target) == (1, 2), up
        await wait_for(kv, exactly_active(2, BUSY), timeout=90, what="busy ×2 ACTIVE", cluster=cluster)
