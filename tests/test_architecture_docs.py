"""docs/ARCHITECTURE.md is the design of what is built: every KV key the code defines is in its schema,
every module it names exists; and nothing in the repository refers to files outside it."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
PACKAGES = ROOT / "packages"
NODE = PACKAGES / "aether-node" / "src" / "aether_node"

# A KV key or prefix as the code spells it: lower-case segments separated by "/" (e.g. "nodes/",
# "cluster/leader", "cluster/problems/").
_KEY = re.compile(r"[a-z][a-z0-9_-]*/(?:[a-z0-9_-]+/?)*")


def _string_constants(path: Path) -> dict[str, str]:
    """Module-level `NAME = "string"` assignments of one module."""
    constants = {}
    for node in ast.parse(path.read_text()).body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id.isupper():
                    constants[target.id] = node.value.value
    return constants


def _schema_modules() -> list[Path]:
    return sorted(p for p in NODE.rglob("*.py") if p.stem.lstrip("_") == "schema")


def defined_keys() -> dict[str, str]:
    """Every KV key prefix the node defines → where: each key-like constant of the schema module, and
    elsewhere in aether-node and aether-kv (keys not yet moved there) each `*_KEY` / `*_PREFIX` constant
    and each key-like constant under a top-level prefix the schema uses (or `cluster/`, `agents/`)."""
    found = {}
    for path in _schema_modules():
        for name, value in _string_constants(path).items():
            if _KEY.fullmatch(value):
                found[value] = f"{path.relative_to(ROOT)}: {name}"
    tops = {key.split("/", 1)[0] for key in found} | {"cluster", "agents"}
    for path in sorted(PACKAGES.glob("aether-*/src/*/**/*.py")):
        for name, value in _string_constants(path).items():
            named_as_key = name.endswith(("_KEY", "_PREFIX"))
            if _KEY.fullmatch(value) and (named_as_key or value.split("/", 1)[0] in tops):
                found.setdefault(value, f"{path.relative_to(ROOT)}: {name}")
    return found


def _section(text: str, heading: str) -> str:
    """The body of the `## heading...` section of a markdown text (up to the next `## `)."""
    match = re.search(rf"^## {re.escape(heading)}.*?$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"docs/ARCHITECTURE.md has no section '## {heading}'"
    return match.group(1)


def test_the_schema_module_is_found_and_defines_prefixes() -> None:
    modules = _schema_modules()
    assert modules, f"no schema module under {NODE.relative_to(ROOT)}"
    assert len(defined_keys()) >= 5


def test_every_kv_key_the_code_defines_is_in_the_documented_schema() -> None:
    schema = _section(DOC.read_text(), "KV schema")
    missing = [
        f"{key} ({where})"
        for key, where in sorted(defined_keys().items())
        if f"`{key}" not in schema  # written as `prefix{...}` or `key` in the schema's tables
    ]
    assert not missing, "KV keys missing from the 'KV schema' section of docs/ARCHITECTURE.md: " + ", ".join(
        missing
    )


def test_every_module_the_document_names_exists() -> None:
    """A module renamed or removed in the code must be renamed or removed in the design too."""
    existing = {p.name for top in ("packages", "tests", "benchmarks") for p in (ROOT / top).rglob("*.py")}
    named = set(re.findall(r"`(?:[\w./-]*/)?(\w+\.py)`", DOC.read_text()))
    assert named, "the document names no modules"
    unknown = sorted(named - existing)
    assert not unknown, f"docs/ARCHITECTURE.md names modules that do not exist: {unknown}"


def test_the_readme_links_the_architecture() -> None:
    assert "docs/ARCHITECTURE.md" in (ROOT / "README.md").read_text()


def _tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [ROOT / name for name in listing.split("\0") if name and (ROOT / name).is_file()]


def test_no_tracked_file_refers_to_files_outside_the_repository() -> None:
    # Spelled in pieces so that this file does not match itself.
    design = "DESIGN" + ".md"
    # (and the workplace's own checkout: a path on the machine this was written on means nothing to a user)
    outside = ["../" + "shared", "/" + "work/", "architecture" + "-overview.md"]
    tracked = _tracked_files()
    if any(path.name == design for path in tracked):  # a design document of the repository's own
        design = "\0"
    found = []
    for path in tracked:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # not text
        for number, line in enumerate(text.splitlines(), 1):
            if any(pattern in line for pattern in (*outside, design)):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not found, "references to files outside the repository:\n" + "\n".join(found)
