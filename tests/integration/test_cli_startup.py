"""What `aether` imports at start-up: the lazy-import design that keeps it fast, checked by module name
(speed itself is measured in benchmarks/cli_bench.py, never here). The real console script runs under
`python -X importtime`, against a stub management API.

- help is plain text: no Markdown renderer (rich.markdown, markdown_it, pygments);
- a command reaches the cluster through the standard-library client: nothing server-side (trio, httpx and
  its HTTP/2 stack, the KV, starlette) and no cattrs;
- `--json` output needs no rich at all, and tables never load rich's emoji table;
- a command given `--cluster` reads no contexts file, so no TOML parser.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import aether_command, cli_env, stub_api

pytestmark = [pytest.mark.integration]

MARKDOWN = {"rich.markdown", "markdown_it", "pygments"}
SERVER_SIDE = {"trio", "anyio", "httpx", "httpcore", "h2", "hpack", "aether_kv", "pysyncobj", "starlette"}
CLUSTER = {
    "leader": "node-1", "term": 1, "revision": 9, "has_quorum": True, "healthy": True, "nodes": [],
    "blueprints": 1, "instances": 0, "active": 0, "failed": 0,
}  # fmt: skip


def imported(*args: str, cwd: Path) -> tuple[set[str], str]:
    """The modules (full dotted names) the console script imports for `aether ARGS`, and its stdout."""
    script = aether_command()
    if script[0] == sys.executable:  # no console script: `python -c "...main()"`
        script = script[1:]
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *script, *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "imported package" not in line
    }
    assert "aether_cli._app" in names, result.stderr[-2000:]
    return names, result.stdout


def tops(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names} | names


def test_help_renders_without_a_markdown_engine(tmp_path: Path) -> None:
    names, stdout = imported("--help", cwd=tmp_path)
    assert "blueprint" in stdout and "cluster" in stdout
    assert not tops(names) & (MARKDOWN | SERVER_SIDE | {"cattrs"})


def test_cluster_status_imports_nothing_server_side_and_no_cattrs(tmp_path: Path) -> None:
    with stub_api({("GET", "/api/v1/cluster"): (200, CLUSTER)}) as stub:
        names, stdout = imported("cluster", "status", "--cluster", stub.url, cwd=tmp_path)
        json_names, json_stdout = imported("cluster", "status", "--json", "--cluster", stub.url, cwd=tmp_path)
    assert "leader node-1" in stdout
    assert '"revision": 9' in json_stdout
    assert "rich.table" in names
    assert not tops(names) & (MARKDOWN | SERVER_SIDE | {"cattrs", "rich._emoji_codes"})
    assert not tops(json_names) & (SERVER_SIDE | {"cattrs", "rich"})


def test_cluster_status_given_the_cluster_reads_no_contexts_file(tmp_path: Path) -> None:
    with stub_api({("GET", "/api/v1/cluster"): (200, CLUSTER)}) as stub:
        names, stdout = imported("cluster", "status", "--cluster", stub.url, cwd=tmp_path)
        json_names, json_stdout = imported("cluster", "status", "-j", "--cluster", stub.url, cwd=tmp_path)
    assert "leader node-1" in stdout and '"revision": 9' in json_stdout
    assert "urllib.request" in names  # it did talk to the stub
    assert "tomllib" not in tops(names) | tops(json_names)
