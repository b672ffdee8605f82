"""Prometheus metrics of one node: the one module that owns a prometheus_client registry.

Each node has a registry of its own (never the process-global one: tests run several nodes in one
process). Hot paths (invocations, lifecycle writes, reconciliation passes) add to counters and
histograms; what describes state (instances by state, the KV replica's status, slice process memory and
CPU) is read at scrape time, so it costs nothing between scrapes. Metrics are local to the node: they
never go through consensus. With `enabled=False` nothing is recorded and nothing is served.

Label sets are bounded: artifacts and entry points are labels only once a call reached a real endpoint
(a typo'd URL counts under `_unknown`), states and error kinds are closed sets, instance numbers are
bounded by the blueprints. A slice instance's number is the label `slice_instance` (Prometheus gives
every scraped series an `instance` label of its own: the target).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs
import trio
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.process_collector import ProcessCollector

from aether_kv import KV, KVError, Status

from ..client import CallStats
from ..core._coordinates import Coordinates
from ..core._error_kinds import ErrorKind

# A `*_created` series per counter and histogram doubles what a scrape carries and nobody reads them.
disable_created_metrics()
# The classic text format every Prometheus reads (our names are all legacy-valid, so the text is the same).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNKNOWN = "_unknown"
# Ingress p50 is about 1 ms on loopback; slices may take seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Errors that can happen before any endpoint was found: their artifact/entry may be anything a caller typed
# (and any error of a call that found no endpoint: `routed=False`, e.g. `unavailable` for a deployed slice
# with no ACTIVE instance, whose entry point nothing could check).
_UNROUTED = frozenset({ErrorKind.NO_ENDPOINT, ErrorKind.BAD_REQUEST})
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# ---------------------------------------------------------------- slice process usage (/proc)


@attrs.frozen
class ProcessUsage:
    cpu_seconds: float
    resident_bytes: int


def parse_proc_usage(stat: str, statm: str) -> ProcessUsage:
    """`/proc/PID/stat` and `/proc/PID/statm` text → CPU time (user + system) and resident memory.
    Pure. The command name in `stat` may contain spaces and parentheses: fields count from the last ')'."""
    resident_pages = int(statm.split()[1])
    return ProcessUsage(parse_cpu_seconds(stat), resident_pages * _PAGE_SIZE)


def parse_cpu_seconds(stat: str) -> float:
    """`/proc/PID/stat` (or `/proc/PID/task/TID/stat`) text → CPU time, user + system. Pure."""
    fields = stat.rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _CLOCK_TICKS


def read_process_usage(pid: int) -> ProcessUsage | None:
    """The usage of a live process, or None if it is gone (or not readable)."""
    try:
        with open(f"/proc/{pid}/stat") as stat, open(f"/proc/{pid}/statm") as statm:
            return parse_proc_usage(stat.read(), statm.read())
    except (OSError, ValueError, IndexError):
        return None


def read_main_thread_cpu(pid: int) -> float | None:
    """The CPU time of a live process's main thread (where a slice's event loop runs), or None if it is
    gone (or not readable)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/stat") as stat:
            return parse_cpu_seconds(stat.read())
    except (OSError, ValueError, IndexError):
        return None


def read_rss_bytes(pid: int) -> int | None:
    """A live process's resident set size in bytes (cheap: /proc/PID/statm; it counts every page the
    process shares in full, so it is never below the PSS), or None if it is gone (or not readable)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def read_pss_bytes(pid: int) -> int | None:
    """A live process's proportional set size in bytes (its private memory, and its share of what it
    shares with others, as a template's forked children share its pages), or None if it is gone (or not
    readable)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            return parse_pss(rollup.read())
    except (OSError, ValueError):
        return None


def parse_pss(smaps_rollup: str) -> int:
    """The `Pss:` of a /proc/PID/smaps_rollup text, in bytes. Raises ValueError if it has none. Pure."""
    for line in smaps_rollup.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise ValueError("no Pss line")


# ---------------------------------------------------------------- the KV replica's status

KV_GAUGES: tuple[tuple[str, str, Callable[[Status], float]], ...] = (
    ("aether_kv_revision", "The KV store's revision as this replica applied it", lambda s: s.revision),
    ("aether_kv_compact_revision", "Watches cannot start at or before it", lambda s: s.compact_revision),
    ("aether_kv_keys", "Keys in the KV store", lambda s: s.keys),
    ("aether_kv_raft_term", "The Raft term this replica is in", lambda s: s.term),
    ("aether_kv_raft_commit_index", "The Raft log index known committed", lambda s: s.commit_index),
    ("aether_kv_raft_last_applied_index", "The last Raft index applied here", lambda s: s.last_applied),
    (
        "aether_kv_raft_applied_lag_entries",
        "Committed Raft entries this replica has not applied yet",
        lambda s: max(0, s.commit_index - s.last_applied),
    ),
    ("aether_kv_raft_is_leader", "1 if this replica leads Raft (and the cluster)", lambda s: s.is_leader),
    ("aether_kv_raft_has_quorum", "1 if this replica sees a leader with quorum", lambda s: s.has_quorum),
    ("aether_kv_raft_members", "Raft voters in the cluster", lambda s: len(s.members)),
    ("aether_kv_clients", "Client connections this replica serves", lambda s: s.clients),
    ("aether_kv_watches", "Watches this replica serves (ever growing: a leak)", lambda s: s.watches),
)  # fmt: skip


# ---------------------------------------------------------------- what the node tells the collectors


@attrs.frozen(kw_only=True)
class InstanceSample:
    """One instance of this node as the metrics see it: its record's state and, if running, its pid."""

    coordinates: Coordinates
    instance: int
    state: str
    pid: int | None = None


InstanceSource = Callable[[], Iterable[InstanceSample]]


def _slice_labels(coordinates: Coordinates) -> tuple[str, str]:
    return coordinates.artifact_id, coordinates.version


class _StateCollector:
    """Scrape-time gauges: instances by state, slice processes, the KV replica's status, watch backlog."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        samples = list(metrics.instances()) if metrics.instances else []
        by_state = GaugeMetricFamily(
            "aether_slice_instances",
            "Slice instances of this node by the state their record says",
            labels=["artifact", "version", "state"],
        )
        counts = collections.Counter((*_slice_labels(s.coordinates), s.state) for s in samples)
        for labels, count in sorted(counts.items()):
            by_state.add_metric(list(labels), count)
        yield by_state

        memory = GaugeMetricFamily(
            "aether_slice_process_resident_memory_bytes",
            "Resident memory of each running slice instance process",
            labels=["artifact", "version", "slice_instance"],
        )
        cpu = CounterMetricFamily(
            "aether_slice_process_cpu_seconds",
            "User and system CPU time of each running slice instance process",
            labels=["artifact", "version", "slice_instance"],
        )
        for sample in samples:
            if sample.pid is None:
                continue
            usage = read_process_usage(sample.pid)
            if usage is None:
                continue
            labels = [*_slice_labels(sample.coordinates), str(sample.instance)]
            memory.add_metric(labels, usage.resident_bytes)
            cpu.add_metric(labels, usage.cpu_seconds)
        yield memory
        yield cpu

        status = metrics.kv_status
        yield GaugeMetricFamily(
            "aether_kv_up",
            "1 if this node's KV replica answered its status at the last scrape, else 0",
            value=0 if status is None else 1,
        )
        if status is not None:
            for name, help_text, value_of in KV_GAUGES:
                yield GaugeMetricFamily(name, help_text, value=value_of(status))
        if metrics.watch_backlog is not None:
            yield GaugeMetricFamily(
                "aether_kv_watch_backlog_batches",
                "Watch event batches this node has received from the KV but not yet processed",
                value=metrics.watch_backlog(),
            )
        if metrics.version_calls is not None:
            yield from _rollout_families(metrics.version_calls())


def _rollout_families(readings: dict[str, Any]) -> Iterator[Metric]:
    """Per version: the calls this node routed while a rollout (canary, blue-green) split the slice's
    calls, those that failed with a fault of the version, and their latency (buckets only: no sum is
    kept). What a canary's error rate and latency are read from, beside the rollout's own verdict."""
    labels = ["artifact", "version"]
    calls = CounterMetricFamily(
        "aether_rollout_invocations",
        "Calls this node routed to each version of a slice while a rollout split its calls",
        labels=labels,
    )
    faults = CounterMetricFamily(
        "aether_rollout_invocation_faults",
        "Of those, the calls that failed with a fault of the version (raised, bad_result, internal,"
        " timeout, unavailable)",
        labels=labels,
    )
    duration = HistogramMetricFamily(
        "aether_rollout_invocation_duration_seconds",
        "Time from routing a call to its answer, per version, while a rollout split the slice's calls",
        labels=labels,
    )
    for artifact_id, versions in sorted(readings.items()):
        for version, reading in sorted(versions.items()):
            pair = [artifact_id, version]
            calls.add_metric(pair, reading["calls"])
            faults.add_metric(pair, reading["errors"])
            buckets = [(_bound(bound), count) for bound, count in reading["buckets"]]
            duration.add_metric(pair, [*buckets, ("+Inf", reading["calls"])], sum_value=None)
    yield calls
    yield faults
    yield duration


def _bound(seconds: float) -> str:
    """A bucket's bound as prometheus_client writes its own (`0.005`, `1.0`)."""
    return repr(float(seconds))


class NodeMetrics:
    """The node's metrics. Recording methods are cheap and never raise; with `enabled=False` they do
    nothing. State sources (`instances`, `watch_backlog`) are set by the node once its parts exist."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.registry = CollectorRegistry()
        self.instances: InstanceSource | None = None
        self.watch_backlog: Callable[[], int] | None = None
        # calls per version while a rollout splits a slice's calls (`_version_calls.VersionCalls.snapshot`)
        self.version_calls: Callable[[], dict[str, Any]] | None = None
        self.kv_status: Status | None = None
        self._known_calls: set[tuple[str, str]] = set()
        self._call_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        registry = self.registry
        self._calls = Counter(
            "aether_invocations",
            "Slice invocations routed by this node (source: ingress, slice, api)",
            ["artifact", "entry", "source"],
            registry=registry,
        )
        self._errors = Counter(
            "aether_invocation_errors",
            "Slice invocations routed by this node that failed, by error kind",
            ["artifact", "entry", "source", "kind"],
            registry=registry,
        )
        self._duration = Histogram(
            "aether_invocation_duration_seconds",
            "Time from routing a call to its answer (or error), on the node that routed it",
            ["artifact", "entry", "source"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._transitions = Counter(
            "aether_slice_transitions",
            "Lifecycle states this node recorded for its instances",
            ["artifact", "version", "state"],
            registry=registry,
        )
        self._failures = Counter(
            "aether_slice_failures",
            "Instances of this node that ended FAILED, by failed step (load, activate, crash_loop, ...)",
            ["artifact", "version", "step"],
            registry=registry,
        )
        self._deaths = Counter(
            "aether_slice_process_deaths",
            "Slice instance processes of this node that died unasked",
            ["artifact", "version"],
            registry=registry,
        )
        self._reconcile_runs = Counter(
            "aether_reconcile_runs",
            "Reconciliation passes of the cluster manager (on the leader only)",
            registry=registry,
        )
        self._reconcile_duration = Histogram(
            "aether_reconcile_duration_seconds",
            "Time of one reconciliation pass: observe, plan, carry out the actions",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self._reconcile_actions = Counter(
            "aether_reconcile_actions",
            "Actions the cluster manager carried out, by kind and outcome (done, lost_race, failed)",
            ["action", "outcome"],
            registry=registry,
        )
        self._service_restarts = Counter(
            "aether_node_service_restarts",
            "Services of this node started again after an unexpected error (see the node's log)",
            ["service"],
            registry=registry,
        )
        if enabled:
            registry.register(_StateCollector(self))
            ProcessCollector(registry=registry)  # the node process itself: process_cpu_seconds_total, ...

    # ------------------------------------------------------------ recording (hot paths)

    def invocation(
        self,
        artifact_id: str,
        entry: str,
        source: str,
        seconds: float,
        error: str | None,
        *,
        routed: bool = True,
    ) -> None:
        """One call routed by this node ended, in `seconds`, with `error` (an InvocationError kind) or not.
        `routed`: False for a call that found no endpoint (its artifact and entry are not labels until a
        call that found one made them known)."""
        if not self.enabled:
            return
        pair = (artifact_id, entry)
        if error is None or (routed and error not in _UNROUTED):
            self._known_calls.add(pair)
        elif pair not in self._known_calls:
            pair = (UNKNOWN, UNKNOWN)
        key = (*pair, source)
        children = self._call_children.get(key)
        if children is None:
            children = self._call_children[key] = (self._calls.labels(*key), self._duration.labels(*key))
        children[0].inc()
        children[1].observe(seconds)
        if error is not None:
            self._errors.labels(*key, error).inc()

    def transition(self, coordinates: Coordinates, state: str) -> None:
        if self.enabled:
            self._transitions.labels(*_slice_labels(coordinates), state).inc()

    def failure(self, coordinates: Coordinates, step: str) -> None:
        if self.enabled:
            self._failures.labels(*_slice_labels(coordinates), step).inc()

    def process_death(self, coordinates: Coordinates) -> None:
        if self.enabled:
            self._deaths.labels(*_slice_labels(coordinates)).inc()

    def reconciled(self, seconds: float) -> None:
        if self.enabled:
            self._reconcile_runs.inc()
            self._reconcile_duration.observe(seconds)

    def reconcile_action(self, action: str, outcome: str) -> None:
        if self.enabled:
            self._reconcile_actions.labels(action, outcome).inc()

    def service_restarted(self, service: str) -> None:
        if self.enabled:
            self._service_restarts.labels(service).inc()

    # ------------------------------------------------------------ serving

    async def refresh_kv(self, kv: KV, *, timeout: float = 1.0) -> None:
        """Read the KV replica's status for the next scrape (unknown if it does not answer in time)."""
        self.kv_status = None
        with trio.move_on_after(timeout):
            try:
                self.kv_status = await kv.status()
            except KVError:
                pass

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    def call_stats(self) -> list[dict[str, Any]]:
        """Per (artifact, entry), summed over sources: calls, errors, seconds (sum) and the cumulative
        latency buckets — what the dashboard turns into rates and quantiles."""
        stats: dict[tuple[str, str], dict[str, Any]] = {}

        def entry_of(labels: dict[str, str]) -> dict[str, Any]:
            key = (labels["artifact"], labels["entry"])
            found = stats.get(key)
            if found is None:
                found = stats[key] = {
                    "artifact": key[0],
                    "entry": key[1],
                    "calls": 0,
                    "errors": 0,
                    "seconds": 0.0,
                    "buckets": {},
                }
            return found

        for family in self._duration.collect():
            for sample in family.samples:
                if sample.name.endswith("_count"):
                    entry_of(sample.labels)["calls"] += int(sample.value)
                elif sample.name.endswith("_sum"):
                    entry_of(sample.labels)["seconds"] += sample.value
                elif sample.name.endswith("_bucket"):
                    buckets = entry_of(sample.labels)["buckets"]
                    le = sample.labels["le"]
                    buckets[le] = buckets.get(le, 0) + int(sample.value)
        for family in self._errors.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    entry_of(sample.labels)["errors"] += int(sample.value)
        for found in stats.values():  # +Inf is `calls` (and not JSON)
            finite = ([float(le), n] for le, n in found["buckets"].items() if le != "+Inf")
            found["buckets"] = sorted(finite, key=lambda b: b[0])
        return sorted(stats.values(), key=lambda s: (s["artifact"], s["entry"]))


def merge_call_stats(readings: Iterable[list[dict[str, Any]]]) -> tuple[CallStats, ...]:
    """Several nodes' `call_stats()` → one CallStats per (artifact, entry), summed. Pure. Readings that
    are not well-formed (a node of another version) are skipped."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for reading in readings:
        for item in reading if isinstance(reading, list) else ():
            try:
                key = (str(item["artifact"]), str(item["entry"]))
                calls, errors, seconds = int(item["calls"]), int(item["errors"]), float(item["seconds"])
                buckets = [(float(le), int(n)) for le, n in item["buckets"]]
            except (KeyError, TypeError, ValueError):
                continue
            into = merged.setdefault(key, {"calls": 0, "errors": 0, "seconds": 0.0, "buckets": {}})
            into["calls"] += calls
            into["errors"] += errors
            into["seconds"] += seconds
            for le, n in buckets:
                into["buckets"][le] = into["buckets"].get(le, 0) + n
    return tuple(
        CallStats(
            artifact=artifact,
            entry=entry,
            calls=into["calls"],
            errors=into["errors"],
            seconds=into["seconds"],
            buckets=tuple(sorted(into["buckets"].items())),
        )
        for (artifact, entry), into in sorted(merged.items())
    )
