"""The autoscaling controller on a real cluster, before the leader runs it: this test is the loop the
leader will be. It scrapes the node's /metrics once a second into Readings, asks
`control/_autoscale.decide`, and applies each up or down as a new blueprint record; the load is
`benchmarks/load_gen.py` (a step: 40 calls/s of 30 ms CPU each, more than one instance serves) on
`org.aether:busy`. The slice scales up while the load runs, every call is served, and it scales back
down after the load ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import node_support
import pytest
import trio
from cluster_support import REPO, SliceSpec, exactly_active, kv_of, put_blueprint, running_cluster, wait_for
from prometheus_client.parser import text_string_to_metric_families

from aether_node import AutoscaleSpec
from aether_node.control import Action, Decision, NodeSample, Reading, decide, trim

pytestmark = [pytest.mark.integration]

sample_index = node_support.sample_index
BUSY_ID = "org.aether:busy"
BUSY = "org.aether:busy:1.0.0"
AUTOSCALE = AutoscaleSpec(
    min=1,
    max=2,
    p99_ms=150.0,
    up_after_s=3.0,
    down_after_s=6.0,
    up_cooldown_s=0.0,
    down_cooldown_s=4.0,
    down_below=0.5,
)


def sample_of(text: str) -> NodeSample:
    """The node's /metrics → its figures for busy: calls and buckets it routed, CPU per running instance."""
    calls, buckets, cpu = 0, {}, {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("artifact") != BUSY_ID:
                continue
            if sample.name == "aether_invocation_duration_seconds_count":
                calls += int(sample.value)
            elif sample.name == "aether_invocation_duration_seconds_bucket" and sample.labels["le"] != "+Inf":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0) + int(sample.value)
            elif sample.name == "aether_slice_process_cpu_seconds_total":
                cpu[sample.labels["slice_instance"]] = sample.value
    return NodeSample(calls=calls, buckets=tuple(sorted(buckets.items())), cpu_seconds=cpu)


async def test_a_load_step_scales_up_is_served_and_scales_back_down(
    tmp_path: Path, sample_index: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, nodes=1) as cluster, kv_of(cluster) as kv:
        node = cluster.nodes[0]
        spec = SliceSpec(artifact=BUSY, instances=1, autoscale=AUTOSCALE)
        await put_blueprint(kv, "busy", spec)
        await wait_for(kv, exactly_active(1, BUSY), timeout=90, what="busy ×1 ACTIVE", cluster=cluster)

        decisions: list[Decision] = []
        current, window, last_scaled = 1, [], None
        load_report = tmp_path / "load.jsonl"

        async def control(http: httpx.AsyncClient, until: float) -> None:
            nonlocal current, window, last_scaled
            while trio.current_time() < until:
                answer = await http.get(f"http://{node.management}/metrics")
                now = trio.current_time()
                window = trim(
                    [*window, Reading(at=now, nodes={node.node_id: sample_of(answer.text)})], now, AUTOSCALE
                )
                decision = decide(
                    AUTOSCALE,
                    current=current,
                    window=window,
                    expected=[node.node_id],
                    now=now,
                    last_scaled_at=last_scaled,
                )
                if decision.action is not Action.HOLD:
                    decisions.append(decision)
                    current, last_scaled = decision.target, now
                    await put_blueprint(
                        kv, "busy", SliceSpec(artifact=BUSY, instances=current, autoscale=AUTOSCALE)
                    )
                if [d.action for d in decisions] == [Action.UP, Action.DOWN]:
                    return
                await trio.sleep(1.0)

        async def load() -> None:
            script = str(REPO / "benchmarks" / "load_gen.py")
            command = [
                sys.executable, script, f"http://{node.ingress}", BUSY_ID, "burn", "--data", '{"ms": 30}',
                "--rate", "40", "--duration", "15", "--json", "--timeout", "30",
            ]  # fmt: skip
            with load_report.open("w") as out:
                await trio.run_process(command, stdout=out, stderr=subprocess.DEVNULL)

        async with httpx.AsyncClient(timeout=10) as http, trio.open_nursery() as nursery:
            nursery.start_soon(load)
            await control(http, trio.current_time() + 120)
            # the load generator ends by itself (15 s of load, calls answered or timed out after 30 s):
            # its last line is the summary, which a cancelled run would not have written

        actions = [(d.action, d.current, d.target) for d in decisions]
        assert actions == [(Action.UP, 1, 2), (Action.DOWN, 2, 1)], [d.message(BUSY_ID) for d in decisions]
        up, down = decisions
        assert up.reason.startswith("p99 ") and up.reason.endswith("> 150 ms for 3 s"), up.reason
        assert "p99" in down.reason and down.path[-1] == "scale down", down.reason
        total = json.loads(load_report.read_text().splitlines()[-1])
        assert total["summary"] and total["sent"] == total["ok"] == 600 and total["errors"] == 0, total
        await wait_for(kv, exactly_active(1, BUSY), timeout=60, what="busy back to ×1", cluster=cluster)
