"""Soak mode of the nemesis suite (`--soak MINUTES`): the workloads and a fault every few minutes for
that long, and once a minute a sample of every process's memory and open files, each node's watch
backlog (`aether_kv_watch_backlog_batches` on /metrics), each replica's Raft commit index, term, leader
and journal size, and the cluster's own health answer. Every sample is kept (`to_json`, written to
`soak-samples.json` in the run's directory).

At the end (`soak_violations`): memory, open files and journal size must be flat after the warm-up
(a least-squares slope per 10 minutes within a limit), every backlog must come back to about 0, and the
health answer must never say "healthy" while the sampler sees a node down or unregistered.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import trio
from chaos_checks import Series, Violation, after_warmup, backlog_drains, slope, trend
from chaos_nemesis import FILLER
from chaos_workloads import API_ERRORS

from aether_kv import KVError, open_client
from aether_node.client import ApiClient

if TYPE_CHECKING:
    from chaos_runner import Run, RunConfig

SAMPLE_EVERY = 60.0
LIMITS = {"rss_mib": 5.0, "fds": 5.0, "journal_mib": 2.0}  # growth per 10 min that counts as a leak
_BACKLOG = re.compile(r"^aether_kv_watch_backlog_batches(?:\{[^}]*\})?\s+([0-9.eE+-]+)", re.M)


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def kv_files_mib(directory: Path) -> float:
    """The size of a replica's files under `directory` (journal, snapshot), without the disk-full
    nemesis's filler beside them (a 124 MiB sample read as a leak: soak, 2026-12-04)."""
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            if name == FILLER:
                continue
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total / (1 << 20)


@attrs.define
class Soak:
    minute0: float = 0.0
    # (name, pid) → [(minute, value)]: a restarted process starts a new series
    series: dict[tuple[str, int], list[tuple[float, float]]] = attrs.field(factory=dict)
    backlog: dict[str, list[tuple[float, float]]] = attrs.field(factory=dict)
    commit: dict[str, list[tuple[float, float]]] = attrs.field(factory=dict)
    # node id → [(minute, term, leader's Raft address or "")]: a term that rises while the leader stays
    # is an election nobody needed (issue 18, item 5)
    terms: dict[str, list[tuple[float, int, str]]] = attrs.field(factory=dict)
    health: list[str] = attrs.field(factory=list)  # disagreements
    idle_entries_per_minute: float | None = None
    samples: int = 0

    def add(self, name: str, pid: int, minute: float, value: float | None) -> None:
        if value is not None:
            self.series.setdefault((name, pid), []).append((minute, value))

    async def sample(self, run: Run, http: httpx.AsyncClient) -> None:
        minute = (run.clock() - self.minute0) / 60
        self.samples += 1
        cluster = run.cluster
        for node in cluster.nodes:
            processes = [("node", node.process.pid)] if node.alive() and node.process else []
            processes += [("replica", pid) for pid in cluster.kv_replica_pids(node)]
            processes += [("slice", pid) for pid in cluster.slice_host_pids(node)]
            for role, pid in processes:
                self.add(f"{node.node_id} {role} rss_mib", pid, minute, _rss_mib(pid))
                self.add(f"{node.node_id} {role} fds", pid, minute, _fds(pid))
            kv_dir = node.data_dir / "kv"
            if kv_dir.exists() and node.alive():
                self.add(f"{node.node_id} journal_mib", node.starts, minute, kv_files_mib(kv_dir))
            with contextlib.suppress(httpx.HTTPError):
                text = (await http.get(f"http://{node.management}/metrics", timeout=5)).text
                if found := _BACKLOG.search(text):
                    self.backlog.setdefault(node.node_id, []).append((minute, float(found.group(1))))
            with contextlib.suppress(KVError, trio.TooSlowError), trio.fail_after(5):
                async with open_client([node.kv_endpoint], cluster.secret, request_timeout=2) as kv:
                    status = await kv.status()
                self.commit.setdefault(node.node_id, []).append((minute, float(status.commit_index)))
                self.terms.setdefault(node.node_id, []).append((minute, status.term, status.leader or ""))
        await self._health(run, minute)

    async def _health(self, run: Run, minute: float) -> None:
        cluster = run.cluster

        def status() -> Any:
            return ApiClient(cluster.management_urls, timeout=5).cluster_status()

        try:
            answer = await trio.to_thread.run_sync(status, abandon_on_cancel=True)
        except API_ERRORS:
            return
        seen_down = [n.node_id for n in cluster.nodes if not n.alive() or n.stopped]
        registered = {n.node_id for n in answer.nodes}
        unregistered = [n.node_id for n in cluster.nodes if n.node_id not in registered]
        if answer.healthy and (seen_down or unregistered):
            self.health.append(
                f"minute {minute:.1f}: healthy while down={seen_down} unregistered={unregistered}"
            )

    def violations(self, warmup: float) -> list[Violation]:
        found: list[Violation] = []
        for (name, _pid), points in self.series.items():
            limit = next(v for k, v in LIMITS.items() if name.endswith(k))
            if (
                v := trend(Series(name=name, points=tuple(points), limit_per_10min=limit), warmup)
            ) is not None:
                found.append(v)
        for node_id, points in self.backlog.items():
            if (v := backlog_drains(f"{node_id}", points)) is not None:
                found.append(v)
        found += [Violation(invariant="soak-health-honest", at=-1, message=h) for h in self.health]
        return found

    def table(self, warmup: float) -> list[str]:
        """Slopes per 10 min after the warm-up, per kind of series (worst), for the report."""
        worst: dict[str, float] = {}
        for (name, _pid), points in self.series.items():
            kind = " ".join(name.split()[1:])
            after = after_warmup(points, warmup)
            if len(after) >= 3:
                worst[kind] = max(worst.get(kind, float("-inf")), slope(after) * 10)
        lines = [
            f"slope per 10 min after {warmup:g} min warm-up, worst {k}: {v:+.2f}"
            for k, v in sorted(worst.items())
        ]
        for node_id, points in sorted(self.backlog.items()):
            lines.append(f"{node_id} watch backlog samples: {[int(y) for _, y in points]}")
        rates = [slope(p) for p in self.commit.values() if len(p) >= 2]
        if rates:
            lines.append(f"Raft commit index under load: {statistics.median(rates):.0f} entries/min")
        if self.idle_entries_per_minute is not None:
            lines.append(f"Raft log entries per idle minute: {self.idle_entries_per_minute:.0f}")
        for node_id, points in sorted(self.terms.items()):
            rises = term_rises(points)
            lines.append(f"{node_id} Raft term rises: {'; '.join(rises) if rises else 'none'}")
        return lines

    def to_json(self) -> dict[str, Any]:
        """Every sample, for the record (the report keeps only slopes and violations)."""
        return {
            "minute0": self.minute0,
            "samples": self.samples,
            "idle_entries_per_minute": self.idle_entries_per_minute,
            "series": [
                {"name": name, "pid": pid, "points": points} for (name, pid), points in self.series.items()
            ],
            "backlog": self.backlog,
            "commit": self.commit,
            "terms": self.terms,
            "health_disagreements": self.health,
        }


def term_rises(points: list[tuple[float, int, str]]) -> list[str]:
    """Each rise of one replica's term between two samples, and whether the leader it saw changed."""
    found = []
    for (_, term, leader), (minute, later_term, later_leader) in itertools.pairwise(points):
        if later_term > term:
            who = (
                "same leader"
                if leader and leader == later_leader
                else f"leader {leader or '-'} → {later_leader or '-'}"
            )
            found.append(f"minute {minute:.1f}: {term} → {later_term} ({who})")
    return found


async def idle_log_rate(run: Run, seconds: float = 60.0) -> float | None:
    """Raft entries committed per minute while nothing changes (no workload yet)."""

    async def commit() -> int | None:
        with contextlib.suppress(KVError, trio.TooSlowError), trio.fail_after(5):
            async with open_client(run.cluster.kv_endpoints, run.cluster.secret, request_timeout=2) as kv:
                return (await kv.status()).commit_index
        return None

    first = await commit()
    await trio.sleep(seconds)
    last = await commit()
    return None if first is None or last is None else (last - first) * 60 / seconds


def make_soak(minutes: float, *, fault_every: float = 150.0) -> tuple[Soak, Any]:
    """(the sampler's state, the `soak` callable for `run_chaos`)."""
    state = Soak()

    async def soak(run: Run, config: RunConfig, nursery: trio.Nursery) -> None:
        from chaos_runner import _one_round, schedule

        state.minute0 = run.clock()
        end = run.clock() + minutes * 60
        plan = schedule(attrs.evolve(config, rounds=int(minutes * 60 / fault_every) + 1), run.rng)

        async def sampler() -> None:
            async with httpx.AsyncClient() as http:
                while True:
                    await state.sample(run, http)
                    await trio.sleep(SAMPLE_EVERY)

        async with trio.open_nursery() as inner:
            inner.start_soon(sampler)
            for number, names in enumerate(plan, start=1):
                slot = state.minute0 + number * fault_every
                if slot + 120 > end:  # the last two minutes are calm: backlogs must drain by then
                    break
                await trio.sleep(max(0.0, slot - run.clock()))
                await _one_round(run, names, config)
            await trio.sleep(max(0.0, end - run.clock()))
            async with httpx.AsyncClient() as http:
                await state.sample(run, http)
            inner.cancel_scope.cancel()

    return state, soak
