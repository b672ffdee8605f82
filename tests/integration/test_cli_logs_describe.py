"""`aether slice logs` and `aether describe` against a real 2-node cluster: an instance's output read
through a node that does not run it (the node asked fetches it from the one that does), `--follow` that
sees a line written after it started and ends with 130 on Ctrl-C, bad input that says what is wrong, and
one object of each kind with its events.

The sample slice `org.aether:faulty` prints `faulty: work <payload>` on each call of `work`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
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
    versioned = expect(aether("slice", "logs", f"{FAULTY}:1.0.0", "-c", elsewhere, "--json")).json()
    assert [(item["instance"], item["artifact"]) for item in versioned] == [(number, f"{FAULTY}:1.0.0")]

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
    other_version = aether("slice", "logs", f"{FAULTY}:2.0.0")  # (the version was dropped: 1.0.0's shown)
    assert other_version.returncode == 1, str(other_version)
    assert f"no instance of {FAULTY}:2.0.0 exists in the cluster" in other_version.stderr
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
    run = expect(aether("describe", "slice", FAULTY))
    human = run.stdout
    assert f"{FAULTY}:1.0.0: 1/1 ACTIVE" in human and "Events (" in human and "instance_state" in human
    assert run.stderr == ""  # the key was checked: no word of an unchecked key (an open cluster's warning)

    about = expect(aether("describe", "node", node, "--json")).json()
    assert about["node"]["node_id"] == node and about["node"]["instances"] == 1
    assert about["events"] and all(node in (e["node_id"], e["subject"]) for e in about["events"])

    gone = aether("describe", "node", "node-9")
    assert gone.returncode == 1 and "no registered node 'node-9' (registered: node-1, node-2)" in gone.stderr
    kind = aether("describe", "pod", "x")
    assert kind.returncode == 2 and "pod" in kind.stderr, str(kind)


# ---------------------------------------------------------------- the followed node goes away


@pytest.fixture
def followed(tmp_path: Path, sample_index: Path) -> Iterator[CliCluster]:
    """A cluster of its own (this test pauses and kills nodes; three, so the store keeps a quorum)."""
    with cli_cluster(tmp_path, sample_index, nodes=3) as cluster:
        blueprint = cluster.cwd / "logs.toml"
        blueprint.write_text(BLUEPRINT)
        expect(cluster.aether("blueprint", "apply", str(blueprint), "--wait", timeout=120))
        yield cluster


def placed(cluster: CliCluster, nodes: int) -> Running:
    """Where the one instance runs once it is ACTIVE and `nodes` nodes are up, and another live node."""

    def settled() -> tuple[list[dict[str, Any]], list[str]]:
        up = [n["node_id"] for n in expect(cluster.aether("cluster", "nodes", "--json")).json()]
        found = expect(cluster.aether("slice", "list", "--json")).json()
        active = [i for i in found if i["state"] == "ACTIVE"]
        return (active, up) if len(up) == nodes and len(found) == len(active) == 1 else ([], [])

    (instance,), up = wait_until(settled, timeout=120, what=f"one ACTIVE instance and {nodes} nodes up")
    other = next(n for n in cluster.local.nodes if n.node_id in up and n.node_id != instance["node_id"])
    return Running(cluster, instance["node_id"], instance["instance"], f"http://{other.management}")


def follow_until_it_breaks(running: Running, payload: object, stop: Any) -> tuple[int, str]:
    """Follow the instance's log through the other node; once a new line came, `stop()` a node; the
    CLI's exit status and what it printed on stderr (it must end by itself)."""
    cluster = running.cluster
    env = {"AETHER_CLUSTER": running.elsewhere}
    with background_aether("slice", "logs", FAULTY, "--follow", "-n", "1", cwd=cluster.cwd, env=env) as out:
        work(cluster, payload)
        out.wait_for(lambda text: json.dumps(payload) in text, timeout=20, what="the followed line")
        stop()
        try:
            status = out.process.wait(timeout=60)  # the silence allowed is 15 s: well within
        except subprocess.TimeoutExpired:
            pytest.fail("`aether slice logs --follow` hung after a node it followed through went away")
        assert out.process.stderr is not None
        return status, out.process.stderr.read()


@pytest.mark.long
def test_follow_ends_with_a_clear_error_when_a_node_on_the_way_pauses_or_dies(followed: CliCluster) -> None:
    """Following through a node that does not run the instance: the node that runs it paused (SIGSTOP:
    no byte, not even the heartbeat), then the node the CLI follows through killed, then the node that
    runs the instance killed (SIGKILL: the connection closes mid-stream); each time the stream ends by
    itself, exit 1, naming the node and what happened."""
    local = followed.local
    running = placed(followed, 3)
    pid = local.processes[running.node].pid
    try:
        status, errors = follow_until_it_breaks(
            running, {"n": "paused"}, lambda: os.kill(pid, signal.SIGSTOP)
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    assert status == 1, errors
    assert f"aether: error: node {running.node} (" in errors, errors
    assert "sent nothing for 15 s" in errors and "down, paused or cut off" in errors, errors

    running = placed(followed, 3)  # (the paused node may have been declared lost: the instance moved)
    via = next(n.node_id for n in local.nodes if f"http://{n.management}" == running.elsewhere)
    status, errors = follow_until_it_breaks(running, {"n": "via"}, lambda: local.kill(via))
    assert status == 1, errors
    assert f"aether: error: {running.elsewhere} broke the stream off" in errors, errors

    running = placed(followed, 2)
    status, errors = follow_until_it_breaks(running, {"n": "killed"}, lambda: local.kill(running.node))
    assert status == 1, errors
    assert f"aether: error: node {running.node} (" in errors and "stopped sending its logs" in errors, errors
