"""aether-kv memory under a steady write load: each replica's resident memory as the log grows, with log
compaction at the default threshold next to a baseline threshold ten times higher (the old default), in
the same run (issue 18: every log entry stays in memory until the next snapshot).

    uv run python benchmarks/kv_memory.py                 # 30,720 writes per setting (~3 minutes idle)
    uv run python benchmarks/kv_memory.py --writes 10240  # shorter

For each setting: three `aether-kv serve` replicas on 127.0.0.1 (`--log-compaction-entries N`), 64
concurrent writers through one client (100 B values over 16,384 keys, so the key space stops growing
early), each replica's VmRSS read every `--sample-every` writes; afterwards the Raft term (a leader change
moves it), the writes that failed, and which replicas wrote a snapshot. Printed: the memory table, the
growth per 10,000 writes over the second half of the run (after warm-up) and its ratio against the
baseline, and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from aether_kv import KVError, open_client
from aether_kv._local import plan_local_cluster, wait_until_ready

DEFAULT_ENTRIES = 10_000
BASELINE_ENTRIES = 100_000
WRITERS = 64
KEYS = 16_384


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def slope_per_10k(samples: list[tuple[int, float]]) -> float:
    """Least-squares growth in MiB per 10,000 writes over the second half of the samples."""
    half = samples[len(samples) // 2 :]
    xs = [x for x, _ in half]
    ys = [y for _, y in half]
    if len(half) < 2 or len(set(xs)) < 2:
        return float("nan")
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in half)
    var = sum((x - mean_x) ** 2 for x in xs)
    return cov / var * 10_000


async def run_setting(root: Path, entries: int, writes: int, every: int) -> dict[str, object]:
    cluster = plan_local_cluster(root / f"entries-{entries}", 3)
    extra = ["--log-compaction-entries", str(entries)]
    for spec in cluster.replicas:
        log = open(cluster.directory / f"{spec.replica_id}.log", "ab")  # noqa: SIM115 (owned by the child)
        cluster.processes[spec.replica_id] = subprocess.Popen(
            spec.command(cluster.peers, cluster.secret_file) + extra, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
    try:
        await wait_until_ready(cluster)
        pids = {rid: process.pid for rid, process in cluster.processes.items()}
        samples: dict[str, list[tuple[int, float]]] = {rid: [(0, rss_mib(pid))] for rid, pid in pids.items()}
        failed = 0
        done = 0
        value = b"x" * 100
        async with open_client(cluster.endpoints, cluster.secret, request_timeout=5.0) as client:
            term_before = (await client.status()).term
            started = time.monotonic()

            async def writer(index: int) -> None:
                nonlocal failed, done
                for i in range(index, writes, WRITERS):
                    try:
                        await client.put(f"mem/{i % KEYS:05d}", value)
                    except KVError:
                        failed += 1
                    done += 1
                    if done % every == 0:
                        for rid, pid in pids.items():
                            samples[rid].append((done, rss_mib(pid)))
                        print(f"  {entries:>7} entries: {done:>6} writes", file=sys.stderr)

            async with trio.open_nursery() as nursery:
                for index in range(WRITERS):
                    nursery.start_soon(writer, index)
            elapsed = time.monotonic() - started
            term_after = (await client.status()).term
        dumps = [rid for rid in pids if (cluster.spec(rid).data_dir / "raft.dump").exists()]
        return {
            "entries": entries,
            "samples": samples,
            "failed": failed,
            "leader_changes": term_after - term_before,
            "snapshots": dumps,
            "writes_per_s": writes / elapsed,
        }
    finally:
        await trio.to_thread.run_sync(cluster.stop_all)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writes", type=int, default=30_720)
    parser.add_argument("--sample-every", type=int, default=5_120)
    parser.add_argument("--entries", type=int, default=DEFAULT_ENTRIES)
    parser.add_argument("--baseline-entries", type=int, default=BASELINE_ENTRIES)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="kv-memory-") as tmp:
        results = [
            await run_setting(Path(tmp), entries, args.writes, args.sample_every)
            for entries in (args.entries, args.baseline_entries)
        ]
    print(f"load average at end: {os.getloadavg()}")
    slopes = {}
    for result in results:
        samples = result["samples"]
        assert isinstance(samples, dict)
        print(f"\ncompaction after {result['entries']:,} entries: {result['writes_per_s']:.0f} writes/s,")
        print(
            f"  {result['failed']} failed writes, {result['leader_changes']} leader changes,"
            f" snapshots on {result['snapshots'] or 'no replica'}"
        )
        print("  writes  " + "  ".join(f"{rid:>6}" for rid in samples))
        rows = zip(*samples.values(), strict=True)
        for row in rows:
            print(f"  {row[0][0]:>6}  " + "  ".join(f"{mib:6.1f}" for _, mib in row))
        slope = statistics.median(slope_per_10k(points) for points in samples.values())
        slopes[result["entries"]] = slope
        print(f"  median growth over the second half: {slope:+.1f} MiB per 10,000 writes")
    new, old = slopes[args.entries], slopes[args.baseline_entries]
    ratio = new / old if old else float("nan")
    print(f"\ngrowth ratio, {args.entries:,} vs {args.baseline_entries:,} entries: {ratio:.2f}x")


if __name__ == "__main__":
    trio.run(main)
