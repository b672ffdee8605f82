"""What a cluster costs while nothing happens (issue 12 target 2, issue 18 item 3).

    uv run python benchmarks/idle_bench.py                 # 3 rounds of 30 s
    uv run python benchmarks/idle_bench.py --rounds 1 --window 10

A local cluster of 3 `aether-node` processes (each with its KV replica) on 127.0.0.1 runs `--instances`
echo instances (default 6) and gets no call. After `--settle` seconds, each round measures for `--window`
seconds, from /proc: the CPU time (user + system) of every process of the cluster, by role (nodes, KV
replicas, slice templates, slice instances, anything else); the growth of the Raft log (the leader's
commit index) and of the key space's revision. Figures: the cluster's CPU as a share of one core (target
≤ 5 % in total), log entries and revisions per idle minute (target 0), and the roles' shares, median
over the rounds, with the load average before and after each round (CPU time is the processes' own, so
a busy machine moves it less than wall-clock figures, but not to nothing: a process that waits for a
core does not spend CPU, yet wakes later and may batch more).

Every process of the cluster is ended at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # support.py, which the integration helpers import
sys.path.insert(0, str(REPO / "tests" / "integration"))

from cluster_support import (  # noqa: E402
    ECHO,
    SliceSpec,
    build_index,
    exactly_active,
    kv_of,
    put_blueprint,
    running_cluster,
    wait_for,
)

from aether_kv import KVClient  # noqa: E402
from support import ProcInfo, processes_under  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
TARGET_SHARE = 0.05  # of one core, the whole cluster


def role(process: ProcInfo) -> str:
    """What a process of the cluster is, from its command line (and a slice host's log file)."""
    if "aether_slice.host" in process.cmdline:
        return "templates" if process.stderr.endswith("-template.log") else "instances"
    joined = " ".join(process.cmdline)
    if "aether_kv" in joined or "aether-kv" in joined:
        return "kv replicas"
    if "aether_node" in joined or "aether-node" in joined:
        return "nodes"
    return "other"


def cpu_by_process(directory: Path) -> dict[int, tuple[str, float]]:
    """(role, user + system CPU seconds) of each live process of the cluster under `directory`."""
    found = {}
    for process in processes_under(directory):
        try:
            fields = Path(f"/proc/{process.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        found[process.pid] = (role(process), (int(fields[11]) + int(fields[12])) / TICK)
    return found


async def log_position(kv: KVClient) -> tuple[int, int]:
    """(the leader's commit index, the key space's revision), as the replica asked knows them."""
    status = await kv.status()
    return status.commit_index, status.revision


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


async def measure_round(directory: Path, kv: KVClient, window: float) -> dict[str, float]:
    load_before = load()
    before, position = cpu_by_process(directory), await log_position(kv)
    started = time.monotonic()
    await trio.sleep(window)  # the measurement window itself: nothing is waited for
    after, end_position = cpu_by_process(directory), await log_position(kv)
    elapsed = time.monotonic() - started
    spent: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        if pid in before:  # a process that came or went during the window is not counted
            spent[name] = spent.get(name, 0.0) + seconds - before[pid][1]
    per_minute = 60.0 / elapsed
    print(
        f"  round: {sum(spent.values()) / elapsed:.2%} of a core over {elapsed:.1f} s; "
        + ", ".join(f"{name} {value / elapsed:.2%}" for name, value in sorted(spent.items()))
        + f"; log +{end_position[0] - position[0]}, revision +{end_position[1] - position[1]}"
        + f"; load {load_before} -> {load()}",
        flush=True,
    )
    return {
        "total": sum(spent.values()) / elapsed,
        **{name: value / elapsed for name, value in spent.items()},
        "log_per_minute": (end_position[0] - position[0]) * per_minute,
        "revisions_per_minute": (end_position[1] - position[1]) * per_minute,
    }


async def run(opts: argparse.Namespace, root: Path) -> list[dict[str, float]]:
    print("building the sample index", flush=True)
    index = await trio.to_thread.run_sync(build_index, root / "index")
    print("starting 3 nodes", flush=True)
    async with running_cluster(root / "cluster", index, 3) as cluster, kv_of(cluster) as kv:
        await put_blueprint(kv, "idle", SliceSpec(artifact=ECHO, instances=opts.instances))
        await wait_for(
            kv, exactly_active(opts.instances, ECHO), timeout=120, what="the echo instances", cluster=cluster
        )
        print(f"{opts.instances} echo instances ACTIVE; settling for {opts.settle:g} s", flush=True)
        await trio.sleep(opts.settle)  # start-up work (installs, first snapshots) is not idle cost
        return [await measure_round(root / "cluster", kv, opts.window) for _ in range(opts.rounds)]


def report(rounds: list[dict[str, float]], opts: argparse.Namespace) -> None:
    names = sorted({name for r in rounds for name in r})
    median = {name: statistics.median(r.get(name, 0.0) for r in rounds) for name in names}
    total = median["total"]
    shape = f"3 nodes, {opts.instances} echo instances, median of {len(rounds)} x {opts.window:g} s"
    print(f"\nIdle cluster, {shape}")
    ratio = total / TARGET_SHARE
    print(f"  CPU, whole cluster: {total:.2%} of one core (target <= {TARGET_SHARE:.0%}: {ratio:.2f}x of it)")
    for name in names:
        if name not in ("total", "log_per_minute", "revisions_per_minute"):
            print(f"    {name}: {median[name]:.2%}")
    print(f"  Raft log entries per idle minute: {median['log_per_minute']:.1f} (target 0)")
    print(f"  key-space revisions per idle minute: {median['revisions_per_minute']:.1f} (target 0)")
    print(f"  load average now: {load()}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=30.0, help="seconds per round")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after the instances are ACTIVE")
    parser.add_argument("--instances", type=int, default=6)
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aether-idle-bench-") as directory:
        rounds = trio.run(run, opts, Path(directory))
    report(rounds, opts)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
