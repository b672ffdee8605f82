"""A slice whose import fails for a module not found says what that most likely means
(`aether_slice.host._plugin_manager`, in this process, importing a module written to tmp_path): a
dependency the slice does not declare (its tests pass where pytest brought it along, and a node's
virtualenv has only the declared ones), or an entry point naming a module that is not there."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aether_slice import host as host_module


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("h6_uses_undeclared", "h6_own_package"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    (tmp_path / "h6_uses_undeclared.py").write_text("import h6_not_installed_anywhere.sub\n")
    package = tmp_path / "h6_own_package"
    package.mkdir()
    (package / "__init__.py").write_text("import h6_own_package.not_in_the_wheel\n")
    return tmp_path


def import_failure(reference: str) -> str:
    with pytest.raises(host_module.HostError) as raised:
        host_module._plugin_manager("org.example:hint", reference)
    assert raised.value.kind == "import"
    return raised.value.message


def test_an_undeclared_dependency_is_named_as_one(modules: Path) -> None:
    message = import_failure("h6_uses_undeclared")
    assert message.startswith(
        "importing h6_uses_undeclared failed: ModuleNotFoundError:"
        " No module named 'h6_not_installed_anywhere'"
    )
    assert "(is 'h6_not_installed_anywhere' a dependency the slice does not declare?" in message
    assert "[project] dependencies" in message


def test_a_module_the_entry_point_names_that_is_not_there_says_so(modules: Path) -> None:
    message = import_failure("h6_no_such_module:plugin")
    assert "No module named 'h6_no_such_module'" in message
    assert "(the module the slice's entry point names: check its name in pyproject.toml" in message


def test_a_missing_module_of_the_slice_s_own_package_gets_no_dependency_hint(modules: Path) -> None:
    message = import_failure("h6_own_package")
    assert "ModuleNotFoundError: No module named 'h6_own_package.not_in_the_wheel'" in message
    assert "dependency" not in message and "entry point names" not in message
