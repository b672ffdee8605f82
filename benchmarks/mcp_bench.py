"""MCP round-trip benchmark: the `cluster_status` tool over Streamable HTTP (official `mcp.Client` →
`aether-mcp` → management API) against the same handler called through the management API directly
(`GET /api/v1/cluster`), interleaved in one run on a 3-node cluster on 127.0.0.1 with one blueprint
(echo ×3) applied.

    uv run python benchmarks/mcp_bench.py               # 3 rounds of 100 calls each way
    uv run python benchmarks/mcp_bench.py --rounds 5 --calls 200

Both paths reach the same node. The direct baseline is the cheapest honest client: one keep-alive httpx
connection. Each round alternates the two paths call by call (so drift in the machine's load hits both
alike) and reports the median and p99 of each, and their ratio; the summary is the median over the rounds.
Target: the MCP median ≤ 1.5× the direct median. Figures and notes: benchmarks/README.md, section "MCP".
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio
from cli_bench import running_cluster
from mcp import Client
from mcp.types import Implementation

from aether_node.client import ApiClient

TARGET = 1.5
BLUEPRINT = 'name = "bench"\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 3\n'


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def start_mcp(management: str, port: int) -> subprocess.Popen[str]:
    script = Path(sys.executable).with_name("aether-mcp")
    listen = ["--transport", "http", "--listen", f"127.0.0.1:{port}"]
    process = subprocess.Popen(
        [str(script), "--cluster", f"http://{management}", *listen],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    for line in process.stdout:
        if "serving MCP at" in line:
            return process
        if time.monotonic() > deadline:
            break
    process.kill()
    sys.exit("mcp_bench: aether-mcp did not start")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def measure(management: str, mcp_url: str, rounds: int, calls: int) -> list[dict[str, float]]:
    results = []
    async with (
        httpx.AsyncClient(base_url=f"http://{management}", timeout=30) as direct,
        Client(mcp_url, client_info=Implementation(name="mcp-bench", version="1")) as agent,
    ):

        async def via_api() -> None:
            answer = await direct.get("/api/v1/cluster")
            answer.raise_for_status()

        async def via_mcp() -> None:
            result = await agent.call_tool("cluster_status", {})
            if result.is_error:
                sys.exit(f"mcp_bench: the tool failed: {result.content}")

        for _ in range(10):  # warm both paths (connections, imports, caches)
            await via_api()
            await via_mcp()
        for number in range(rounds):
            timings: dict[str, list[float]] = {"api": [], "mcp": []}
            for call in range(calls):
                order = (("api", via_api), ("mcp", via_mcp))
                for name, operation in order if call % 2 == 0 else order[::-1]:
                    started = time.perf_counter()
                    await operation()
                    timings[name].append(time.perf_counter() - started)
            row = {
                "api_median": statistics.median(timings["api"]),
                "api_p99": percentile(timings["api"], 0.99),
                "mcp_median": statistics.median(timings["mcp"]),
                "mcp_p99": percentile(timings["mcp"], 0.99),
            }
            row["ratio_median"] = row["mcp_median"] / row["api_median"]
            row["ratio_p99"] = row["mcp_p99"] / row["api_p99"]
            results.append(row)
            print(
                f"round {number + 1}: direct median {row['api_median'] * 1000:.1f} ms p99"
                f" {row['api_p99'] * 1000:.1f} ms | MCP median {row['mcp_median'] * 1000:.1f} ms p99"
                f" {row['mcp_p99'] * 1000:.1f} ms | ratio median {row['ratio_median']:.2f}×"
                f" p99 {row['ratio_p99']:.2f}×",
                flush=True,
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    print(
        f"mcp_bench {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()},"
        f" Python {platform.python_version()}, {args.rounds} rounds × {args.calls} calls each way"
    )
    with tempfile.TemporaryDirectory(prefix="mcp-bench-") as work, running_cluster(Path(work)) as cluster:
        management = cluster.nodes[0].management
        with ApiClient([f"http://{management}"]) as api:
            api.apply_blueprint(BLUEPRINT, "bench.toml")
            deadline = time.monotonic() + 120
            while not api.blueprint_status("bench").converged:
                if time.monotonic() > deadline:
                    sys.exit("mcp_bench: the blueprint did not converge")
                time.sleep(0.25)
        port = free_port()
        mcp = start_mcp(management, port)
        try:
            rows = trio.run(measure, management, f"http://127.0.0.1:{port}/mcp", args.rounds, args.calls)
        finally:
            mcp.terminate()
            mcp.wait(timeout=10)
    summary = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    verdict = "meets" if summary["ratio_median"] <= TARGET else "misses"
    print(
        f"\ncluster_status round trip, median over {args.rounds} rounds:\n"
        f"  direct (GET /api/v1/cluster, keep-alive httpx): median {summary['api_median'] * 1000:.1f} ms,"
        f" p99 {summary['api_p99'] * 1000:.1f} ms\n"
        f"  MCP tool over Streamable HTTP:                  median {summary['mcp_median'] * 1000:.1f} ms,"
        f" p99 {summary['mcp_p99'] * 1000:.1f} ms\n"
        f"  ratio: median {summary['ratio_median']:.2f}×, p99 {summary['ratio_p99']:.2f}×"
        f" (target ≤ {TARGET}×: {verdict})"
    )


if __name__ == "__main__":
    main()
