"""Parity between the `aether` CLI and the MCP service: every CLI command that operates a cluster has its
MCP tool and every tool its command, and the same request gives the same answer through both (the tool's
structured result is what `aether ... --json` prints; a refusal is the sentence the CLI prints).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_support import ECHO, EXAMPLE, CliCluster, cli_cluster, expect
from mcp_support import blueprint_toml, http_client, mcp_service, structured, text

from aether_cli._app import app
from aether_mcp import TOOLS

# Commands that do not operate a cluster have no tool: `aether dev ...` runs a cluster on this machine,
# `aether context ...` edits the operator's own config file (clusters and keys; an MCP client has its own),
# `aether completion SHELL` prints a shell script.
LOCAL_ONLY = {"dev", "context", "completion"}
# `aether slice new` writes a slice project into a local directory and `slice publish` puts a wheel into a
# package index: neither operates a cluster, so they have no tool.
LOCAL_ONLY_COMMANDS = {("slice", "new"), ("slice", "publish")}


def _commands(group: Any, prefix: tuple[str, ...]) -> set[tuple[str, ...]]:
    """Every command under `group`, as its words; a command that has commands of its own (`aether slice
    autoscale ...`) is a group, walked in turn."""
    found = set()
    for name in group:
        if name.startswith("-"):
            continue
        inner = _commands(group[name], (*prefix, name))
        found |= inner or {(*prefix, name)}
    return found


def cli_commands() -> set[tuple[str, ...]]:
    found = set()
    for group in app:
        if group.startswith("-") or group in LOCAL_ONLY:
            continue
        found |= _commands(app[group], (group,)) or {(group,)}  # `describe`: a command of its own
    return found - LOCAL_ONLY_COMMANDS


def test_every_cli_command_has_its_tool_and_back() -> None:
    commands = cli_commands()
    tools = {spec.cli: spec.name for spec in TOOLS}
    assert len(commands) == 41, sorted(commands)
    assert set(tools) == commands, (
        f"CLI commands without a tool: {sorted(commands - set(tools))}; "
        f"tools without a CLI command: {sorted(set(tools) - commands)}"
    )
    for words, name in tools.items():
        assert name == "_".join(words)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, sample_index: Path) -> Iterator[CliCluster]:
    with cli_cluster(tmp_path_factory.mktemp("parity-cluster"), sample_index) as running:
        yield running


@pytest.mark.integration
@pytest.mark.long
async def test_the_same_request_gives_the_same_answer(cluster: CliCluster, tmp_path: Path) -> None:
    blueprint = tmp_path / "parity.toml"
    hanging = 'config = {mode = "hang_work"}\n'  # a faulty instance whose calls never answer
    hanging = '\n[[slices]]\nartifact = "org.aether:faulty:1.0.0"\ninstances = 1\n' + hanging
    blueprint.write_text(blueprint_toml("parity", (ECHO, 2)) + hanging)
    expect(cluster.aether("blueprint", "apply", str(blueprint), "--wait", "--json", timeout=180))

    def cli(*args: str) -> object:
        return expect(cluster.aether(*args, "--json")).json()

    def cli_refusal(*args: str) -> str:
        run = cluster.aether(*args)
        assert run.returncode in (1, 2), str(run)
        return run.stderr.strip().removeprefix("aether: error: ")

    with mcp_service(cluster.urls) as service:
        async with http_client(service.url, "parity") as client:

            async def tool(tool_name: str, /, **arguments: object) -> object:
                return structured(await client.call_tool(tool_name, arguments))

            async def refusal(tool_name: str, /, **arguments: object) -> str:
                result = await client.call_tool(tool_name, arguments)
                assert result.is_error, f"{tool_name} did not fail"
                return text(result)

            # reads: a settled cluster answers the same through both
            pairs = [
                (("blueprint", "list"), ("blueprint_list", {})),
                (("blueprint", "get", "parity"), ("blueprint_get", {"name": "parity"})),
                (("blueprint", "status", "parity"), ("blueprint_status", {"name": "parity"})),
                (("slice", "list"), ("slice_list", {})),
                (("slice", "status", "org.aether:echo"), ("slice_status", {"artifact": "org.aether:echo"})),
                (("cluster", "nodes"), ("cluster_nodes", {})),
                (("key", "list"), ("key_list", {})),
                (("slice", "logs", "org.aether:echo"), ("slice_logs", {"artifact": "org.aether:echo"})),
                (
                    ("describe", "slice", "org.aether:echo"),
                    ("describe", {"kind": "slice", "name": "org.aether:echo"}),
                ),
                (
                    ("blueprint", "validate", str(EXAMPLE)),
                    ("blueprint_validate", {"toml": EXAMPLE.read_text(), "source": str(EXAMPLE)}),
                ),
            ]
            pairs += [
                (("blueprint", "history", "parity"), ("blueprint_history", {"name": "parity"})),
                (
                    ("blueprint", "diff", str(blueprint)),
                    ("blueprint_diff", {"toml": blueprint.read_text(), "source": str(blueprint)}),
                ),
                (("slice", "autoscale", "status"), ("slice_autoscale_status", {})),
                (("node", "cordon", "node-3"), ("node_cordon", {"node": "node-3"})),
                (("node", "uncordon", "node-3"), ("node_uncordon", {"node": "node-3"})),
                (("cluster", "policy", "show"), ("cluster_policy_show", {})),
            ]
            for args, (name, arguments) in pairs:
                assert cli(*args) == await tool(name, **arguments), f"aether {' '.join(args)} vs {name}"

            by_cli, by_tool = cli("cluster", "status"), await tool("cluster_status")
            assert isinstance(by_cli, dict) and isinstance(by_tool, dict)
            assert by_cli.keys() == by_tool.keys()
            for key in by_cli.keys() - {"revision"}:  # the revision moves with every write anywhere
                assert by_cli[key] == by_tool[key], key

            events_cli = expect(cluster.aether("cluster", "events", "--limit", "5", "--json")).json_lines()
            events_tool = await tool("cluster_events", limit=5)
            assert [e["kind"] for e in events_cli] == [e["kind"] for e in events_tool]
            filters = ("--kind", "instance_state", "--slice", "org.aether:echo", "--limit", "4", "--json")
            filtered_cli = expect(cluster.aether("cluster", "events", *filters)).json_lines()
            filtered_tool = await tool(
                "cluster_events", kind=["instance_state"], slice="org.aether:echo", limit=4
            )
            assert filtered_cli == filtered_tool and len(filtered_cli) == 4
            assert {e["kind"] for e in filtered_tool} == {"instance_state"}
            # read on from a revision: the first ones after it, the same through both
            since = str(filtered_tool[0]["revision"])
            after_cli = expect(cluster.aether("cluster", "events", *filters, "--since", since)).json_lines()
            after_tool = await tool(
                "cluster_events", kind=["instance_state"], slice="org.aether:echo", limit=4, since=int(since)
            )
            later = [e for e in filtered_tool if e["revision"] > int(since)]
            assert after_cli == after_tool and after_tool[: len(later)] == later
            assert all(e["revision"] > int(since) for e in after_tool)

            payload = {"same": ["answer", 1]}
            invoked = expect(
                cluster.aether("slice", "invoke", "org.aether:echo", "echo", "--data", json.dumps(payload))
            )
            answer = await client.call_tool(
                "slice_invoke", {"artifact": "org.aether:echo", "entry": "echo", "data": payload}
            )
            assert json.loads(invoked.stdout) == json.loads(text(answer)) == payload

            # a call that outlives the timeout it asked for: the node's own answer, through both
            timed_out = re.compile(r"org\.aether:faulty:1\.0\.0#\d+: work did not answer within [\d.]+ s")
            for said in (
                cli_refusal("slice", "invoke", "org.aether:faulty", "work", "--timeout", "0.5"),
                await refusal("slice_invoke", artifact="org.aether:faulty", entry="work", timeout=0.5),
            ):
                assert timed_out.fullmatch(said), said

            # refusals: the same sentence
            missing = await refusal("blueprint_get", name="missing")
            assert cli_refusal("blueprint", "get", "missing") == missing
            assert cli_refusal("slice", "status", "no-colon") == await refusal(
                "slice_status", artifact="no-colon"
            )
            assert cli_refusal("slice", "autoscale", "pause", "org.aether:echo") == await refusal(
                "slice_autoscale_pause", artifact="org.aether:echo"
            )
            assert cli_refusal("slice", "autoscale", "set", "org.aether:echo") == await refusal(
                "slice_autoscale_set", artifact="org.aether:echo"
            )
            assert cli_refusal("node", "drain", "node-9") == await refusal("node_drain", node="node-9")
            assert cli_refusal("node", "restart", "node-9") == await refusal("node_restart", node="node-9")
            assert cli_refusal("cluster", "policy", "set") == await refusal("cluster_policy_set")
            assert cli_refusal("cluster", "policy", "set", "--preset", "lazy") == await refusal(
                "cluster_policy_set", preset="lazy"
            )
            for operation in ("pause", "resume"):  # no blueprint deploys it
                assert cli_refusal("slice", operation, "org.aether:nope") == await refusal(
                    f"slice_{operation}", artifact="org.aether:nope"
                )
            assert cli_refusal("slice", "logs", "org.aether:nope") == await refusal(
                "slice_logs", artifact="org.aether:nope"
            )
            assert cli_refusal("describe", "node", "node-9") == await refusal(
                "describe", kind="node", name="node-9"
            )
            assert cli_refusal("blueprint", "rollback", "parity", "--to", "7") == await refusal(
                "blueprint_rollback", name="parity", to=7
            )
            assert cli_refusal("slice", "scale", "org.aether:counter", "2") == await refusal(
                "slice_scale", artifact="org.aether:counter", instances=2
            )
            assert cli_refusal("slice", "scale", "org.aether:echo", "--", "-1") == await refusal(
                "slice_scale", artifact="org.aether:echo", instances=-1
            )
            for operation in ("promote", "abort"):  # no canary or blue-green rollout of echo runs
                said = cli_refusal("slice", operation, "org.aether:echo")
                assert said == await refusal(f"slice_{operation}", artifact="org.aether:echo")
                assert said == "org.aether:echo has no canary or blue-green rollout in progress"
            bad = tmp_path / "bad.toml"
            bad.write_text('name = "bad"\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = -1\n')
            assert cli_refusal("blueprint", "apply", str(bad)) == await refusal(
                "blueprint_apply", toml=bad.read_text(), source=str(bad)
            )

            # writes: delete through the tool answers what the CLI prints, and the CLI sees its effect
            assert await tool("blueprint_delete", name="parity") == {"deleted": "parity"}
            assert cli_refusal("blueprint", "get", "parity") == "no blueprint named 'parity'"
            assert (await tool("blueprint_list")) == cli("blueprint", "list")
