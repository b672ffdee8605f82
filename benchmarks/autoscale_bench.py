"""Autoscaling on a real one-node cluster: how long from a load step to a new instance serving, and how
many decisions a steady load makes once it has settled.

1. A node (`aether-node`, dev mode) runs `org.aether:busy` ×1 with `[slices.autoscale]` (min 1, max
   `--max`, `p99_ms` target, `up_after_s`, no up cooldown).
2. Step: `benchmarks/load_gen.py` starts a constant load (`--rate` calls/s of `burn` `--ms` ms of CPU:
   more than one instance serves). Measured: load start → the leader's up decision (its `at`) → the
   first call answered by a new instance (`info` asked every 0.1 s through the ingress, answered by an
   instance number not seen before the step). The issue's target, ≤ 5 s from the signal having crossed
   its threshold for the configured window to serving, is `decision_to_serving_s` (the decision comes
   at the first pass, once a second, after the window is complete); `first_crossing_to_serving_s` adds
   the window back (from the decision minus `up_after_s`).
3. Steady: the same load goes on for `--steady` more seconds after the last scale-up; every up or down
   decision in that time is counted (the target is 0).

Loopback only; every run is bounded (the load generator stops after its duration) and ends its node.

    uv run python benchmarks/autoscale_bench.py                      # ~2 min
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from autoscale_common import BUSY_ID, busy_blueprint, load_command, moves, one_busy_node


def blueprint(opts: argparse.Namespace) -> str:
    return busy_blueprint(
        "bench",
        {"max": opts.max, "p99_ms": opts.p99_ms, "up_after_s": opts.up_after, "up_cooldown_s": 0},
    )


async def status(http: httpx.AsyncClient, management: str) -> dict[str, Any]:
    return (await http.get(f"http://{management}/api/v1/autoscale/{BUSY_ID}")).json()


async def run(opts: argparse.Namespace, root: Path) -> dict[str, Any]:
    async with one_busy_node(root) as node, httpx.AsyncClient(timeout=30) as http:
        applied = await http.post(
            f"http://{node.management}/api/v1/blueprints", content=blueprint(opts).encode()
        )
        applied.raise_for_status()
        with trio.fail_after(120):
            while (await status(http, node.management))["active"] != 1:
                await trio.sleep(0.2)
        info = f"http://{node.ingress}/invoke/{BUSY_ID}/info"
        first = (await http.post(info, json={})).json()["instance"]
        duration = opts.step + opts.steady
        command = load_command(node.ingress, opts.ms, ["--rate", str(opts.rate)], duration)
        result: dict[str, Any] = {}
        report = root / "load.jsonl"
        async with trio.open_nursery() as nursery:
            load_started = time.time()
            out = report.open("w")
            process = await nursery.start(
                lambda task_status: trio.run_process(
                    command, stdout=out, stderr=subprocess.DEVNULL, task_status=task_status
                )
            )
            serving = None
            with trio.move_on_after(opts.step):
                while serving is None:
                    answer = await http.post(info, json={})
                    if answer.status_code == 200 and answer.json()["instance"] != first:
                        serving = time.time()
                    await trio.sleep(0.1)
            now = await status(http, node.management)
            ups = [d for d in now["decisions"] if d["action"] == "up"]
            settled = max((d["at"] for d in now["decisions"] if d["action"] != "hold"), default=None)
            up_at = ups[0]["at"] if ups else None
            result.update(
                load_to_decision_s=up_at - load_started if up_at else None,
                decision_to_serving_s=serving - up_at if up_at and serving else None,
                load_to_serving_s=serving - load_started if serving else None,
                first_crossing_to_serving_s=(
                    serving - (up_at - opts.up_after) if up_at and serving else None
                ),
                first_up=ups[0]["message"] if ups else None,
            )
            await process.wait()
            out.close()
        final = await status(http, node.management)
        steady_from = max(settled or load_started, load_started + opts.step)
        steady_until = load_started + duration
        steady_moves = moves(final["decisions"], steady_from, steady_until)
        lines = report.read_text().splitlines()
        summary = json.loads(lines[-1]) if lines else {}
        result.update(
            steady_s=steady_until - steady_from,
            steady_moves=[d["message"] for d in steady_moves],
            instances_at_end=final["instances"],
            load_summary={k: summary.get(k) for k in ("sent", "ok", "errors", "skipped")},
        )
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=40.0, help="calls per second of the load")
    parser.add_argument("--ms", type=int, default=30, help="CPU milliseconds per call")
    parser.add_argument("--p99-ms", type=float, default=150.0, help="the p99 target")
    parser.add_argument("--up-after", type=float, default=3.0, help="up_after_s")
    parser.add_argument("--max", type=int, default=2, help="max instances")
    parser.add_argument("--step", type=float, default=40.0, help="seconds to wait for the new instance")
    parser.add_argument("--steady", type=float, default=60.0, help="seconds of steady load afterwards")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aether-autoscale-bench-") as root:
        result = trio.run(run, opts, Path(root))
    result["load_average"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
