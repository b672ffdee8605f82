"""Every package of packages/ carries the metadata an index needs, its own version and changelog, and
dependency bounds; `nox -s release` builds the packages and runs `twine check` on them (tests/release)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p for p in (REPO / "packages").iterdir() if (p / "pyproject.toml").is_file())
WORKSPACE = {p.name for p in PACKAGES}


def _project(package: Path) -> dict[str, Any]:
    return tomllib.loads((package / "pyproject.toml").read_text())["project"]


@pytest.fixture(params=PACKAGES, ids=[p.name for p in PACKAGES])
def package(request: pytest.FixtureRequest) -> Path:
    return request.param


def test_the_metadata_an_index_shows_is_complete(package: Path) -> None:
    project = _project(package)
    assert project["name"] == package.name
    assert len(project["description"]) >= 20
    assert (package / project["readme"]).is_file()
    assert project["requires-python"] == ">=3.11"
    assert "Programming Language :: Python :: 3.11" in project["classifiers"]
    assert project["license"] == "MIT"
    for license_file in project["license-files"]:
        assert (package / license_file).read_text() == (REPO / "LICENSE").read_text()
    # No project URLs until the project has a public home: a made-up address would mislead.
    assert "urls" not in project


def test_each_package_has_its_own_version_in_its_changelog(package: Path) -> None:
    version = Version(_project(package)["version"])
    changelog = (package / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## (\S+)", changelog, flags=re.MULTILINE)
    assert headings and Version(headings[0]) == version, f"{package.name}: newest entry {headings[:1]}"


def test_every_dependency_has_a_lower_bound_and_workspace_ones_an_upper_bound(package: Path) -> None:
    for line in _project(package)["dependencies"]:
        requirement = Requirement(line)
        operators = {spec.operator for spec in requirement.specifier}
        assert operators & {">=", "=="}, f"{package.name}: {line} has no lower bound"
        if requirement.name in WORKSPACE:
            assert "<" in operators, f"{package.name}: {line} needs an upper bound (one release series)"


def test_every_console_script_points_into_its_own_package(package: Path) -> None:
    module = package.name.replace("-", "_")
    for entry in _project(package).get("scripts", {}).values():
        assert entry.split(".", 1)[0] == module and ":" in entry, entry


def test_the_readme_install_command_installs_every_package_and_its_scripts() -> None:
    """The README's first command (`uv tool install ./packages/aether-cli --with ...`) stays whole as
    packages are added: every package is installed and every console script is put on the tool's bin."""
    readme = (REPO / "README.md").read_text()
    command = re.search(r"uv tool install (?:--\S+ )*\./packages/aether-cli (.*?)&&", readme, flags=re.DOTALL)
    assert command, "the README's first command no longer installs ./packages/aether-cli"
    words = command[1].replace("\\\n", " ").split()
    withs = {words[i + 1] for i, word in enumerate(words) if word == "--with"}
    assert withs == {f"./packages/{name}" for name in WORKSPACE - {"aether-cli"}}
    executables = set(words[words.index("--with-executables-from") + 1].split(","))
    assert executables == {p.name for p in PACKAGES if p.name != "aether-cli" and _project(p).get("scripts")}
