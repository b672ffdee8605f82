"""Other packages use aether_node only through its public entry points (docs/ARCHITECTURE.md, "The node:
layers"): no module of the CLI, the MCP service, the benchmarks or the tests outside `tests/aether_node/`
(the node's own unit tests, which test its private modules) imports a private module of aether_node or
a private name, or names one in a string (a `python -m` command line, a monkeypatch target)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCANNED = ("packages/aether-cli", "packages/aether-mcp", "packages/aether-slice", "benchmarks", "tests")
EXEMPT = (ROOT / "tests" / "aether_node", Path(__file__))  # this file spells private uses as cases
PUBLIC = {
    "aether_node",
    "aether_node.client",
    "aether_node.contexts",
    "aether_node.dev",
    "aether_node.node",
    "aether_node.control",
    "aether_node.observe",
    "aether_node.routing",
}
# A dotted path into aether_node with a private part, wherever it is spelled (code, strings, comments).
_PRIVATE_PATH = re.compile(r"\baether_node(?:\.[A-Za-z]\w*)*\._\w+")


def private_uses(source: str) -> list[str]:
    """Each place in `source` that reaches past aether_node's public entry points."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            modules = [(node.module or "", alias.name) for alias in node.names]
        else:
            continue
        for module, name in modules:
            if module.split(".")[0] != "aether_node":
                continue
            if module not in PUBLIC:
                found.append(f"line {node.lineno}: imports {module}, not a public entry point")
            elif name is not None and name.startswith("_"):
                found.append(f"line {node.lineno}: imports the private name {module}.{name}")
    for number, line in enumerate(source.splitlines(), 1):
        found += [f"line {number}: names {match}" for match in _PRIVATE_PATH.findall(line)]
    return found


def scanned_files() -> list[Path]:
    return sorted(
        path
        for top in SCANNED
        for path in (ROOT / top).rglob("*.py")
        if ".venv" not in path.parts and not any(path.is_relative_to(exempt) for exempt in EXEMPT)
    )


def test_the_scan_covers_the_cli_the_mcp_service_and_the_benchmarks() -> None:
    files = {path.relative_to(ROOT).parts[:2] for path in scanned_files()}
    assert {("packages", "aether-cli"), ("packages", "aether-mcp"), ("benchmarks", "cli_bench.py")} <= files


def test_no_module_outside_aether_node_uses_its_private_parts() -> None:
    found = [
        f"{path.relative_to(ROOT)}: {use}"
        for path in scanned_files()
        for use in private_uses(path.read_text())
    ]
    assert not found, "private aether_node modules or names used outside it:\n" + "\n".join(found)


def test_every_public_entry_point_imports() -> None:
    import importlib

    for module in sorted(PUBLIC):
        importlib.import_module(module)


@pytest.mark.parametrize(
    "source",
    [
        "from aether_node._local_cluster import plan_cluster\n",
        "from aether_node.dev._sample_index import build_sample_index\n",
        "import aether_node.core._records\n",
        "def f():\n    from aether_node.core import _records\n",
        "from aether_node.dev import _Slice\n",
        "command = ['python', '-m', 'aether_node.node._cli']\n",
        "monkeypatch.setattr('aether_node.runtime._slice_host.log', None)\n",
    ],
)
def test_a_private_use_is_reported(source: str) -> None:
    assert private_uses(source)


@pytest.mark.parametrize(
    "source",
    [
        "from aether_node import NodeConfig, parse_blueprint\n",
        "from aether_node.dev import LocalNodeCluster\nimport aether_node.client\n",
        "command = ['python', '-m', 'aether_node', 'run']\n",
        "from aether_kv._wire import read_frame\n",
    ],
)
def test_a_public_use_is_not_reported(source: str) -> None:
    assert private_uses(source) == []
