"""`aether dev up | status | down`: a local cluster of real nodes from a clean directory, as a newcomer
starts it (building the sample-slice index, applying the example blueprint), called through the ingress
URLs it prints, and stopped without leaving a process behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
from pathlib import Path

import httpx
import pytest
from cli_support import (
    ANSWERED,
    CONFIG_DIR,
    COUNTER,
    ECHO,
    EXAMPLE,
    GREETER,
    SAMPLE_SLICES,
    CliRun,
    closed_port,
    expect,
    kill_processes_of,
    processes_of,
    run_aether,
    stub_api,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# What runs for a dev cluster: nodes, their KV replicas, slice hosts (and their templates).
KINDS = ("aether_node", "aether_kv serve", "aether_slice.host")


@pytest.mark.long
def test_dev_up_status_and_down_leave_nothing_behind(tmp_path: Path) -> None:
    work = tmp_path / "work"  # a clean working directory: no .aether-dev/, no sample-slices/
    work.mkdir()
    dev = tmp_path / "dev"
    try:
        _up_use_and_down(work, dev)
    except BaseException:
        for log in sorted(dev.glob("node-*/node.log")):
            print(f"--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))
        raise
    finally:
        if (dev / "cluster.json").exists():
            run_aether("dev", "down", "--directory", str(dev), cwd=work, timeout=90)
        kill_processes_of(dev)


def _up_use_and_down(work: Path, dev: Path) -> None:
    run = expect(
        run_aether(
            "dev", "up", "--nodes", "3", "--directory", str(dev), "--source", str(SAMPLE_SLICES),
            "--apply", str(EXAMPLE), cwd=work, timeout=300,
        )
    )  # fmt: skip
    assert f"building the slice index from {SAMPLE_SLICES}/ ..." in run.stdout, str(run)
    assert re.search(
        rf"Aether dev cluster ready in [\d.]+ s: 3 nodes, data in {re.escape(str(dev))}/\n", run.stdout
    )
    assert f"converged: {ECHO} 3/3, {GREETER} 2/2, {COUNTER} 1/1" in run.stdout, str(run)
    printed = re.findall(r"  (node-\d): ingress (http://\S+)  management (http://\S+)", run.stdout)
    assert [node for node, _, _ in printed] == ["node-1", "node-2", "node-3"], str(run)
    state = json.loads((dev / "cluster.json").read_text())
    assert [ingress for _, ingress, _ in printed] == state["ingress"]
    assert [management for _, _, management in printed] == state["management"]
    assert not (work / ".aether-dev").exists()
    # it records the cluster as the `dev` context, current (there was none), in the config file (0600)
    config = work / CONFIG_DIR / "aether" / "config.toml"
    assert f"  context 'dev' recorded in {config} (now current)\n" in run.stdout, str(run)
    assert config.stat().st_mode & 0o777 == 0o600
    contexts = expect(run_aether("context", "list", "--json", cwd=work)).json()
    assert contexts == [
        {"name": "dev", "current": True, "cluster": state["management"], "api_key_set": False}
    ]
    # so `aether` finds the cluster from anywhere (no .aether-dev/ here), unless told otherwise
    elsewhere = {"XDG_CONFIG_HOME": str(work / CONFIG_DIR)}
    status = expect(run_aether("cluster", "status", "--json", cwd=dev.parent, env=elsewhere), ANSWERED)
    assert status.json()["has_quorum"] is True
    refused = f"http://127.0.0.1:{closed_port()}"
    status = expect(run_aether("cluster", "status", "--cluster", refused, cwd=dev.parent, env=elsewhere), 3)
    assert status.stderr.startswith(f"aether: error: cannot reach the cluster: {refused}: "), str(status)
    # the dashboard URL it prints serves the page
    dashboard = re.search(r"\nDashboard: (http://\S+/dashboard) ", run.stdout)
    assert dashboard and dashboard[1] == f"{state['management'][0]}/dashboard", str(run)
    page = httpx.get(dashboard[1], timeout=30)
    assert page.status_code == 200 and "<title>Aether cluster</title>" in page.text

    # the curl line it suggests works, and so does every printed ingress
    curl = re.search(r"curl -s -X POST (\S+) -d '(.+)'\n", run.stdout)
    assert curl, str(run)
    answer = httpx.post(curl[1], content=curl[2].encode(), timeout=30)
    assert (answer.status_code, answer.json()) == (200, json.loads(curl[2])), answer.text
    for _, ingress, _ in printed:
        answer = httpx.post(f"{ingress}/invoke/org.aether:echo/echo", json={"via": ingress}, timeout=30)
        assert (answer.status_code, answer.json()) == (200, {"via": ingress}), answer.text
        answer = httpx.post(f"{ingress}/invoke/org.aether:greeter/greet", json={"name": "dev"}, timeout=30)
        assert answer.status_code == 200 and answer.json()["greeting"] == "hello dev", answer.text

    # dev status: 3 running nodes and a healthy cluster (right after start, a follower-to-follower Raft
    # link may still be connecting: health says so until it is up)
    def healthy() -> CliRun | None:
        run = expect(run_aether("dev", "status", "--directory", str(dev), cwd=work), ANSWERED)
        return run if run.returncode == 0 and "cluster healthy: leader node-" in run.stdout else None

    run = wait_until(healthy, timeout=30, what="dev status: cluster healthy")
    for node, pid in state["pids"].items():
        assert f"  {node}: pid {pid} running\n" in run.stdout, str(run)
    assert "cluster healthy: leader node-" in run.stdout, str(run)
    assert "3 of 3 expected nodes registered, 1 blueprint, 6 instances (6 ACTIVE, 0 FAILED)" in run.stdout, (
        str(run)
    )

    # a node that dies unasked is restarted by the supervisor, which says so; the cluster heals
    victim = state["pids"]["node-2"]
    os.kill(victim, signal.SIGKILL)

    def restarted() -> int | None:
        pid = json.loads((dev / "cluster.json").read_text())["pids"]["node-2"]
        return pid if pid != victim else None

    new_pid = wait_until(restarted, timeout=60, what="node-2 restarted by the supervisor")
    assert state["supervisor"] not in (None, victim)

    def healed() -> str | None:
        run = run_aether("dev", "status", "--directory", str(dev), cwd=work)
        return run.stdout if "cluster healthy" in run.stdout else None

    shown = wait_until(healed, timeout=120, what="a healthy cluster after node-2's restart", interval=1)
    assert f"  node-2: pid {new_pid} running\n" in shown, shown
    assert "recent restarts (supervisor.log):" in shown, shown
    assert "node-2 died unasked (killed by SIGKILL)" in shown and "node-2 restarted (pid" in shown, shown
    state = json.loads((dev / "cluster.json").read_text())

    # a second `up` from the same directory is refused while the first runs
    run = expect(
        run_aether("dev", "up", "--directory", str(dev), "--source", str(SAMPLE_SLICES), cwd=work), 1
    )
    assert run.stderr == (
        f"aether: error: a dev cluster already runs from {dev}/ (stop it with `aether dev down`)\n"
    ), str(run)

    # what runs before `down`: the scan below sees every kind of process
    running = processes_of(dev)
    for kind in KINDS:
        assert any(kind in cmdline for _, cmdline in running), f"no {kind} among {running}"

    # a node stopped on purpose (SIGTERM, a clean exit) is left stopped, as systemd's Restart=on-failure
    os.kill(state["pids"]["node-3"], signal.SIGTERM)

    def left_stopped() -> str | None:
        run = run_aether("dev", "status", "--directory", str(dev), cwd=work)
        return run.stdout if "node-3 stopped cleanly (exit code 0)" in run.stdout else None

    shown = wait_until(left_stopped, timeout=60, what="node-3 left stopped", interval=0.5)
    assert f"  node-3: pid {state['pids']['node-3']} NOT RUNNING\n" in shown, shown
    assert "  (`aether dev up` starts the nodes not running again)\n" in shown, shown

    # `up` again starts it (the supervisor is asked to); the others run on
    run = expect(
        run_aether(
            "dev", "up", "--directory", str(dev), "--source", str(SAMPLE_SLICES), cwd=work, timeout=120
        )
    )
    assert run.stdout.startswith(f"the dev cluster in {dev}/ runs; starting node-3 again ...\n"), str(run)
    assert "every node of the dev cluster runs: node-1, node-2, node-3\n" in run.stdout, str(run)
    again = json.loads((dev / "cluster.json").read_text())["pids"]
    assert again["node-3"] != state["pids"]["node-3"] and again["node-1"] == state["pids"]["node-1"]
    assert "node-3 started again, as asked" in (dev / "supervisor.log").read_text()

    run = expect(run_aether("dev", "down", "--directory", str(dev), cwd=work, timeout=120))
    assert run.stdout == f"stopped 3 nodes; data kept in {dev}/\n", str(run)
    assert run.stderr.startswith("stopping 3 nodes (each stops its instances first"), str(run)
    assert "  node-1 stopped\n" in run.stderr and "  node-3 stopped\n" in run.stderr, str(run)
    wait_until(lambda: not processes_of(dev), timeout=20, what=f"no process of {dev} left")
    assert not (dev / "cluster.json").exists()
    assert (dev / "node-1").is_dir(), "the data stays"

    run = expect(run_aether("dev", "status", "--directory", str(dev), cwd=work), 1)
    assert run.stderr == (
        f"aether: error: no dev cluster recorded in {dev}/ (start one with `aether dev up`)\n"
    ), str(run)
    run = expect(run_aether("dev", "down", "--directory", str(dev), cwd=work))
    assert run.stdout == f"no dev cluster recorded in {dev}/\n"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--source", "missing"), "--source missing is not a directory of slice projects"),
        (("--index", "missing"), "--index missing is neither a directory of wheels nor an http(s):// or "
                                 "file:// index URL"),
        (("--index", "ftp://host/simple"), "--index ftp://host/simple: a package index URL must start with "
                                           "http://, https:// or file://"),
        (("--source", ".", "--index", "."), "give --source (slice projects to build) or --index (wheels), "
                                            "not both"),
        (("--example", "--apply", "blueprint.toml"), "give --apply FILE or --example, not both"),
    ],
)  # fmt: skip
def test_dev_up_with_bad_slice_options_is_bad_input_and_starts_nothing(
    tmp_path: Path, options: tuple[str, ...], message: str
) -> None:
    run = expect(run_aether("dev", "up", "--directory", "dev", *options, cwd=tmp_path), 2)
    assert run.stderr == f"aether: error: {message}\n", str(run)
    assert not (tmp_path / "dev").exists()
    assert processes_of(tmp_path) == []


@pytest.mark.long
def test_dev_up_runs_against_a_given_wheel_index(tmp_path: Path, sample_index: Path) -> None:
    """`--index DIR`: no index is built; the nodes install from DIR, from any working directory."""
    work, dev = tmp_path / "work", tmp_path / "dev"
    work.mkdir()
    (work / "one.toml").write_text(f'name = "one"\n\n[[slices]]\nartifact = "{ECHO}"\ninstances = 1\n')
    try:
        run = expect(
            run_aether(
                "dev", "up", "--nodes", "1", "--directory", str(dev), "--index", str(sample_index),
                "--apply", "one.toml", cwd=work, timeout=180,
            )
        )  # fmt: skip
        assert f"using the slice index {sample_index.resolve()}\n" in run.stdout, str(run)
        assert "building the slice index" not in run.stdout and not (dev / "index").exists()
        assert f"converged: {ECHO} 1/1" in run.stdout, str(run)
        assert json.loads((dev / "plan.json").read_text())["index"] == str(sample_index.resolve())
        ingress = json.loads((dev / "cluster.json").read_text())["ingress"][0]
        # (what runs is the index's: the next steps name no sample slice)
        assert f"  curl -s -X POST {ingress}/invoke/GROUP:ARTIFACT/ENTRY -d '{{...}}'\n" in run.stdout, str(
            run
        )
        answer = httpx.post(f"{ingress}/invoke/org.aether:echo/echo", json={"from": "index"}, timeout=30)
        assert (answer.status_code, answer.json()) == (200, {"from": "index"}), answer.text
    finally:
        if (dev / "cluster.json").exists():
            run_aether("dev", "down", "--directory", str(dev), cwd=work, timeout=90)
        kill_processes_of(dev)
    assert processes_of(dev) == []


CLUSTER = {
    "leader": "node-1", "term": 1, "revision": 9, "has_quorum": True, "healthy": True, "nodes": [],
    "blueprints": 0, "instances": 0, "active": 0, "failed": 0,
}  # fmt: skip


def test_dev_status_json_is_json(tmp_path: Path) -> None:
    with stub_api({("GET", "/api/v1/cluster"): (200, CLUSTER)}) as stub:
        (tmp_path / "dev").mkdir()
        (tmp_path / "dev" / "cluster.json").write_text(
            json.dumps({"pids": {"node-1": os.getpid()}, "management": [stub.url], "ingress": []})
        )
        run = expect(run_aether("dev", "status", "--directory", "dev", "--json", cwd=tmp_path))
    json.loads(run.stdout)


def test_a_second_dev_up_while_one_starts_is_refused_and_starts_nothing(tmp_path: Path) -> None:
    """Two at once in one directory would start nodes on the same ports and data: both failed."""
    (tmp_path / "dev").mkdir()
    with open(tmp_path / "dev" / "starting.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (what a `dev up` starting there holds)
        run = expect(run_aether("dev", "up", "--directory", "dev", cwd=tmp_path), 1)
    expected = "aether: error: another `aether dev up` is starting a cluster from dev/ now\n"
    assert run.stderr == expected, str(run)
    assert processes_of(tmp_path) == []
    assert not (tmp_path / "dev" / "cluster.json").exists()
