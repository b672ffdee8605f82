"""The release check: `--release` (what `nox -s release` and the default `nox` run give) runs it.

It builds every package of packages/ (sdist and wheel), checks their metadata, installs the wheels into a
fresh virtualenv in a temporary directory outside the repository and runs the installed tools from there
(`test_release.py`). Without `--release` its tests are skipped: it takes about a minute and needs the
network (PyPI) for the build backend, twine and the packages' dependencies.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The CLI helpers (run_aether's environment, processes_of, wait_until) live with the integration tests.
for _helpers in (Path(__file__).resolve().parents[1] / "integration", Path(__file__).resolve().parents[1]):
    if str(_helpers) not in sys.path:
        sys.path.insert(0, str(_helpers))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("release", "the release check (tests/release)").addoption(
        "--release", action="store_true", help="build, check, install and smoke-test the packages"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "release: the release check (needs --release; nox -s release)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The option exists only when this directory was named on the command line (an initial conftest).
    if config.getoption("--release", default=False):
        return
    skip = pytest.mark.skip(reason="the release check: give --release (nox -s release)")
    for item in items:
        if item.get_closest_marker("release") is not None:
            item.add_marker(skip)
