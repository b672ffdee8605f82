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
from typing import Any

import attrs
import pytest
from cli_support import CliCluster, CliRun, background_aether, cli_cluster, expect, wait_until

pytestmark = [pytest.mark.integration]

FAULTY = "org.aether:faulty"
VIEWER, OPERATOR = "viewer-key-0123456789", "operator-key-0123456789"
BLUEPRINT = f'name = "logs"\n\n[[slices]]\nartifact = "{FAULTY}:1.0.0"\ninstances = 1\n'


@attrs.frozen
class Running:
    """The cluster, where the one faulty instance runs, and the management URL of the other node."""

    cluster: CliCluster
    node: str
    number: int
    elsewhere: str

    def aether(self, *args: str, **kw: Any) -> CliRun:
        """`aether ARGS` with the viewer's key (enough for logs and describe)."""
        return self.cluster.aether(*args, api_key=VIEWER, **kw)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, sample_index: Path) -> Iterator[Running]:
    keys = {"AETHER_API_KEYS": f"viewer:{VIEWER},operator:{OPERATOR}"}  # the key goes from node to node
    directory = tmp_path_factory.mktemp("logs-cluster")
    with cli_cluster(directory, sample_index, nodes=2, dev_mode=False, node_env=keys) as cluster:
        blueprint = cluster.cwd / "logs.toml"
        blueprint.write_text(BLUEPRINT)
        expect(cluster.aether("blueprint", "apply", str(blueprint), "--wait", api_key=OPERATOR, timeout=120))
        (instance,) = expect(cluster.aether("slice", "list", "--json", api_key=VIEWER)).json()
        other = next(n for n in cluster.local.nodes if n.node_id != instance["node_id"])
        yield Running(cluster, instance["node_id"], instance["instance"], f"http://{other.management}")


def work(cluster: CliCluster, payload: object) -> None:
    expect(cluster.aether("slice", "invoke", FAULTY, "work", "--data", json.dumps(payload), api_key=OPERATOR))


def test_logs_through_another_node_and_follow(running: Running) -> None:
    cluster, node, number, elsewhere = running.cluster, running.node, running.number, running.elsewhere
    aether = running.aether
    work(cluster, {"n": 1})
    wanted = 'faulty: work {"n": 1}'

    def logged() -> list[dict[str, object]]:
        answer = expect(aether("slice", "logs", FAULTY, "--cluster", elsewhere, "--json")).json()
        return answer if any(wanted in line for item in answer for line in item["lines"]) else []

    (logs,) = wait_until(logged, timeout=20, what=f"{wanted!r} in the logs read through {elsewhere}")
    assert (logs["node_id"], logs["instance"], logs["artifact"]) == (node, number, f"{FAULTY}:1.0.0")
    plain = expect(aether("slice", "logs", FAULTY, "--instance", str(number), "-c", elsewhere))
    assert wanted in plain.stdout.splitlines()  # one instance: no prefix
    last = expect(aether("slice", "logs", FAULTY, "--node", node, "--lines", "1", "-c", elsewhere))
    assert len(last.stdout.splitlines()) == 1

    env = {"AETHER_CLUSTER": elsewhere, "AETHER_API_KEY": VIEWER}
    with background_aether("slice", "logs", FAULTY, "--follow", "-n", "1", cwd=cluster.cwd, env=env) as out:
        work(cluster, {"n": 2})  # before or after the stream began: it is in its tail or followed
        line = out.wait_for(lambda text: '{"n": 2}' in text, timeout=20, what="the followed new line")
        assert line == f'{node}/{number} faulty: work {{"n": 2}}'  # several instances may show: prefixed
        out.process.send_signal(signal.SIGINT)
        assert out.process.wait(timeout=10) == 130


def test_logs_bad_input_says_what_and_where(running: Running) -> None:
    aether = running.aether
    unknown = aether("slice", "logs", "org.aether:nope")
    assert unknown.returncode == 1, str(unknown)
    assert "no instance of org.aether:nope exists in the cluster" in unknown.stderr
    missing = aether("slice", "logs", FAULTY, "--instance", "7", "-c", running.elsewhere)
    assert missing.returncode == 1, str(missing)
    there = f"{running.node}/{running.number}"
    assert f"{FAULTY} has no instance 7; its instances: {there}" in missing.stderr
    keyless = running.cluster.aether("slice", "logs", FAULTY)
    assert keyless.returncode == 1 and "no API key given" in keyless.stderr, str(keyless)
    run = aether("slice", "logs", FAULTY, "--lines", "0")
    assert (run.returncode, run.stderr.strip()) == (
        2,
        "aether: error: --lines must be between 1 and 10000, got 0",
    )


def test_describe_each_kind(running: Running) -> None:
    aether, node = running.aether, running.node
    blueprint = expect(aether("describe", "blueprint", "logs", "-o", "json")).json()
    assert blueprint["blueprint"]["name"] == "logs"
    kinds = {e["kind"] for e in blueprint["events"]}
    assert {"blueprint_applied", "instance_state"} <= kinds, kinds

    described = expect(aether("describe", "slice", FAULTY, "--json")).json()
    assert described["slice"]["active"] == 1
    assert described["events"] and {e["artifact"] for e in described["events"]} == {f"{FAULTY}:1.0.0"}
    human = expect(aether("describe", "slice", FAULTY)).stdout
    assert f"{FAULTY}:1.0.0: 1/1 ACTIVE" in human and "Events (" in human and "instance_state" in human

    about = expect(aether("describe", "node", node, "--json")).json()
    assert about["node"]["node_id"] == node and about["node"]["instances"] == 1
    assert about["events"] and all(node in (e["node_id"], e["subject"]) for e in about["events"])

    gone = aether("describe", "node", "node-9")
    assert gone.returncode == 1 and "no registered node 'node-9' (registered: node-1, node-2)" in gone.stderr
    kind = aether("describe", "pod", "x")
    assert kind.returncode == 2 and "pod" in kind.stderr, str(kind)
