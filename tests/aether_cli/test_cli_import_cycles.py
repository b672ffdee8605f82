"""No two modules of aether_cli import each other, directly or round a longer loop (imports inside
functions count: a lazy import hides a cycle, it does not remove it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "packages" / "aether-cli" / "src" / "aether_cli"


def local_imports(source: str) -> set[str]:
    """The sibling modules a module of a flat package imports (`from . import x`, `from ._x import y`)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aether_cli."):
            found.add(node.module.split(".")[1])
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop of `graph` (module → what it imports), or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for target in sorted(graph.get(module, ())):
            if cycle := visit(target, [*path, module]):
                return cycle
        done.add(module)
        return None

    for module in sorted(graph):
        if cycle := visit(module, []):
            return cycle
    return None


def test_aether_cli_has_no_import_cycle() -> None:
    graph = {path.stem: local_imports(path.read_text()) for path in PACKAGE.glob("*.py")}
    assert "_common" in graph["_app"]  # the scan sees the package's imports
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph) or [])


@pytest.mark.parametrize(
    ("sources", "cycle"),
    [
        ({"_a": "from ._b import x\n", "_b": "def f():\n    from ._a import y\n"}, ["_a", "_b", "_a"]),
        (
            {"_a": "from . import _b\n", "_b": "from aether_cli._c import z\n", "_c": "from ._a import w\n"},
            ["_a", "_b", "_c", "_a"],
        ),
    ],
)
def test_a_cycle_is_found(sources: dict[str, str], cycle: list[str]) -> None:
    assert find_cycle({name: local_imports(source) for name, source in sources.items()}) == cycle


def test_no_cycle_is_found_in_a_chain() -> None:
    assert find_cycle({"_app": {"_dev", "_common"}, "_dev": {"_common"}, "_common": set()}) is None
