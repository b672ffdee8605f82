"""A dev cluster of real nodes serving the slice project under test, for a slice author's integration
tests (the `local_cluster` fixture). Standard library only: it drives the `aether` CLI of this
environment (`aether dev up --source`, `blueprint apply --wait`, `slice invoke`, `dev down`), so it needs
aether-cli installed, and knows nothing of the node's insides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# The operator's shell must not point the CLI at another cluster.
_AETHER_VARIABLES = ("AETHER_CLUSTER", "AETHER_API_KEY", "AETHER_API_KEYS", "VIRTUAL_ENV")


def _sample_slices(workdir: Path) -> list[Path]:
    """The sample slice projects aether-cli runs without `--source` (org.aether:echo and the others)."""
    from aether_cli._slice_source import SliceSourceError, choose

    try:
        samples = choose(source=None, index=None, cwd=workdir).source
    except SliceSourceError:
        return []
    return sorted(p for p in samples.iterdir() if (p / "pyproject.toml").is_file()) if samples else []


class ClusterCommandError(Exception):
    """An `aether` command failed; the message is the command and what it printed."""


class DevCluster:
    """`aether dev up` in `workdir`, its wheel index built from `project` (a slice project directory)
    and the sample slices."""

    def __init__(self, project: Path, workdir: Path, *, nodes: int = 1, timeout: float = 300.0) -> None:
        self.project = project.resolve()
        self.workdir = workdir
        self.timeout = timeout
        self._blueprints = 0
        source = workdir / "source"  # `dev up --source` builds every project in a directory: this one,
        source.mkdir(parents=True, exist_ok=True)  # and the sample slices (a slice may call them)
        (source / self.project.name).symlink_to(self.project, target_is_directory=True)
        for sample in _sample_slices(workdir):
            if not (source / sample.name).exists():
                (source / sample.name).symlink_to(sample, target_is_directory=True)
        self.up = self.aether("dev", "up", "--nodes", str(nodes), "--source", str(source))

    def aether(self, *args: str, timeout: float | None = None) -> str:
        """Run `aether ARGS` against this cluster; its output. Raises ClusterCommandError."""
        env = {k: v for k, v in os.environ.items() if k not in _AETHER_VARIABLES}
        command = [sys.executable, "-c", "from aether_cli._app import main; main()", *args]
        try:
            result = subprocess.run(
                command,
                cwd=self.workdir,  # where `dev up` records the cluster (.aether-dev/) for later commands
                env=env,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=timeout or self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ClusterCommandError(
                f"aether {' '.join(args)}: no end after {timeout or self.timeout:g} s"
            ) from None
        if result.returncode != 0:
            raise ClusterCommandError(
                f"aether {' '.join(args)} exited {result.returncode}:\n{result.stderr.strip()}\n"
                f"{result.stdout.strip()}".strip()
            )
        return result.stdout

    def apply(self, blueprint: str) -> None:
        """Apply a blueprint (TOML text) and wait until every instance is ACTIVE."""
        self._blueprints += 1
        path = self.workdir / f"blueprint-{self._blueprints}.toml"
        path.write_text(blueprint, encoding="utf-8")
        self.aether("blueprint", "apply", str(path), "--wait", "--timeout", str(self.timeout))

    def invoke(self, artifact: str, entry: str, payload: Any = None, *, timeout: float = 30.0) -> Any:
        """Call an entry point through the cluster (`aether slice invoke`); its JSON result."""
        data = json.dumps(payload)
        output = self.aether("slice", "invoke", artifact, entry, "--data", data, "--timeout", f"{timeout:g}")
        return json.loads(output)

    def close(self) -> None:
        """Stop every process of the cluster (`aether dev down`)."""
        self.aether("dev", "down")
