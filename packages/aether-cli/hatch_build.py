"""Build hook of aether-cli: bundles the sample slices and the example blueprint into the package.

`aether dev up` outside the repository builds its slice index from `aether_cli/_bundled/slices/` and
`--example` applies `aether_cli/_bundled/blueprint.toml`. They are copied from the repository
(`sample-slices/<name>/`, `examples/blueprint.toml`) into the sdist, at `src/aether_cli/_bundled/`, and
from there (or straight from the repository) into the wheel. `pinned` stays out: it needs a download
(attrs==23.2.0) and only the tests use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

BUNDLED_SLICES = ("busy", "counter", "echo", "faulty", "greeter")
IN_SDIST = "src/aether_cli/_bundled"
IN_WHEEL = "aether_cli/_bundled"
_SKIPPED_DIRS = frozenset({"__pycache__", "build", "dist", ".venv"})


def _files(directory: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(
            d for d in dirs if not (d in _SKIPPED_DIRS or d.startswith(".") or d.endswith(".egg-info"))
        )
        found += [Path(root, f) for f in sorted(files) if not f.endswith((".pyc", ".pyo"))]
    return found


class BundleSamples(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        if version == "editable":
            return  # an editable install (the workspace) finds the repository's own sample-slices/
        if (root / IN_SDIST).is_dir():
            return  # built from the sdist: the bundle is already part of the package's files
        repo = root.parents[1]
        target = IN_SDIST if self.target_name == "sdist" else IN_WHEEL
        sources = {repo / "examples" / "blueprint.toml": f"{target}/blueprint.toml"}
        for name in BUNDLED_SLICES:
            slice_dir = repo / "sample-slices" / name
            if not (slice_dir / "pyproject.toml").is_file():
                raise RuntimeError(f"aether-cli build: the sample slice {slice_dir} is missing")
            for file in _files(slice_dir):
                sources[file] = f"{target}/slices/{name}/{file.relative_to(slice_dir).as_posix()}"
        for source, destination in sources.items():
            build_data["force_include"][str(source)] = destination
