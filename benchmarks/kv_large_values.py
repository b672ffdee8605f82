"""Large binary values through Raft: the time from proposal to commit of a 1 MiB random value on a
3-replica group in one process (real sockets on 127.0.0.1, real journals), with pysyncobj's pickle
protocol as the replicas use it (4, `_pysyncobj_patches` item 11) against upstream's 2, in alternating
child processes (the protocol is a module setting). Prints the medians, their ratio and the load average.

    uv run python benchmarks/kv_large_values.py [--rounds 4] [--puts 12] [--size 1048576]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _one_round(protocol: int, puts: int, size: int) -> list[float]:
    """In a child: a group of three, `puts` proposals of `size` random bytes, each waited for."""
    import pysyncobj.pickle

    import aether_kv._pysyncobj_patches  # noqa: F401  (the patches, then the protocol under test)
    from aether_kv import RaftConfig, free_port
    from aether_kv._raft import RaftReplica
    from aether_kv._records import Put

    setattr(pysyncobj.pickle, "__protocol", protocol)
    with tempfile.TemporaryDirectory() as directory:
        addresses = tuple(f"127.0.0.1:{free_port()}" for _ in range(3))
        replicas = [
            RaftReplica(
                RaftConfig(
                    raft_address=address,
                    peers=addresses,
                    data_dir=Path(directory) / str(i),
                    secret="a-benchmark-secret",
                )
            )
            for i, address in enumerate(addresses)
        ]
        try:
            deadline = time.monotonic() + 30
            while not any(r.is_leader for r in replicas) or any(r.status().leader is None for r in replicas):
                if time.monotonic() > deadline:
                    raise SystemExit("no leader within 30 s")
                time.sleep(0.05)
            leader = next(r for r in replicas if r.is_leader)
            times = []
            for i in range(puts):
                done = threading.Event()
                value = os.urandom(size)
                start = time.perf_counter()
                leader.propose(
                    Put(key=f"big/{i % 3}", value=value), lambda result, error, done=done: done.set()
                )
                if not done.wait(60):
                    raise SystemExit("a proposal was not committed within 60 s")
                times.append(time.perf_counter() - start)
            return times
        finally:
            for replica in replicas:
                replica.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each protocol, alternating")
    parser.add_argument("--puts", type=int, default=12, help="proposals per round")
    parser.add_argument("--size", type=int, default=1024 * 1024, help="bytes per value (random)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(_one_round(args.child, args.puts, args.size)))
        return
    print(f"load average before: {os.getloadavg()}")
    samples: dict[int, list[float]] = {2: [], 4: []}
    for round_number in range(args.rounds):
        for protocol in (2, 4) if round_number % 2 == 0 else (4, 2):
            command = [sys.executable, __file__, "--child", str(protocol), "--puts", str(args.puts)]
            output = subprocess.run(
                [*command, "--size", str(args.size)], capture_output=True, text=True, check=True
            )
            times = json.loads(output.stdout.strip().splitlines()[-1])
            samples[protocol] += times
            print(
                f"round {round_number + 1}, protocol {protocol}: p50 {statistics.median(times) * 1000:.0f} ms"
            )
    old, new = (statistics.median(samples[p]) for p in (2, 4))
    print(f"{args.size} random bytes, proposal to commit, p50 of {len(samples[2])} each:")
    print(f"  protocol 2 (upstream): {old * 1000:.0f} ms   protocol 4 (patched): {new * 1000:.0f} ms")
    print(f"  patched / upstream: {new / old:.2f}x the time")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
