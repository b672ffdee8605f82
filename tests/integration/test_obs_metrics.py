"""Prometheus metrics of real nodes: scraped from a 3-node cluster before and after a blueprint rollout and
calls (parsed with prometheus_client's own text parser; values checked, not only names), and a node with
metrics turned off.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cluster_support import (
    ECHO,
    ECHO_ID,
    GREETER,
    GREETER_ID,
    SliceSpec,
    call,
    exactly_active,
    kv_of,
    per_node,
    put_blueprint,
    running_cluster,
    wait_for,
)
from node_support import started_node
from prometheus_client.parser import text_string_to_metric_families

from support import wait_until

pytestmark = [pytest.mark.integration]

FAULTY = "org.aether:faulty:1.0.0"


class Scrape:
    """One scrape: every sample by (name, labels)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels (0 if there is none: counters start absent)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def matching(self, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
        """Samples of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return {k: v for (n, k), v in self.samples.items() if n == name and wanted <= k}

    def total(self, name: str, **labels: str) -> float:
        return sum(self.matching(name, **labels).values())


async def scrape(http: httpx.AsyncClient, management: str) -> Scrape:
    answer = await http.get(f"http://{management}/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4"), answer.headers
    return Scrape(answer.text)


async def scrape_until(
    http: httpx.AsyncClient,
    managements: dict[str, str],
    condition: Callable[[dict[str, Scrape]], bool],
    what: str,
) -> dict[str, Scrape]:
    """Scrape every node until `condition(scrapes)` holds (a node records a state just after the KV has
    it); fail after 30 s with the relevant part of the last scrapes."""

    async def scrapes() -> dict[str, Scrape]:
        return {node: await scrape(http, address) for node, address in managements.items()}

    def relevant(last: dict[str, Scrape]) -> dict[str, list[str]]:
        prefixes = ("aether_slice", "aether_invocation")
        return {
            node: [line for line in s.text.splitlines() if line.startswith(prefixes)]
            for node, s in last.items()
        }

    return await wait_until(
        scrapes, until=condition, timeout=30, interval=0.1, what=f"metrics showing {what}", describe=relevant
    )


FAULTY_ID = "org.aether:faulty"


@pytest.mark.long
async def test_metrics_follow_a_rollout_and_calls(tmp_path: Path, sample_index: Path) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        managements = {n.node_id: n.management for n in cluster.nodes}
        ingress = {n.node_id: n.ingress for n in cluster.nodes}
        async with httpx.AsyncClient(timeout=30) as http:
            before = {node: await scrape(http, address) for node, address in managements.items()}
            for node, found in before.items():
                assert found.total("aether_slice_instances") == 0, node
                assert found.total("aether_invocations_total") == 0, node
                assert found.value("aether_kv_up") == 1, node
                assert found.value("aether_kv_raft_members") == 3, node
                assert found.value("aether_kv_revision") > 0, node
                assert found.value("aether_kv_raft_term") >= 1, node
                assert found.value("aether_kv_raft_has_quorum") == 1, node
                commit = found.value("aether_kv_raft_commit_index")
                assert commit >= found.value("aether_kv_raft_last_applied_index") > 0, node
                assert found.value("aether_kv_raft_applied_lag_entries") >= 0, node
                assert found.value("aether_kv_watch_backlog_batches") >= 0, node
                assert found.value("aether_kv_clients") >= 1, node  # (this node's own connection)
                assert found.value("aether_kv_watches") >= 1, node  # (this node's watches, at least)
                assert found.value("process_resident_memory_bytes") > 10_000_000, node  # the node itself
                assert found.types["aether_invocation_duration_seconds"] == "histogram"
            leaders = [n for n, found in before.items() if found.value("aether_kv_raft_is_leader") == 1]
            assert len(leaders) == 1, {n: f.value("aether_kv_raft_is_leader") for n, f in before.items()}

            # the rollout: 3 echo, 1 greeter (it calls echo), 1 faulty that fails to start
            await put_blueprint(
                kv,
                "demo",
                SliceSpec(artifact=ECHO, instances=3),
                SliceSpec(artifact=GREETER, instances=1),
                SliceSpec(artifact=FAULTY, instances=1, config={"mode": "fail_start"}),
            )
            echoes = await wait_for(
                kv,
                exactly_active(3, ECHO),
                timeout=90,
                what="3 ACTIVE echo",
                artifact_id=ECHO_ID,
                cluster=cluster,
            )
            greeters = await wait_for(
                kv, exactly_active(1, GREETER), timeout=60, what="1 ACTIVE greeter", artifact_id=GREETER_ID
            )
            echo_per_node = per_node(echoes)

            def instances_shown(scrapes: dict[str, Scrape]) -> bool:
                return (
                    all(
                        scrapes[node].value(
                            "aether_slice_instances", artifact=ECHO_ID, version="1.0.0", state="ACTIVE"
                        )
                        == echo_per_node.get(node, 0)
                        for node in managements
                    )
                    and 0 < faulty_counts(scrapes)[0] == faulty_counts(scrapes)[1]
                )

            def faulty_counts(scrapes: dict[str, Scrape]) -> tuple[float, float]:
                """faulty's failures, and its FAILED transitions (recorded a moment later, with the state)."""
                labels = {"artifact": FAULTY_ID, "version": "1.0.0"}
                nodes = scrapes.values()
                failures = sum(
                    s.value("aether_slice_failures_total", **labels, step="activate") for s in nodes
                )
                failed = sum(
                    s.value("aether_slice_transitions_total", **labels, state="FAILED") for s in nodes
                )
                return failures, failed

            rolled = await scrape_until(http, managements, instances_shown, "the ACTIVE echo instances")
            for node, found in rolled.items():
                count = echo_per_node.get(node, 0)

                # placed, an instance goes (LOADING, only if its load is slow) → ACTIVE (no ACTIVATING
                # right after its load)
                loading, activating, active = (
                    found.value("aether_slice_transitions_total", artifact=ECHO_ID, version="1.0.0", state=s)
                    for s in ("LOADING", "ACTIVATING", "ACTIVE")
                )
                assert loading <= count and (activating, active) == (0, count), (node, loading, active, count)
                memory = found.matching("aether_slice_process_resident_memory_bytes", artifact=ECHO_ID)
                cpu = found.matching("aether_slice_process_cpu_seconds_total", artifact=ECHO_ID)
                assert len(memory) == len(cpu) == count, (node, memory, cpu)
                assert all(value > 1_000_000 for value in memory.values()), (node, memory)
                assert all(value >= 0 for value in cpu.values()), (node, cpu)
                assert found.value("aether_kv_revision") > before[node].value("aether_kv_revision")
            faulty_failures, faulty_failed = faulty_counts(rolled)
            assert faulty_failures >= 1 and faulty_failed == faulty_failures, (faulty_failures, faulty_failed)
            # the cluster manager ran on the leader and created exactly the instances (over all leaders)
            creates = sum(
                s.value("aether_reconcile_actions_total", action="create", outcome="done")
                for s in rolled.values()
            )
            assert creates >= 5, creates  # 3 echo + 1 greeter + faulty (retried on other nodes)
            runs = {node: s.value("aether_reconcile_runs_total") for node, s in rolled.items()}
            assert sum(runs.values()) > 0 and all(
                s.value("aether_reconcile_duration_seconds_count") == runs[node] for node, s in rolled.items()
            ), runs

            # calls: 20 through node-1's ingress, 5 through node-2's, 3 to an entry that does not exist,
            # 4 greetings (each calls echo from inside the cluster), 2 through the management API
            for node, count in (("node-1", 20), ("node-2", 5)):
                for n in range(count):
                    answer = await call(http, ingress[node], ECHO_ID, "echo", {"n": n})
                    assert answer.status_code == 200, answer.text
            for _ in range(3):
                answer = await call(http, ingress["node-1"], ECHO_ID, "nope", {})
                assert answer.status_code == 404, answer.text
            for n in range(4):
                answer = await call(http, ingress["node-1"], GREETER_ID, "greet", {"name": f"n{n}"})
                assert answer.status_code == 200, answer.text
            for n in range(2):
                answer = await http.post(
                    f"http://{managements['node-3']}/api/v1/slices/{ECHO_ID}/invoke/echo", json={"n": n}
                )
                assert answer.status_code == 200, answer.text

            after = {node: await scrape(http, address) for node, address in managements.items()}
            expected = collections.Counter(
                {
                    ("node-1", ECHO_ID, "echo", "ingress"): 20,
                    ("node-2", ECHO_ID, "echo", "ingress"): 5,
                    ("node-1", GREETER_ID, "greet", "ingress"): 4,
                    ("node-3", ECHO_ID, "echo", "api"): 2,
                }
            )
            for (node, artifact, entry, source), count in expected.items():
                found = after[node]
                labels = {"artifact": artifact, "entry": entry, "source": source}
                assert found.value("aether_invocations_total", **labels) == count, (node, labels)
                assert found.value("aether_invocation_duration_seconds_count", **labels) == count
                assert found.value("aether_invocation_duration_seconds_bucket", **labels, le="+Inf") == count
                assert found.value("aether_invocation_duration_seconds_sum", **labels) > 0
                assert found.total("aether_invocation_errors_total", **labels) == 0, (node, labels)
            # the greetings' calls to echo were routed by the greeter's node, as calls from a slice
            slice_calls = sum(
                s.value("aether_invocations_total", artifact=ECHO_ID, entry="echo", source="slice")
                for s in after.values()
            )
            assert slice_calls == 4
            greeter_node = greeters[0].node_id
            assert (
                after[greeter_node].value(
                    "aether_invocations_total", artifact=ECHO_ID, entry="echo", source="slice"
                )
                == 4
            )
            # a typo'd entry point is counted, but its name does not become a label
            unknown = {"artifact": "_unknown", "entry": "_unknown", "source": "ingress"}
            assert after["node-1"].value("aether_invocation_errors_total", **unknown, kind="no_endpoint") == 3
            assert after["node-1"].value("aether_invocations_total", **unknown) == 3
            assert not after["node-1"].matching("aether_invocations_total", entry="nope")


async def test_a_node_with_metrics_off_serves_none(tmp_path: Path, sample_index: Path) -> None:
    args = ("--dev-mode", "--no-metrics")
    with started_node(tmp_path / "node", sample_index, extra_args=args, with_management=True) as node:
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(f"http://{node.management}/metrics")
    assert answer.status_code == 404
    assert answer.json() == {
        "error": {
            "kind": "not_found",
            "message": "metrics are turned off on this node (it runs with --no-metrics)",
        }
    }
