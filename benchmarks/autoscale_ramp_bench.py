"""p99 latency during a load ramp with and without autoscaling, in the same run on the same node, and
whether the call-rate forecast (`forecast_s`) beats the reactive controller on that ramp.

1. A node (`aether-node`, dev mode) runs `org.aether:busy` ×1. Three phases, one after the other, each
   starting from 1 instance after `--quiet` seconds without load:
     fixed     no `[slices.autoscale]`: 1 instance throughout;
     reactive  `[slices.autoscale]` min 1, max `--max`, a `calls_per_second` target (and `p99_ms`
               with `--p99-ms`; off by default: on a shared machine p99 says more about the neighbours);
     forecast  the same table with `forecast_s`.
   `--order` says in which order the two autoscaled phases run (the machine's load drifts: alternate).
   In each, `benchmarks/load_gen.py` ramps from `--from` to `--to` calls/s of `burn` (`--ms` ms of CPU)
   over `--ramp` seconds. Measured per phase: p99 (and p50) of every call of the ramp, the worst
   one-second p99, and the leader's scale-ups during the ramp (seconds after its start, with the
   decision's words).
2. After the ramp of each autoscaled phase the load stays at `--to` for `--steady` seconds; the first
   `--settle` of them are for settling, every up or down decision in the rest is counted (target 0; with
   the defaults the load settles at 3 instances, under max 4, so a 0 is not the max holding it).
Printed: the figures per phase, the ratio of the fixed p99 to each autoscaled one, and the load
average (the machine is shared: figures are only comparable within one run).

Loopback only; every load is bounded (the load generator stops after its duration) and the run ends
its node.

    uv run python benchmarks/autoscale_ramp_bench.py                 # ~8 min
    uv run python benchmarks/autoscale_ramp_bench.py --order forecast,reactive
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

PHASES = ("fixed", "reactive", "forecast")


def blueprint(opts: argparse.Namespace, phase: str) -> str:
    if phase == "fixed":
        return busy_blueprint("ramp", None)
    table: dict[str, float] = {
        "max": opts.max,
        "calls_per_second": opts.calls_target,
        "up_after_s": opts.up_after,
        "up_cooldown_s": opts.up_cooldown,
    }
    if opts.p99_ms:
        table["p99_ms"] = opts.p99_ms
    if phase == "forecast":
        table["forecast_s"] = opts.forecast
    return busy_blueprint("ramp", table)


async def load(
    opts: argparse.Namespace, ingress: str, path: Path, shape: list[str], seconds: float
) -> list[dict[str, Any]]:
    """Run the load generator to its end; its JSON lines (each second's, then the summary)."""
    with path.open("w") as out:
        await trio.run_process(
            load_command(ingress, opts.ms, shape, seconds), stdout=out, stderr=subprocess.DEVNULL
        )
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def wait_for_one(http: httpx.AsyncClient, management: str, ingress: str, autoscaled: bool) -> None:
    """Until the slice runs exactly one ACTIVE instance (and answers); after 180 s, an error with what
    the cluster showed last."""
    seen: Any = None
    with trio.move_on_after(180):
        while True:
            overview = (await http.get(f"http://{management}/api/v1/overview")).json()
            states = sorted(f"{i['artifact']}#{i['instance']} {i['state']}" for i in overview["instances"])
            status = (await http.get(f"http://{management}/api/v1/autoscale/{BUSY_ID}")).json()
            seen = (states, status.get("instances"), status.get("decisions", [{}])[-1:])
            if states == [f"{BUSY_ID}:1.0.0#{overview['instances'][0]['instance']} ACTIVE"] and (
                not autoscaled or status.get("instances") == 1
            ):
                answer = await http.post(f"http://{ingress}/invoke/{BUSY_ID}/info", json={})
                answer.raise_for_status()
                return
            await trio.sleep(0.3)
    raise RuntimeError(f"the slice never settled at one ACTIVE instance; last seen: {seen}")


async def decisions(http: httpx.AsyncClient, management: str) -> list[dict[str, Any]]:
    answer = await http.get(f"http://{management}/api/v1/autoscale/{BUSY_ID}")
    return answer.json()["decisions"] if answer.status_code == 200 else []


async def phase(
    opts: argparse.Namespace, http: httpx.AsyncClient, node: Any, root: Path, name: str
) -> dict[str, Any]:
    applied = await http.post(
        f"http://{node.management}/api/v1/blueprints", content=blueprint(opts, name).encode()
    )
    applied.raise_for_status()
    await wait_for_one(http, node.management, node.ingress, name != "fixed")
    await trio.sleep(opts.quiet)
    shape = ["--shape", "ramp", "--rate", str(getattr(opts, "from")), "--to", str(opts.to)]
    started = time.time()
    lines = await load(opts, node.ingress, root / f"{name}-ramp.jsonl", shape, opts.ramp)
    ramp_end = time.time()
    summary, seconds = lines[-1], lines[:-1]
    worst = max((s["p99_ms"] for s in seconds if s["p99_ms"] is not None), default=None)
    result: dict[str, Any] = {
        "ramp_p50_ms": summary["p50_ms"],
        "ramp_p99_ms": summary["p99_ms"],
        "worst_second_p99_ms": worst,
        "calls": {k: summary[k] for k in ("sent", "ok", "errors", "skipped")},
    }
    if name == "fixed":
        return result
    steady = await load(
        opts,
        node.ingress,
        root / f"{name}-steady.jsonl",
        ["--shape", "constant", "--rate", str(opts.to)],
        opts.steady,
    )
    end = time.time()
    found = await decisions(http, node.management)
    ups = moves(found, started, ramp_end)
    result.update(
        ups_during_ramp=[
            {"after_s": round(d["at"] - started, 1), "to": d["target"], "message": d["message"]} for d in ups
        ],
        instances_at_ramp_end=max([1, *(d["target"] for d in ups)]),
        steady_p99_ms=steady[-1]["p99_ms"],
        moves_while_settling=[d["message"] for d in moves(found, ramp_end, ramp_end + opts.settle)],
        moves_after_settling=[d["message"] for d in moves(found, ramp_end + opts.settle, end)],
    )
    return result


async def run(opts: argparse.Namespace, root: Path) -> dict[str, Any]:
    async with one_busy_node(root) as node, httpx.AsyncClient(timeout=30) as http:
        results: dict[str, Any] = {}
        load_averages = [os.getloadavg()[0]]
        for name in ("fixed", *opts.order.split(",")):
            results[name] = await phase(opts, http, node, root, name)
            load_averages.append(os.getloadavg()[0])
    fixed = results["fixed"]["ramp_p99_ms"]
    for name in PHASES[1:]:
        mine = results[name]["ramp_p99_ms"]
        results[name]["fixed_p99_over_this_p99"] = round(fixed / mine, 2) if fixed and mine else None
    results["load_average_1min"] = {"min": min(load_averages), "max": max(load_averages)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", type=float, default=5.0, help="calls per second at the ramp's start")
    parser.add_argument("--to", type=float, default=70.0, help="calls per second at its end (and steady)")
    parser.add_argument("--ramp", type=float, default=60.0, help="seconds of the ramp")
    parser.add_argument("--ms", type=int, default=20, help="CPU milliseconds per call")
    parser.add_argument("--calls-target", type=float, default=25.0, help="calls_per_second per instance")
    parser.add_argument("--p99-ms", type=float, default=0.0, help="a p99 target too (0: none)")
    parser.add_argument("--up-after", type=float, default=3.0, help="up_after_s")
    parser.add_argument("--up-cooldown", type=float, default=5.0, help="up_cooldown_s")
    parser.add_argument("--forecast", type=float, default=10.0, help="forecast_s of the forecast phase")
    parser.add_argument("--max", type=int, default=4, help="max instances")
    parser.add_argument(
        "--order", choices=("reactive,forecast", "forecast,reactive"), default="reactive,forecast"
    )
    parser.add_argument("--steady", type=float, default=60.0, help="seconds of steady load after a ramp")
    parser.add_argument("--settle", type=float, default=20.0, help="of which, seconds to settle")
    parser.add_argument("--quiet", type=float, default=15.0, help="seconds without load before a ramp")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aether-ramp-bench-") as root:
        result = trio.run(run, opts, Path(root))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
