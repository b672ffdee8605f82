"""The leader's pure work per reconcile pass, mid-deploy: N echo instances of one slice on 3 nodes, half
ACTIVE and the rest LOADING/ACTIVATING/ACTIVATE (a pass that finds nothing to do, as most passes of a
deploy do). One pass = `rollouts` (canary and blue-green), `node_delays` (the rebalance delay's bookkeeping)
and `plan`, each given the instances either as the leader now keeps them (an `InstanceIndex`,
brought up to date record by record from its watch) or as a plain list (indexed afresh by each planner:
a full pass over every instance, what a pass cost before the leader kept the index). Prints the median
CPU time of each over ROUNDS passes and their ratio, in the same run, with the load average.

    uv run python benchmarks/leader_pass_bench.py                # N = 300, 1000, 3000
    uv run python benchmarks/leader_pass_bench.py 150 300 10000
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Iterable

from aether_node import Coordinates, SliceSpec, SliceState
from aether_node.control import InstanceIndex, NodeCapacity, ObservedInstance, node_delays, plan, rollouts

ROUNDS = 30
NODES = [NodeCapacity(node_id=f"n{i}", cpu=64.0, memory_mib=1 << 20) for i in range(3)]
WORKING = (SliceState.LOADING, SliceState.ACTIVATING, SliceState.ACTIVATE, SliceState.ACTIVE)


def deploying(count: int) -> list[ObservedInstance]:
    coordinates = Coordinates.parse("org.aether:echo:1.0.0")
    return [
        ObservedInstance(
            node_id=f"n{i % 3}",
            coordinates=coordinates,
            instance=i + 1,
            state=SliceState.ACTIVE if i < count // 2 else WORKING[i % 4],
            key=f"slices/n{i % 3}/{coordinates}/{i + 1}",
            mod_revision=i + 1,
        )
        for i in range(count)
    ]


def one_pass(spec: SliceSpec, instances: Iterable[ObservedInstance] | InstanceIndex) -> None:
    steered = rollouts([spec], instances, {}, now=1.0)
    node_delays(instances, {n.node_id for n in NODES}, {})
    result = plan(steered.specs, NODES, instances, now=1.0, held=steered.held)
    assert not result.actions, result.actions[:3]  # mid-deploy, nothing to do


def median_cpu_ms(spec: SliceSpec, instances: list[ObservedInstance] | InstanceIndex) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.process_time()
        one_pass(spec, instances)
        times.append(time.process_time() - started)
    return statistics.median(times) * 1000


def main(counts: list[int]) -> None:
    print(f"load average before: {os.getloadavg()[0]:.2f}; median CPU of {ROUNDS} passes each")
    print("| N | kept index (the leader now) | plain list (a full pass) | list / index |")
    print("| --- | --- | --- | --- |")
    for count in counts:
        spec = SliceSpec(artifact="org.aether:echo:1.0.0", instances=count)
        every = deploying(count)
        index = InstanceIndex.of(every)
        # alternated, so that the machine's load hits both alike
        kept, full = [], []
        for _ in range(3):
            kept.append(median_cpu_ms(spec, index))
            full.append(median_cpu_ms(spec, every))
        k, f = statistics.median(kept), statistics.median(full)
        print(f"| {count:,} | {k:.3f} ms | {f:.2f} ms | {f / k:.0f}× |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [300, 1000, 3000])
