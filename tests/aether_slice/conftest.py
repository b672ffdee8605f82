"""A virtualenv with aether-slice and the sample slices installed (built once per session), for the
tests that run slices in real slice host processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import uv

REPO = Path(__file__).resolve().parents[2]
SAMPLES = ("echo", "faulty", "greeter", "counter", "busy")


@pytest.fixture(scope="session")
def slice_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The python of a virtualenv holding aether-slice and the sample slices (not in the dev environment:
    they are workspace members that `uv sync` does not install)."""
    return _slice_venv(tmp_path_factory.mktemp("slice-venv"), [])


@pytest.fixture(scope="session")
def slice_python_with_uvloop(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same, with uvloop installed too (as a slice that depends on it would have it)."""
    return _slice_venv(tmp_path_factory.mktemp("slice-venv-uvloop"), ["uvloop"])


def _slice_venv(directory: Path, extra: list[str]) -> str:
    venv = directory / "venv"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    uv_bin = uv.find_uv_bin()
    python = venv / "bin" / "python"
    for command in (
        [uv_bin, "venv", "--quiet", "--python", sys.executable, str(venv)],
        [
            uv_bin,
            "pip",
            "install",
            "--quiet",
            "--python",
            str(python),
            str(REPO / "packages" / "aether-slice"),
        ]
        + [str(REPO / "sample-slices" / name) for name in SAMPLES]
        + extra,
    ):
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return str(python)
