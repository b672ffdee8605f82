"""Glue between pytest and `chaos_runner`: one run from the command-line options, its report printed,
kept and appended to `results.jsonl`; the skip when namespaces cannot be made here."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from chaos_net import missing_tools
from chaos_runner import Report, RunConfig, run_chaos


def option(request: pytest.FixtureRequest, name: str) -> Any:
    return request.config.getoption(name, default=None)


def require_namespaces() -> None:
    missing = missing_tools()
    if missing:
        pytest.skip(f"the nemesis suite builds network namespaces and needs: {', '.join(missing)}")


def run_once(
    request: pytest.FixtureRequest, tmp_path: Path, label: str, soak: Any = None, **settings: Any
) -> Report:
    """A run with `settings` (RunConfig fields), overridden by --chaos-seed / --chaos-rounds /
    --chaos-nemesis; prints the report, and appends it to results.jsonl under --chaos-dir if given."""
    require_namespaces()
    seed = option(request, "--chaos-seed")
    seed = random.randrange(1_000_000) if seed is None else seed
    if (rounds := option(request, "--chaos-rounds")) is not None:
        settings["rounds"] = rounds
    if nemesis := option(request, "--chaos-nemesis"):
        settings["nemeses"] = tuple(nemesis.split(","))
    base = Path(option(request, "--chaos-dir") or tmp_path)
    directory = base / f"{label}-{seed}"
    config = RunConfig(directory=directory, seed=seed, **settings)
    print(f"\nchaos {label}: seed {seed} (replay: --chaos-seed {seed}), directory {directory}")
    if soak is None:
        report = trio.run(run_chaos, config)
    else:
        state, soak_fn = soak
        report = trio.run(lambda: run_chaos(config, soak=soak_fn))
    if soak is not None:
        warmup = max(3.0, config.soak_minutes / 3)
        report.violations += state.violations(warmup)
        report.notes += state.table(warmup)
        (directory / "soak-samples.json").write_text(json.dumps(state.to_json()) + "\n")
    print(report.summary())
    if option(request, "--chaos-dir"):
        line = {
            "label": label,
            **report.to_json(),
            "config": {
                k: (str(v) if isinstance(v, Path) else v) for k, v in attrs.asdict(report.config).items()
            },
        }
        with open(base / "results.jsonl", "a") as out:
            out.write(json.dumps(line) + "\n")
    return report


def assert_no_violations(report: Report) -> None:
    assert not report.violations, f"{len(report.violations)} invariant violations:\n{report.summary()}"
