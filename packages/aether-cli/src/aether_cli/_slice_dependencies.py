"""`aether slice publish --with-dependencies`: the wheels a slice needs, put beside it in the index.

A node installs a slice from its index alone (a wheel directory read with `--no-index`, or the one index
URL it was given), so what the slice depends on must be there too. The slice wheel's requirements
(`SliceWheel.requirements`) are resolved and downloaded as wheels by pip (`uv tool run --from pip pip
download`; wheels only: a node builds nothing) from PyPI, or from the index given, for this machine's
Python and platform: the nodes' when they run the same.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from ._common import EXIT_FAILED
from ._slice_wheel import PublishError


def source_arguments(source: str | None) -> list[str]:
    """pip's arguments for where the dependencies come from: PyPI (None), a wheel directory, or an
    index URL. Pure."""
    if source is None:
        return []
    if "://" in source:
        return ["--index-url", source]
    return ["--no-index", "--find-links", source]


def download_dependencies(requirements: list[str], into: Path, source: str | None) -> list[Path]:
    """Download wheels of `requirements` and of everything they need into `into`; the wheels, sorted.
    PublishError with pip's reason if they cannot all be had as wheels for this machine."""
    import uv

    if not requirements:
        return []
    command = [
        uv.find_uv_bin(),
        *("tool", "run", "--quiet", "--from", "pip", "pip", "download"),
        *("--dest", str(into), "--only-binary=:all:", "--disable-pip-version-check", "--quiet"),
        *source_arguments(source),
        *requirements,
    ]
    result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        output = "\n".join((result.stderr + result.stdout).strip().splitlines()[-8:])
        raise PublishError(
            f"the slice's dependencies ({', '.join(requirements)}) cannot all be had as wheels from"
            f" {source or 'PyPI'} for this machine's Python and platform; nothing was published:\n{output}",
            EXIT_FAILED,
        )
    return sorted(into.glob("*.whl"))
