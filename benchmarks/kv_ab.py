"""Two builds of aether-kv side by side, measured in alternating blocks under the same load (A/B).

    uv run python benchmarks/kv_ab.py --baseline /tmp/base/packages/aether-kv/src
    # the baseline tree, e.g.: git archive main packages/aether-kv | tar -x -C /tmp/base

On a shared machine (benchmarks/README.md: load 7-12 on 2 cores while other work runs) two runs of
`kv_bench.py --only etcd` minutes apart differ by more than the changes they compare. Here both
clusters (three `aether-kv serve` replicas each: the baseline's with the baseline tree first on
PYTHONPATH, the other with this checkout) run at once and are measured in alternating blocks of
`--block` sequential puts (baseline first in even rounds, last in odd ones), so load that comes and
goes falls on both alike. Per put, through the leader's endpoint after a random 0-10 ms pause (the
shape of kv_etcd.py): the put's latency, and put sent -> event received by a watcher on a follower.
Prints the medians of each side and the ratio this checkout / baseline, with the load average.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from aether_kv import open_client
from aether_kv._local import LocalCluster, plan_local_cluster, wait_until_ready

LATENCY_JITTER = 0.01
SIDES = ("baseline", "this")


async def _leader(cluster: LocalCluster) -> Any:
    while True:
        async with open_client(cluster.endpoints, cluster.secret) as client:
            await client.barrier()
            address = (await client.status()).leader
        for replica in cluster.replicas:
            if replica.raft_address == address:
                return replica
        await trio.sleep(0.1)


async def _client(endpoint: str, secret: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with open_client([endpoint], secret) as client:
        await client.barrier()
        task_status.started(client)
        await trio.sleep_forever()


def _start(directory: Path, pythonpath: str | None) -> LocalCluster:
    saved = os.environ.get("PYTHONPATH")
    try:
        if pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = pythonpath
        cluster = plan_local_cluster(directory, 3)
        for replica in cluster.replicas:
            cluster.start(replica.replica_id)
        return cluster
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


async def measure(
    clusters: dict[str, LocalCluster], rounds: int, block: int
) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {side: {"put": [], "watch": []} for side in clusters}
    jitter = random.Random(7)
    async with trio.open_nursery() as nursery:
        sides: dict[str, tuple[Any, dict[str, float]]] = {}
        for side, cluster in clusters.items():
            leader = await _leader(cluster)
            follower = next(r for r in cluster.replicas if r.raft_address != leader.raft_address)
            writer = await nursery.start(_client, leader.client_address, cluster.secret)
            watcher = await nursery.start(_client, follower.client_address, cluster.secret)
            seen: dict[str, float] = {}

            async def receive(watcher: Any = watcher, seen: dict[str, float] = seen) -> None:
                async for events in watcher.watch("ab/"):
                    for event in events:
                        seen.setdefault(event.kv.key, time.perf_counter())

            nursery.start_soon(receive)
            sides[side] = (writer, seen)
        await trio.sleep(0.5)  # the watches are registered
        sequence = 0
        for round_index in range(rounds):
            for side in SIDES if round_index % 2 == 0 else SIDES[::-1]:
                writer, seen = sides[side]
                for _ in range(block):
                    await trio.sleep(jitter.uniform(0, LATENCY_JITTER))
                    sequence += 1
                    key = f"ab/{sequence}"
                    started = time.perf_counter()
                    await writer.put(key, b"x" * 100)
                    results[side]["put"].append(time.perf_counter() - started)
                    with trio.move_on_after(1):
                        while key not in seen:
                            await trio.sleep(0.0005)
                    if key in seen:
                        results[side]["watch"].append(seen[key] - started)
        nursery.cancel_scope.cancel()
    return results


async def main(opts: argparse.Namespace) -> None:
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as directory:
        clusters = {
            "baseline": _start(Path(directory) / "baseline", opts.baseline),
            "this": _start(Path(directory) / "this", os.environ.get("PYTHONPATH")),
        }
        try:
            for cluster in clusters.values():
                await wait_until_ready(cluster)
            results = await measure(clusters, opts.rounds, opts.block)
        finally:
            for cluster in clusters.values():
                cluster.stop_all()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{opts.rounds} rounds of {opts.block} puts per side, alternating; medians:")
    for measure_name in ("put", "watch"):
        base, this = (statistics.median(results[side][measure_name]) * 1e3 for side in SIDES)
        ratio = this / base
        print(
            f"  {measure_name:5s} p50: baseline {base:.2f} ms, this {this:.2f} ms, this/baseline {ratio:.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", required=True, help="the baseline's aether-kv source directory")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=40)
    trio.run(main, parser.parse_args())
