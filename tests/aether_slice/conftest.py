"""A virtualenv with aether-slice and the sample slices installed (built once per session), for the
tests that run slices in real slice host processes."""

from __future__ import annotations

import pytest

from support import slice_venv

SAMPLES = ("echo", "faulty", "greeter", "counter", "busy")


@pytest.fixture(scope="session")
def slice_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The python of a virtualenv holding aether-slice and the sample slices (not in the dev environment:
    they are workspace members that `uv sync` does not install)."""
    return slice_venv(tmp_path_factory.mktemp("slice-venv"), SAMPLES)


@pytest.fixture(scope="session")
def slice_python_with_uvloop(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same, with uvloop installed too (as a slice that depends on it would have it)."""
    return slice_venv(tmp_path_factory.mktemp("slice-venv-uvloop"), SAMPLES, ["uvloop"])
