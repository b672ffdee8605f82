"""The nemesis suite's options and the import path of its helpers.

`pytest tests/chaos` runs the fast checks and the smoke; `--chaos` (or `nox -s chaos`) also runs every
nemesis alone and combined; `--soak MINUTES` runs the soak. `--chaos-seed`, `--chaos-rounds` and
`--chaos-nemesis` pin a run (the seed of every run is printed in its report, so a run can be replayed).
Reports go to `--chaos-dir` (default: a temporary directory per test) as report.json, and one line per
run is appended to `results.jsonl` there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The linearizability checker lives with the integration tests; `wait_until` in tests/support.py.
for _helpers in (Path(__file__).resolve().parents[1] / "integration", Path(__file__).resolve().parents[1]):
    if str(_helpers) not in sys.path:
        sys.path.insert(0, str(_helpers))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos", "the nemesis suite (tests/chaos)")
    group.addoption("--chaos", action="store_true", help="run every nemesis alone and combined")
    group.addoption("--soak", type=float, default=0.0, metavar="MINUTES", help="run the soak for MINUTES")
    group.addoption("--chaos-seed", type=int, default=None, help="seed of the runs (default: random)")
    group.addoption("--chaos-rounds", type=int, default=None, help="faults per run")
    group.addoption("--chaos-nemesis", default=None, help="only these nemeses (comma-separated)")
    group.addoption("--chaos-dir", default=None, help="keep run directories and reports here")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: the nemesis suite's long runs (needs --chaos or --soak)")
    config.addinivalue_line("markers", "chaos_smoke: the short nemesis run of the default test run")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The options exist only when this directory was named on the command line (an initial conftest).
    wanted = config.getoption("--chaos", default=False) or config.getoption("--soak", default=0)
    skip = pytest.mark.skip(reason="a long nemesis run: give --chaos (nox -s chaos) or --soak MINUTES")
    for item in items:
        if item.get_closest_marker("chaos") is not None and not wanted:
            item.add_marker(skip)
