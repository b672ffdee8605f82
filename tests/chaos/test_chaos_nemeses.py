"""The nemesis suite (`nox -s chaos`, or `pytest tests/chaos --chaos`): every nemesis alone, then
combined at random, each run with the workloads and every invariant (see chaos_runner / chaos_checks).
`--soak MINUTES` (test_soak) runs the long-running health check of the soak mode instead.

Each run prints its seed: `--chaos-seed N --chaos-nemesis NAME` replays it."""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos_harness import assert_no_violations, run_once
from chaos_nemesis import COMBINABLE, NEMESES

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]


@pytest.mark.parametrize("nemesis", sorted(NEMESES))
def test_each_nemesis_alone(request: pytest.FixtureRequest, tmp_path: Path, nemesis: str) -> None:
    if request.config.getoption("--soak", default=0):
        pytest.skip("soak run")
    report = run_once(request, tmp_path, nemesis, nemeses=(nemesis,), rounds=3)
    if not report.config.nemeses:
        pytest.skip("; ".join(report.skipped))
    assert_no_violations(report)


def test_nemeses_combined_at_random(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if request.config.getoption("--soak", default=0):
        pytest.skip("soak run")
    report = run_once(request, tmp_path, "combined", nemeses=COMBINABLE, rounds=6, combine=True)
    assert_no_violations(report)


def test_soak(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    minutes = request.config.getoption("--soak", default=0)
    if not minutes:
        pytest.skip("give --soak MINUTES")
    from chaos_soak import make_soak

    report = run_once(
        request,
        tmp_path,
        "soak",
        soak=make_soak(minutes),
        nemeses=COMBINABLE,
        combine=False,
        soak_minutes=minutes,
        slow_calls=False,
    )
    assert_no_violations(report)
