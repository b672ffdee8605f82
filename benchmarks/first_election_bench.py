"""How long a new KV group takes to elect its first leader: every replica starts empty, so each one is
"catching up" (`aether_kv/_pysyncobj_patches.py`, item 16) and must learn that the others are too before
it votes or stands. What `aether dev up` and every new cluster wait for.

    uv run python benchmarks/first_election_bench.py                # 8 groups of 3 replicas
    uv run python benchmarks/first_election_bench.py --runs 12 --replicas 5

Real replicas (`RaftReplica`) on free ports of 127.0.0.1, in this process, each group on a fresh data
directory, timed from the first replica's construction to the first replica that leads. The baseline is
the election timeout the group draws from (0.5-1.5 s, pysyncobj's raftMinTimeout/raftMaxTimeout): a
first election cannot be quicker than the lowest timeout of its replicas plus a pre-vote round. To compare
two commits, run this script in a worktree of each (`git worktree add /tmp/wt-old COMMIT`), alternated.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # support.py
sys.path.insert(0, str(REPO / "tests" / "aether_kv"))  # raft_support.py

from raft_support import raft_group  # noqa: E402

from aether_kv import RaftConfig  # noqa: E402

DEADLINE = 30.0  # s: a group that elects no one by then is a failure, said


def first_election(replicas: int) -> float:
    """Seconds from the group's start to its first leader."""
    with tempfile.TemporaryDirectory(prefix="first-election-") as directory:
        started = time.monotonic()
        group = raft_group(Path(directory), replicas)
        try:
            while not any(replica.is_leader for replica in group):
                if time.monotonic() - started > DEADLINE:
                    raise SystemExit(f"no leader within {DEADLINE:g} s")
                time.sleep(0.005)
            return time.monotonic() - started
        finally:
            for replica in group:
                replica.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--replicas", type=int, default=3)
    args = parser.parse_args()
    defaults = RaftConfig.__attrs_attrs__  # type: ignore[attr-defined]
    low, high = defaults.election_min.default, defaults.election_max.default
    load = os.getloadavg()[0]
    times = [first_election(args.replicas) for _ in range(args.runs)]
    median = statistics.median(times)
    print(
        f"first election of {args.replicas} empty replicas, {args.runs} groups: median {median:.2f} s"
        f" (each: {' '.join(f'{t:.2f}' for t in times)}); election timeout {low:g}-{high:g} s:"
        f" {median / low:.2f}x its lowest; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after"
    )


if __name__ == "__main__":
    main()
