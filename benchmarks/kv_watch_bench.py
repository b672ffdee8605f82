"""Watch fan-out of aether-kv: the replicas' CPU per event delivered and the put -> event latency with
N watchers, two builds side by side (A/B), issue 12 targets 1 and 4.

    uv run python benchmarks/kv_watch_bench.py --baseline BASE/packages/aether-kv/src
    # BASE: a checkout of the baseline, e.g. git worktree add --detach BASE main

Two clusters of three `aether-kv serve` replicas (kv_ab.py's: the baseline's with the baseline tree
first on PYTHONPATH) run at once. For each N (--watchers, default 1 8 32), N watches (each its own
client connection, spread over the three replicas, as the nodes of a cluster spread theirs) watch
prefixes that overlap the way a node's do: half `w/` (every node's endpoint cache), the others `w/<k>/`
(a node's own slices, one of four). A writer on the leader then puts --block keys in waves of --batch
concurrent puts (the replica commits each wave as one or a few Raft entries), keys spread over the four
`w/<k>/`, and waits until every watch has every event of its prefix. Per block: the CPU the three
replicas' main threads used (the trio thread that serves clients and watches; Raft's tick thread is
apart), divided by the events delivered to all watches; less the CPU of the same puts on keys no watch
sees, measured just before: what serving the watches cost; and each delivered event's latency from its
put's start. Blocks alternate between the builds (baseline first in even rounds), so load that comes and
goes falls on both alike. Prints medians over the rounds, the ratio this / baseline, and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from kv_ab import SIDES, _leader, _start

from aether_kv import open_client
from aether_kv._local import LocalCluster, wait_until_ready

GROUPS = 4


def cpu_seconds(pid: int) -> float:
    """CPU time of a replica's main thread, the trio thread that serves the client protocol and the
    watches (the scheduler's nanosecond count, /proc/PID/schedstat: the thread group leader's; Raft's
    tick thread is apart). /proc/PID/stat counts 10 ms ticks, too coarse for a block's watch work."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def _prefix(index: int) -> str:
    return "w/" if index % 2 == 0 else f"w/{index // 2 % GROUPS}/"


class Side:
    """One build's cluster, its writer and its current watches."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.pids = [process.pid for process in cluster.processes.values()]
        self.writer: Any = None
        self.received: list[dict[str, float]] = []  # per watch: key -> when it arrived
        self.prefixes: list[str] = []

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)


async def _client(endpoint: str, secret: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with open_client([endpoint], secret, request_timeout=30.0) as client:
        await client.barrier()
        task_status.started(client)
        await trio.sleep_forever()


async def _watch(client: Any, prefix: str, start: int, seen: dict[str, float]) -> None:
    async for events in client.watch(prefix, start):
        now = time.perf_counter()
        for event in events:
            seen[event.kv.key] = now


async def _open_watches(nursery: trio.Nursery, side: Side, count: int) -> None:
    """`count` watches on `side`, each on its own connection, round-robin over the replicas."""
    cluster = side.cluster
    start = (await side.writer.put("w-start", b"")).revision + 1
    side.received, side.prefixes = [], []
    for index in range(count):
        endpoint = cluster.replicas[index % len(cluster.replicas)].client_address
        client = await nursery.start(_client, endpoint, cluster.secret)
        seen: dict[str, float] = {}
        side.received.append(seen)
        side.prefixes.append(_prefix(index))
        nursery.start_soon(_watch, client, _prefix(index), start, seen)


SETTLE = 0.3  # after a block, before its CPU is read: the followers apply the last entry too


async def _block(side: Side, tag: str, block: int, batch: int, value: bytes) -> dict[str, Any]:
    """One block of puts on `side`: the replicas' CPU per delivered event and the events' latencies;
    and, from the same puts on keys no watch sees just before, what serving the watches added."""
    _, unseen_cpu = await _puts(side, [f"x/{tag}-{n}" for n in range(block)], batch, value)
    for seen in side.received:
        seen.clear()
    keys = [f"w/{n % GROUPS}/{tag}-{n}" for n in range(block)]
    wanted = [sum(key.startswith(prefix) for key in keys) for prefix in side.prefixes]

    async def delivered() -> None:
        with trio.move_on_after(30):
            while any(len(seen) < count for seen, count in zip(side.received, wanted, strict=True)):
                await trio.sleep(0.002)

    started, cpu = await _puts(side, keys, batch, value, delivered)
    events = sum(len(seen) for seen in side.received)
    return {
        "cpu_per_event": cpu / max(events, 1),
        "watch_cpu_per_event": (cpu - unseen_cpu) / max(events, 1),
        "latencies": [seen[key] - started[key] for seen in side.received for key in seen],
    }


async def _puts(
    side: Side, keys: list[str], batch: int, value: bytes, then: Any = None
) -> tuple[dict[str, float], float]:
    """Put `keys` in waves of `batch` concurrent puts, then await `then()`: when each put started, and
    the replicas' CPU from the first put until SETTLE after that."""
    started: dict[str, float] = {}
    cpu_before = side.cpu()
    for wave in range(0, len(keys), batch):
        async with trio.open_nursery() as nursery:
            for key in keys[wave : wave + batch]:

                async def put(key: str = key) -> None:
                    started[key] = time.perf_counter()
                    await side.writer.put(key, value)

                nursery.start_soon(put)
    if then is not None:
        await then()
    await trio.sleep(SETTLE)
    return started, side.cpu() - cpu_before


async def measure(sides: dict[str, Side], opts: argparse.Namespace) -> dict[int, dict[str, Any]]:
    results: dict[int, dict[str, Any]] = {}
    value = b"v" * opts.value_size
    for count in opts.watchers:
        runs: dict[str, dict[str, list[float]]] = {
            side: {"cpu": [], "watch_cpu": [], "latency": []} for side in SIDES
        }
        async with trio.open_nursery() as nursery:
            for side in sides.values():
                await _open_watches(nursery, side, count)
            await trio.sleep(1.0)  # the watches are registered
            for round_index in range(opts.rounds):
                for name in SIDES if round_index % 2 == 0 else SIDES[::-1]:
                    tag = f"{count}-{round_index}"
                    outcome = await _block(sides[name], tag, opts.block, opts.batch, value)
                    runs[name]["cpu"].append(outcome["cpu_per_event"])
                    runs[name]["watch_cpu"].append(outcome["watch_cpu_per_event"])
                    runs[name]["latency"].append(statistics.median(outcome["latencies"]))
            nursery.cancel_scope.cancel()
        results[count] = runs
        _print(count, runs)
    return results


def _print(count: int, runs: dict[str, dict[str, list[float]]]) -> None:
    def line(what: str, measure: str, scale: float, unit: str) -> str:
        base, this = (statistics.median(runs[side][measure]) * scale for side in SIDES)
        return f"{what}: baseline {base:.1f} {unit}, this {this:.1f} {unit}, this/baseline {this / base:.2f}"

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{count:3d} watchers (load {load}):", flush=True)
    print("    " + line("replicas' trio threads' CPU per event delivered", "cpu", 1e6, "µs"))
    print("    " + line("  of which serving the watches", "watch_cpu", 1e6, "µs"))
    print("    " + line("put -> event p50", "latency", 1e3, "ms"), flush=True)


async def main(opts: argparse.Namespace) -> None:
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory() as directory:
        clusters = {
            "baseline": _start(Path(directory) / "baseline", opts.baseline),
            "this": _start(Path(directory) / "this", os.environ.get("PYTHONPATH")),
        }
        try:
            sides = {}
            async with trio.open_nursery() as nursery:
                for name, cluster in clusters.items():
                    await wait_until_ready(cluster)
                    side = sides[name] = Side(cluster)
                    leader = await _leader(cluster)
                    side.writer = await nursery.start(_client, leader.client_address, cluster.secret)
                print(
                    f"{opts.rounds} rounds per N of {opts.block} puts in waves of {opts.batch},"
                    f" {opts.value_size} B values, alternating; medians:",
                    flush=True,
                )
                await measure(sides, opts)
                nursery.cancel_scope.cancel()
        finally:
            for cluster in clusters.values():
                cluster.stop_all()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", required=True, help="the baseline's aether-kv source directory")
    parser.add_argument("--watchers", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block", type=int, default=400, help="puts per block")
    parser.add_argument("--batch", type=int, default=16, help="concurrent puts per wave")
    parser.add_argument("--value-size", type=int, default=200)
    trio.run(main, parser.parse_args())
