"""The metrics module without a node: /proc parsing, bounded labels, call statistics, metrics turned off."""

from __future__ import annotations

import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aether_node.core._coordinates import Coordinates
from aether_node.observe._metrics import (
    UNKNOWN,
    InstanceSample,
    NodeMetrics,
    parse_proc_usage,
    read_process_usage,
)
from aether_node.observe._version_calls import VersionCalls

ECHO = Coordinates.parse("org.aether:echo:1.0.0")


def samples(metrics: NodeMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = metrics.render().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_proc_usage_counts_from_the_last_parenthesis() -> None:
    # a command name with spaces and a ')' of its own; utime 250 and stime 50 ticks; 300 resident pages
    fields = ["S", "1", "2", "3", "0", "-1", "4194560", "10", "0", "0", "0", "250", "50"] + ["0"] * 40
    stat = "4242 (python (a) b) " + " ".join(fields)
    usage = parse_proc_usage(stat, "1000 300 20 1 0 50 0")
    ticks = os.sysconf("SC_CLK_TCK")
    assert usage.cpu_seconds == 300 / ticks
    assert usage.resident_bytes == 300 * os.sysconf("SC_PAGE_SIZE")


def test_proc_usage_of_this_process_and_of_no_process() -> None:
    usage = read_process_usage(os.getpid())
    assert usage is not None and usage.resident_bytes > 1_000_000 and usage.cpu_seconds > 0
    assert read_process_usage(2**22 + 7) is None  # above pid_max: never a process


def test_unrouted_errors_do_not_become_labels_until_the_pair_is_known() -> None:
    metrics = NodeMetrics()
    metrics.invocation("org.typo:x", "whatever", "ingress", 0.001, "no_endpoint")
    metrics.invocation("org.aether:echo", "echo", "ingress", 0.002, None)
    metrics.invocation("org.aether:echo", "echo", "ingress", 0.003, "no_endpoint")  # known now: its own label
    metrics.invocation("org.aether:echo", "echo", "slice", 0.5, "raised")
    found = samples(metrics)

    def value(name: str, **labels: str) -> float:
        return found.get((name, frozenset(labels.items())), 0.0)

    unknown = {"artifact": UNKNOWN, "entry": UNKNOWN, "source": "ingress"}
    echo = {"artifact": "org.aether:echo", "entry": "echo"}
    assert value("aether_invocations_total", **unknown) == 1
    assert value("aether_invocation_errors_total", **unknown, kind="no_endpoint") == 1
    assert value("aether_invocations_total", **echo, source="ingress") == 2
    assert value("aether_invocation_errors_total", **echo, source="ingress", kind="no_endpoint") == 1
    assert value("aether_invocation_errors_total", **echo, source="slice", kind="raised") == 1
    assert value("aether_invocation_duration_seconds_bucket", **echo, source="slice", le="0.25") == 0
    assert value("aether_invocation_duration_seconds_bucket", **echo, source="slice", le="0.5") == 1
    assert not any("org.typo:x" in dict(labels).values() for _, labels in found)


def test_any_error_of_a_call_that_found_no_endpoint_makes_no_label_until_the_pair_is_known() -> None:
    metrics = NodeMetrics()
    # a deployed slice with no ACTIVE instance: `unavailable`, whatever entry point the caller named
    metrics.invocation("org.aether:echo", "ehco", "ingress", 0.001, "unavailable", routed=False)
    metrics.invocation("org.aether:echo", "echo", "ingress", 0.002, "unavailable")  # routed: a known pair
    metrics.invocation("org.aether:echo", "echo", "ingress", 0.001, "unavailable", routed=False)
    found = samples(metrics)
    unknown = {"artifact": UNKNOWN, "entry": UNKNOWN, "source": "ingress"}
    echo = {"artifact": "org.aether:echo", "entry": "echo", "source": "ingress"}
    errors = "aether_invocation_errors_total"
    assert found[(errors, frozenset({**unknown, "kind": "unavailable"}.items()))] == 1
    assert found[(errors, frozenset({**echo, "kind": "unavailable"}.items()))] == 2
    assert not any("ehco" in dict(labels).values() for _, labels in found)


def test_call_stats_sum_sources_and_keep_finite_buckets() -> None:
    metrics = NodeMetrics()
    metrics.invocation("org.aether:echo", "echo", "ingress", 0.002, None)
    metrics.invocation("org.aether:echo", "echo", "slice", 0.02, "timeout")
    [stats] = metrics.call_stats()
    assert stats["artifact"] == "org.aether:echo" and stats["entry"] == "echo"
    assert (stats["calls"], stats["errors"]) == (2, 1)
    assert stats["seconds"] == pytest.approx(0.022)
    buckets = dict(stats["buckets"])
    assert buckets[0.001] == 0 and buckets[0.0025] == 1 and buckets[0.025] == 2 and buckets[30.0] == 2
    assert all(bound != float("inf") for bound in buckets)


def test_instance_states_and_kv_status_are_read_at_scrape_time() -> None:
    metrics = NodeMetrics()
    metrics.instances = lambda: [
        InstanceSample(coordinates=ECHO, instance=1, state="ACTIVE", pid=os.getpid()),
        InstanceSample(coordinates=ECHO, instance=2, state="ACTIVE"),
        InstanceSample(coordinates=ECHO, instance=3, state="FAILED"),
    ]
    metrics.watch_backlog = lambda: 7
    found = samples(metrics)
    labels = {"artifact": "org.aether:echo", "version": "1.0.0"}
    assert found[("aether_slice_instances", frozenset({**labels, "state": "ACTIVE"}.items()))] == 2
    assert found[("aether_slice_instances", frozenset({**labels, "state": "FAILED"}.items()))] == 1
    memory = found[
        ("aether_slice_process_resident_memory_bytes", frozenset({**labels, "slice_instance": "1"}.items()))
    ]
    assert memory > 1_000_000
    assert (
        "aether_slice_process_resident_memory_bytes",
        frozenset({**labels, "slice_instance": "2"}.items()),
    ) not in found
    assert found[("aether_kv_up", frozenset())] == 0  # never refreshed: unknown, not made up
    assert found[("aether_kv_watch_backlog_batches", frozenset())] == 7


def test_metrics_off_records_nothing() -> None:
    metrics = NodeMetrics(enabled=False)
    metrics.invocation("org.aether:echo", "echo", "ingress", 0.001, None)
    metrics.transition(ECHO, "ACTIVE")
    metrics.reconciled(0.01)
    assert metrics.call_stats() == []
    recorded = samples(metrics)
    assert recorded and all(value == 0 for value in recorded.values()), recorded


def test_call_stats_of_several_nodes_are_summed_and_malformed_readings_skipped() -> None:
    from aether_node.observe._metrics import merge_call_stats

    one = NodeMetrics()
    one.invocation("org.aether:echo", "echo", "ingress", 0.002, None)
    two = NodeMetrics()
    two.invocation("org.aether:echo", "echo", "ingress", 0.02, "raised")
    two.invocation("org.aether:greeter", "greet", "ingress", 0.004, None)
    merged = merge_call_stats([one.call_stats(), two.call_stats(), "not a list", [{"artifact": "x"}]])
    assert [(s.artifact, s.entry, s.calls, s.errors) for s in merged] == [
        ("org.aether:echo", "echo", 2, 1),
        ("org.aether:greeter", "greet", 1, 0),
    ]
    buckets = dict(merged[0].buckets)
    assert (buckets[0.0025], buckets[0.025]) == (1, 2)


def test_the_exposition_has_no_created_series_and_no_instance_label_of_ours() -> None:
    metrics = NodeMetrics()
    metrics.invocation("org.aether:echo", "echo", "ingress", 0.002, None)
    metrics.transition(ECHO, "ACTIVE")
    metrics.instances = lambda: [
        InstanceSample(coordinates=ECHO, instance=1, state="ACTIVE", pid=os.getpid())
    ]
    text = metrics.render().decode()
    assert "aether_slice_process_resident_memory_bytes" in text
    assert "_created" not in text
    assert 'slice_instance="1"' in text and ' instance="' not in text and '{instance="' not in text


def test_calls_per_version_during_a_rollout_are_read_at_scrape_time() -> None:
    """A canary's calls and faults per version, and their latency buckets, as the rollout's verdict reads
    them (`VersionCalls`): they were only in the verdict, the metrics had no version label."""
    calls = VersionCalls()
    for seconds, error in ((0.002, None), (0.002, None), (0.3, "raised"), (0.002, "bad_request")):
        calls.record("org.aether:echo", "1.1.0", seconds, error)
    calls.record("org.aether:echo", "1.0.0", 0.002, None)
    metrics = NodeMetrics()
    metrics.version_calls = calls.snapshot
    found = samples(metrics)
    canary = frozenset({"artifact": "org.aether:echo", "version": "1.1.0"}.items())
    stable = frozenset({"artifact": "org.aether:echo", "version": "1.0.0"}.items())
    assert found[("aether_rollout_invocations_total", canary)] == 4
    assert found[("aether_rollout_invocation_faults_total", canary)] == 1  # (a bad request is the caller's)
    assert found[("aether_rollout_invocations_total", stable)] == 1
    assert found[("aether_rollout_invocation_faults_total", stable)] == 0
    bucket = "aether_rollout_invocation_duration_seconds_bucket"
    assert found[(bucket, canary | {("le", "0.0025")})] == 3
    assert found[(bucket, canary | {("le", "0.5")})] == 4
    assert found[(bucket, canary | {("le", "+Inf")})] == 4
