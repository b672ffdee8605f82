"""Building, checking and installing the packages for the release check (`test_release.py`).

- `build`: every package of packages/ as an sdist and a wheel (`uv build --package`, a few at a time);
- `twine_check`: `twine check --strict` on them (twine run by `uv tool run`);
- `install`: a fresh virtualenv with the wheels installed (their dependencies from PyPI, unlocked: the
  bounds in the pyproject files are what is checked), made from outside the repository;
- `console_scripts`: the console scripts a wheel declares; `installed_env`: the environment of a user of
  that virtualenv (its bin/ first on PATH, nothing of this repository's virtualenv or shell).

Every subprocess has a timeout; a failure raises `ReleaseError` quoting the end of its output.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import uv

REPO = Path(__file__).resolve().parents[2]
PACKAGES = tuple(sorted(p.name for p in (REPO / "packages").iterdir() if (p / "pyproject.toml").is_file()))
_DROPPED = (
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONHOME",
    "UV_PROJECT_ENVIRONMENT",
    "AETHER_CLUSTER",
    "AETHER_API_KEY",
)


class ReleaseError(RuntimeError):
    """A step of the release check failed; the message says which and quotes its output."""


def project(package: str) -> dict[str, object]:
    return tomllib.loads((REPO / "packages" / package / "pyproject.toml").read_text())["project"]


def run(command: list[str], *, cwd: Path, timeout: float, env: Mapping[str, str] | None = None) -> str:
    try:
        result = subprocess.run(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=timeout, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired as error:
        raise ReleaseError(f"{' '.join(command)} took more than {timeout} s") from error
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-40:])
        raise ReleaseError(f"{' '.join(command)} (in {cwd}) exited with {result.returncode}:\n{tail}")
    return result.stdout


def _uv_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _DROPPED} | {"UV_NO_PROGRESS": "1"}


def build(dist: Path) -> list[Path]:
    """Every package's sdist and wheel in `dist`."""
    uv_bin = uv.find_uv_bin()

    def one(package: str) -> None:
        command = [uv_bin, "build", "--package", package, "--out-dir", str(dist), "--no-build-logs"]
        run(command, cwd=REPO, timeout=300, env=_uv_env())

    with ThreadPoolExecutor(max_workers=len(PACKAGES)) as pool:
        list(pool.map(one, PACKAGES))
    return sorted(f for f in dist.iterdir() if f.name.endswith((".whl", ".tar.gz")))


def build_wheel(project_dir: Path, dist: Path) -> Path:
    """A wheel of the project at `project_dir` (straight from its source, no sdist) in `dist`."""
    command = [uv.find_uv_bin(), "build", "--wheel", "--out-dir", str(dist), str(project_dir)]
    run(command, cwd=project_dir, timeout=300, env=_uv_env())
    (wheel,) = dist.glob("*.whl")
    return wheel


def twine_check(files: list[Path], *, cwd: Path) -> str:
    uv_bin = uv.find_uv_bin()
    command = [uv_bin, "tool", "run", "twine", "check", "--strict", *map(str, files)]
    return run(command, cwd=cwd, timeout=300, env=_uv_env())


def install(venv: Path, wheels: list[Path], *, cwd: Path) -> Path:
    """A new virtualenv at `venv` with `wheels` (and their dependencies) installed; its bin/."""
    uv_bin, env = uv.find_uv_bin(), _uv_env()
    run([uv_bin, "venv", "--quiet", "--python", sys.executable, str(venv)], cwd=cwd, timeout=120, env=env)
    python = str(venv / "bin" / "python")
    run([uv_bin, "pip", "install", "--python", python, *map(str, wheels)], cwd=cwd, timeout=600, env=env)
    return venv / "bin"


def console_scripts(wheel: Path) -> dict[str, str]:
    """name → entry (module:function) of the console scripts `wheel` declares."""
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        if not names:
            return {}
        parser = configparser.ConfigParser(delimiters=("=",))
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # names are case-sensitive
        parser.read_string(archive.read(names[0]).decode())
    return dict(parser["console_scripts"]) if parser.has_section("console_scripts") else {}


def installed_env(bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    # nothing of this repository on PATH (its .venv/bin, nox's .nox/*/bin): only the installed tools
    outside = [d for d in env.get("PATH", "").split(os.pathsep) if d and not _under(Path(d), REPO)]
    env["PATH"] = os.pathsep.join([str(bin_dir), *outside])
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"})
    # the user's config (contexts) stays untouched: `dev up` records its context here instead
    env["XDG_CONFIG_HOME"] = str(bin_dir.parent.parent / "config")
    return env


def _under(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())
