"""One run of the nemesis suite: a cluster in network namespaces, the workloads, a seeded schedule of
faults, the invariants checked at the end, and a report.

`run_chaos(RunConfig(...))` does it all and returns a `Report` (its violations are data, not
exceptions). The schedule: each round picks one nemesis (or, combined, two at random), injects,
holds, heals, then waits until the cluster converges (bounded by `converge_bound`: not converging is
a violation) and measures how long that took. Whatever happens, every process, namespace, link and
mount of the run is removed at the end (also on an error or Ctrl-C); a killed runner leaves only
namespaces, which the next run sweeps.
"""

from __future__ import annotations

import collections
import contextlib
import json
import random
import re
import shutil
import signal
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from chaos_checks import Violation, executions, floor, kv_history, lost_writes
from chaos_cluster import NetCluster, Node, kill_pid
from chaos_nemesis import COMBINABLE, NEMESES, Nemesis, available
from chaos_net import Network, missing_tools
from chaos_workloads import (
    API_ERRORS,
    COUNTER,
    ECHO,
    AckWriter,
    BlueprintChurn,
    Clock,
    FloorSampler,
    Invokers,
    KVRegisters,
    ledger_blueprint,
)

from aether_kv import KVError, open_client
from aether_node.client import ApiClient
from aether_node.dev import build_sample_index
from support import TimedOut, wait_until, wait_until_sync

REPO = Path(__file__).resolve().parents[2]
SLICES = ("counter", "echo")  # the sample slices the suite deploys
# How often `wait_converged` checks (a check reads every node's records and calls each ingress): the
# convergence times in the report are measured to this resolution.
CONVERGED_CHECK_EVERY = 0.5


@attrs.frozen(kw_only=True)
class RunConfig:
    directory: Path
    seed: int
    nemeses: tuple[str, ...]  # the pool to draw from
    rounds: int = 4
    combine: bool = False  # two nemeses at once (drawn from the pool) instead of one
    in_order: bool = False  # round i uses nemeses[i % len] instead of a random draw
    nodes: int = 3
    hold: tuple[float, float] = (4.0, 8.0)  # seconds a fault lasts
    quiet: float = 2.0  # seconds of calm after convergence, before the next fault
    converge_bound: float = 90.0  # the stated bound: a cluster not converged by then is a violation
    churn: bool = True  # blueprint changes during the run
    slow_calls: bool = True  # some management API calls outlast the client's timeout
    soak_minutes: float = 0.0  # > 0: run faults and sample resources for that long (see chaos_soak)
    tmpfs_mib: int = 128


@attrs.define
class FaultRecord:
    nemesis: str
    description: str
    start: float
    healed: float = -1.0
    converged: float = -1.0  # seconds after the heal; -1: not within the bound
    loses_nodes: bool = False
    waited_on: str = ""  # what convergence waited on longest after the heal


@attrs.define
class Report:
    config: RunConfig
    date: str = ""
    faults: list[FaultRecord] = attrs.field(factory=list)
    violations: list[Violation] = attrs.field(factory=list)
    skipped: list[str] = attrs.field(factory=list)
    notes: list[str] = attrs.field(factory=list)
    counts: dict[str, Any] = attrs.field(factory=dict)
    failed_calls: list[str] = attrs.field(factory=list)  # the first 300, for the evidence
    duration: float = 0.0

    def convergence_times(self) -> list[float]:
        return [f.converged for f in self.faults if f.converged >= 0]

    def summary(self) -> str:
        times = self.convergence_times()
        conv = f"median {statistics.median(times):.1f} s, worst {max(times):.1f} s" if times else "-"
        lines = [
            f"chaos run seed={self.config.seed} nemeses={','.join(self.config.nemeses)} "
            f"combine={self.config.combine} rounds={self.config.rounds} ({self.duration:.0f} s, {self.date})",
            f"faults injected: {len(self.faults)}; convergence after heal: {conv}",
            "operations: " + ", ".join(f"{k}={v}" for k, v in self.counts.items()),
        ]
        lines += [
            f"  fault t={f.start:.1f}s {f.nemesis}: {f.description}; converged "
            + (f"{f.converged:.1f}s after heal" if f.converged >= 0 else "NOT within the bound")
            + (f" (waited on: {f.waited_on})" if f.waited_on and f.converged >= 5 else "")
            for f in self.faults
        ]
        lines += [f"  skipped: {s}" for s in self.skipped]
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"invariant violations: {len(self.violations)}")
        lines += [f"  {v}" for v in self.violations]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.config.seed,
            "nemeses": list(self.config.nemeses),
            "combine": self.config.combine,
            "rounds": self.config.rounds,
            "date": self.date,
            "duration": self.duration,
            "faults": [attrs.asdict(f) for f in self.faults],
            "violations": [attrs.asdict(v) for v in self.violations],
            "skipped": self.skipped,
            "notes": self.notes,
            "counts": self.counts,
            "failed_calls": self.failed_calls,
        }


@attrs.define
class Run:
    """What nemeses and checks act through during one run."""

    cluster: NetCluster
    network: Network
    rng: random.Random
    clock: Clock
    report: Report
    expected_down: set[str] = attrs.field(factory=set)
    recovering: set[str] = attrs.field(factory=set)  # taken down on purpose, cluster not converged since
    # nodes lost without a nemesis (an unasked death): [start, end or None until the cluster converged]
    lost_windows: list[list[float | None]] = attrs.field(factory=list)

    def violation(self, invariant: str, message: str, evidence: str = "") -> None:
        self.report.violations.append(
            Violation(invariant=invariant, at=self.clock(), message=message, evidence=evidence)
        )

    def note(self, text: str) -> None:
        self.report.notes.append(f"t={self.clock():.1f}s {text}")

    def expect_down(self, node: Node) -> None:
        self.expected_down.add(node.node_id)
        self.recovering.add(node.node_id)

    async def restart(self, node: Node) -> None:
        """Start a node the nemesis killed, after checking that nothing of it outlived it (10 s)."""
        if leftovers := await outlived(self.cluster, [node], 10.0):
            self.violation(
                "no-orphan",
                f"{len(leftovers)} processes of {node.node_id} outlived it by 10 s",
                "\n".join(f"{pid}: {' '.join(cmd)[:200]}" for pid, cmd in leftovers),
            )
            for pid, _ in leftovers:
                kill_pid(pid)
        if not node.alive():
            self.cluster.start(node)
        self.expected_down.discard(node.node_id)

    async def leader(self) -> Node | None:
        with contextlib.suppress(KVError), trio.move_on_after(5):
            async with open_client(self.cluster.kv_endpoints, self.cluster.secret, request_timeout=2.0) as kv:
                return self.cluster.by_raft((await kv.status()).leader)
        return None


def run_orphans(cluster: NetCluster, node: Node) -> list[tuple[int, tuple[str, ...]]]:
    found = cluster.orphans_of(node)
    # the tmpfs filler and the journal are files, not processes; a mount helper is not the node's
    return [(pid, cmd) for pid, cmd in found if cmd and "mount" not in cmd[0]]


async def outlived(
    cluster: NetCluster, nodes: list[Node], timeout: float
) -> list[tuple[int, tuple[str, ...]]]:
    """The processes of `nodes` (ended ones) still running `timeout` s on: none as soon as all are gone."""

    def left() -> list[tuple[int, tuple[str, ...]]]:
        return [p for n in nodes for p in run_orphans(cluster, n)]

    try:
        await wait_until(left, until=lambda found: not found, timeout=timeout, interval=0.1, what="no orphan")
    except TimedOut:  # a finding (a violation of the caller's), not a failure of the run
        return left()
    return []


# ---------------------------------------------------------------- convergence


async def converged(run: Run, http: httpx.AsyncClient) -> str | None:
    """None when the cluster is whole again; else what is still missing (one sentence)."""
    cluster = run.cluster
    down = [n.node_id for n in cluster.nodes if not n.alive()]
    if down:
        return f"node processes not running: {down}"
    leaders = set()
    for node in cluster.nodes:
        try:
            with trio.fail_after(3):
                async with open_client([node.kv_endpoint], cluster.secret, request_timeout=2.0) as kv:
                    status = await kv.status()
                    await kv.get("chaos/probe", linearizable=True)
        except (KVError, trio.TooSlowError) as error:
            return f"KV replica of {node.node_id} not serving: {type(error).__name__}: {error}"
        if not status.has_quorum:
            return f"KV replica of {node.node_id} sees no quorum"
        leaders.add(status.leader)
    if len(leaders) != 1:
        return f"replicas disagree on the leader: {sorted(str(x) for x in leaders)}"
    try:
        with trio.fail_after(5):
            async with open_client(cluster.kv_endpoints, cluster.secret, request_timeout=2.0) as kv:
                registered = {
                    i.key.rsplit("/", 1)[-1] for i in (await kv.range("nodes/", linearizable=True)).kvs
                }
    except (KVError, trio.TooSlowError) as error:
        return f"cannot read the node registry: {error}"
    missing = [n.node_id for n in cluster.nodes if n.node_id not in registered]
    if missing:
        return f"nodes not registered: {missing}"

    def ledger() -> str | None:
        status = ApiClient(cluster.management_urls, timeout=5).blueprint_status("chaos-ledger")
        failed = [i for s in status.slices for i in s.instances if i.state == "FAILED"]
        if not status.converged or failed:
            return "chaos-ledger: " + "; ".join(f"{s.artifact} {s.active}/{s.desired}" for s in status.slices)
        return None

    try:
        problem = await trio.to_thread.run_sync(ledger, abandon_on_cancel=True)
    except API_ERRORS as error:
        return f"management API: {type(error).__name__}: {error}"
    if problem:
        return problem
    for node in cluster.nodes:
        try:
            response = await http.post(
                f"http://{node.ingress}/invoke/{COUNTER}/record_idempotent",
                content=json.dumps({"id": f"probe-{run.clock():.1f}"}).encode(),
                headers={"content-type": "application/json"},
                timeout=5,
            )
        except httpx.HTTPError as error:
            return f"ingress of {node.node_id}: {type(error).__name__}"
        if response.status_code != 200:
            return f"ingress of {node.node_id}: {response.status_code} {response.text[:120]}"
    return None


async def wait_converged(run: Run, bound: float) -> tuple[float, str]:
    """(seconds until `converged`, what it waited on longest); -1 (and a violation) if not within
    `bound`."""
    started = run.clock()
    last: str | None = "not checked"
    waited: collections.Counter[str] = collections.Counter()
    async with httpx.AsyncClient() as http:

        async def missing() -> str | None:
            nonlocal last
            if (last := await converged(run, http)) is not None:
                waited[last[:60]] += 1
            return last

        try:
            await wait_until(
                missing,
                until=lambda problem: problem is None,
                timeout=bound,
                interval=CONVERGED_CHECK_EVERY,
                what="the cluster to converge",
            )
        except TimedOut:  # a violation, recorded below: the run goes on
            tails = "\n".join(f"--- {n.node_id}\n{run.cluster.log_tail(n, 12)}" for n in run.cluster.nodes)
            run.violation("converges", f"not converged {bound:g} s after the heal: {last}", tails)
            return -1.0, last or ""
    run.recovering.clear()
    for window in run.lost_windows:
        window[1] = run.clock() if window[1] is None else window[1]
    return run.clock() - started, waited.most_common(1)[0][0] if waited else ""


# ---------------------------------------------------------------- the death watch


_EXCEPTION_LINE = re.compile(r"^[\s|+]*((?:[A-Za-z_][\w.]*)(?:Error|Exception)\b:.*)$", re.M)


def death_cause(log: str) -> str:
    """The innermost exception of the node's last traceback (the last "SomethingError: ..." line)."""
    found = _EXCEPTION_LINE.findall(log)
    return found[-1].strip()[:240] if found else "no traceback in the log"


async def death_watch(run: Run) -> None:
    """A node process that exits without the nemesis asking is a violation; it is restarted so the
    run goes on."""
    while True:
        for node in run.cluster.nodes:
            if node.node_id in run.expected_down or node.process is None:
                continue
            code = node.process.poll()
            if code is not None:
                cause = death_cause(run.cluster.log_tail(node, 200))
                run.violation(
                    "no-unasked-death",
                    f"{node.node_id} exited with {code} unasked; cause: {cause}",
                    run.cluster.log_tail(node, 25),
                )
                run.lost_windows.append([run.clock(), None])
                run.expect_down(node)
                await run.restart(node)
        await trio.sleep(0.2)  # a watch for the whole run, not a wait for one thing


# ---------------------------------------------------------------- one run


def build_index(directory: Path) -> Path:
    source = directory / "slices"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    for name in SLICES:
        shutil.copytree(
            REPO / "sample-slices" / name,
            source / name,
            ignore=shutil.ignore_patterns("__pycache__", "build", "dist"),
        )
    index = directory / "index"
    build_sample_index(source, index)
    return index


async def wait_ready(run: Run, timeout: float) -> None:
    async with httpx.AsyncClient() as http:

        async def problem() -> str | None:
            for node in run.cluster.nodes:
                if not node.alive():
                    raise RuntimeError(f"{node.node_id} exited at start:\n{run.cluster.log_tail(node)}")
            try:
                async with open_client(
                    run.cluster.kv_endpoints, run.cluster.secret, request_timeout=2.0
                ) as kv:
                    registered = (await kv.range("nodes/", linearizable=True)).kvs
                for node in run.cluster.nodes:  # the ingress and the management API (which starts later)
                    (await http.get(f"http://{node.ingress}/healthz", timeout=2)).raise_for_status()
                    (await http.get(f"http://{node.management}/healthz", timeout=2)).raise_for_status()
            except (KVError, httpx.HTTPError) as error:
                return str(error)
            if len(registered) < len(run.cluster.nodes):
                return f"{len(registered)} of {len(run.cluster.nodes)} nodes registered"
            return None

        await wait_until(
            problem,
            until=lambda found: found is None,
            timeout=timeout,
            interval=0.3,
            what="every node registered, its ingress and management API healthy",
        )


async def apply_and_wait(cluster: NetCluster, toml_text: str, name: str, timeout: float) -> None:
    def work() -> None:
        api = ApiClient(cluster.management_urls, timeout=10)
        api.apply_blueprint(toml_text)
        wait_until_sync(
            lambda: api.blueprint_status(name),
            until=lambda status: status.converged,
            timeout=timeout,
            interval=0.3,
            what=f"{name} to converge",
        )

    await trio.to_thread.run_sync(work)


def schedule(config: RunConfig, rng: random.Random) -> list[list[str]]:
    """The nemeses of each round, drawn with the seeded rng."""
    rounds = []
    for number in range(config.rounds):
        if config.in_order:
            rounds.append([config.nemeses[number % len(config.nemeses)]])
        elif config.combine:
            pool = [n for n in config.nemeses if n in COMBINABLE] or list(config.nemeses)
            rounds.append(rng.sample(pool, k=min(2, len(pool))))
        else:
            rounds.append([rng.choice(config.nemeses)])
    return rounds


async def _one_round(run: Run, names: list[str], config: RunConfig) -> None:
    hold = run.rng.uniform(*config.hold)
    nemeses: list[Nemesis] = [NEMESES[name]() for name in names]
    records = []
    for nemesis in nemeses:
        start = run.clock()
        description = await nemesis.inject(run)
        records.append(
            FaultRecord(
                nemesis=nemesis.name, description=description, start=start, loses_nodes=nemesis.loses_nodes
            )
        )
    async with trio.open_nursery() as nursery:
        for nemesis in nemeses:
            nursery.start_soon(nemesis.during, run, hold)
    for nemesis in nemeses:
        await nemesis.heal(run)
    healed = run.clock()
    took, waited_on = await wait_converged(run, config.converge_bound)
    for record in records:
        record.healed = healed
        record.converged = took
        record.waited_on = waited_on
    run.report.faults.extend(records)


async def run_chaos(config: RunConfig, *, soak: Callable[..., Any] | None = None) -> Report:
    """One run (see the module docstring). Raises only for a broken harness (no namespaces, a cluster
    that never started); everything the cluster does wrong is in the report's violations. SIGTERM (a CI
    timeout, `kill`) cancels the run, which then cleans up like on any error, and raises
    KeyboardInterrupt."""
    interrupted = False
    report: Report | None = None
    async with trio.open_nursery() as outer:

        async def watch_sigterm(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            nonlocal interrupted
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                task_status.started()
                async for _ in signals:
                    interrupted = True
                    outer.cancel_scope.cancel()
                    return

        await outer.start(watch_sigterm)
        report = await _run_chaos(config, soak)
        outer.cancel_scope.cancel()
    if interrupted or report is None:
        raise KeyboardInterrupt("SIGTERM: the chaos run was cancelled and cleaned up")
    return report


async def _run_chaos(config: RunConfig, soak: Callable[..., Any] | None) -> Report:
    report = Report(config=config, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    missing = missing_tools()
    if missing:
        raise RuntimeError(f"cannot build the namespaces: missing {', '.join(missing)}")
    usable, skipped = available(list(config.nemeses))
    report.skipped += skipped
    config = attrs.evolve(config, nemeses=tuple(usable))
    report.config = config
    if not usable:
        return report
    config.directory.mkdir(parents=True, exist_ok=True)
    index = await trio.to_thread.run_sync(build_index, config.directory)
    rng = random.Random(config.seed)
    clock = Clock()
    network = Network.create(config.nodes)
    cluster = None
    try:
        cluster = NetCluster.plan(
            config.directory / "cluster", network, str(index), tmpfs_mib=config.tmpfs_mib
        )
        run = Run(cluster=cluster, network=network, rng=rng, clock=clock, report=report)
        cluster.start_all()
        await wait_ready(run, 120)
        journal = cluster.directory / "journal.log"
        await apply_and_wait(cluster, ledger_blueprint(str(journal)), "chaos-ledger", 90)
        ledger_since = clock()
        endpoints = cluster.kv_endpoints
        kv = KVRegisters(
            endpoints=endpoints,
            secret=cluster.secret,
            clock=clock,
            seed=config.seed,
            clients=2 if soak is not None else 4,  # a soak's history must stay checkable
        )
        acks = AckWriter(
            endpoints=endpoints, secret=cluster.secret, clock=clock, cycle=2000 if soak is not None else 0
        )
        if soak is not None:
            from chaos_soak import idle_log_rate

            idle = await idle_log_rate(run)
            report.counts["raft_entries_per_idle_minute"] = idle if idle is not None else "n/a"
        invokers = Invokers(
            ingresses=[n.ingress for n in cluster.nodes],
            management_urls=cluster.management_urls,
            clock=clock,
            seed=config.seed,
            slow_every=10 if config.slow_calls else 0,
            is_down=lambda ingress: any(
                n.ingress == ingress and n.node_id in run.recovering for n in cluster.nodes
            ),
        )
        churn = BlueprintChurn(management_urls=cluster.management_urls, clock=clock)
        floors: dict[str, Callable[[float], int]] = {
            COUNTER: lambda at: 2 if at >= ledger_since else 0,
            ECHO: lambda at: 2 if churn.floor_applies(at) else 0,
        }
        sampler = FloorSampler(
            endpoints=endpoints,
            secret=cluster.secret,
            clock=clock,
            node_ids=[n.node_id for n in cluster.nodes],
            floors=floors,
        )
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for workload in (kv, acks, invokers, sampler) + ((churn,) if config.churn else ()):
                await nursery.start(workload.run)
            nursery.start_soon(death_watch, run)
            if soak is not None:
                await soak(run, config, nursery)
            else:

                async def every_workload_made_progress() -> bool:
                    return bool(kv.history and acks.acknowledged and invokers.calls and sampler.samples)

                # no fault before every workload is under way (a condition, not a warm-up sleep)
                await wait_until(every_workload_made_progress, timeout=60, what="every workload under way")
                for names in schedule(config, rng):
                    await _one_round(run, names, config)
                    await trio.sleep(config.quiet)
            nursery.cancel_scope.cancel()
        report.duration = time.monotonic() - started
        # the checks of the whole history
        try:
            with trio.fail_after(60):
                present = await acks.present()
        except (KVError, trio.TooSlowError) as error:
            run.violation("converges", f"the final read of the acknowledged writes failed: {error!r}")
        else:
            report.violations += lost_writes(acks.acknowledged, present)
        lines = journal.read_text().splitlines() if journal.exists() else []
        report.violations += executions(invokers.calls, lines)
        exempt = [
            (f.start, f.healed + (f.converged if f.converged >= 0 else config.converge_bound))
            for f in report.faults
            if f.loses_nodes
        ] + [(start, end if end is not None else run.clock()) for start, end in run.lost_windows]
        report.violations += floor(sampler.samples, exempt, recovery=config.converge_bound)
        report.violations += await trio.to_thread.run_sync(kv_history, kv.history)
        report.counts |= {
            "kv_ops": kv.operations,
            "kv_unknown_or_unavailable": kv.failed,
            "acked_writes": len(acks.acknowledged),
            "write_attempts": acks.attempts,
            "calls": len(invokers.calls),
            "failed_calls": invokers.failed,
            "failed_calls_outside_killed_ingress": invokers.failed_outside_down,
            "blueprint_ops": churn.operations,
            "blueprint_failures": len(churn.failed),
            "floor_samples": len(sampler.samples),
        }
        kinds = collections.Counter(
            f"{c.caller.split(':')[0]} {c.outcome}: {c.detail.split(':')[0][:60]}"
            for c in invokers.calls
            if c.outcome != "ok"
        )
        report.notes += [f"{n} x failed call {kind}" for kind, n in kinds.most_common(6)]
        report.failed_calls = [
            f"t={c.at:.1f}s {c.request_id} {c.caller} {c.outcome}: {c.detail[:160]}"
            for c in invokers.calls
            if c.outcome != "ok"
        ][:300]
        report.notes += churn.failed[:10] + churn.log[-6:]
        # a clean stop: every node ends, and nothing of them is left behind
        await trio.to_thread.run_sync(cluster.stop_all)
        if leftovers := await outlived(cluster, cluster.nodes, 10.0):
            run.violation(
                "no-orphan",
                f"{len(leftovers)} processes outlived a clean stop by 10 s",
                "\n".join(f"{pid}: {' '.join(cmd)[:200]}" for pid, cmd in leftovers),
            )
    finally:
        if cluster is not None:
            cluster.end()
        network.destroy()
    (config.directory / "report.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return report
