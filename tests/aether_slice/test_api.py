"""The slice author's API: its surface, and every hook documented in the author's guide."""

from __future__ import annotations

import inspect
from pathlib import Path

import aether_slice
from aether_slice import hookspecs

GUIDE = Path(__file__).parents[2] / "docs" / "SLICES.md"


def hook_names() -> list[str]:
    return [
        name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("aether_")
    ]


def test_every_hook_has_a_docstring_and_is_in_the_slice_authors_guide() -> None:
    guide = GUIDE.read_text()
    assert hook_names() == ["aether_entry_points", "aether_start", "aether_stop"]
    for name in hook_names():
        assert getattr(hookspecs, name).__doc__, f"{name} has no docstring"
        assert name in guide, f"the slice author's guide (docs/SLICES.md) does not document {name}"


def test_the_public_surface_is_small_and_deliberate() -> None:
    # "@py_builtins" and the like: pytest rewrites the asserts of a pytest plugin's distribution (this one).
    public = {name for name in dir(aether_slice) if not name.startswith(("_", "@"))}
    modules = {"hookspecs", "host", "protocol", "testing"}
    assert public - modules == {
        "EntryPoint",
        "SliceCallError",
        "SliceContext",
        "hookimpl",
        "ENTRY_POINT_GROUP",
    }


def test_the_runtime_needs_nothing_but_the_standard_library_and_pluggy() -> None:
    """The node copies aether_slice and pluggy into every slice's virtualenv: nothing else may be imported.
    (testing.py, the pytest plugin, imports pytest: only pytest loads it, never the runtime.)"""
    allowed = {"pluggy", "aether_slice"}
    for path in Path(aether_slice.__file__).parent.glob("*.py"):
        if path.name == "testing.py":
            continue
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from") and not line.startswith(" "):
                top = words[1].split(".")[0]
                if top and top not in allowed and not top.startswith("_") and top != "__future__":
                    assert __import__("sys").stdlib_module_names.__contains__(top), (
                        f"{path.name} imports {top}"
                    )
