"""Deployment strategies and node drain on a real 3-node cluster (issue 13, "Measure").

1. Failed calls during changes under steady load: `org.aether:echo` ×3 (floor 2), callers of the
   idempotent `echo` entry point (4 concurrent, a closed loop, each call on the next node's ingress)
   run through three changes in turn: rolling 1.0.0 → 1.1.0; canary 1.1.0 → 1.0.0 (steps 50 %, 100 %,
   3 s windows, judged by the leader from the calls); blue-green 1.0.0 → 1.1.0 (grace 3 s). Each change
   counts from its write until only the new version runs (and its rollout record is gone). Target: 0
   failed idempotent calls.
2. Blue-green switch → 100 % of the calls on the new version: during the blue-green change, callers of
   `info` (which names the version that answered) run through every ingress; the figure is from the
   switch (the rollout record's `since`, the leader's clock: the same machine) to the end of the last
   call answered by the old version. Target ≤ 1 s.
3. Drain of a node holding 30 instances: `org.aether:greeter` ×30, `strategy = "bin_pack"` (all on one
   node), `[slices.update] max_surge` 30 (the replacements may all be placed at once) and then 1 (the
   default: one at a time); `aether node drain` through the management API; the figure is from the
   request to the node's state DRAINED (polled every 50 ms), the median of `--drain-rounds` drains with
   max_surge 30 (one with max_surge 1). Target ≤ 3 s.

Loopback only; every process of the cluster is ended at the end (also on failure).

    uv run python benchmarks/rollout_bench.py        # ~3 min
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "tests"))  # (cluster_support imports support)

from cluster_support import (  # noqa: E402
    ECHO,
    ECHO_11,
    ECHO_ID,
    GREETER,
    GREETER_ID,
    Callers,
    background,
    build_index,
    call,
    delete_blueprint,
    exactly_active,
    kv_of,
    put_blueprint,
    running_cluster,
    wait_for,
)

from aether_kv import KVClient  # noqa: E402
from aether_node import (  # noqa: E402
    RolloutRecord,
    SliceSpec,
    Strategy,
    UpdateSpec,
    UpdateStrategy,
    decode_record,
    rollout_key,
)
from aether_node.client import ApiClient  # noqa: E402
from aether_node.dev import LocalNodeCluster  # noqa: E402

SETTLE = 120.0
CANARY = UpdateSpec(strategy=UpdateStrategy.CANARY, steps=(50, 100), step_window_s=3.0)
BLUE_GREEN = UpdateSpec(strategy=UpdateStrategy.BLUE_GREEN, grace_s=3.0)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def rollout_record(kv: KVClient) -> RolloutRecord | None:
    found = await kv.get(rollout_key(ECHO_ID))
    return None if found is None else decode_record(found.key, found.value, RolloutRecord)


class VersionCallers:
    """Callers of echo's `info` over every ingress: (started, ended, version or "" for a failure)."""

    def __init__(self, ingresses: list[str], concurrency: int = 3) -> None:
        self.ingresses = ingresses
        self.concurrency = concurrency
        self.answers: list[tuple[float, float, str]] = []
        self._turn = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with httpx.AsyncClient(timeout=30.0) as http, trio.open_nursery() as nursery:
            for _ in range(self.concurrency):
                nursery.start_soon(self._caller, http)
            task_status.started()

    async def _caller(self, http: httpx.AsyncClient) -> None:
        while True:
            ingress = self.ingresses[self._turn % len(self.ingresses)]
            self._turn += 1
            started = time.time()
            try:
                response = await call(http, ingress, ECHO_ID, "info", {})
                version = response.json().get("version", "") if response.status_code == 200 else ""
            except (httpx.HTTPError, ValueError, AttributeError):
                version = ""
            self.answers.append((started, time.time(), version))
            await trio.sleep(0)


async def change(
    kv: KVClient, cluster: LocalNodeCluster, callers: Callers, name: str, spec: SliceSpec
) -> dict[str, Any]:
    """Apply `spec`; wait until only its version runs, ACTIVE ×3, and no rollout record is left."""
    start, began = len(callers.results), time.monotonic()
    await put_blueprint(kv, "bench", spec)
    await wait_for(
        kv, exactly_active(3, spec.artifact), timeout=SETTLE, what=f"{name}: only {spec.artifact}",
        artifact_id=ECHO_ID, cluster=cluster,
    )  # fmt: skip
    with trio.fail_after(SETTLE):
        while await rollout_record(kv) is not None:
            await trio.sleep(0.05)
    calls = callers.results[start:]
    failed = [c for c in calls if not c.ok]
    log(f"{name}: {len(calls)} calls, {len(failed)} failed, {time.monotonic() - began:.1f} s")
    return {
        "seconds": round(time.monotonic() - began, 1),
        "calls": len(calls),
        "failed": len(failed),
        "failed_pct": round(100 * len(failed) / max(1, len(calls)), 3),
        "failures": sorted({c.detail for c in failed})[:3],
    }


async def phase_changes(cluster: LocalNodeCluster, kv: KVClient) -> dict[str, Any]:
    ingresses = [n.ingress for n in cluster.nodes]
    await put_blueprint(kv, "bench", SliceSpec(artifact=ECHO, instances=3))
    await wait_for(kv, exactly_active(3, ECHO), timeout=SETTLE, what="3 ACTIVE", artifact_id=ECHO_ID)
    callers = Callers(ingresses, concurrency=4)
    versions = VersionCallers(ingresses)
    results: dict[str, Any] = {}
    async with background(callers):
        await callers.made(200)  # warm
        results["rolling"] = await change(
            kv, cluster, callers, "rolling", SliceSpec(artifact=ECHO_11, instances=3)
        )
        results["canary"] = await change(
            kv, cluster, callers, "canary", SliceSpec(artifact=ECHO, instances=3, update=CANARY)
        )
        switched: list[float] = []

        async def watch_switch() -> None:
            while not switched:
                record = await rollout_record(kv)
                if record is not None and record.phase.value == "SWITCHED":
                    switched.append(record.since)
                await trio.sleep(0.02)

        async with background(versions), trio.open_nursery() as nursery:
            nursery.start_soon(watch_switch)
            results["blue_green"] = await change(
                kv,
                cluster,
                callers,
                "blue-green",
                SliceSpec(artifact=ECHO_11, instances=3, update=BLUE_GREEN),
            )
            nursery.cancel_scope.cancel()
    if switched:
        since = switched[0]
        old_after = [a for a in versions.answers if a[1] >= since and a[2] == "1.0.0"]
        new_after = [a for a in versions.answers if a[0] >= since and a[2] == "1.1.0"]
        last_old = max((a[1] for a in old_after), default=since)
        results["switch"] = {
            "to_all_new_s": round(last_old - since, 3),
            "old_answers_after_switch": len(old_after),
            "new_answers_after_switch": len(new_after),
            "info_failed": sum(1 for a in versions.answers if not a[2]),
        }
        log(f"blue-green switch → all calls on 1.1.0: {last_old - since:.3f} s")
    await delete_blueprint(kv, "bench")
    await wait_for(kv, lambda found: not found, timeout=SETTLE, what="echo gone", artifact_id=ECHO_ID)
    return results


async def drain(kv: KVClient, api: ApiClient, surge: int) -> dict[str, Any]:
    spec = SliceSpec(
        artifact=GREETER, instances=30, strategy=Strategy.BIN_PACK, update=UpdateSpec(max_surge=surge)
    )
    await put_blueprint(kv, "drain", spec)
    found = await wait_for(
        kv, exactly_active(30, GREETER), timeout=SETTLE, what="30 ACTIVE", artifact_id=GREETER_ID
    )
    holders = {i.node_id for i in found}
    assert len(holders) == 1, f"bin_pack spread them: {holders}"
    (node_id,) = holders
    began = time.monotonic()
    await trio.to_thread.run_sync(api.node_operation, node_id, "drain")
    with trio.fail_after(SETTLE):
        while True:
            nodes = await trio.to_thread.run_sync(api.nodes)
            if any(n.node_id == node_id and n.state == "DRAINED" for n in nodes):
                break
            await trio.sleep(0.05)
    seconds = time.monotonic() - began
    log(f"drain of {node_id} (30 instances, max_surge {surge}) → DRAINED: {seconds:.2f} s")
    await trio.to_thread.run_sync(api.node_operation, node_id, "uncordon")
    await delete_blueprint(kv, "drain")
    await wait_for(kv, lambda found: not found, timeout=SETTLE, what="greeter gone", artifact_id=GREETER_ID)
    return {"node": node_id, "max_surge": surge, "to_drained_s": round(seconds, 2)}


async def run(opts: argparse.Namespace, root: Path) -> dict[str, Any]:
    index = build_index(root / "index")
    results: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    async with running_cluster(root / "cluster", index, 3) as cluster, kv_of(cluster) as kv:
        api = ApiClient([f"http://{n.management}" for n in cluster.nodes])
        if not opts.skip_changes:
            results["changes"] = await phase_changes(cluster, kv)
        wide = [await drain(kv, api, 30) for _ in range(opts.drain_rounds)]
        seconds = sorted(d["to_drained_s"] for d in wide)
        results["drain"] = {
            "max_surge_30": wide,
            "max_surge_30_median_s": seconds[len(seconds) // 2],
            "max_surge_1": await drain(kv, api, 1),
        }
    results["load_after"] = os.getloadavg()[0]
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-changes", action="store_true", help="only the drain")
    parser.add_argument(
        "--drain-rounds", type=int, default=3, help="drains with max_surge 30 (the median is the figure)"
    )
    opts = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="aether-rollout-bench-") as tmp:
        results = trio.run(run, opts, Path(tmp))
    results["started"] = started
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
