"""`aether slice logs` and `aether describe` against a real 2-node cluster: an instance's output read
through a node that does not run it (the node asked fetches it from the one that does), `--follow` that
sees a line written after it started and ends with 130 on Ctrl-C, bad input that says what is wrong, and
one object of each kind with its events.

The sample slice `org.aether:faulty` prints `faulty: work <payload>` on each call of `work`.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import attrs
import cli_support
import pytest
from cli_support import CliCluster, background_aether, cli_cluster, expect, wait_until

pytestmark = [pytest.mark.integration]

sample_index = cli_support.sample_index
FAULTY = "org.aether:faulty"
BLUEPRINT = f'name = "logs"\n\n[[slices]]\nartifact = "{FAULTY}:1.0.0"\ninstances = 1\n'


@attrs.frozen
class Running:
    """The cluster, where the one faulty instance runs, and the management URL of the other node."""

    cluster: CliCluster
    node: str
    number: int
    elsewhere: str


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, sample_index: Path) -> Iterator[Running]:
    with cli_cluster(tmp_path_factory.mktemp("logs-cluster"), sample_index, nodes=2) as cluster:
        blueprint = cluster.cwd / "logs.toml"
        blueprint.write_text(BLUEPRINT)
        expect(cluster.aether("blueprint", "apply", str(blueprint), "--wait", timeout=120))
        (instance,) = expect(cluster.aether("slice", "list", "--json")).json()
        other = next(n for n in cluster.local.nodes if n.node_id != instance["node_id"])
        yield Running(cluster, instance["node_id"], instance["instance"], f"http://{other.management}")


def work(cluster: CliCluster, payload: object) -> None:
    expect(cluster.aether("slice", "invoke", FAULTY, "work", "--data", json.dumps(payload)))


def test_logs_through_another_node_and_follow(running: Running) -> None:
    cluster, node, number, elsewhere = running.cluster, running.node, running.number, running.elsewhere
    work(cluster, {"n": 1})
    wanted = 'faulty: work {"n": 1}'

    def logged() -> list[dict[str, object]]:
        answer = expect(cluster.aether("slice", "logs", FAULTY, "--cluster", elsewhere, "--json")).json()
        return answer if any(wanted in line for item in answer for line in item["lines"]) else []

    (logs,) = wait_until(logged, timeout=20, what=f"{wanted!r} in the logs read through {elsewhere}")
    assert (logs["node_id"], logs["instance"], logs["artifact"]) == (node, number, f"{FAULTY}:1.0.0")
    plain = expect(cluster.aether("slice", "logs", FAULTY, "--instance", str(number), "-c", elsewhere))
    assert wanted in plain.stdout.splitlines()  # one instance: no prefix
    last = expect(cluster.aether("slice", "logs", FAULTY, "--node", node, "--lines", "1", "-c", elsewhere))
    assert len(last.stdout.splitlines()) == 1

    env = {"AETHER_CLUSTER": elsewhere}
    with background_aether("slice", "logs", FAULTY, "--follow", "-n", "1", cwd=cluster.cwd, env=env) as out:
        work(cluster, {"n": 2})  # before or after the stream began: it is in its tail or followed
        line = out.wait_for(lambda text: '{"n": 2}' in text, timeout=20, what="the followed new line")
        assert line == f'{node}/{number} faulty: work {{"n": 2}}'  # several instances may show: prefixed
        out.process.send_signal(signal.SIGINT)
        assert out.process.wait(timeout=10) == 130


def test_logs_bad_input_says_what_and_where(running: Running) -> None:
    cluster = running.cluster
    unknown = cluster.aether("slice", "logs", "org.aether:nope")
    assert unknown.returncode == 1, str(unknown)
    assert "no instance of org.aether:nope exists in the cluster" in unknown.stderr
    missing = cluster.aether("slice", "logs", FAULTY, "--instance", "7", "-c", running.elsewhere)
    assert missing.returncode == 1, str(missing)
    there = f"{running.node}/{running.number}"
    assert f"{FAULTY} has no instance 7; its instances: {there}" in missing.stderr
    run = cluster.aether("slice", "logs", FAULTY, "--lines", "0")
    assert (run.returncode, run.stderr.strip()) == (
        2,
        "aether: error: --lines must be between 1 and 10000, got 0",
    )


def test_describe_each_kind(running: Running) -> None:
    cluster, node = running.cluster, running.node
    blueprint = expect(cluster.aether("describe", "blueprint", "logs", "-o", "json")).json()
    assert blueprint["blueprint"]["name"] == "logs"
    kinds = {e["kind"] for e in blueprint["events"]}
    assert {"blueprint_applied", "instance_state"} <= kinds, kinds

    described = expect(cluster.aether("describe", "slice", FAULTY, "--json")).json()
    assert described["slice"]["active"] == 1
    assert described["events"] and {e["artifact"] for e in described["events"]} == {f"{FAULTY}:1.0.0"}
    human = expect(cluster.aether("describe", "slice", FAULTY)).stdout
    assert f"{FAULTY}:1.0.0: 1/1 ACTIVE" in human and "Events (" in human and "instance_state" in human

    about = expect(cluster.aether("describe", "node", node, "--json")).json()
    assert about["node"]["node_id"] == node and about["node"]["instances"] == 1
    assert about["events"] and all(node in (e["node_id"], e["subject"]) for e in about["events"])

    gone = cluster.aether("describe", "node", "node-9")
    assert gone.returncode == 1 and "no registered node 'node-9' (registered: node-1, node-2)" in gone.stderr
    kind = cluster.aether("describe", "pod", "x")
    assert kind.returncode == 2 and "pod" in kind.stderr, str(kind)
