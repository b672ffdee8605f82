"""`aether slice retry` on 3 real nodes: a slice whose dependency the index lacks fails to install on every
node, each node is then kept out of the running for it (the blueprint status says until when, and how to
try at once); the dependency published, `aether slice retry` lets the failures go: their records are
removed as retried by an operator (not as 60 s old) and the slice comes up; `retry_requested` is in the
events; nothing failed, it says so; a slice no blueprint deploys is exit 1 and changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cli_support import CliCluster, cli_cluster, expect
from node_support import build_wheel, copy_index

from support import wait_until_sync

NEEDY_ID = "org.aether:needy"
NEEDY = f"{NEEDY_ID}:1.0.0"
DEPENDENCY = "aether-retry-dependency"
NEEDY_MODULE = '''"""A slice that needs a distribution of its own (DEPENDENCY) to load."""

from aether_slice import EntryPoint, hookimpl

import aether_retry_dependency


@hookimpl
def aether_entry_points(context):
    async def where(payload):
        return aether_retry_dependency.WHERE

    return [EntryPoint(name="where", function=where, idempotent=True)]
'''
BLUEPRINT = f'name = "needy"\n\n[[slices]]\nartifact = "{NEEDY}"\ninstances = 1\n'


@pytest.fixture
def cluster(sample_index: Path, tmp_path: Path) -> Any:
    index = copy_index(sample_index, tmp_path / "index")
    build_wheel(
        tmp_path / "needy",
        index,
        name="org.aether.needy",
        version="1.0.0",
        dependencies=(f"{DEPENDENCY}>=1",),
        entry_point=NEEDY_ID,
        source=NEEDY_MODULE,
    )
    build_wheel(  # published later, by the test
        tmp_path / "dependency",
        tmp_path / "later",
        name=DEPENDENCY,
        version="1.0",
        source='WHERE = "the dependency is there"\n',
    )
    with cli_cluster(tmp_path / "run", index) as started:
        yield started, index, tmp_path / "later"


def _records(cluster: CliCluster) -> list[dict[str, Any]]:
    listed = json.loads(expect(cluster.aether("slice", "list", "-o", "json")).stdout)
    return [r for r in listed if r["artifact"] == NEEDY]


def test_a_slice_fixed_and_retried_comes_up_and_its_failures_go_as_retried(
    cluster: tuple[CliCluster, Path, Path],
) -> None:
    cli, index, later = cluster
    none = expect(cli.aether("slice", "retry", NEEDY_ID), 1)
    assert "no blueprint deploys org.aether:needy: nothing of it to retry" in none.stderr
    blueprint = cli.cwd / "needy.toml"
    blueprint.write_text(BLUEPRINT)
    expect(cli.aether("blueprint", "apply", str(blueprint)))
    hint = f"at once: `aether slice retry {NEEDY_ID}`"

    def every_node_out() -> str | None:
        status = cli.aether("blueprint", "status", "needy")
        return status.stdout if hint in status.stdout else None

    shown = wait_until_sync(every_node_out, timeout=120, what="the slice kept out of every node")
    assert "tried again from" in shown and "excluded after failures" in shown
    failed = {r["node_id"] for r in _records(cli) if r["state"] == "FAILED"}
    assert failed == set(cli.node_ids)
    for wheel in later.glob("*.whl"):
        shutil.copy(wheel, index)  # the operator publishes the dependency

    retried = expect(cli.aether("slice", "retry", NEEDY_ID))
    assert f"{NEEDY_ID}: " in retried.stdout and "let go; tried again now:" in retried.stdout
    for node_id in failed:
        assert f"  {node_id}/" in retried.stdout

    def serving() -> bool:
        return [r["state"] for r in _records(cli)] == ["ACTIVE"]

    wait_until_sync(serving, timeout=120, what="the slice ACTIVE after the retry")
    answer = expect(cli.aether("slice", "invoke", NEEDY_ID, "where"))
    assert "the dependency is there" in answer.stdout
    listed = expect(cli.aether("cluster", "events", "--slice", NEEDY_ID, "-n", "500", "-o", "json"))
    events = [json.loads(line) for line in listed.stdout.splitlines()]  # (a JSON line each)
    assert any(e["kind"] == "retry_requested" for e in events), events
    let_go = [e for e in events if "an operator let its failure go" in e.get("reason", "")]
    assert {e["node_id"] for e in let_go} & failed, events  # removed as retried, not as 60 s old
    assert not any("retrying: failed" in e.get("reason", "") for e in events), events
    nothing = expect(cli.aether("slice", "retry", NEEDY_ID))
    assert nothing.stdout.strip() == f"{NEEDY_ID}: no instance has failed: nothing to retry"
