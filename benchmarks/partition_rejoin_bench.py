"""How soon a cluster is whole again after a long network cut of its leader's node: the nemesis suite's
cluster (three nodes in network namespaces, the sample slices, KV and call workloads), the Raft leader's
node cut from the others by nftables for HOLD seconds (every packet dropped: a partition, not a refusal),
then healed; timed from the heal until every node serves its KV replica, the blueprint is whole and every
ingress answers (the runner's convergence check, every 0.5 s). Needs root, iproute2 and nftables.

    sudo uv run python benchmarks/partition_rejoin_bench.py                   # 2 cuts of 40 s
    sudo uv run python benchmarks/partition_rejoin_bench.py --hold 90 --rounds 3

The figure to watch grows with the cut when a link waits on TCP's backoff (a dial in SYN_SENT, data
retransmitted up to two minutes apart): the rejoin is printed with its ratio to the cut. To compare two
commits, run this script in a worktree of each (`git worktree add /tmp/wt-old COMMIT`), alternated.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for helpers in ("tests", "tests/integration", "tests/chaos"):  # support.py, linearizability.py, the runner
    sys.path.insert(0, str(REPO / helpers))

import trio  # noqa: E402
from chaos_runner import RunConfig, run_chaos  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", type=float, default=40.0, help="seconds each cut lasts")
    parser.add_argument("--rounds", type=int, default=2, help="cuts, one after the other")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="partition-rejoin-") as directory:
        config = RunConfig(
            directory=Path(directory),
            seed=args.seed,
            nemeses=("partition-leader",),
            rounds=args.rounds,
            in_order=True,
            hold=(args.hold, args.hold),
            converge_bound=150.0,
            churn=False,
            slow_calls=False,
        )
        report = trio.run(run_chaos, config)
    print(report.summary())
    rejoins = report.convergence_times()
    for fault in report.faults:
        took = f"{fault.converged:.1f} s" if fault.converged >= 0 else "not within 150 s"
        print(f"  {fault.description}: whole again {took} after the heal")
    if rejoins:
        median = statistics.median(rejoins)
        print(f"rejoin after a {args.hold:g} s cut: median {median:.1f} s, worst {max(rejoins):.1f} s;")
        print(f"  ratio to the cut: {median / args.hold:.3f} (median)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
