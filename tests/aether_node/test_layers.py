"""aether_node's layers (docs/ARCHITECTURE.md, "The node: layers"): every import between the node's own
modules, read from the source with `ast`, points the way the table below allows; and the table is the
one the document shows."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
NODE = ROOT / "packages" / "aether-node" / "src" / "aether_node"
DOC = ROOT / "docs" / "ARCHITECTURE.md"

# layer (a subpackage of aether_node) → the layers its modules may import. `aether_node.client` (the API
# models and client, public at the top for the CLI and the MCP service) belongs to core; the top-level
# `__init__.py` and `__main__.py` ("top") may import anything, and nothing may import them.
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "observe": frozenset({"core", "observe"}),
    "control": frozenset({"core", "observe", "control"}),
    "runtime": frozenset({"core", "observe", "runtime"}),
    "routing": frozenset({"core", "observe", "runtime", "routing"}),
    "api": frozenset({"core", "observe", "control", "runtime", "routing", "api"}),
    "node": frozenset({"core", "observe", "control", "runtime", "routing", "api", "node", "dev"}),
    "dev": frozenset({"core", "dev"}),
}
TOP_MODULES = {"aether_node", "aether_node.__main__"}
# modules at the top that belong to a layer
PUBLIC_TOP = {"aether_node.client": "core", "aether_node.contexts": "core"}
SUBMODULES = {*TOP_MODULES, *PUBLIC_TOP, *(f"aether_node.{layer}" for layer in ALLOWED)}


def module_name(path: Path) -> str:
    parts = path.relative_to(NODE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    """The layer of a module of aether_node ("top" for the package itself and `__main__`), or None if
    the module is not aether_node's."""
    if module in TOP_MODULES:
        return "top"
    if module in PUBLIC_TOP:
        return PUBLIC_TOP[module]
    parts = module.split(".")
    if parts[0] != "aether_node":
        return None
    return parts[1] if parts[1] in ALLOWED else f"unknown:{parts[1]}"


def imported_modules(source: str, module: str, *, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) for every import in `source` (at any depth, relative ones resolved); a name imported
    from the top package counts as its submodule when it is one (`from .. import client`)."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target != "aether_node":
                found.append((node.lineno, target))
                continue
            for alias in node.names:  # `from aether_node import x`: a submodule, or a lazy export of the top
                submodule = f"aether_node.{alias.name}"
                found.append((node.lineno, submodule if submodule in SUBMODULES else target))
    return found


def violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """Each import of `module` that reaches a layer its own layer may not import."""
    layer = layer_of(module)
    assert layer is not None and not layer.startswith("unknown:"), f"{module} is in no known layer"
    if layer == "top":
        return []
    found = []
    for line, target in imported_modules(source, module, is_package=is_package):
        target_layer = layer_of(target)
        if target_layer is None:
            continue  # not aether_node: third-party, stdlib or another Aether package
        if target_layer not in ALLOWED[layer]:
            found.append(f"{module}:{line} ({layer}) imports {target} ({target_layer})")
    return found


def node_modules() -> list[Path]:
    return sorted(NODE.rglob("*.py"))


def test_every_module_is_in_a_layer() -> None:
    stray = [
        module_name(path)
        for path in node_modules()
        if (layer := layer_of(module_name(path))) is None or layer.startswith("unknown:")
    ]
    assert not stray, f"modules in no layer (add the layer to ALLOWED and to the document): {stray}"
    assert {p.name for p in NODE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(ALLOWED)


def test_no_module_imports_a_layer_it_may_not() -> None:
    found = []
    for path in node_modules():
        found += violations(path.read_text(), module_name(path), is_package=path.name == "__init__.py")
    assert not found, "imports against the layers of docs/ARCHITECTURE.md:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("module", "source", "reported"),
    [
        ("aether_node.core._config", "from ..runtime._deployment import RestartPolicy\n", "runtime"),
        ("aether_node.observe._events", "from ..control._cluster_manager import LEADER_KEY\n", "control"),
        ("aether_node.control._reconcile", "def f():\n    from ..routing import _http\n", "routing"),
        ("aether_node.runtime._deployment", "import aether_node.control._reconcile\n", "control"),
        ("aether_node.dev._local_cluster", "from aether_node import NodeConfig\n", "top"),
        ("aether_node.core._records", "from .. import client, api\n", "api"),
    ],
)
def test_an_import_against_the_layers_is_reported(module: str, source: str, reported: str) -> None:
    [found] = violations(source, module)
    assert found.startswith(f"{module}:") and found.endswith(f"({reported})")


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("aether_node.core._config", "from ._policies import RestartPolicy\nimport attrs\n"),
        ("aether_node.routing._invoker", "from ..runtime._slice_store import SliceStore\n"),
        ("aether_node.observe._metrics", "from ..client import Problem\nimport prometheus_client\n"),
        ("aether_node.node._node", "from ..api._handlers import Handlers\nfrom ..dev import free_port\n"),
    ],
)
def test_an_allowed_import_is_not_reported(module: str, source: str) -> None:
    assert violations(source, module) == []


def documented_layers() -> dict[str, frozenset[str]]:
    """The document's layer table: package (`core/`) → the layers its "may import" column names."""
    text = DOC.read_text()
    section = re.search(r"^## The node: layers$(.*?)(?=^#+ )", text, re.MULTILINE | re.DOTALL)
    assert section is not None, "docs/ARCHITECTURE.md has no section '## The node: layers'"
    table = {}
    for row in re.findall(r"^\|(.+)\|$", section.group(1), re.MULTILINE):
        cells = [cell.strip() for cell in row.split("|")]
        package = re.fullmatch(r"`(\w+)/`", cells[1])
        if package:
            table[package.group(1)] = frozenset(re.findall(r"`(\w+)`", cells[3]))
    return table


def test_the_table_is_the_documented_one() -> None:
    assert documented_layers() == ALLOWED


def test_every_module_is_listed_in_its_layer_row() -> None:
    text = DOC.read_text()
    rows = {
        package: row
        for row in re.findall(r"^\|(.+)\|$", text, re.MULTILINE)
        if (match := re.search(r"\|\s*`(\w+)/`\s*\|", f"|{row}|")) and (package := match.group(1)) in ALLOWED
    }
    missing = [
        f"{path.parent.name}/{path.name}"
        for path in node_modules()
        if path.parent.name in ALLOWED
        and path.name != "__init__.py"
        and f"`{path.name}`" not in rows.get(path.parent.name, "")
    ]
    assert not missing, f"modules missing from their layer's row in docs/ARCHITECTURE.md: {missing}"
