"""Cluster orchestration benchmark: real `aether-node` processes on 127.0.0.1 (a local cluster from
`aether_node.dev`, 3 nodes, all Raft voters), the sample slices org.aether:echo and
org.aether:greeter.

    uv run python benchmarks/cluster_bench.py            # full run (~3 minutes on 2 cores)
    uv run python benchmarks/cluster_bench.py --quick    # fewer rounds, shorter load

What it measures (figures and notes: benchmarks/README.md, "Cluster orchestration"):

1. Deploy: blueprint `echo` with 30 instances (round_robin) written to the KV → all 30 records ACTIVE
   and their endpoints published, across 3 nodes, seen through KV watches. Packages are installed and
   templates started by a warm-up deploy first; median of 5 rounds (--quick: 3), each followed by deleting
   the blueprint (the unload time is printed too). Target ≤ 2 s.
1b. Curve (--only curve; --curve N,N,...: default 150,300,1000,3000,3000): blueprint `bench` with N echo
   instances → all ACTIVE and routable, after the same warm-up; then, with the N running, the median of
   20 `GET /api/v1/cluster` on the leader's node (one keep-alive connection) and of 5 `aether cluster
   status` runs (a new process each, with bytecode cached in a private PYTHONPYCACHEPREFIX as an
   installed CLI has it; and 5 more in this shell's environment, for information: with
   PYTHONDONTWRITEBYTECODE=1 every run compiles its dependencies again); then the blueprint deleted →
   nothing left. An N given twice is deployed again right after its first unload: on a virtual machine
   whose host takes back the memory the guest frees (free page reporting), memory the guest has not used
   lately costs it several times more per page than memory it just freed (page_fault_bench.py --mib:
   "fresh" against "again"), and the first 3,000 takes ~4 GiB of it; the second shows the cluster's own
   cost. Targets: 300 in ≤ 0.6 s, linear cost; the reads ≤ 5 ms and ≤ 0.3 s. Also printed: what
   this machine charges for the copy of a page shared after fork (page_fault_bench.py; an instance's
   start copies ~650, whatever this project's Python does: the figure moved 2-3x between hosts); the
   CPU time every process of the cluster spent on the deploy (nodes, KV replicas, templates, instances;
   from the scheduler's nanosecond count), per instance and split by kind of process, and the kernel's
   kdamond apart if it runs; with the N running, the cluster's idle CPU over 5 s, its memory (PSS and
   RSS by kind of process from /proc/PID/smaps_rollup, and how far MemAvailable fell) and the most file
   descriptors a node holds.
   Memory: an N is skipped (and said so) if its estimate does not fit in MemAvailable with 4 GiB to
   spare: 4.5 MiB per instance until one N was measured, then 1.25 × the larger of the last N's
   MemAvailable drop and its instances' summed PSS, per instance (~3.1–3.3 MiB: an instance forked from
   the template shares most of its 18 MiB RSS). While an N deploys, MemAvailable under 2 GiB aborts the
   run (every process of the cluster ended). The soft limit of open files is raised to the hard one.
2. Failover: with the 30 instances ACTIVE, SIGKILL a node that hosts some and is not the Raft leader →
   every record on the survivors ACTIVE again (30, none left on the dead node) and every ACTIVE instance's
   endpoint published (routable: the endpoint registry every router reads). Detection (the leader's
   liveness watch: a dropped peer connection and a refused probe revoke the lease; else the lease, TTL
   1.5 s) included: timed from the kill. The node is restarted between rounds and the cluster left to
   rebalance. Median of 3 rounds (--quick: 2). Target ≤ 2 s.
3. Failed calls while the leader dies: 4 concurrent callers of the idempotent `echo` through the two
   surviving nodes' ingresses (each call on the next ingress) for 10 s (--quick: 6 s); the Raft leader's
   node is SIGKILLed 2 s in. Failed = not 200 with the payload echoed. Target ≤ 0.01 %.
4. Slice-to-slice latency: `greet` of org.aether:greeter calls org.aether:echo through the cluster. Two
   greeters on two nodes (spread, 600 MiB each), one echo (bin_pack, 300 MiB: the tightest fit is beside
   a greeter; balancing local_first): one greeter reaches echo in-node, the other on another node. Each
   greeter is called through its own node's ingress (?balancing=local_first), sequentially on one
   keep-alive connection each, the two interleaved call by call so that both see the same machine;
   2,000 calls each (--quick: 500). Figure: p50 across − p50 in-node. Target ≤ 1 ms. Also printed:
   the same for a direct ingress→echo call.
5. Allocation: pure `allocate_all` for 1,000 nodes and 10,000 instances (100 slices × 100: round_robin,
   spread max 1 per node and bin_pack with resources), from nothing; median of 5. Target ≤ 100 ms.
   Also printed: the same with the result as current placement (steady state), after losing one node,
   and the reconcile planner (`_reconcile.plan`) over the 10,000 instances at steady state.

Everything runs from one directory (a new temporary one unless --dir; removed at the end unless --keep).
Every process of the cluster is ended at the end, on error and on SIGINT/SIGTERM; a deadline
(--time-limit) ends the run.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import trio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # support.py, which the integration helpers import
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "benchmarks"))  # page_fault_bench.py (also when imported, as a test does)

from cluster_support import (  # noqa: E402
    ECHO,
    ECHO_ID,
    GREETER,
    GREETER_ID,
    Callers,
    background,
    build_index,
    delete_blueprint,
    kv_of,
    leader_node_id,
    processes_under,
    put_blueprint,
    running_cluster,
    show,
    start_node,
)
from page_fault_bench import one_round as page_costs  # noqa: E402

from aether_kv import KVClient  # noqa: E402
from aether_node import (  # noqa: E402
    Balancing,
    Coordinates,
    EndpointRecord,
    InstanceKey,
    Resources,
    SliceRecord,
    SliceSpec,
    SliceState,
    Strategy,
    decode_record,
)
from aether_node.control import NodeCapacity, ObservedInstance, allocate_all, plan  # noqa: E402
from aether_node.dev import LocalNodeCluster, wait_until_ready  # noqa: E402

INSTANCES = 30
STEP_TIMEOUT = 60.0
TARGETS = {
    "deploy_s": 2.0,
    "failover_s": 2.0,
    "failed_pct": 0.01,
    "added_p50_ms": 1.0,
    "allocation_ms": 100.0,
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ====================================================================== watching the KV


class Mirror:
    """A live copy of one KV prefix (listing, then a watch from its revision); `changed` is set and
    replaced on every batch."""

    def __init__(self, kv: KVClient, prefix: str) -> None:
        self.kv = kv
        self.prefix = prefix
        self.data: dict[str, bytes] = {}
        self.changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listing = await self.kv.range(self.prefix, linearizable=True)
        self.data = {item.key: item.value for item in listing.kvs}
        task_status.started()
        watch = self.kv.watch(self.prefix, listing.revision + 1)
        try:
            async for events in watch:
                for event in events:
                    if event.kind == "put":
                        self.data[event.kv.key] = event.kv.value
                    else:
                        self.data.pop(event.kv.key, None)
                changed, self.changed = self.changed, trio.Event()
                changed.set()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await watch.aclose()


class ClusterView:
    """Slice records and endpoints of the cluster, mirrored through watches."""

    def __init__(self, kv: KVClient) -> None:
        self.slices = Mirror(kv, "slices/")
        self.endpoints = Mirror(kv, "endpoints/")
        self.nodes = Mirror(kv, "nodes/")
        self.mirrors = (self.slices, self.endpoints, self.nodes)
        self._parsed: dict[tuple[str, bytes], tuple[str, int, str, str, SliceState]] = {}
        self._endpoints: dict[bytes, EndpointRecord] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for mirror in self.mirrors:
                await nursery.start(mirror.run)
            task_status.started()

    def records(self, artifact_id: str) -> list[tuple[str, int, str, SliceState]]:
        """(coordinates, instance, node, state) of every record of `artifact_id`."""
        found = []
        for key, value in self.slices.data.items():
            parsed = self._parse(key, value)
            if parsed is not None and parsed[0] == artifact_id:
                found.append(parsed[1:])
        return sorted(found)

    def _parse(self, key: str, value: bytes) -> tuple[str, str, int, str, SliceState] | None:
        """(artifact id, coordinates, instance, node, state), decoded once per (key, value): at thousands
        of instances the watcher must not be what loads the machine."""
        found = self._parsed.get((key, value))
        if found is None:
            parsed = InstanceKey.parse(key)
            if parsed is None:
                return None
            state = decode_record(key, value, SliceRecord).state
            coordinates = parsed.coordinates
            found = (coordinates.artifact_id, str(coordinates), parsed.instance, parsed.node_id, state)
            if len(self._parsed) > 50_000:
                self._parsed.clear()
            self._parsed[(key, value)] = found
        return found

    def routable(self, coordinates: str, entry: str, instance: int, node_id: str) -> bool:
        value = self.endpoints.data.get(f"endpoints/{coordinates}/{instance}")
        if value is not None:
            record = self._endpoint(value)
            return record.node_id == node_id and entry in record.entries
        # the layout before one record per instance (a record per entry point), so that this script
        # measures a checkout from before that change too, alternated with this one
        value = self.endpoints.data.get(f"endpoints/{coordinates}/{entry}:{instance}")
        return value is not None and self._endpoint(value).node_id == node_id

    def _endpoint(self, value: bytes) -> EndpointRecord:
        """An endpoint record, decoded once per value (as `_parse` does the slice records): the check runs
        every 10 ms during a deploy, on the machine whose CPU the cluster needs."""
        found = self._endpoints.get(value)
        if found is None:
            found = decode_record("endpoint", value, EndpointRecord)
            if len(self._endpoints) > 50_000:
                self._endpoints.clear()
            self._endpoints[value] = found
        return found

    def all_active_and_routable(self, count: int, coordinates: str, nodes: set[str] | None = None) -> bool:
        if len(self.endpoints.data) < count:  # (so the full check runs once there may be enough: the
            return False  # observer must not take the CPU the deploy it times needs)
        found = self.records(coordinates.rsplit(":", 1)[0])
        return (
            len(found) == count
            and all(c == coordinates and s is SliceState.ACTIVE for c, _, _, s in found)
            and (nodes is None or all(n in nodes for _, _, n, _ in found))
            and all(self.routable(c, "echo", i, n) for c, i, n, _ in found)
        )

    async def until(
        self,
        condition: Callable[[], bool],
        timeout: float,
        what: str,
        *,
        settle: float = 0.0,
        timeline: Timeline | None = None,
    ) -> float:
        """The monotonic time at which `condition()` first held (checked on every change; with `settle`,
        at most once per `settle` seconds: a check over thousands of records costs CPU the cluster needs).
        With `timeline`, the view's counts and the machine's busy cores are sampled at every check."""
        with trio.move_on_after(timeout):
            while not condition():
                if timeline is not None:
                    timeline.sample(self)
                if settle:
                    await trio.sleep(settle)
                    continue
                changes = [mirror.changed for mirror in self.mirrors]
                async with trio.open_nursery() as nursery:

                    async def wake(event: trio.Event, scope: trio.CancelScope = nursery.cancel_scope) -> None:
                        await event.wait()
                        scope.cancel()

                    for event in changes:
                        nursery.start_soon(wake, event)
            return time.monotonic()
        records = self.records(ECHO_ID)
        states = collections.Counter(str(state) for *_, state in records)
        left = sorted(self.endpoints.data)[:5]
        raise BenchError(
            f"not within {timeout:g} s: {what}; {len(records)} records: {dict(states)};"
            f" {len(self.endpoints.data)} endpoints, e.g. {left}"
        )


class Timeline:
    """What a deploy looked like as it went: at each check of the view, the records by state, the
    endpoints, and how many of the machine's cores were busy since the check before (/proc/stat)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start again from now (a deploy's start)."""
        self.started = time.monotonic()
        self.rows: list[tuple[float, int, int, int, float]] = []
        self._cpu = machine_ticks()

    def sample(self, view: ClusterView) -> None:
        busy, total = machine_ticks()
        ticks = total - self._cpu[1]
        cores = (busy - self._cpu[0]) / ticks * (os.cpu_count() or 1) if ticks else 0.0
        self._cpu = (busy, total)
        records = view.records(ECHO_ID)
        active = sum(1 for *_, state in records if state is SliceState.ACTIVE)
        at = time.monotonic() - self.started
        self.rows.append((at, len(records), active, len(view.endpoints.data), cores))

    def render(self, every: float = 0.05) -> str:
        lines, next_at = ["    t(s)  records  active  endpoints  busy cores"], 0.0
        for at, records, active, endpoints, cores in self.rows:
            if at >= next_at:
                lines.append(f"    {at:5.3f}  {records:7d}  {active:6d}  {endpoints:9d}  {cores:4.2f}")
                next_at = at + every
        return "\n".join(lines)


# ====================================================================== 5. allocation (pure)


def allocation_case(nodes: int, slices: int, per_slice: int) -> tuple[list[SliceSpec], list[NodeCapacity]]:
    capacity = [NodeCapacity(node_id=f"node-{i:04d}", cpu=16.0, memory_mib=65536) for i in range(nodes)]
    specs = []
    for s in range(slices):
        kind = s % 4
        artifact = f"org.bench:slice-{s:03d}:1.0.0"
        if kind in (0, 1):
            specs.append(SliceSpec(artifact=artifact, instances=per_slice))
        elif kind == 2:
            specs.append(SliceSpec(artifact=artifact, instances=per_slice, strategy=Strategy.SPREAD))
        else:
            resources = Resources(cpu=0.25, memory_mib=256)
            specs.append(
                SliceSpec(
                    artifact=artifact, instances=per_slice, strategy=Strategy.BIN_PACK, resources=resources
                )
            )
    return specs, capacity


CPU_TIMES: dict[int, float] = {}  # id(function) → median CPU seconds of its last `timed` run
FASTEST: dict[int, float] = {}  # id(function) → fastest wall time of its last `timed` run


def timed(function: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    """Median wall time (s) of `rounds` calls, and the last result (median CPU time in CPU_TIMES: on a
    busy machine the wall time also counts waiting for a core)."""
    times, cpu = [], []
    result = None
    for _ in range(rounds):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = function()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    CPU_TIMES[id(function)] = statistics.median(cpu)
    FASTEST[id(function)] = min(times)
    return statistics.median(times), result


def phase_allocation(opts: argparse.Namespace) -> dict[str, Any]:
    specs, nodes = allocation_case(1000, 100, 100)
    total = sum(s.instances for s in specs)

    def fresh_allocation() -> dict[str, Any]:
        return allocate_all(specs, nodes, {})

    fresh, placements = timed(fresh_allocation, 5)
    fresh_cpu = CPU_TIMES[id(fresh_allocation)]
    fresh_min = FASTEST[id(fresh_allocation)]
    placed = sum(sum(p.counts.values()) for p in placements.values())
    unplaced = sum(p.unplaced for p in placements.values())
    current = {artifact: dict(p.counts) for artifact, p in placements.items()}
    steady, again = timed(lambda: allocate_all(specs, nodes, current), 5)
    moved = sum(again[a].counts != current[a] for a in current)
    lost = nodes[0].node_id
    survivors = nodes[1:]
    after_loss = {a: {n: c for n, c in counts.items() if n != lost} for a, counts in current.items()}
    loss, _ = timed(lambda: allocate_all(specs, survivors, after_loss), 5)

    observed = []
    revision = 1
    for spec in specs:
        for node_id, count in sorted(current[spec.artifact].items()):
            for _ in range(count):
                revision += 1
                coordinates = Coordinates.parse(spec.artifact)
                observed.append(
                    ObservedInstance(
                        node_id=node_id,
                        coordinates=coordinates,
                        instance=revision,
                        state=SliceState.ACTIVE,
                        key=f"slices/{node_id}/{spec.artifact}/{revision}",
                        mod_revision=revision,
                    )
                )
    planning, result = timed(lambda: plan(specs, nodes, observed), 3)
    figures = {
        "nodes": len(nodes),
        "instances": total,
        "placed": placed,
        "unplaced": unplaced,
        "allocation_ms": fresh * 1000,
        "allocation_cpu_ms": fresh_cpu * 1000,
        "allocation_min_ms": fresh_min * 1000,
        "steady_ms": steady * 1000,
        "steady_changed_slices": moved,
        "node_loss_ms": loss * 1000,
        "plan_ms": planning * 1000,
        "plan_actions": len(result.actions),
    }
    log(
        f"allocation: {total} instances on {len(nodes)} nodes: {fresh * 1000:.1f} ms fresh "
        f"(CPU {fresh_cpu * 1000:.1f} ms), "
        f"{steady * 1000:.1f} ms steady ({moved} slices changed), {loss * 1000:.1f} ms after a node loss; "
        f"plan {planning * 1000:.1f} ms ({len(result.actions)} actions)"
    )
    return figures


# ====================================================================== 1. deploy


async def deploy_round(
    kv: KVClient,
    view: ClusterView,
    count: int,
    *,
    between: Callable[[], Any] | None = None,
    timeline: Timeline | None = None,
    memory_mib: int = 0,
) -> tuple[float, float]:
    """Blueprint with `count` echo instances (each limited to `memory_mib`, if given) → all ACTIVE and
    routable; then deleted → no record left. Returns (deploy s, unload s). `between` (if given) is
    awaited while the instances run."""
    settle = 0.0 if count <= 100 else 0.01  # above 100, check every 10 ms, not on every watch batch
    started = time.monotonic()
    if timeline is not None:
        timeline.reset()
    resources = Resources(memory_mib=memory_mib)
    await put_blueprint(kv, "bench", SliceSpec(artifact=ECHO, instances=count, resources=resources))
    timeout = STEP_TIMEOUT + count * 0.05  # 3,000 instances: 210 s
    done = await view.until(
        lambda: view.all_active_and_routable(count, ECHO),
        timeout,
        f"{count} ACTIVE",
        settle=settle,
        timeline=timeline,
    )
    deploy = done - started
    if between is not None:
        await between()
    started = time.monotonic()
    await delete_blueprint(kv, "bench")
    gone = await view.until(
        lambda: not view.records(ECHO_ID) and not view.endpoints.data,
        timeout,
        "every record gone",
        settle=settle,
    )
    return deploy, gone - started


async def phase_deploy(kv: KVClient, view: ClusterView, opts: argparse.Namespace) -> dict[str, Any]:
    warm, _ = await deploy_round(kv, view, 3)  # installs echo on every node, starts the templates
    log(f"deploy: warm-up (install on 3 nodes) {warm:.2f} s")
    deploys, unloads = [], []
    for round_ in range(opts.deploy_rounds):
        deploy, unload = await deploy_round(kv, view, INSTANCES)
        deploys.append(deploy)
        unloads.append(unload)
        log(f"deploy round {round_ + 1}: {INSTANCES} ACTIVE in {deploy:.2f} s; unloaded in {unload:.2f} s")
    return {
        "deploy_s": statistics.median(deploys),
        "deploy_rounds": deploys,
        "unload_s": statistics.median(unloads),
        "warmup_s": warm,
    }


# ====================================================================== 1b. convergence at scale

# What a deploy of N may take per instance before one N has been measured (see instance_estimate_mib):
# an instance's PSS and the fall of MemAvailable came to 3.1-3.3 MiB per instance at N=1,000-3,000
# (2026-12-04); 25 % added, rounded up.
INSTANCE_MIB = 4.5
MEMORY_MARGIN_MIB = 4096  # left free for everything else on the machine, by the estimate
MEMORY_FLOOR_MIB = 2048  # while a deploy runs: MemAvailable below this aborts the run


def available_mib() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 0


def memory_kib(pids: list[int]) -> dict[int, tuple[int, int]]:
    """(RSS, PSS) in KiB of each live process of `pids` (/proc/PID/smaps_rollup). An instance forked from
    its template shares most of its pages with it: RSS counts them in every instance, PSS divides each
    shared page among its sharers, so the sum of PSS is what the processes take together."""
    found = {}
    for pid in pids:
        try:
            fields = dict(
                line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
            )
            found[pid] = (int(fields["Rss"].split()[0]), int(fields["Pss"].split()[0]))
        except (OSError, ValueError, KeyError):
            continue
    return found


def open_files(pid: int) -> int:
    """How many file descriptors `pid` holds (0 if it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def memory_figures(pids: list[int], kinds: dict[int, str]) -> dict[str, Any]:
    """Summed RSS and PSS (MiB) and the count of processes by kind, and the most file descriptors a node
    process holds."""
    figures: dict[str, Any] = {}
    for pid, (rss, pss) in memory_kib(pids).items():
        kind = kinds.get(pid, "node")
        figures[f"rss_{kind}_mib"] = figures.get(f"rss_{kind}_mib", 0.0) + rss / 1024
        figures[f"pss_{kind}_mib"] = figures.get(f"pss_{kind}_mib", 0.0) + pss / 1024
        figures[f"count_{kind}"] = figures.get(f"count_{kind}", 0) + 1
    figures["node_fds_max"] = max((open_files(p) for p, k in kinds.items() if k == "node"), default=0)
    return figures


def instance_estimate_mib(points: list[dict[str, Any]]) -> float:
    """What one more instance takes, by the last N measured: the larger of the drop of MemAvailable (what
    the N added to the machine, the nodes' and replicas' growth included) and the instances' summed PSS,
    per instance, 25 % added; INSTANCE_MIB before any N was measured. (Not RSS: an instance's 18 MiB RSS
    is mostly pages it shares with its template; not every process's PSS either: at a small N the nodes'
    fixed ~250 MiB would count per instance.)"""
    if not points:
        return INSTANCE_MIB
    last = points[-1]
    return 1.25 * max(last["available_drop_mib"], last.get("pss_instance_mib", 0.0)) / last["instances"]


@contextlib.asynccontextmanager
async def memory_guarded(seen: dict[str, Any]) -> AsyncIterator[None]:
    """Run the body while MemAvailable is checked every 0.2 s; should it fall under MEMORY_FLOOR_MIB,
    the body is cancelled and BenchError raised (the run then ends, and every process of the cluster
    with it, before the machine runs out of memory). The lowest MemAvailable seen goes to
    `seen["available_min_mib"]`, how many times it was read to `seen["looks"]`."""

    async def watch(scope: trio.CancelScope) -> None:
        while True:
            free = available_mib()
            seen["looks"] = seen.get("looks", 0) + 1
            seen["available_min_mib"] = min(free, seen.get("available_min_mib", free))
            if free < MEMORY_FLOOR_MIB:
                seen["aborted"] = f"MemAvailable {free:,} MiB < {MEMORY_FLOOR_MIB:,} MiB"
                scope.cancel()
                return
            await trio.sleep(0.2)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, nursery.cancel_scope)
        yield
        nursery.cancel_scope.cancel()
    if "aborted" in seen:  # a plain BenchError, not a group: main() reports it and ends the cluster
        raise BenchError(f"aborted: {seen['aborted']}")


def machine_ticks() -> tuple[int, int]:
    """(busy, all) clock ticks of all the machine's cores since boot (/proc/stat; busy: not idle, not
    iowait)."""
    with open("/proc/stat") as stat:
        ticks = [int(x) for x in stat.readline().split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def machine_busy_s() -> float:
    """The CPU time all the machine's cores have been busy since boot."""
    return machine_ticks()[0] / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each live process of `pids`, to the nanosecond (the scheduler's own
    count, summed over the process's threads: /proc/PID/task/TID/schedstat; /proc/PID/schedstat is the
    main thread's alone, and left out a KV replica's Raft thread, ~0.5 ms per instance deployed).
    /proc/PID/stat counts in clock ticks (10 ms) and truncates: an instance that used 5 ms showed 0."""
    found = {}
    for pid in pids:
        try:
            threads = os.listdir(f"/proc/{pid}/task")  # each thread's own count: schedstat is per thread
            found[pid] = (
                sum(int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0]) for t in threads)
                / 1e9
            )
        except (OSError, ValueError, IndexError):
            continue
    return found


def memory_monitors() -> list[int]:
    """Pids of the kernel's DAMON threads (kdamond), if the machine runs any. Not the cluster's, but its
    doing: monitoring physical memory, kdamond walks the reverse map of the pages it samples, and a page
    that thousands of forked instances share has thousands of mappings to walk (here: ~0.4 % of a core
    without the cluster, ~46 % with 3,900 idle instances). Counted apart, not in the cluster's sum."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().startswith("kdamond"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def process_kinds(pids: list[int]) -> dict[int, str]:
    """node, kv, template or instance (a slice host forked from another), for each live pid of `pids`."""
    seen: dict[int, tuple[str, int]] = {}
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            parent = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"aether_slice.host" in command:
            seen[pid] = ("host", parent)
        elif b"aether_kv" in command:
            seen[pid] = ("kv", parent)
        else:
            seen[pid] = ("node", parent)
    hosts = {pid for pid, (kind, _) in seen.items() if kind == "host"}
    return {
        pid: ("instance" if parent in hosts else "template") if kind == "host" else kind
        for pid, (kind, parent) in seen.items()
    }


def management_get(address: str, path: str, rounds: int) -> tuple[float, float]:
    """Median and fastest wall time of `rounds` GETs on one keep-alive connection."""
    host, _, port = address.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    times = []
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            connection.request("GET", path)
            response = connection.getresponse()
            data = response.read()
            times.append(time.perf_counter() - started)
            if response.status != 200:
                raise BenchError(f"GET {path}: {response.status} {data[:300]!r}")
    finally:
        connection.close()
    return statistics.median(times), min(times)


def cli_status(urls: str, rounds: int, env: dict[str, str]) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system, of that process alone) of `aether cluster
    status` with environment `env`, a new process each time."""
    aether = Path(sys.executable).with_name("aether")
    times, cpu = [], []
    for _ in range(rounds):
        with tempfile.TemporaryFile() as errors:
            started = time.perf_counter()
            process = subprocess.Popen(
                [str(aether), "cluster", "status", "--cluster", urls],
                stdout=subprocess.DEVNULL,
                stderr=errors,
                env=env,
            )
            _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage
            times.append(time.perf_counter() - started)
            process.returncode = os.waitstatus_to_exitcode(status)
            cpu.append(usage.ru_utime + usage.ru_stime)
            if process.returncode not in (0, 1):  # 1: the cluster says it is unhealthy (still an answer)
                errors.seek(0)
                raise BenchError(f"aether cluster status failed: {errors.read().decode()[-500:]}")
    return statistics.median(times), statistics.median(cpu)


def cli_environments(pycache: Path) -> dict[str, dict[str, str]]:
    """The CLI's environments: "bytecode" caches bytecode in a private `PYTHONPYCACHEPREFIX` (as an
    installed CLI has it; nothing is written into the environment or the sources; the first run writes
    it), "as is" is this shell's environment (with `PYTHONDONTWRITEBYTECODE=1` and an environment
    without `.pyc` files, every run compiles cyclopts, rich and attrs again: see cli_bench.py)."""
    cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = str(pycache)
    return {"bytecode": cached, "as is": dict(os.environ)}


async def phase_curve(
    cluster: LocalNodeCluster, kv: KVClient, view: ClusterView, opts: argparse.Namespace
) -> dict[str, Any]:
    """Blueprint of N echo instances → all ACTIVE and routable, for each N of --curve; at N, the management
    reads (`GET /api/v1/cluster` on the leader's node, `aether cluster status`). An N whose instances
    would not fit in the memory available (with a margin) is skipped, and said so."""
    warm, _ = await deploy_round(kv, view, 3, memory_mib=opts.memory_mib)
    log(f"curve: warm-up (install on 3 nodes) {warm:.2f} s")
    page_copy_us = statistics.median(page_costs(PAGE_PROBE_BYTES)["copy"] for _ in range(3))
    log(
        f"curve: this machine's copy of a page shared after fork (page_fault_bench.py): {page_copy_us:.2f} µs"
        f" (~650 per instance: {650 * page_copy_us / 1000:.2f} ms)"
    )
    leader = await leader_node_id(cluster, kv)
    management = cluster.plan(leader).management
    urls = ",".join(f"http://{cluster.plan(n.node_id).management}" for n in cluster.nodes)
    points: list[dict[str, Any]] = []
    skipped: list[str] = []
    monitors = memory_monitors()
    for count in opts.curve:
        free = available_mib()
        per_instance = instance_estimate_mib(points)
        needed = int(count * per_instance) + MEMORY_MARGIN_MIB
        if needed > free:
            skipped.append(
                f"{count} (needs ~{needed:,} MiB: {per_instance:.1f} MiB per instance and the margin;"
                f" {free:,} MiB available)"
            )
            log(f"curve: skipping N={count}: {skipped[-1]}")
            continue
        log(f"curve: N={count}: ~{needed:,} MiB needed with the margin, {free:,} MiB available")
        reads: dict[str, Any] = {"available_before_mib": free}
        before = cpu_seconds(processes_under(cluster.directory))
        monitors_before = sum(cpu_seconds(monitors).values())
        machine_before, own_before = machine_busy_s(), time.process_time()
        kv_before = await kv.status()

        async def measure_reads(
            reads: dict[str, Any] = reads,
            before: dict[int, float] = before,
            monitors_before: float = monitors_before,
            machine_before: float = machine_before,
            own_before: float = own_before,
            kv_before: Any = kv_before,
            count: int = count,
        ) -> None:
            # (first: what follows reads /proc for every process, on this machine's CPU)
            reads["cpu_machine_s"] = machine_busy_s() - machine_before
            reads["cpu_bench_s"] = time.process_time() - own_before
            kv_after = await kv.status()
            reads["kv_revisions"] = kv_after.revision - kv_before.revision
            reads["kv_entries"] = kv_after.commit_index - kv_before.commit_index
            pids = processes_under(cluster.directory)
            after, kinds = cpu_seconds(pids), process_kinds(pids)
            reads["cpu_s"] = sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
            for pid, cpu in after.items():
                key = f"cpu_{kinds.get(pid, 'node')}_s"
                reads[key] = reads.get(key, 0.0) + cpu - before.get(pid, 0.0)
            # The busiest node: the Raft leader's, which plans for the cluster besides its own instances.
            reads["cpu_node_max_s"] = max(
                (cpu - before.get(pid, 0.0) for pid, cpu in after.items() if kinds.get(pid) == "node"),
                default=0.0,
            )
            reads["cpu_kdamond_s"] = sum(cpu_seconds(monitors).values()) - monitors_before
            await trio.sleep(1.0)  # let the nodes' caches and the leader settle
            await idle_cpu(pids + monitors, {**kinds, **dict.fromkeys(monitors, "kdamond")}, reads)
            reads.update(memory_figures(pids, kinds))
            reads["available_drop_mib"] = reads["available_before_mib"] - available_mib()
            log(f"curve: N={count}: memory {memory_split(reads, count)}")
            log(f"curve: N={count}: idle CPU over {IDLE_SECONDS:g} s: {idle_split(reads)}")
            median, fastest = await trio.to_thread.run_sync(management_get, management, "/api/v1/cluster", 20)
            reads["cluster_get_ms"], reads["cluster_get_min_ms"] = median * 1000, fastest * 1000
            envs = cli_environments(cluster.directory.parent / "cli-pycache")
            await trio.to_thread.run_sync(cli_status, urls, 1, envs["bytecode"])  # writes the bytecode
            cli = await trio.to_thread.run_sync(cli_status, urls, 5, envs["bytecode"])
            reads["cli_status_s"], reads["cli_status_cpu_s"] = cli
            cli = await trio.to_thread.run_sync(cli_status, urls, 5, envs["as is"])
            reads["cli_status_as_is_s"], reads["cli_status_as_is_cpu_s"] = cli

        load = os.getloadavg()[0]
        timeline = Timeline() if opts.timeline else None
        async with memory_guarded(reads):
            deploy, unload = await deploy_round(
                kv, view, count, between=measure_reads, timeline=timeline, memory_mib=opts.memory_mib
            )
        if timeline is not None:
            log(f"curve: N={count}: the deploy as it went\n{timeline.render()}")
        point = {"instances": count, "deploy_s": deploy, "unload_s": unload, "load": load, **reads}
        point["per_s"] = count / deploy
        points.append(point)
        log(
            f"curve: N={count}: ACTIVE + routable in {deploy:.2f} s ({count / deploy:.0f}/s; "
            f"CPU of the cluster's processes {reads['cpu_s']:.1f} s, "
            f"{reads['cpu_s'] / count * 1000:.1f} ms per instance: {cpu_split(reads, count)}; "
            f"the machine's busy CPU {reads['cpu_machine_s']:.2f} s, this benchmark's "
            f"{reads['cpu_bench_s']:.2f} s; KV transactions {reads['kv_revisions']}, Raft entries "
            f"{reads['kv_entries']}); "
            f"GET /api/v1/cluster {reads['cluster_get_ms']:.1f} ms; `aether cluster status` "
            f"{cli_figures(reads)}; unloaded in {unload:.2f} s (load average {load:.1f})"
        )
    return {"points": points, "skipped": skipped, "page_copy_us": page_copy_us}


PAGE_PROBE_BYTES = 32 * 2**20
IDLE_SECONDS = 5.0


async def idle_cpu(pids: list[int], kinds: dict[int, str], figures: dict[str, Any]) -> None:
    """The CPU the cluster spends while nothing happens, over IDLE_SECONDS: `idle_{kind}_cpu_pct` (% of
    one core, summed over the processes of that kind). What the running instances cost in the
    background, and what a management read competes with."""
    before = cpu_seconds(pids)
    started = time.monotonic()
    await trio.sleep(IDLE_SECONDS)
    after = cpu_seconds(pids)
    elapsed = time.monotonic() - started
    for pid, cpu in after.items():
        key = f"idle_{kinds.get(pid, 'node')}_cpu_pct"
        figures[key] = figures.get(key, 0.0) + 100 * (cpu - before.get(pid, cpu)) / elapsed


def idle_split(figures: dict[str, Any]) -> str:
    """For example "instance 0.0 %, node 2.9 %, template 0.0 %, kv 0.7 % of a core"."""
    kinds = ("instance", "node", "template", "kv")
    parts = [f"{kind} {figures.get(f'idle_{kind}_cpu_pct', 0.0):.1f} %" for kind in kinds]
    if "idle_kdamond_cpu_pct" in figures:
        parts.append(f"(the kernel's kdamond {figures['idle_kdamond_cpu_pct']:.1f} %)")
    return ", ".join(parts) + " of a core"


def cli_figures(figures: dict[str, Any]) -> str:
    """`aether cluster status` wall (CPU), with bytecode and as this shell runs it."""
    return (
        f"{figures['cli_status_s']:.2f} s (CPU {figures['cli_status_cpu_s']:.2f} s) with bytecode,"
        f" {figures['cli_status_as_is_s']:.2f} s (CPU {figures['cli_status_as_is_cpu_s']:.2f} s) as is"
    )


def memory_split(figures: dict[str, Any], count: int) -> str:
    """Memory per instance and by kind, e.g. "instance PSS 3.07 MiB / RSS 18.30 MiB each (3000 instances);
    PSS of every process 9.42 GiB = 3.22 MiB per instance (node 3 × 86 MiB PSS (102 RSS), ...);
    MemAvailable fell by 9.14 GiB = 3.12 MiB per instance (lowest MemAvailable 12.4 GiB); node fds ≤
    2,020"."""
    instances = figures.get("count_instance", 0)
    each = max(instances, 1)
    drop = figures["available_drop_mib"]
    parts = []
    for kind in ("node", "kv", "template"):
        n = figures.get(f"count_{kind}", 0)
        if n:
            parts.append(
                f"{kind} {n} × {figures[f'pss_{kind}_mib'] / n:.0f} MiB PSS"
                f" ({figures[f'rss_{kind}_mib'] / n:.0f} RSS)"
            )
    pss = sum(v for k, v in figures.items() if k.startswith("pss_"))
    return (
        f"instance PSS {figures.get('pss_instance_mib', 0.0) / each:.2f} MiB / RSS"
        f" {figures.get('rss_instance_mib', 0.0) / each:.2f} MiB each ({instances} instances);"
        f" PSS of every process {pss / 1024:.2f} GiB = {pss / count:.2f} MiB per instance"
        f" ({', '.join(parts)}); MemAvailable fell by {drop / 1024:.2f} GiB = {drop / count:.2f} MiB"
        f" per instance (lowest MemAvailable {figures.get('available_min_mib', 0) / 1024:.1f} GiB);"
        f" node fds ≤ {figures['node_fds_max']:,}"
    )


def cpu_split(figures: dict[str, Any], count: int) -> str:
    """The CPU per instance by kind of process: "instance 4.0, node 3.3 (busiest 1.5), template 1.4, kv
    1.1 ms"."""
    kinds = ("instance", "node", "template", "kv")
    parts = [f"{kind} {figures.get(f'cpu_{kind}_s', 0.0) / count * 1000:.1f}" for kind in kinds]
    if "cpu_node_max_s" in figures:
        parts[1] += f" (busiest {figures['cpu_node_max_s'] / count * 1000:.1f})"
    if figures.get("cpu_kdamond_s"):
        parts.append(f"and apart, the kernel's kdamond {figures['cpu_kdamond_s'] / count * 1000:.1f}")
    return ", ".join(parts) + " ms"


# ====================================================================== 4. slice-to-slice latency


def interleaved_calls(targets: list[tuple[str, str, bytes]], count: int) -> list[list[float]]:
    """`count` POSTs to each (address, path, body), one keep-alive connection each, interleaved call by
    call (the order swapped every round) so that both see the same machine; latencies in seconds."""
    connections = []
    for address, _, _ in targets:
        host, _, port = address.rpartition(":")
        connections.append(http.client.HTTPConnection(host, int(port), timeout=30))
    latencies: list[list[float]] = [[] for _ in targets]
    try:
        for round_ in range(count):
            order = range(len(targets)) if round_ % 2 == 0 else reversed(range(len(targets)))
            for i in order:
                _, path, body = targets[i]
                started = time.perf_counter()
                connections[i].request("POST", path, body, {"content-type": "application/json"})
                response = connections[i].getresponse()
                data = response.read()
                latencies[i].append(time.perf_counter() - started)
                if response.status != 200:
                    raise BenchError(f"POST {path}: {response.status} {data[:300]!r}")
    finally:
        for connection in connections:
            connection.close()
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)]


async def phase_latency(
    cluster: LocalNodeCluster, kv: KVClient, view: ClusterView, opts: argparse.Namespace
) -> dict[str, Any]:
    """Two greeters on two nodes (600 MiB each: never two on a node), one echo (300 MiB, bin_pack: the
    tightest fit is beside a greeter) with local_first: one greeter calls echo in-node, the other across.
    Both greeters are called through their own node's ingress (local_first), interleaved."""
    greeters = SliceSpec(
        artifact=GREETER,
        instances=2,
        strategy=Strategy.SPREAD,
        max_per_node=1,
        resources=Resources(memory_mib=600),
        balancing=Balancing.LOCAL_FIRST,
    )
    echo = SliceSpec(
        artifact=ECHO,
        instances=1,
        strategy=Strategy.BIN_PACK,
        resources=Resources(memory_mib=300),
        balancing=Balancing.LOCAL_FIRST,
    )

    def ready(artifact_id: str, count: int) -> bool:
        found = view.records(artifact_id)
        return len(found) == count and all(s is SliceState.ACTIVE for *_, s in found)

    await put_blueprint(kv, "greeter", greeters)
    await view.until(lambda: ready(GREETER_ID, 2), STEP_TIMEOUT, "2 greeters ACTIVE")
    await put_blueprint(kv, "echo", echo)
    await view.until(lambda: ready(ECHO_ID, 1), STEP_TIMEOUT, "echo ACTIVE")
    await trio.sleep(0.5)  # every node's endpoint registry has caught up
    greeter_nodes = {n for _, _, n, _ in view.records(GREETER_ID)}
    ((_, _, echo_node, _),) = view.records(ECHO_ID)
    if echo_node not in greeter_nodes:
        raise BenchError(f"echo landed on {echo_node}, beside no greeter ({sorted(greeter_nodes)})")
    (remote_node,) = greeter_nodes - {echo_node}
    local_ingress, remote_ingress = cluster.plan(echo_node).ingress, cluster.plan(remote_node).ingress
    greet = f"/invoke/{GREETER_ID}/greet?balancing=local_first"
    direct = f"/invoke/{ECHO_ID}/echo?balancing=local_first"
    body = json.dumps({"name": "ada"}).encode()
    targets = [
        (local_ingress, greet, body),
        (remote_ingress, greet, body),
        (local_ingress, direct, body),
        (remote_ingress, direct, body),
    ]
    await trio.to_thread.run_sync(interleaved_calls, targets, 50)  # warm up connections and caches
    latencies = await trio.to_thread.run_sync(interleaved_calls, targets, opts.calls)
    p50 = [statistics.median(x) * 1000 for x in latencies]
    p99 = [percentile(x, 0.99) * 1000 for x in latencies]
    log(
        f"latency (echo on {echo_node}; greeters on {sorted(greeter_nodes)}; {opts.calls} calls each): "
        f"greet p50 in-node {p50[0]:.2f} ms / across {p50[1]:.2f} ms (p99 {p99[0]:.2f} / {p99[1]:.2f}); "
        f"ingress→echo p50 in-node {p50[2]:.2f} ms / across {p50[3]:.2f} ms"
    )
    await delete_blueprint(kv, "echo")
    await delete_blueprint(kv, "greeter")
    await view.until(lambda: not view.slices.data, STEP_TIMEOUT, "every record gone")
    return {
        "local_p50_ms": p50[0],
        "remote_p50_ms": p50[1],
        "added_p50_ms": p50[1] - p50[0],
        "local_p99_ms": p99[0],
        "remote_p99_ms": p99[1],
        "ingress_local_p50_ms": p50[2],
        "ingress_remote_p50_ms": p50[3],
        "ingress_added_p50_ms": p50[3] - p50[2],
        "calls": opts.calls,
    }


# ====================================================================== 2. failover


async def kill_and_measure(
    cluster: LocalNodeCluster, view: ClusterView, victim: str, survivors: set[str]
) -> dict[str, float]:
    """SIGKILL `victim`; seconds from the kill until its lease expired ("detected"), until the survivors
    hold every record ("placed") and until all are ACTIVE and routable there ("active")."""
    killed = time.monotonic()
    cluster.kill(victim, signal.SIGKILL)
    marks: dict[str, float] = {}

    async def mark(name: str, condition: Callable[[], bool], what: str) -> None:
        marks[name] = await view.until(condition, STEP_TIMEOUT, what) - killed

    def replaced() -> bool:
        return sum(1 for _, _, n, _ in view.records(ECHO_ID) if n in survivors) >= INSTANCES

    async with trio.open_nursery() as nursery:
        nursery.start_soon(mark, "detected", lambda: f"nodes/{victim}" not in view.nodes.data, "lease")
        nursery.start_soon(mark, "placed", replaced, "replacement records")
        nursery.start_soon(
            mark,
            "active",
            lambda: view.all_active_and_routable(INSTANCES, ECHO, survivors),
            f"{INSTANCES} ACTIVE on the survivors after {victim} was killed",
        )
    return marks


async def phase_failover(
    cluster: LocalNodeCluster, kv: KVClient, view: ClusterView, opts: argparse.Namespace
) -> dict[str, Any]:
    await put_blueprint(kv, "bench", SliceSpec(artifact=ECHO, instances=INSTANCES))
    everyone = {n.node_id for n in cluster.nodes}
    await view.until(lambda: view.all_active_and_routable(INSTANCES, ECHO), STEP_TIMEOUT, "30 ACTIVE")
    times: list[float] = []
    replaced_counts: list[int] = []
    detections: list[float] = []
    for round_ in range(opts.failover_rounds):
        leader = await leader_node_id(cluster, kv)
        hosting = collections.Counter(n for _, _, n, _ in view.records(ECHO_ID))
        candidates = sorted(
            (n for n in everyone if n != leader and hosting[n]), key=lambda n: (-hosting[n], n)
        )
        if not candidates:
            raise BenchError(f"no follower hosts an instance: {hosting}")
        victim = candidates[round_ % len(candidates)]
        survivors = everyone - {victim}
        lost = hosting[victim]
        marks = await kill_and_measure(cluster, view, victim, survivors)
        times.append(marks["active"])
        replaced_counts.append(lost)
        detections.append(marks["detected"])
        log(
            f"failover round {round_ + 1}: {victim} (hosting {lost}) killed → lease expired after "
            f"{marks['detected']:.2f} s, replacements placed after {marks['placed']:.2f} s, "
            f"all ACTIVE + routable after {marks['active']:.2f} s"
        )
        # Bring the node back and let the cluster even out again before the next round.
        start_node(cluster, victim)
        await wait_until_ready(cluster, timeout=STEP_TIMEOUT)
        rejoined = time.monotonic()

        def even() -> bool:
            counts = collections.Counter(n for _, _, n, _ in view.records(ECHO_ID))
            return (
                view.all_active_and_routable(INSTANCES, ECHO)
                and set(counts) == everyone
                and max(counts.values()) - min(counts.values()) <= 1
            )

        try:
            await view.until(even, STEP_TIMEOUT, "the cluster evened out again")
            log(f"  {victim} restarted; evened out {time.monotonic() - rejoined:.1f} s after it was ready")
        except BenchError as error:
            log(f"  {victim} restarted, but: {error}")
    return {
        "failover_s": statistics.median(times),
        "failover_rounds": times,
        "replaced": replaced_counts,
        "detection_s": statistics.median(detections),
        "detection_rounds": detections,
    }


# ====================================================================== 3. leader kill under load


async def phase_leader_kill(
    cluster: LocalNodeCluster, kv: KVClient, view: ClusterView, opts: argparse.Namespace
) -> dict[str, Any]:
    await view.until(lambda: view.all_active_and_routable(INSTANCES, ECHO), STEP_TIMEOUT, "30 ACTIVE")
    leader = await leader_node_id(cluster, kv)
    survivors = sorted(n.node_id for n in cluster.nodes if n.node_id != leader)
    callers = Callers([cluster.plan(n).ingress for n in survivors], ECHO_ID, "echo", concurrency=4)
    settled_after: float | None = None
    async with background(callers):
        started = time.monotonic()
        await trio.sleep(2.0)
        killed = time.monotonic()
        cluster.kill(leader, signal.SIGKILL)
        with trio.move_on_after(max(opts.load_seconds - 2.0, 1.0)):
            done = await view.until(
                lambda: view.all_active_and_routable(INSTANCES, ECHO, set(survivors)),
                STEP_TIMEOUT,
                "replacements",
            )
            settled_after = done - killed
            await trio.sleep_forever()
    elapsed = time.monotonic() - started
    total = len(callers.results)
    failed = len(callers.failures)
    if settled_after is None:  # the replacements may still come
        with trio.move_on_after(20):
            done = await view.until(
                lambda: view.all_active_and_routable(INSTANCES, ECHO, set(survivors)), 20, "replacements"
            )
            settled_after = done - killed
    latencies = sorted(r.latency for r in callers.results)
    around = [r for r in callers.results if killed - 0.5 <= r.at <= killed + 3.0]
    figures = {
        "leader": leader,
        "calls": total,
        "failed": failed,
        "failed_pct": 100.0 * failed / max(total, 1),
        "calls_per_s": total / elapsed,
        "max_latency_s": latencies[-1] if latencies else 0.0,
        "max_latency_near_kill_s": max((r.latency for r in around), default=0.0),
        "replacements_active_s": settled_after,
        "failures": callers.summary(),
        "records": show([]) if settled_after else str(view.records(ECHO_ID)),
    }
    log(
        f"leader kill: {leader} killed under load: {total} calls ({total / elapsed:.0f}/s), {failed} failed; "
        f"slowest call {figures['max_latency_s'] * 1000:.0f} ms; replacements ACTIVE after "
        + (f"{settled_after:.2f} s" if settled_after is not None else "NOT within the window + 20 s")
    )
    if failed:
        log(callers.summary())
    return figures


# ====================================================================== driver


def machine() -> str:
    """The machine and the interpreter the cluster runs on (the nodes, replicas and slices use this one:
    how it was built moves every figure, e.g. Debian's python3.11 against a plain build of pyenv's)."""
    cpu = platform.processor() or platform.machine()
    interpreter = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()} ({interpreter})"


def report(results: dict[str, Any], opts: argparse.Namespace) -> str:
    lines = []

    def row(name: str, value: str, target: str, ok: bool | None) -> None:
        verdict = "" if ok is None else ("meets" if ok else "MISSES")
        lines.append(f"| {name} | {value} | {target} | {verdict} |")

    lines.append("| measure | figure | target | |")
    lines.append("| --- | --- | --- | --- |")
    d = results.get("deploy")
    if d:
        rounds = ", ".join(f"{x:.2f}" for x in d["deploy_rounds"])
        row(
            f"blueprint → {INSTANCES} echo ACTIVE + routable on 3 nodes"
            f" (median of {len(d['deploy_rounds'])})",
            f"{d['deploy_s']:.2f} s ({rounds})",
            f"≤ {TARGETS['deploy_s']:g} s",
            d["deploy_s"] <= TARGETS["deploy_s"],
        )
        row("  blueprint deleted → all 30 unloaded (median)", f"{d['unload_s']:.2f} s", "", None)
    f = results.get("failover")
    if f:
        rounds = ", ".join(f"{x:.2f}" for x in f["failover_rounds"])
        row(
            f"SIGKILL a follower → replacements ACTIVE + routable (median of {len(f['failover_rounds'])})",
            f"{f['failover_s']:.2f} s ({rounds}; {', '.join(map(str, f['replaced']))} replaced)",
            f"≤ {TARGETS['failover_s']:g} s",
            f["failover_s"] <= TARGETS["failover_s"],
        )
        rounds = ", ".join(f"{x:.2f}" for x in f["detection_rounds"])
        row(
            "  of which: the node's lease expired (detection)",
            f"{f['detection_s']:.2f} s ({rounds})",
            "",
            None,
        )
    k = results.get("leader_kill")
    if k:
        row(
            f"failed calls, leader SIGKILLed under load ({k['calls']} calls, 4 callers)",
            f"{k['failed_pct']:.4f} % ({k['failed']})",
            f"≤ {TARGETS['failed_pct']:g} %",
            k["failed_pct"] <= TARGETS["failed_pct"],
        )
        settled = k["replacements_active_s"]
        row(
            "  the leader's instances replaced (ACTIVE + routable)",
            f"{settled:.2f} s" if settled is not None else "not within 30 s",
            "",
            None,
        )
        row("  slowest call around the kill", f"{k['max_latency_near_kill_s'] * 1000:.0f} ms", "", None)
    lat = results.get("latency")
    if lat:
        row(
            f"greeter→echo p50: echo on another node − on the same node ({lat['calls']} calls each)",
            f"{lat['added_p50_ms']:.2f} ms ({lat['remote_p50_ms']:.2f} − {lat['local_p50_ms']:.2f})",
            f"≤ {TARGETS['added_p50_ms']:g} ms",
            lat["added_p50_ms"] <= TARGETS["added_p50_ms"],
        )
        row(
            "  ingress→echo p50: echo on another node − on the ingress's node",
            f"{lat['ingress_added_p50_ms']:.2f} ms ({lat['ingress_remote_p50_ms']:.2f} − "
            f"{lat['ingress_local_p50_ms']:.2f})",
            "",
            None,
        )
    c = results.get("curve")
    if c:
        seen: set[int] = set()
        for point in c["points"]:
            n = point["instances"]
            again = " again, right after (on memory the machine just had back)" if n in seen else ""
            seen.add(n)
            load = f"load average {point['load']:.1f}"
            row(
                f"blueprint → {n:,} echo ACTIVE + routable on 3 nodes{again} ({load})",
                f"{point['deploy_s']:.2f} s ({point['per_s']:.0f}/s; CPU {point['cpu_s']:.1f} s ="
                f" {point['cpu_s'] / n * 1000:.1f} ms per instance ({cpu_split(point, n)});"
                f" unload {point['unload_s']:.2f} s)",
                "≤ 0.6 s" if n == 300 else "linear",
                point["deploy_s"] <= 0.6 if n == 300 else None,
            )
            row(
                f"  GET /api/v1/cluster / `aether cluster status` with {n:,} instances",
                f"{point['cluster_get_ms']:.1f} ms (fastest {point['cluster_get_min_ms']:.1f}) / "
                f"{cli_figures(point)}",
                "≤ 5 ms / ≤ 0.3 s",
                point["cluster_get_ms"] <= 5 and point["cli_status_s"] <= 0.3,
            )
            row(f"  memory with {n:,} instances", memory_split(point, n), "", None)
            row(f"  CPU of the idle cluster with {n:,} instances", idle_split(point), "", None)
        for skipped in c["skipped"]:
            row(f"  skipped N={skipped}", "", "", None)
        row(
            "  the machine's copy of a page shared after fork (an instance's start copies ~650)",
            f"{c['page_copy_us']:.2f} µs (~650: {650 * c['page_copy_us'] / 1000:.2f} ms)",
            "",
            None,
        )
    a = results.get("allocation")
    if a:
        row(
            f"allocate_all, {a['nodes']:,} nodes, {a['instances']:,} instances (median of 5)",
            f"{a['allocation_ms']:.1f} ms (fastest {a['allocation_min_ms']:.1f}; median CPU "
            f"{a['allocation_cpu_ms']:.1f})",
            f"≤ {TARGETS['allocation_ms']:g} ms",
            a["allocation_ms"] <= TARGETS["allocation_ms"],
        )
        row("  same, current = its result (steady state)", f"{a['steady_ms']:.1f} ms", "", None)
        row("  same, after losing 1 node", f"{a['node_loss_ms']:.1f} ms", "", None)
        row(f"  reconcile plan over {a['instances']:,} ACTIVE instances", f"{a['plan_ms']:.1f} ms", "", None)
    return "\n".join(lines)


async def run(opts: argparse.Namespace, root: Path, results: dict[str, Any]) -> None:
    with trio.fail_after(opts.time_limit):
        wanted = set(opts.only.split(",")) if opts.only else set(PHASES)
        if "allocation" in wanted:
            results["allocation"] = phase_allocation(opts)
        if not wanted & {"deploy", "curve", "latency", "failover", "leader_kill"}:
            return
        log("building the sample index")
        index = await trio.to_thread.run_sync(build_index, root / "index")
        log("starting 3 nodes")
        async with running_cluster(root / "cluster", index, 3) as cluster, kv_of(cluster) as kv:
            view = ClusterView(kv)
            async with background(view):
                if "deploy" in wanted:
                    results["deploy"] = await phase_deploy(kv, view, opts)
                if "curve" in wanted:
                    results["curve"] = await phase_curve(cluster, kv, view, opts)
                if "latency" in wanted:
                    results["latency"] = await phase_latency(cluster, kv, view, opts)
                if "failover" in wanted:
                    results["failover"] = await phase_failover(cluster, kv, view, opts)
                if "leader_kill" in wanted:
                    if "failover" not in wanted:
                        await put_blueprint(kv, "bench", SliceSpec(artifact=ECHO, instances=INSTANCES))
                    results["leader_kill"] = await phase_leader_kill(cluster, kv, view, opts)


PHASES = ("allocation", "deploy", "curve", "latency", "failover", "leader_kill")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter load")
    parser.add_argument("--dir", type=Path, help="work directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--only", default="", help="comma-separated phases: " + ",".join(PHASES))
    parser.add_argument(
        "--curve",
        default="150,300,1000,3000,3000",
        help="instance counts of the convergence curve (a count that does not fit in memory is skipped; a"
        " count given again is deployed again right after: see the README on memory a machine has not"
        " used lately)",
    )
    parser.add_argument(
        "--timeline", action="store_true", help="print each deploy of the curve as it went (counts, cores)"
    )
    parser.add_argument(
        "--memory-mib",
        type=int,
        default=0,
        help="the curve's echo declares this memory_mib (its limit: a memory cgroup per instance where the"
        " nodes may make them); 0: none. The nodes' capacity, 1024 MiB each, must hold N of them (8 for 300)",
    )
    parser.add_argument("--time-limit", type=float, default=900.0, help="deadline for the run, seconds")
    opts = parser.parse_args(argv)
    opts.curve = [int(n) for n in opts.curve.split(",") if n]
    opts.deploy_rounds = 3 if opts.quick else 5
    opts.failover_rounds = 2 if opts.quick else 3
    opts.load_seconds = 6.0 if opts.quick else 10.0
    opts.calls = 500 if opts.quick else 2000
    return opts


def raise_open_files_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit, for this process and the cluster it starts (the nodes
    inherit it): a node holds a few descriptors per instance it runs (1,000 at N=3,000)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log(f"open files limit raised from {soft:,} to {hard:,}")


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM → KeyboardInterrupt → cleanup
    raise_open_files_limit()
    if opts.dir is not None:
        opts.dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="run-", dir=opts.dir))
    else:
        root = Path(tempfile.mkdtemp(prefix="aether-cluster-bench-"))
    results: dict[str, Any] = {}
    load = os.getloadavg()
    log(f"work directory {root}; load average before the run {load[0]:.2f}")
    random.seed(1)
    code = 0
    try:
        trio.run(run, opts, root, results)
    except (BenchError, trio.TooSlowError) as error:
        log(f"benchmark failed: {error!r}")
        code = 1
    except KeyboardInterrupt:
        log("interrupted")
        code = 130
    finally:
        if not opts.keep:
            shutil.rmtree(root, ignore_errors=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["uv run python benchmarks/cluster_bench.py", *argv])
    after = os.getloadavg()
    print(
        f"\n{command}  ({stamp}; {machine()}; "
        f"1-min load average {load[0]:.2f} before, {after[0]:.2f} after)\n"
    )
    print(report(results, opts))
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
