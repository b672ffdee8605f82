"""The release check: the packages as a user gets them, from an index, used outside the repository.

Every package of packages/ is built (sdist and wheel) and its metadata checked (`twine check --strict`);
the wheels are installed into a fresh virtualenv in a temporary directory, and from a working directory
there the installed tools run: every console script starts (`--help`), `aether --version`, and
`aether dev up --example` (the sample slices and the example blueprint bundled in aether-cli), one call
through the cluster, `aether-mcp` listing its tools over stdio, `aether dev down`. Every process started
is ended whatever happens (`kill_processes_of` on the temporary directory).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import attrs
import pytest
import trio
from cli_support import kill_processes_of, processes_of
from mcp import Client, StdioServerParameters
from mcp.types import Implementation
from release_support import (
    PACKAGES,
    REPO,
    ReleaseError,
    build,
    build_wheel,
    console_scripts,
    install,
    installed_env,
    project,
    run,
    twine_check,
)

from aether_mcp._tools import TOOLS

pytestmark = [pytest.mark.release, pytest.mark.integration, pytest.mark.slow]
EXPECTED_SCRIPTS = {"aether", "aether-kv", "aether-mcp", "aether-node"}
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".venv", "dist", "build")


@attrs.frozen
class Installed:
    root: Path  # the temporary directory: dist/, venv/, work/
    bin: Path
    work: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120) -> str:
        return run([str(self.bin / args[0]), *args[1:]], cwd=self.work, timeout=timeout, env=self.env)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("release")
    assert not root.resolve().is_relative_to(REPO), f"{root} must be outside the repository"
    return root


@pytest.fixture(scope="module")
def dist(root: Path) -> list[Path]:
    return build(root / "dist")


@pytest.fixture(scope="module")
def installed(root: Path, dist: list[Path]) -> Installed:
    work = root / "work"
    work.mkdir()
    bin_dir = install(root / "venv", [f for f in dist if f.suffix == ".whl"], cwd=work)
    return Installed(root=root, bin=bin_dir, work=work, env=installed_env(bin_dir))


def _wheels(dist: list[Path]) -> dict[str, Path]:
    return {f.name.split("-")[0].replace("_", "-"): f for f in dist if f.suffix == ".whl"}


def test_every_package_is_built_as_an_sdist_and_a_wheel_at_its_version(dist: list[Path]) -> None:
    expected = set()
    for package in PACKAGES:
        stem = f"{package.replace('-', '_')}-{project(package)['version']}"
        expected |= {f"{stem}.tar.gz", f"{stem}-py3-none-any.whl"}
    assert {f.name for f in dist} == expected


def test_the_metadata_passes_twine_check(dist: list[Path], root: Path) -> None:
    output = twine_check(dist, cwd=root)
    assert output.count("PASSED") == len(dist), output


def test_the_installed_packages_come_from_the_wheels_not_the_repository(installed: Installed) -> None:
    modules = [package.replace("-", "_") for package in PACKAGES]
    code = f"import {', '.join(modules)}\n" + "".join(f"print({m}.__file__)\n" for m in modules)
    for path in installed.run("python", "-c", code).split():
        assert Path(path).is_relative_to(installed.root / "venv"), path


def test_every_console_script_of_every_package_starts(installed: Installed, dist: list[Path]) -> None:
    scripts = {name for wheel in _wheels(dist).values() for name in console_scripts(wheel)}
    assert scripts >= EXPECTED_SCRIPTS
    for script in sorted(scripts):
        output = installed.run(script, "--help", timeout=60)
        assert f"Usage: {script}" in output, output


def test_aether_version_is_the_cli_package_version(installed: Installed) -> None:
    assert installed.run("aether", "--version").strip() == project("aether-cli")["version"]


def test_a_dev_cluster_runs_from_the_installed_tools(installed: Installed) -> None:
    try:
        up = installed.run("aether", "dev", "up", "--example", timeout=300)
        bundled = installed.root / "venv" / "lib"
        assert re.search(
            rf"building the slice index from {re.escape(str(bundled))}/\S+/_bundled/slices/", up
        ), up
        assert "converged: org.aether:echo:1.0.0 3/3, org.aether:greeter:1.0.0 2/2" in up, up

        answer = installed.run("aether", "slice", "invoke", "org.aether:greeter", "greet", "--data",
                               '{"name": "release"}', "--json")  # fmt: skip
        assert json.loads(answer)["greeting"] == "hello release", answer

        management = json.loads((installed.work / ".aether-dev" / "cluster.json").read_text())["management"]
        tools = trio.run(_list_tools, installed, ",".join(management))
        assert tools == {spec.name for spec in TOOLS}

        down = installed.run("aether", "dev", "down", timeout=120)
        said = down.splitlines()  # (stderr too: the nodes as they stop, then the summary on stdout)
        assert said[0].startswith("stopping 3 nodes"), down
        assert said[-1] == "stopped 3 nodes; data kept in .aether-dev/", down
        assert sorted(said[1:-1]) == ["  node-1 stopped", "  node-2 stopped", "  node-3 stopped"], down
        assert processes_of(installed.root) == []
    finally:
        if (installed.work / ".aether-dev" / "cluster.json").exists():
            try:
                installed.run("aether", "dev", "down", timeout=120)
            except ReleaseError as error:
                print(error)
        kill_processes_of(installed.root)


async def _list_tools(installed: Installed, cluster: str) -> set[str]:
    server = StdioServerParameters(
        command=str(installed.bin / "aether-mcp"), args=["--cluster", cluster], env=installed.env,
        cwd=installed.work,
    )  # fmt: skip
    info = Implementation(name="release-check", version="1.0")
    with trio.fail_after(60):
        async with Client(server, client_info=info, read_timeout_seconds=60) as client:
            return {tool.name for tool in (await client.list_tools()).tools}


def test_building_the_cli_without_a_bundled_sample_slice_fails_saying_which(tmp_path: Path) -> None:
    """The build hook refuses to make an aether-cli whose `dev up` would lack a sample slice."""
    copy = tmp_path / "checkout"
    shutil.copytree(REPO / "packages" / "aether-cli", copy / "packages" / "aether-cli", ignore=_IGNORED)
    shutil.copytree(REPO / "examples", copy / "examples")
    shutil.copytree(REPO / "sample-slices", copy / "sample-slices", ignore=_IGNORED)
    shutil.rmtree(copy / "sample-slices" / "greeter")
    with pytest.raises(ReleaseError) as failed:
        build_wheel(copy / "packages" / "aether-cli", tmp_path / "dist")
    assert f"aether-cli build: the sample slice {copy / 'sample-slices' / 'greeter'} is missing" in str(
        failed.value
    )
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").glob("*.whl"))
