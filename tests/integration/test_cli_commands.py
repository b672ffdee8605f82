"""The `aether` CLI as an operator uses it: the real console script in a subprocess against a real
3-node cluster, every command in both output modes (human text and `--json`), bad blueprints (exit 2,
the exact error, the previous blueprint untouched), an unreachable cluster (exit 3) and bad arguments
(exit 2).

Starting a cluster takes seconds, so one test walks through the commands in the order an operator would
use them on one cluster; tests that need no cluster run the CLI against closed ports or a stub API.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import (
    ANSWERED,
    COUNTER,
    ECHO,
    EXAMPLE,
    GREETER,
    CliCluster,
    aether_command,
    background_aether,
    cli_cluster,
    cli_env,
    closed_port,
    expect,
    run_aether,
    stub_api,
    wait_until,
)

pytestmark = [pytest.mark.integration]


SMALL = 'name = "demo"\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 1\n'
SPARE = 'name = "spare"\n\n[[slices]]\nartifact = "org.aether:pinned:1.0.0"\ninstances = 0\n'
SLICE_KEYS = (
    "artifact, autoscale, balancing, config, health, instances, max_per_node, min_available, resources,"
    " strategy, update"
)
HEAD = 'name = "demo"\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\n'  # the next line is line 5


def example_text(tmp_path: Path, *, echo: int = 3) -> str:
    """examples/blueprint.toml, with the counter's state file in the test's directory (not a fixed /tmp
    path another run could share) and `echo` instances of echo."""
    text = EXAMPLE.read_text()
    text = text.replace("/tmp/aether-counter-demo.txt", str(tmp_path / "counter-state.txt"))
    text = text.replace("instances = 3 ", f"instances = {echo} ")
    assert f"instances = {echo} " in text
    return text


def normalised_status(data: dict[str, Any]) -> list[tuple[Any, ...]]:
    """A blueprint status, order-independent and without timestamps."""
    return sorted(
        (
            s["artifact"],
            s["desired"],
            s["active"],
            s["problem"],
            tuple(sorted((i["node_id"], i["artifact"], i["instance"], i["state"]) for i in s["instances"])),
        )
        for s in data["slices"]
    )


# ---------------------------------------------------------------- bad blueprints (file bad.toml)

# (id, TOML text, the exact message after "aether: error: ")
BAD_BLUEPRINTS = [
    ("toml-syntax", 'name = "demo"\n[[slices]\nartifact = "x"\n',
     "bad.toml:2:9: TOML syntax: Expected ']]' at the end of an array declaration"),
    ("unknown-top-level-key",
     'name = "demo"\nreplicas = 3\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 1\n',
     "bad.toml:2:1: replicas: unknown key (expected: name, policy, slices)"),
    ("unknown-slice-key", HEAD + "instances = 1\nreplicas = 2\n",
     f"bad.toml:6:1: slices[0].replicas: unknown key (expected: {SLICE_KEYS})"),
    ("instances-wrong-type", HEAD + 'instances = "three"\n',
     'bad.toml:5:1: slices[0].instances: must be an integer, got "three"'),
    ("instances-negative", HEAD + "instances = -1\n",
     "bad.toml:5:1: slices[0].instances: must be between 0 and 10000, got -1"),
    ("instances-absurd", HEAD + "instances = 1000000\n",
     "bad.toml:5:1: slices[0].instances: must be between 0 and 10000, got 1000000"),
    ("coordinates-missing-version", SMALL.replace("echo:1.0.0", "echo"),
     "bad.toml:4:1: slices[0].artifact: 'org.aether:echo' is not group:artifact:version"
     " (e.g. org.example:echo:1.0.0): it has 2 parts"),
    ("coordinates-bad-characters", SMALL.replace("echo:1.0.0", "ec/ho:1.0.0"),
     "bad.toml:4:1: slices[0].artifact: 'org.aether:ec/ho:1.0.0': the artifact 'ec/ho' must be letters,"
     " digits, '.', '_' or '-', starting and ending with a letter or digit"),
    ("coordinates-not-pep440", SMALL.replace("1.0.0", "latest"),
     "bad.toml:4:1: slices[0].artifact: 'org.aether:echo:latest': the version 'latest' is not a PEP 440"
     " version (e.g. 1.0.0)"),
    ("unknown-strategy", HEAD + 'instances = 1\nstrategy = "fastest"\n',
     'bad.toml:6:1: slices[0].strategy: must be one of round_robin, spread, bin_pack, got "fastest"'),
    ("unknown-balancing", HEAD + 'instances = 1\nbalancing = "sticky"\n',
     "bad.toml:6:1: slices[0].balancing: must be one of round_robin, random, power_of_two, local_first,"
     ' got "sticky"'),
    ("duplicate-slice",
     HEAD + 'instances = 1\n\n[[slices]]\nartifact = "org.aether:echo:1.1.0"\ninstances = 2\n',
     "bad.toml:8:1: slices[1].artifact: org.aether:echo is already deployed by slices[0]:"
     " one entry per slice"),
    ("min-available-above-instances", HEAD + "instances = 2\nmin_available = 3\n",
     "bad.toml:6:1: slices[0].min_available: must be between 0 and 2, got 3"),
    ("resources-negative-cpu", HEAD + "instances = 1\n\n[slices.resources]\ncpu = -1\n",
     "bad.toml:8:1: slices[0].resources.cpu: must be a number of cores in [0, 1024], got -1"),
    ("resources-memory-not-integer", HEAD + 'instances = 1\n\n[slices.resources]\nmemory_mib = 1.5\n',
     "bad.toml:8:1: slices[0].resources.memory_mib: must be an integer number of MiB ≥ 0, got 1.5"),
    ("name-missing", '[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 1\n',
     "bad.toml: name: required: a string naming the blueprint"),
    ("name-bad", SMALL.replace('"demo"', '"Demo App"'),
     "bad.toml:1:1: name: 'Demo App' must be 1–64 lowercase letters, digits, '.', '_' or '-',"
     " beginning and ending with a letter or digit"),
    ("no-slices", 'name = "demo"\n', "bad.toml: slices: at least one [[slices]] table is required"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), [pytest.param(*c[1:], id=c[0]) for c in BAD_BLUEPRINTS])
def test_validate_rejects_a_bad_blueprint_without_a_cluster(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.toml").write_text(text)
    for flags in ((), ("--json",)):
        run = expect(run_aether("blueprint", "validate", "bad.toml", *flags, cwd=tmp_path), 2)
        assert run.stderr == f"aether: error: {message}\n", str(run)
        assert run.stdout == ""


def test_validate_accepts_the_example_in_both_output_modes(tmp_path: Path) -> None:
    run = expect(run_aether("blueprint", "validate", str(EXAMPLE), cwd=tmp_path))
    assert run.stdout == f"{EXAMPLE}: valid blueprint 'demo' with 3 slices\n"
    data = expect(run_aether("blueprint", "validate", str(EXAMPLE), "--json", cwd=tmp_path)).json()
    assert data == {"valid": True, "name": "demo", "slices": [ECHO, GREETER, COUNTER]}


def test_validate_and_apply_of_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    for command in ("validate", "apply"):
        run = expect(run_aether("blueprint", command, "missing.toml", cwd=tmp_path), 2)
        assert run.stderr == "aether: error: missing.toml: cannot read it (No such file or directory)\n"
        run = expect(run_aether("blueprint", command, ".", cwd=tmp_path), 2)
        assert run.stderr == "aether: error: .: cannot read it (Is a directory)\n"


# ---------------------------------------------------------------- one cluster, every command


def test_every_command_on_a_real_cluster(tmp_path: Path, sample_index: Path) -> None:
    with cli_cluster(tmp_path, sample_index) as cluster:
        try:
            _walk_through(cluster, tmp_path)
        except BaseException:
            print(cluster.logs())
            raise


def _walk_through(cluster: CliCluster, tmp_path: Path) -> None:
    aether, cwd, node_ids = cluster.aether, cluster.cwd, cluster.node_ids
    (cwd / "small.toml").write_text(SMALL)
    demo = example_text(tmp_path)
    (cwd / "demo.toml").write_text(demo)
    (cwd / "spare.toml").write_text(SPARE)

    # an empty cluster
    assert expect(aether("blueprint", "list", "--json")).json() == []
    assert "Blueprints" in expect(aether("blueprint", "list")).stdout
    assert expect(aether("slice", "list", "--json")).json() == []
    # a name past the node's HTTP limits gets a bare 431 from its HTTP server: said, not an empty error
    too_long = expect(aether("blueprint", "get", "x" * 100_000), 1)
    assert "the node answered HTTP 431 Request Header Fields Too Large, with no message" in too_long.stderr
    assert "(a name, path or parameter too long?)" in too_long.stderr, too_long

    # apply, human: created, with its revision in the blueprint's history (what rollback --to takes)
    run = expect(aether("blueprint", "apply", "small.toml"))
    assert run.stdout == "blueprint 'demo' created (revision 1)\n", str(run)

    # apply --wait, human: updated, then converged (3 slices, 6 instances)
    run = expect(aether("blueprint", "apply", "demo.toml", "--wait"))
    assert "blueprint 'demo' updated; waiting for it to converge...\n" in run.stdout, str(run)
    assert f"blueprint 'demo' converged: {ECHO} 3/3, {GREETER} 2/2, {COUNTER} 1/1\n" in run.stdout, str(run)

    # apply --json: the apply result; apply --wait --json: the converged status
    applied = expect(aether("blueprint", "apply", "demo.toml", "--json")).json()
    assert applied == {
        "name": "demo",
        "created": False,
        "revision": applied["revision"],
        "slices": 3,
        "blueprint_revision": 2,  # the same content again: no new revision of the blueprint
        "change": "applied",
        "notes": [],
        "unchanged": True,
    }
    run = expect(aether("blueprint", "apply", "demo.toml"))  # the same again, human
    assert run.stdout == "blueprint 'demo' unchanged (revision 2)\n", str(run)
    status = expect(aether("blueprint", "apply", "demo.toml", "--wait", "--json")).json()
    _check_converged(status, {ECHO: 3, GREETER: 2, COUNTER: 1}, node_ids)

    # blueprint get: the source exactly as applied
    run = expect(aether("blueprint", "get", "demo"))
    assert run.stdout == demo.rstrip() + "\n"
    data = expect(aether("blueprint", "get", "demo", "--json")).json()
    assert data["name"] == "demo"
    assert data["source"] == demo
    assert data["timestamp"] > 0
    assert data["slices"] == [
        {"artifact": ECHO, "instances": 3, "strategy": "round_robin", "health": ""},
        {"artifact": GREETER, "instances": 2, "strategy": "spread", "health": ""},
        {"artifact": COUNTER, "instances": 1, "strategy": "round_robin", "health": ""},
    ]

    # blueprint list
    listed = expect(aether("blueprint", "list", "--json")).json()
    assert [b["name"] for b in listed] == ["demo"]
    assert listed[0]["slices"] == data["slices"]
    run = expect(aether("blueprint", "list"))
    assert re.search(rf"demo\W+{re.escape(f'{ECHO} x3, {GREETER} x2, {COUNTER} x1')}", run.stdout), str(run)

    # blueprint status
    _check_converged(
        expect(aether("blueprint", "status", "demo", "--json")).json(),
        {ECHO: 3, GREETER: 2, COUNTER: 1},
        node_ids,
    )
    run = expect(aether("blueprint", "status", "demo"))
    assert "blueprint demo: converged" in run.stdout, str(run)
    for artifact, count in ((ECHO, 3), (GREETER, 2), (COUNTER, 1)):
        assert re.search(rf"{re.escape(artifact)}\W+{count}\W+{count}\W", run.stdout), str(run)
    assert run.stdout.count("ACTIVE") == 1 + 6, str(run)  # the column header and 6 instances

    # slice list
    instances = expect(aether("slice", "list", "--json")).json()
    assert collections.Counter(i["artifact"] for i in instances) == {ECHO: 3, GREETER: 2, COUNTER: 1}
    assert {i["state"] for i in instances} == {"ACTIVE"}
    assert {i["node_id"] for i in instances} <= set(node_ids)
    greeter_nodes = [i["node_id"] for i in instances if i["artifact"] == GREETER]
    assert len(set(greeter_nodes)) == 2, f"spread, max_per_node = 1: {greeter_nodes}"
    run = expect(aether("slice", "list"))
    for item in instances:
        assert re.search(
            rf"{item['node_id']}\W+{re.escape(item['artifact'])}\W+{item['instance']}\W+ACTIVE", run.stdout
        ), f"{item} not in:\n{run}"

    # slice status, by group:artifact and by full coordinates
    run = expect(aether("slice", "status", "org.aether:echo"))
    assert run.stdout.startswith(f"{ECHO}: 3/3 ACTIVE\n"), str(run)
    data = expect(aether("slice", "status", "org.aether:echo", "--json")).json()
    assert (data["artifact"], data["desired"], data["active"], data["problem"]) == (ECHO, 3, 3, "")
    assert sorted(i["instance"] for i in data["instances"]) == [1, 2, 3]
    data = expect(aether("slice", "status", GREETER, "--json")).json()
    assert (data["artifact"], data["desired"], data["active"]) == (GREETER, 2, 2)
    run = expect(aether("slice", "status", "org.aether:nope"), 1)
    assert run.stderr == "aether: error: no blueprint deploys org.aether:nope and no instance of it exists\n"
    run = expect(aether("slice", "status", "nope"), 2)
    assert run.stderr == "aether: error: 'nope' is not group:artifact (e.g. org.example:echo)\n"

    # slice invoke: echo returns the payload; greeter calls echo through the cluster
    payload = {"hello": "aether", "list": [1, 2.5, None, True], "nested": {"ü": "ß"}}
    run = expect(aether("slice", "invoke", "org.aether:echo", "echo", "--data", json.dumps(payload)))
    assert json.loads(run.stdout) == payload
    assert run.stdout.startswith("{\n  "), "human output is indented"
    run = expect(
        aether("slice", "invoke", "org.aether:echo", "echo", "--data", json.dumps(payload), "--json")
    )
    assert run.stdout.count("\n") == 1 and json.loads(run.stdout) == payload
    for flags in ((), ("--json",)):
        run = expect(
            aether("slice", "invoke", "org.aether:greeter", "greet", "--data", '{"name": "ada"}', *flags)
        )
        assert json.loads(run.stdout) == {"greeting": "hello ada", "via": {"name": "ada"}}
    info = expect(aether("slice", "invoke", ECHO, "info", "--json")).json()
    assert info["version"] == "1.0.0" and info["instance"] in (1, 2, 3)
    run = expect(aether("slice", "invoke", "org.aether:echo", "nope"), 1)
    assert run.stderr == "aether: error: org.aether:echo has no entry point 'nope' (it has: echo, info)\n"
    run = expect(aether("slice", "invoke", "org.aether:ecoh", "echo"), 1)  # a typo: not "all down"
    assert run.stderr == (
        "aether: error: no blueprint deploys org.aether:ecoh and no instance of it runs"
        " (`aether blueprint list`)\n"
    ), str(run)
    run = expect(aether("slice", "invoke", "org.aether:echo", "echo", "--data", "{nope"), 2)
    assert run.stderr.startswith("aether: error: --data is not valid JSON: "), str(run)
    run = expect(aether("slice", "invoke", "org.aether:greeter", "greet", "--data", "42"), 1)
    assert 'greet takes {"name": <string>}' in run.stderr, str(run)

    # cluster status
    data = expect(aether("cluster", "status", "--json")).json()
    assert data["has_quorum"] is True and data["healthy"] is True
    assert data["leader"] in node_ids
    assert (data["blueprints"], data["instances"], data["active"], data["failed"]) == (1, 6, 6, 0)
    assert data["term"] >= 1 and data["revision"] > applied["revision"]
    assert sorted(n["node_id"] for n in data["nodes"]) == node_ids
    leader = data["leader"]
    run = expect(aether("cluster", "status"))
    assert re.search(
        rf"cluster healthy: leader {leader}, quorum yes, term \d+, revision \d+\n", run.stdout
    ), str(run)
    assert "3 of 3 expected nodes registered, 1 blueprint, 6 instances (6 ACTIVE, 0 FAILED)" in run.stdout, (
        str(run)
    )

    # the first URL is down: the client fails over to the next
    urls = f"http://127.0.0.1:{closed_port()},{cluster.urls}"
    data = expect(aether("cluster", "status", "--json", "--cluster", urls)).json()
    assert data["leader"] == leader

    # cluster nodes
    nodes = expect(aether("cluster", "nodes", "--json")).json()
    plans = {n.node_id: n for n in cluster.local.nodes}
    assert sorted(n["node_id"] for n in nodes) == node_ids
    for node in nodes:
        plan = plans[node["node_id"]]
        assert (node["ingress"], node["management"], node["peer"]) == (
            plan.ingress,
            plan.management,
            plan.peer,
        )
        assert node["cpu"] > 0 and node["memory_mib"] > 0 and node["started_at"] > 0
    assert [n["node_id"] for n in nodes if n["leader"]] == [leader]
    assert sum(n["instances"] for n in nodes) == 6 and sum(n["active"] for n in nodes) == 6
    run = expect(aether("cluster", "nodes"))
    for node in nodes:
        star = r"\*" if node["leader"] else ""
        assert re.search(
            rf"{node['node_id']}\W+{star}\W*{node['active']}/{node['instances']}\W"
            rf".*{re.escape(node['ingress'])}\W+{re.escape(node['management'])}",
            run.stdout,
        ), f"{node} not in:\n{run}"

    # cluster events: recent, with the blueprint and the instances becoming ACTIVE
    events = expect(aether("cluster", "events", "--limit", "500", "--json")).json_lines()
    revisions = [e["revision"] for e in events]
    assert revisions == sorted(revisions)
    applied_events = [e for e in events if e["kind"] == "blueprint_applied"]
    assert [e["subject"] for e in applied_events] == ["demo"] * 5, applied_events
    assert applied["revision"] in [e["revision"] for e in applied_events]
    active = {
        (e["subject"], e["node_id"])
        for e in events
        if e["kind"] == "instance_state" and e["state"] == "ACTIVE"
    }
    assert {(f"{i['artifact']}#{i['instance']}", i["node_id"]) for i in instances} <= active
    assert len(expect(aether("cluster", "events", "--limit", "3", "--json")).json_lines()) == 3
    run = expect(aether("cluster", "events", "--limit", "500"))
    line = rf"#{applied['revision']} blueprint_applied blueprint demo applied \(revision 2\)\n"
    assert re.search(line, run.stdout), str(run)
    assert re.search(rf"#\d+ instance_state {re.escape(ECHO)}#1 on node-\d: ACTIVE\n", run.stdout), str(run)
    run = expect(aether("cluster", "events", "--limit", "0"), 2)
    assert run.stderr == "aether: error: --limit must be between 1 and 1000, got 0\n"

    # cluster events --follow, both modes at once: a change shows up in each while it happens
    _follow_a_change(cluster, tmp_path)

    # back to 3 echo instances: --wait also waits for a scale-down
    run = expect(aether("blueprint", "apply", "demo.toml", "--wait"))
    assert f"converged: {ECHO} 3/3, {GREETER} 2/2, {COUNTER} 1/1" in run.stdout, str(run)
    assert expect(aether("blueprint", "status", "demo", "--json")).json()["slices"][0]["active"] == 3

    # delete: human on a second blueprint, --json on demo; afterwards demo is gone
    expect(aether("blueprint", "apply", "spare.toml"))
    run = expect(aether("blueprint", "delete", "spare"))
    assert run.stdout == "blueprint 'spare' deleted; its instances are being unloaded\n"
    assert expect(aether("blueprint", "delete", "demo", "--json")).json() == {"deleted": "demo"}
    for command in ("status", "get", "delete"):
        run = expect(aether("blueprint", command, "demo"), 1)
        assert run.stderr == "aether: error: no blueprint named 'demo'\n", str(run)
    assert expect(aether("blueprint", "list", "--json")).json() == []
    wait_until(
        lambda: expect(aether("slice", "list", "--json")).json() == [],
        timeout=30,
        what="every instance of the deleted blueprint to be unloaded",
    )
    data = expect(aether("cluster", "status", "--json"), ANSWERED).json()
    assert (data["blueprints"], data["instances"]) == (0, 0)
    run = expect(aether("slice", "status", "org.aether:echo"), 1)
    assert "no blueprint deploys org.aether:echo" in run.stderr
    kinds = [
        (e["kind"], e["subject"])
        for e in expect(aether("cluster", "events", "--limit", "200", "--json")).json_lines()
    ]
    assert ("blueprint_deleted", "demo") in kinds


def _check_converged(status: dict[str, Any], desired: dict[str, int], node_ids: list[str]) -> None:
    assert status["name"] == "demo"
    assert {s["artifact"]: (s["desired"], s["active"]) for s in status["slices"]} == {
        artifact: (count, count) for artifact, count in desired.items()
    }, status
    for item in status["slices"]:
        assert item["problem"] == ""
        assert len(item["instances"]) == item["desired"]
        for instance in item["instances"]:
            assert (instance["artifact"], instance["state"], instance["reason"]) == (
                item["artifact"],
                "ACTIVE",
                "",
            )
            assert instance["node_id"] in node_ids


def _follow_a_change(cluster: CliCluster, tmp_path: Path) -> None:
    env = {"AETHER_CLUSTER": cluster.urls}
    (cluster.cwd / "demo4.toml").write_text(example_text(tmp_path, echo=4))
    with (
        background_aether(
            "cluster", "events", "--follow", "--limit", "1", "--json", cwd=cluster.cwd, env=env
        ) as as_json,
        background_aether("cluster", "events", "--follow", "--limit", "1", cwd=cluster.cwd, env=env) as human,
    ):
        # the recent event first: the stream is open before the change
        as_json.wait_for(lambda line: True, timeout=15, what="the recent event (--json)")
        human.wait_for(lambda line: True, timeout=15, what="the recent event")
        revision = expect(cluster.aether("blueprint", "apply", "demo4.toml", "--json")).json()["revision"]

        def json_event(kind: str, **fields: Any) -> Any:
            def match(line: str) -> bool:
                event = json.loads(line)
                return event["kind"] == kind and all(event.get(k) == v for k, v in fields.items())

            return match

        as_json.wait_for(
            json_event("blueprint_applied", subject="demo", revision=revision),
            timeout=15,
            what=f"blueprint_applied at revision {revision}",
        )
        line = as_json.wait_for(
            lambda line: (
                json_event("instance_state", state="ACTIVE")(line)
                and json.loads(line)["subject"].startswith(f"{ECHO}#")
            ),
            timeout=30,
            what="the 4th echo instance ACTIVE",
        )
        assert json.loads(line)["revision"] > revision
        human.wait_for(
            lambda line: (
                re.search(rf"#{revision} blueprint_applied blueprint demo applied \(revision \d+\)$", line)
                is not None
            ),
            timeout=15,
            what="the blueprint_applied line",
        )
        human.wait_for(
            lambda line: (
                re.search(rf"instance_state {re.escape(ECHO)}#\d+ on node-\d: ACTIVE$", line) is not None
            ),
            timeout=30,
            what="an echo instance ACTIVE line",
        )
        # Ctrl-C ends --follow quietly, with 130 as a shell reports an interrupted command
        human.process.send_signal(signal.SIGINT)
        assert human.process.wait(timeout=10) == 130
        assert human.process.stderr is not None
        assert "Traceback" not in human.process.stderr.read()
    assert as_json.process.returncode is not None


# ---------------------------------------------------------------- bad blueprints through apply

THOROUGH = {"toml-syntax", "instances-negative", "slice-of-another-blueprint"}  # also --json, --wait


@pytest.mark.long
def test_a_rejected_blueprint_leaves_the_previous_one_in_place(tmp_path: Path, sample_index: Path) -> None:
    with cli_cluster(tmp_path, sample_index) as cluster:
        aether, cwd = cluster.aether, cluster.cwd
        good = SMALL.replace("instances = 1", "instances = 2") + "# the good one\n"
        (cwd / "good.toml").write_text(good)
        expect(aether("blueprint", "apply", "good.toml", "--wait"))
        before_status = normalised_status(expect(aether("blueprint", "status", "demo", "--json")).json())
        before_list = expect(aether("blueprint", "list", "--json")).json()
        start = max(e["revision"] for e in expect(aether("cluster", "events", "--json")).json_lines())

        conflict = SMALL.replace('"demo"', '"other"').replace("1.0.0", "1.1.0")
        cases = [
            *((case_id, text, message) for case_id, text, message in BAD_BLUEPRINTS),
            ("slice-of-another-blueprint", conflict,
             "bad.toml: org.aether:echo:1.1.0: this slice is already deployed by blueprint 'demo'"),
        ]  # fmt: skip
        # each case from a directory of its own (the file is always bad.toml), a few at a time
        runs = []
        for case_id, text, message in cases:
            (cwd / case_id).mkdir()
            (cwd / case_id / "bad.toml").write_text(text)
            variants = [(), ("--json",), ("--wait",)] if case_id in THOROUGH else [()]
            runs += [(case_id, message, flags) for flags in variants]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            results = pool.map(
                lambda item: (item, aether("blueprint", "apply", "bad.toml", *item[2], cwd=cwd / item[0])),
                runs,
            )
            wrong = [
                f"[{case_id}] expected exit 2 and {message!r}:\n{run}"
                for (case_id, message, _), run in results
                if (run.returncode, run.stderr, run.stdout) != (2, f"aether: error: {message}\n", "")
            ]
        assert not wrong, "\n\n".join(wrong)

        # the body must be UTF-8 (through the API: the CLI cannot send anything else)
        answer = httpx.post(
            f"http://{cluster.local.nodes[0].management}/api/v1/blueprints", content=b'name = "d\xff"\n'
        )
        assert answer.status_code == 400
        assert answer.json()["error"]["message"] == "the blueprint must be UTF-8 TOML text"

        # nothing changed
        assert expect(aether("blueprint", "get", "demo", "--json")).json()["source"] == good
        assert expect(aether("blueprint", "get", "demo")).stdout == good.rstrip() + "\n"
        assert expect(aether("blueprint", "list", "--json")).json() == before_list
        assert (
            normalised_status(expect(aether("blueprint", "status", "demo", "--json")).json()) == before_status
        )
        expect(aether("blueprint", "get", "other"), 1)
        events = expect(aether("cluster", "events", "--json", "--limit", "1000")).json_lines()
        assert [e for e in events if e["revision"] > start and e["kind"].startswith("blueprint_")] == []


def test_a_rollout_command_on_a_slice_not_deployed_says_so(tmp_path: Path, sample_index: Path) -> None:
    with cli_cluster(tmp_path, sample_index, nodes=1) as cluster:
        aether, cwd = cluster.aether, cluster.cwd
        (cwd / "small.toml").write_text(SMALL)
        expect(aether("blueprint", "apply", "small.toml"))
        management = f"http://{cluster.local.nodes[0].management}/api/v1/slices"
        for operation in ("abort", "promote", "pause", "resume"):
            run = expect(aether("slice", operation, "org.aether:greeter"), 1)
            assert run.stderr == (
                "aether: error: no blueprint deploys org.aether:greeter: apply one that does first\n"
            ), run
            assert httpx.post(f"{management}/org.aether:greeter/{operation}").status_code == 404
        for operation in ("abort", "promote"):  # deployed, but nothing to abort or promote: a conflict
            run = expect(aether("slice", operation, "org.aether:echo"), 1)
            assert (
                run.stderr
                == "aether: error: org.aether:echo has no canary or blue-green rollout in progress\n"
            )
            answer = httpx.post(f"{management}/org.aether:echo/{operation}")
            assert answer.status_code == 409, answer.text


# ---------------------------------------------------------------- a valid blueprint that cannot run

FAULTY = """name = "broken"

[[slices]]
artifact = "org.aether:faulty:1.0.0"
instances = 1

[slices.config]
mode = "fail_start"
"""


@pytest.mark.long
def test_apply_wait_says_why_a_blueprint_cannot_converge(tmp_path: Path, sample_index: Path) -> None:
    with cli_cluster(tmp_path, sample_index, nodes=1) as cluster:
        aether = cluster.aether
        (cluster.cwd / "faulty.toml").write_text(FAULTY)
        run = expect(aether("blueprint", "apply", "faulty.toml", "--wait", "--timeout", "90"), 1)
        assert run.stderr.startswith("aether: error: blueprint 'broken' cannot converge:\n  "), str(run)
        assert "faulty: start failed on purpose" in run.stderr, str(run)

        status = expect(aether("blueprint", "status", "broken", "--json"), 4).json()
        (item,) = status["slices"]
        assert (item["desired"], item["active"]) == (1, 0)
        assert [i["state"] for i in item["instances"]] == ["FAILED"]
        assert "faulty: start failed on purpose" in item["instances"][0]["reason"]
        run = expect(aether("blueprint", "status", "broken"), 4)  # answered, not converged
        assert "blueprint broken: converging" in run.stdout and "FAILED" in run.stdout, str(run)
        assert "start failed on purpose" in run.stdout, str(run)

        data = expect(aether("cluster", "status", "--json"), 4).json()
        assert (data["healthy"], data["failed"], data["active"]) == (False, 1, 0)
        assert "cluster unhealthy: leader node-1, quorum yes" in expect(aether("cluster", "status"), 4).stdout
        events = expect(aether("cluster", "events", "--json")).json_lines()
        failed = [e for e in events if e["kind"] == "instance_state" and e["state"] == "FAILED"]
        assert failed and "start failed on purpose" in failed[-1]["reason"], events


# ---------------------------------------------------------------- no cluster: unreachable, bad arguments


@pytest.mark.long
def test_an_unreachable_cluster_exits_3_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "small.toml").write_text(SMALL)
    port, other = closed_port(), closed_port()
    url = f"http://127.0.0.1:{port}"
    commands = [
        ("blueprint", "apply", "small.toml"),
        ("blueprint", "apply", "small.toml", "--wait"),
        ("blueprint", "get", "demo"),
        ("blueprint", "list"),
        ("blueprint", "delete", "demo"),
        ("blueprint", "status", "demo"),
        ("slice", "list"),
        ("slice", "status", "org.aether:echo"),
        ("slice", "invoke", "org.aether:echo", "echo", "--data", "{}"),
        ("cluster", "status"),
        ("cluster", "nodes"),
        ("cluster", "events"),
        ("cluster", "events", "--follow"),
    ]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = list(
            pool.map(
                lambda args: run_aether(*args, "--cluster", url, cwd=tmp_path, timeout=30),
                [(*command, *flags) for command in commands for flags in ((), ("--json",))],
            )
        )
    for run in runs:
        expect(run, 3)
        assert run.stderr.startswith(f"aether: error: cannot reach the cluster: {url}: "), str(run)
        assert "Connection refused" in run.stderr and "Traceback" not in run.stderr, str(run)
        assert run.stdout == ""
    # every URL is named; AETHER_CLUSTER works like --cluster
    both = f"{url},127.0.0.1:{other}"
    run = expect(run_aether("cluster", "status", cwd=tmp_path, env={"AETHER_CLUSTER": both}), 3)
    assert f"{url}: " in run.stderr and f"http://127.0.0.1:{other}: " in run.stderr, str(run)
    # no cluster at all (and no .aether-dev/ in the working directory)
    run = expect(run_aether("cluster", "status", cwd=tmp_path), 3)
    assert run.stderr == (
        "aether: error: no cluster given: pass --cluster URL (or AETHER_CLUSTER), add a context"
        " (`aether context add NAME URL`), or start one with `aether dev up`\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("bogus",), 'Unknown command "bogus"'),
        (("blueprint", "bogus"), 'Unknown command "bogus"'),
        (("blueprint", "list", "--bogus"), "Unknown option: --bogus"),
        (("cluster", "status", "--follow"), "Unknown option: --follow"),
        (("blueprint", "apply"), 'Command "blueprint apply" parameter FILE requires an argument.'),
        (
            ("slice", "invoke", "org.aether:echo"),
            'Command "slice invoke" parameter ENTRY requires an argument.',
        ),
        (("cluster", "events", "--limit", "many"), 'unable to convert "many" into int'),
        (("dev", "up", "--nodes", "three"), 'unable to convert "three" into int'),
        (("slice", "invoke", "org.aether:echo", "echo", "--data", "{"), "--data is not valid JSON"),
        (("dev", "up", "--nodes", "0"), "--nodes must be at least 1, got 0"),
        (
            ("blueprint", "apply", "x.toml", "--wait", "--timeout", "-1"),
            "--timeout must be a number of seconds > 0, got -1",
        ),
        (
            ("node", "drain", "node-1", "--wait", "--timeout", "0"),
            "--timeout must be a number of seconds > 0, got 0",
        ),
        (
            ("node", "drain", "node-1", "--wait", "--timeout", "nan"),
            "--timeout must be a number of seconds > 0, got nan",
        ),
        (("node", "drain", "node-1", "--timeout", "5"), "--timeout goes with --wait"),
        (("blueprint", "apply", "x.toml", "--timeout", "5"), "--timeout goes with --wait"),
    ],
)
def test_bad_arguments_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    run = expect(run_aether(*args, "--cluster", f"http://127.0.0.1:{closed_port()}", cwd=tmp_path), 2)
    assert message in run.stderr, str(run)
    assert "Traceback" not in run.stderr
    assert not (tmp_path / ".aether-dev").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("blueprint", "validate", "-"),
        ("blueprint", "apply", "-"),
        ("slice", "invoke", "org.aether:echo", "e", "-d", "-"),
    ],
    ids=["validate", "apply", "invoke"],
)
@pytest.mark.parametrize("locale", ["C", "C.UTF-8"])
def test_bytes_on_stdin_that_are_not_utf8_exit_2_saying_so(
    tmp_path: Path, args: tuple[str, ...], locale: str
) -> None:
    # (in a C locale, stdin's own decoding passes bad bytes on as surrogates: they must not get further)
    result = subprocess.run(
        [*aether_command(), *args, "--cluster", f"http://127.0.0.1:{closed_port()}"],
        cwd=tmp_path,
        env=cli_env({"LC_ALL": locale}, cwd=tmp_path),
        input=b'name = "x\xff\xfe"\n',
        capture_output=True,
        timeout=60,
        check=False,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert stderr.startswith("aether: error: <stdin>: not UTF-8 text (byte 9): "), stderr


def test_help_lists_every_command(tmp_path: Path) -> None:
    expected = {
        (): ["blueprint", "slice", "cluster", "node", "dev", "context", "completion"],
        ("blueprint",): [
            "apply",
            "validate",
            "get",
            "list",
            "delete",
            "status",
            "history",
            "rollback",
            "diff",
        ],
        ("slice",): ["list", "status", "invoke", "scale", "promote", "abort"],
        ("cluster",): ["status", "nodes", "events"],
        ("node",): ["cordon", "uncordon", "drain", "stop"],
        ("dev",): ["up", "down", "status"],
        ("context",): ["add", "use", "list", "remove"],
    }
    for group, commands in expected.items():
        run = expect(run_aether(*group, "--help", cwd=tmp_path))
        for command in commands:
            assert re.search(rf"│ {command}\s", run.stdout), f"{command} missing:\n{run}"
    run = expect(run_aether("cluster", "events", "--help", cwd=tmp_path))
    for option in ("--follow", "--limit", "--cluster", "--api-key", "--json", "--output", "--context", "-f"):
        assert option in run.stdout, str(run)


# ---------------------------------------------------------------- bugs


def test_a_blueprint_file_that_is_not_utf8_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "latin1.toml").write_bytes('name = "café"\n'.encode("latin-1"))
    for command in ("validate", "apply"):
        run = run_aether("blueprint", command, "latin1.toml", "--cluster", f"http://127.0.0.1:{closed_port()}",
                         cwd=tmp_path)  # fmt: skip
        assert "Traceback" not in run.stderr, str(run)
        assert run.returncode == 2, str(run)
        assert run.stderr.startswith("aether: error: latin1.toml: "), str(run)


@pytest.mark.parametrize("url", ["http://127.0.0.1:notaport", "http://256.1.1.1:80", "http://[::1"])
def test_a_malformed_cluster_url_is_a_bad_argument(tmp_path: Path, url: str) -> None:
    run = run_aether("cluster", "status", "--cluster", url, cwd=tmp_path)
    assert "Traceback" not in run.stderr, str(run)
    assert run.returncode == 2, str(run)


BLUEPRINT = {"name": "demo", "slices": [], "timestamp": 1.0, "source": 'name = "demo"\n'}
CLUSTER = {
    "leader": "node-1", "term": 1, "revision": 9, "has_quorum": True, "healthy": True, "nodes": [],
    "blueprints": 1, "instances": 0, "active": 0, "failed": 0,
}  # fmt: skip


@pytest.mark.parametrize("name", ["demo?keep", "demo#keep", "../cluster", "demo/status"])
def test_a_blueprint_name_is_sent_as_one_path_segment(tmp_path: Path, name: str) -> None:
    routes = {
        ("GET", "/api/v1/blueprints/demo"): (200, BLUEPRINT),
        ("GET", "/api/v1/blueprints/demo/status"): (200, {"name": "demo", "slices": []}),
        ("DELETE", "/api/v1/blueprints/demo"): (200, {"deleted": "demo"}),
        ("GET", "/api/v1/cluster"): (200, CLUSTER),
    }
    with stub_api(routes) as stub:
        runs = [run_aether("blueprint", command, name, "--cluster", stub.url, cwd=tmp_path)
                for command in ("delete", "get", "status")]  # fmt: skip
    # whatever the CLI does with such a name, it must not act on another blueprint or resource
    for run in runs:
        assert "Traceback" not in run.stderr, str(run)
        assert run.returncode in (1, 2), str(run)
    touched = [(method, path) for method, path in stub.requests if path.split("?")[0].split("#")[0] in
               ("/api/v1/blueprints/demo", "/api/v1/blueprints/demo/status", "/api/v1/cluster")]  # fmt: skip
    assert touched == [], f"requests for another resource than {name!r}: {touched}"


@pytest.mark.parametrize(
    ("data", "stdin", "message"),
    [
        ("NaN", None, "--data is not valid JSON: NaN is not a JSON value"),
        (
            '{"a": [1, -Infinity]}',
            None,
            "--data is not valid JSON: -Infinity is not a JSON value",
        ),
        ('{"a": 1e400}', None, "--data is not valid JSON: 1e400 is too large for a number"),
        (
            "-",
            '{"a": Infinity}',
            "--data - (stdin) is not valid JSON: Infinity is not a JSON value",
        ),
        ('{"a": }', None, "--data is not valid JSON: Expecting value: line 1 column 7 (char 6)"),
    ],
)
def test_a_payload_json_cannot_carry_is_refused_before_it_is_sent(
    tmp_path: Path, data: str, stdin: str | None, message: str
) -> None:
    with stub_api({}) as stub:
        run = run_aether(
            "slice", "invoke", "org.aether:echo", "echo", "--data", data, "--cluster", stub.url,
            cwd=tmp_path, input=stdin,
        )  # fmt: skip
    assert (run.returncode, run.stdout, run.stderr) == (2, "", f"aether: error: {message}\n"), run
    assert stub.requests == []


NODES = [
    {
        "node_id": f"node-{i}", "ingress": f"127.0.0.1:4{i}001", "management": f"127.0.0.1:4{i}002",
        "peer": f"127.0.0.1:4{i}003", "cpu": 2.0, "memory_mib": 4096, "role": "worker",
        "started_at": 1.0, "instances": 2, "active": 2, "leader": i == 1,
    }
    for i in (1, 2, 3)
]  # fmt: skip


def test_cluster_nodes_shows_node_ids_and_addresses_in_80_columns(tmp_path: Path) -> None:
    with stub_api({("GET", "/api/v1/nodes"): (200, NODES)}) as stub:
        run = expect(
            run_aether("cluster", "nodes", "--cluster", stub.url, cwd=tmp_path, env={"COLUMNS": "80"})
        )
    for node in NODES:
        for field in ("node_id", "ingress", "management"):
            assert node[field] in run.stdout, f"{node[field]} not shown:\n{run}"


def test_cluster_nodes_shows_node_ids_and_addresses_in_a_wide_terminal(tmp_path: Path) -> None:
    with stub_api({("GET", "/api/v1/nodes"): (200, NODES)}) as stub:
        run = expect(run_aether("cluster", "nodes", "--cluster", stub.url, cwd=tmp_path))
    assert stub.requests == [("GET", "/api/v1/nodes")]
    for node in NODES:
        for field in ("node_id", "ingress", "management"):
            assert node[field] in run.stdout, f"{node[field]} not shown:\n{run}"


def test_control_characters_in_an_error_never_reach_the_terminal(tmp_path: Path) -> None:
    # a slice's exception message travels in the API's error: ESC sequences (clear the screen, retitle the
    # terminal) and a CR (overwrite the line) are shown as escapes; newlines stay lines
    message = "RuntimeError: bad \x1b[2J\x1b]0;PWNED\x07 \r\nforged: line"
    routes = {("GET", "/api/v1/cluster"): (500, {"error": {"kind": "raised", "message": message}})}
    with stub_api(routes) as stub:
        run = expect(run_aether("cluster", "status", "--cluster", stub.url, cwd=tmp_path), 1)
    assert "\x1b" not in run.stderr and "\x07" not in run.stderr and "\r" not in run.stderr, repr(run.stderr)
    assert "bad \\x1b[2J\\x1b]0;PWNED\\x07 \\r\nforged: line" in run.stderr, repr(run.stderr)
