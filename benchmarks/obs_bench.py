"""Observability benchmarks (issue 7): what metrics cost on the ingress path, and how fast the dashboard
shows a big cluster.

    uv run python benchmarks/obs_bench.py                 # both (~3 min)
    uv run python benchmarks/obs_bench.py --only ingress --rounds 5 --seconds 10
    uv run python benchmarks/obs_bench.py --only dashboard --loads 7

1. ingress: two single-node clusters side by side on 127.0.0.1, each a real `aether-node` with its own
   KV replica and one instance of org.aether:echo:1.0.0; one runs with metrics (the default), the other
   with `--no-metrics`; half the rounds with the metrics node started first, half with it second.
   `wrk` (1 thread, 32 connections) posts the same JSON to each in turn, alternating which goes first,
   for --rounds rounds of --seconds each; the figures are the median req/s of each,
   their ratio (target ≥ 0.95×) and the median of each round's own on/off ratio (less sensitive to the
   machine's load drifting between rounds). Beside throughput, each run's node CPU time per call (from
   /proc, the node process alone: where the metrics are recorded), which a busy machine disturbs far less
   than req/s, and what recording one call costs in-process. Afterwards the metrics node's /metrics is
   read: it counted
   every call wrk made (a few more: wrk does not count calls still in flight when a run ends).
2. dashboard: 50 nodes and 500 ACTIVE instances (10 slices × 50) in a real KV store: one `aether-kv
   serve` replica and one real `aether-node` that is only a KV client (so no cluster manager runs to undo
   the synthetic records), whose management API serves the dashboard; 49 node registrations and the 500
   instance records and a blueprint are written straight into the KV. Debian's headless chromium loads
   /dashboard --loads times, each in a fresh browser context; the figure is the median time from
   navigation start to the render that put all 500 instance rows in the DOM (the page's own probe,
   `window.aetherDashboard.firstRenderAt`), with the browser's first-contentful-paint beside it
   (target ≤ 1 s).

Needs `wrk` and `chromium` (Debian packages).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from aether_kv import open_client
from aether_node import Blueprint, NodeRecord, SliceRecord, SliceSpec, SliceState, encode_record
from aether_node.dev import build_sample_index, free_port, plan_cluster, wait_until_ready
from aether_node.observe import NodeMetrics, read_process_usage

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ECHO = "org.aether:echo:1.0.0"
PAYLOAD = '{"hello": "aether", "n": 42}'
WRK_SCRIPT = f"""wrk.method = "POST"
wrk.body = '{PAYLOAD}'
wrk.headers["Content-Type"] = "application/json"
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------- 1. ingress with metrics on vs off


def wrk(address: str, lua: Path, seconds: float) -> float:
    command = ["wrk", "-t", "1", "-c", "32", "-d", f"{seconds:g}s", "--timeout", "5s", "-s", str(lua)]
    result = subprocess.run(
        [*command, f"http://{address}/invoke/org.aether:echo/echo"],
        capture_output=True,
        text=True,
        check=True,
    )
    requests = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    if requests is None or errors is not None:
        raise RuntimeError(f"wrk did not run cleanly:\n{result.stdout}\n{result.stderr}")
    return float(requests[1])


def total_requests(address: str, lua: Path, seconds: float) -> tuple[float, int]:
    command = ["wrk", "-t", "1", "-c", "32", "-d", f"{seconds:g}s", "--timeout", "5s", "-s", str(lua)]
    result = subprocess.run(
        [*command, f"http://{address}/invoke/org.aether:echo/echo"],
        capture_output=True,
        text=True,
        check=True,
    )
    rate = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    count = re.search(r"(\d+) requests in", result.stdout)
    if rate is None or count is None or "Non-2xx" in result.stdout:
        raise RuntimeError(f"wrk did not run cleanly:\n{result.stdout}\n{result.stderr}")
    return float(rate[1]), int(count[1])


async def start_single(directory: Path, index: Path, args: tuple[str, ...]) -> Any:
    cluster = plan_cluster(directory, 1, str(index))
    cluster.node_args = args
    cluster.start_all()
    await wait_until_ready(cluster, timeout=90)
    management = cluster.nodes[0].management
    blueprint = f'name = "bench"\n\n[[slices]]\nartifact = "{ECHO}"\ninstances = 1\n'
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(f"http://{management}/api/v1/blueprints", content=blueprint.encode())
        answer.raise_for_status()
        with trio.fail_after(120):
            while True:
                status = (await http.get(f"http://{management}/api/v1/blueprints/bench/status")).json()
                if status["slices"][0]["active"] == 1:
                    break
                await trio.sleep(0.2)
    return cluster


def bench_ingress(root: Path, index: Path, rounds: int, seconds: float) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian package `wrk`)")
    lua = root / "post.lua"
    lua.write_text(WRK_SCRIPT)
    rates: dict[str, list[float]] = {"on": [], "off": []}
    cpu_per_call: dict[str, list[float]] = {"on": [], "off": []}
    made = {"on": 0, "off": 0}
    counted = 0
    off_status = 0
    # Two halves with the nodes started in either order: the first-started node measured consistently
    # slower or faster here whatever its settings, which alone moved the ratio by ~9 %.
    for half, first in enumerate(("on", "off")):
        args = {"on": (), "off": ("--no-metrics",)}
        clusters = {}
        for name in (first, "off" if first == "on" else "on"):
            clusters[name] = trio.run(start_single, root / f"half{half}-metrics-{name}", index, args[name])
        try:
            nodes = {name: cluster.nodes[0] for name, cluster in clusters.items()}
            pids = {name: cluster.processes["node-1"].pid for name, cluster in clusters.items()}
            for node in nodes.values():  # warm up: templates, connections, caches
                wrk(node.ingress, lua, 2)
            before = _counted(nodes["on"].management)
            for round_number in range(half * (rounds // 2), rounds if half else rounds // 2):
                order = ("on", "off") if round_number % 2 == 0 else ("off", "on")
                for name in order:
                    cpu_before = _cpu(pids[name])
                    rate, count = total_requests(nodes[name].ingress, lua, seconds)
                    cpu_us = (_cpu(pids[name]) - cpu_before) / count * 1e6
                    rates[name].append(rate)
                    cpu_per_call[name].append(cpu_us)
                    made[name] += count
                    log(
                        f"round {round_number + 1} ({first} started first): metrics {name:>3}:"
                        f" {rate:8.1f} req/s, node CPU {cpu_us:6.0f} µs per call ({load()})"
                    )
            counted += _counted(nodes["on"].management) - before
            off_status = httpx.get(f"http://{nodes['off'].management}/metrics", timeout=10).status_code
        finally:
            for cluster in clusters.values():
                cluster.stop_all()
    median = {name: statistics.median(values) for name, values in rates.items()}
    paired = [on_rate / off_rate for on_rate, off_rate in zip(rates["on"], rates["off"], strict=True)]
    cpu = {name: statistics.median(values) for name, values in cpu_per_call.items()}
    return {
        "node_cpu_us_per_call": cpu_per_call,
        "median_node_cpu_us_per_call": cpu,
        "cpu_ratio_off_on": cpu["off"] / cpu["on"],
        "recording_one_call_us": _recording_cost(),
        "paired_ratios": paired,
        "median_paired_ratio": statistics.median(paired),
        "rounds": rounds,
        "seconds": seconds,
        "req_per_s": rates,
        "median": median,
        "ratio_on_off": median["on"] / median["off"],
        "wrk_requests_on": made["on"],
        "counted_by_metrics": counted,
        "metrics_off_status": off_status,
    }


def _cpu(pid: int) -> float:
    usage = read_process_usage(pid)
    if usage is None:
        raise RuntimeError(f"node process {pid} is gone")
    return usage.cpu_seconds


def _recording_cost(calls: int = 200_000) -> float:
    """What `NodeMetrics.invocation` costs in this process, per call (µs), on a warm label set."""
    metrics = NodeMetrics()
    started = time.perf_counter()
    for _ in range(calls):
        metrics.invocation("org.aether:echo", "echo", "ingress", 0.001, None)
    return (time.perf_counter() - started) / calls * 1e6


def _counted(management: str) -> int:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://{management}/metrics", timeout=10).text
    return int(
        sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "aether_invocations_total" and s.labels.get("artifact") == "org.aether:echo"
        )
    )


# ---------------------------------------------------------------- 2. dashboard with 500 instances


def _wait_for_log(path: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in (path.read_text(errors="replace") if path.exists() else ""):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{path} never said {text!r}:\n{path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


async def _synthesise(kv_endpoint: str, secret: str, nodes: int, slices: int, per_slice: int) -> None:
    async with open_client([kv_endpoint], secret, request_timeout=30) as kv:
        for n in range(2, nodes + 1):
            node_id = f"node-{n:02d}"
            record = NodeRecord(
                node_id=node_id, ingress=f"127.0.0.1:{20000 + n}", management="", started_at=time.time()
            )
            await kv.put(f"nodes/{node_id}", encode_record(record))
        specs = []
        number = 0
        for s in range(slices):
            artifact = f"org.bench:slice{s:02d}:1.0.0"
            specs.append(SliceSpec(artifact=artifact, instances=per_slice))
            for _ in range(per_slice):
                number += 1
                node_id = "node-01" if number % nodes == 1 else f"node-{number % nodes or nodes:02d}"
                record = SliceRecord(state=SliceState.ACTIVE, timestamp=time.time())
                await kv.put(f"slices/{node_id}/{artifact}/{number}", encode_record(record))
        blueprint = Blueprint(name="big", slices=tuple(specs), timestamp=time.time())
        await kv.put("blueprints/big", encode_record(blueprint))


def bench_dashboard(root: Path, index: Path, loads: int) -> dict[str, Any]:
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"{CHROMIUM} is not installed (Debian package `chromium`)")
    from playwright.sync_api import sync_playwright

    secret = secrets.token_hex(16)
    (root / "secret").write_text(secret + "\n")
    kv_client, raft = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    management = f"127.0.0.1:{free_port()}"
    processes = []
    try:
        kv_log = root / "kv.log"
        kv = subprocess.Popen(
            [sys.executable, "-m", "aether_kv", "serve", "--id", "kv1", "--data-dir", str(root / "kv"),
             "--raft", raft, "--client", kv_client, "--secret-file", str(root / "secret")],
            stdout=kv_log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        processes.append(kv)
        _wait_for_log(kv_log, "ready", kv, 60)
        node_log = root / "node.log"
        node = subprocess.Popen(
            [sys.executable, "-m", "aether_node", "run", "--node-id", "node-01",
             "--data-dir", str(root / "node"), "--index", str(index),
             "--ingress", f"127.0.0.1:{free_port()}", "--peer", f"127.0.0.1:{free_port()}",
             "--management", management, "--dev-mode", "--secret-file", str(root / "secret"),
             "--kv-endpoint", kv_client],
            stdout=node_log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        processes.append(node)
        _wait_for_log(node_log, "aether-node node-01 ready", node, 90)
        trio.run(_synthesise, kv_client, secret, 50, 10, 50)
        overview = httpx.get(f"http://{management}/api/v1/overview", timeout=30).json()
        assert len(overview["instances"]) == 500 and len(overview["status"]["nodes"]) == 50, overview[
            "status"
        ]
        started = time.perf_counter()
        httpx.get(f"http://{management}/api/v1/overview", timeout=30)
        overview_ms = (time.perf_counter() - started) * 1000

        renders, paints = [], []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                for attempt in range(loads):
                    context = browser.new_context(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
                    page = context.new_page()
                    page.goto(f"http://{management}/dashboard")
                    page.wait_for_function(
                        "document.querySelectorAll('#instances tbody tr').length === 500"
                        " && document.querySelectorAll('#nodes tbody tr').length === 50",
                        timeout=30_000,
                    )
                    render = page.evaluate("window.aetherDashboard.firstRenderAt")
                    paint = page.evaluate(
                        "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null"
                    )
                    renders.append(render)
                    paints.append(paint)
                    log(
                        f"load {attempt + 1}: 500 instances rendered at {render:.0f} ms (first paint {paint})"
                    )
                    context.close()
            finally:
                browser.close()
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return {
        "loads": loads,
        "rendered_ms": renders,
        "median_rendered_ms": statistics.median(renders),
        "first_contentful_paint_ms": paints,
        "overview_request_ms": overview_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("ingress", "dashboard"))
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds (each: metrics on and off)")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of wrk per run")
    parser.add_argument("--loads", type=int, default=5, help="dashboard page loads")
    options = parser.parse_args()
    log(f"obs_bench: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {load()}")
    root = Path(tempfile.mkdtemp(prefix="aether-obs-bench-"))
    results: dict[str, Any] = {}
    try:
        index = root / "index"
        build_sample_index(REPO / "sample-slices", index)
        if options.only in (None, "ingress"):
            (root / "ingress").mkdir()
            found = results["ingress"] = bench_ingress(
                root / "ingress", index, options.rounds, options.seconds
            )
            cpu = found["median_node_cpu_us_per_call"]
            log(
                f"ingress echo, metrics on vs off: median {found['median']['on']:.1f} vs "
                f"{found['median']['off']:.1f} req/s = {found['ratio_on_off']:.3f}× (target ≥ 0.95×),"
                f" median of the rounds' own ratios {found['median_paired_ratio']:.3f}×; node CPU per call"
                f" {cpu['on']:.0f} vs {cpu['off']:.0f} µs (off/on {found['cpu_ratio_off_on']:.3f}×);"
                f" recording one call {found['recording_one_call_us']:.2f} µs; "
                f"metrics counted {found['counted_by_metrics']} of {found['wrk_requests_on']} calls wrk made"
                f"; /metrics with --no-metrics: {found['metrics_off_status']}"
            )
        if options.only in (None, "dashboard"):
            (root / "dashboard").mkdir()
            found = results["dashboard"] = bench_dashboard(root / "dashboard", index, options.loads)
            log(
                "dashboard, 50 nodes / 500 instances: all rows rendered at median"
                f" {found['median_rendered_ms']:.0f} ms after navigation start (target ≤ 1000 ms);"
                f" first contentful paint {found['first_contentful_paint_ms']} ms;"
                f" /api/v1/overview alone {found['overview_request_ms']:.0f} ms"
            )
        print(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
