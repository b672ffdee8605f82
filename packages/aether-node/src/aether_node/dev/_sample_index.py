"""The embedded sample index: `sample-slices/*` built into a directory of wheels.

This module owns turning slice source directories into a wheel directory that uv can install from with
`--no-index --find-links DIR`, offline:

- every directory under the source with a `pyproject.toml` is built into a wheel (`uv build --wheel`);
- some slices are also built at extra versions (`org.aether.echo` 1.1.0, for rollout tests), from a
  temporary copy whose `[project] version` is rewritten;
- the third-party wheels the slices depend on (for example `attrs==23.2.0` for `org.aether.pinned`) are
  downloaded into the same directory (pip, run through `uv tool run`, binary wheels only), and each such
  slice is then proven to resolve offline from the directory alone (`uv pip compile --no-index`).

It is idempotent and cheap when nothing changed: a wheel is rebuilt only when a file of its source is
newer than it, and downloads happen only when offline resolution fails. New files appear in the output
directory atomically (built in a staging directory, then renamed), so a reader never sees half a wheel.
Needs the `uv` PyPI package (for `uv.find_uv_bin()`), and network access for the downloads of a cold build.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import uv
from packaging.utils import InvalidWheelFilename, NormalizedName, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

# Extra versions built from the same source (canonical distribution name → versions).
EXTRA_VERSIONS: dict[str, tuple[str, ...]] = {"org-aether-echo": ("1.1.0",)}

# Not part of a slice's source: caches, build output, local environments.
_IGNORED_DIRS = frozenset({"__pycache__", "build", "dist", "node_modules"})
_OUTPUT_TAIL_LINES = 25


@attrs.frozen
class _Slice:
    directory: Path
    name: str  # as written in pyproject.toml
    canonical: NormalizedName
    version: Version
    dependencies: tuple[str, ...]


def build_sample_index(
    source: Path, out: Path, *, progress: Callable[[str], None] = lambda message: None
) -> list[Path]:
    """Build every slice under `source` (each directory with a `pyproject.toml`) into wheels in `out`,
    plus the extra versions in EXTRA_VERSIONS and the third-party wheels the slices need, so that
    `uv pip install --no-index --find-links out <slice>==<version>` works offline. Returns the wheel
    paths: each slice build, then the third-party wheels. `progress` may be called from worker threads.
    Raises RuntimeError naming the slice (and quoting the end of uv's or pip's output) when something
    cannot be built or resolved. Blocking: from trio, run it in `trio.to_thread.run_sync`."""
    source = Path(source)
    out = Path(out)
    if not source.is_dir():
        raise RuntimeError(f"sample index: the slice source {source} is not a directory")
    slices = [_read_slice(directory) for directory in sorted(source.iterdir()) if _is_slice_dir(directory)]
    if not slices:
        raise RuntimeError(f"sample index: no slice (a directory with a pyproject.toml) under {source}")
    out.mkdir(parents=True, exist_ok=True)
    uv_bin = uv.find_uv_bin()

    jobs: list[tuple[_Slice, Version]] = []
    for slice_ in slices:
        jobs.append((slice_, slice_.version))
        jobs.extend((slice_, Version(extra)) for extra in EXTRA_VERSIONS.get(slice_.canonical, ()))

    def build(job: tuple[_Slice, Version]) -> Path:
        slice_, version = job
        label = f"{slice_.name} {version}"
        existing = _find_wheel(out, slice_.canonical, version)
        if existing is not None and existing.stat().st_mtime_ns > _newest_mtime_ns(slice_.directory):
            progress(f"{label}: up to date ({existing.name})")
            return existing
        progress(f"{label}: building")
        wheel = _build_wheel(uv_bin, slice_, version, out)
        progress(f"{label}: built {wheel.name}")
        return wheel

    # Builds and downloads are independent subprocesses: run a few at a time, downloads first (they wait
    # on the network, not the CPU). This roughly halves a cold build.
    with ThreadPoolExecutor(max_workers=4) as pool:
        downloads = [
            pool.submit(_ensure_dependencies, uv_bin, slice_, out, progress)
            for slice_ in slices
            if slice_.dependencies
        ]
        builds = [pool.submit(build, job) for job in jobs]
        wheels = [future.result() for future in builds]
        third_party = {wheel: None for future in downloads for wheel in future.result()}
    return wheels + [wheel for wheel in third_party if wheel not in wheels]


# ---------------------------------------------------------------- reading slices


def _is_slice_dir(directory: Path) -> bool:
    return (
        directory.is_dir() and not directory.name.startswith(".") and (directory / "pyproject.toml").is_file()
    )


def _read_slice(directory: Path) -> _Slice:
    pyproject = directory / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise RuntimeError(
            f"sample index: slice {directory.name}: cannot read {pyproject}: {error}"
        ) from None
    if not isinstance(project, dict):
        raise RuntimeError(f"sample index: slice {directory.name}: {pyproject} has no [project] table")
    name, version = project.get("name"), project.get("version")
    if not isinstance(name, str) or not isinstance(version, str):
        raise RuntimeError(
            f"sample index: slice {directory.name}: {pyproject} must set [project] name and a static version"
        )
    try:
        parsed = Version(version)
    except InvalidVersion:
        raise RuntimeError(
            f"sample index: slice {directory.name}: version {version!r} in {pyproject} is not PEP 440"
        ) from None
    dependencies = project.get("dependencies") or []
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise RuntimeError(
            f"sample index: slice {directory.name}: [project] dependencies in {pyproject} "
            "is not a list of strings"
        )
    return _Slice(directory, name, canonicalize_name(name), parsed, tuple(dependencies))


def _source_files(directory: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(directory):
        dirs[:] = [
            d
            for d in dirs
            if not d.startswith(".") and d not in _IGNORED_DIRS and not d.endswith(".egg-info")
        ]
        for file in files:
            if not file.endswith((".pyc", ".pyo")) and file != "uv.lock":
                yield Path(root, file)


def _newest_mtime_ns(directory: Path) -> int:
    # Files only: directory mtimes change whenever a __pycache__ appears. So deleting a source file alone
    # does not trigger a rebuild; touch pyproject.toml (or delete the wheel) after that.
    return max((path.stat().st_mtime_ns for path in _source_files(directory)), default=0)


def _find_wheel(out: Path, name: NormalizedName, version: Version) -> Path | None:
    for wheel in out.glob("*.whl"):
        try:
            wheel_name, wheel_version, _, _ = parse_wheel_filename(wheel.name)
        except InvalidWheelFilename:
            continue
        if wheel_name == name and wheel_version == version:
            return wheel
    return None


# ---------------------------------------------------------------- building


def _build_wheel(uv_bin: str, slice_: _Slice, version: Version, out: Path) -> Path:
    label = f"{slice_.name} {version}"
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=out) as staging_name:
        staging = Path(staging_name)
        project_dir = slice_.directory
        if version != slice_.version:
            project_dir = staging / "source" / slice_.directory.name
            shutil.copytree(
                slice_.directory,
                project_dir,
                ignore=lambda _dir, names: [n for n in names if n.startswith(".") or n in _IGNORED_DIRS],
            )
            _rewrite_version(project_dir / "pyproject.toml", slice_, version)
        built = staging / "wheels"
        _run(
            [uv_bin, "build", "--wheel", "--out-dir", str(built), str(project_dir)],
            what=f"building slice {label} from {slice_.directory}",
        )
        wheels = list(built.glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"sample index: building slice {label} gave {len(wheels)} wheels, not one")
        wheel_name, wheel_version, _, _ = parse_wheel_filename(wheels[0].name)
        if wheel_name != slice_.canonical or wheel_version != version:
            raise RuntimeError(
                f"sample index: building slice {label} gave {wheels[0].name}, "
                f"not {slice_.canonical} {version}"
            )
        stale = _find_wheel(out, slice_.canonical, version)
        target = out / wheels[0].name
        os.replace(wheels[0], target)
        if stale is not None and stale != target:
            stale.unlink(missing_ok=True)
        return target


def _rewrite_version(pyproject: Path, slice_: _Slice, version: Version) -> None:
    text = pyproject.read_text(encoding="utf-8")
    project = re.search(r"(?ms)^\[project\][ \t]*$(.*?)(?=^\[|\Z)", text)
    if project is None:
        raise RuntimeError(f"sample index: slice {slice_.name}: no [project] table in {pyproject}")
    body, count = re.subn(
        r'(?m)^(version\s*=\s*)(["\']).*?\2', rf"\g<1>\g<2>{version}\g<2>", project.group(1)
    )
    if count != 1:
        raise RuntimeError(f"sample index: slice {slice_.name}: cannot rewrite the version in {pyproject}")
    pyproject.write_text(text[: project.start(1)] + body + text[project.end(1) :], encoding="utf-8")


# ---------------------------------------------------------------- third-party wheels


def _ensure_dependencies(
    uv_bin: str, slice_: _Slice, out: Path, progress: Callable[[str], None]
) -> list[Path]:
    """The wheels (from `out`) that `slice_`'s dependencies resolve to offline; downloads them first if
    they do not resolve yet."""
    label = f"{slice_.name} {slice_.version}"
    resolved = _resolve_offline(uv_bin, slice_, out)
    if isinstance(resolved, list):
        progress(f"{label}: dependencies present ({', '.join(w.name for w in resolved)})")
        return resolved
    progress(f"{label}: downloading dependencies {', '.join(slice_.dependencies)}")
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=out) as staging_name:
        staging = Path(staging_name)
        _run(
            [
                uv_bin, "tool", "run", "--python", sys.executable, "--from", "pip",
                "pip", "download", "--disable-pip-version-check", "--no-input",
                "--only-binary=:all:", "--dest", str(staging), *slice_.dependencies,
            ],
            what=f"downloading the dependencies of slice {label}",
        )  # fmt: skip
        for wheel in staging.glob("*.whl"):
            if not (out / wheel.name).exists():
                os.replace(wheel, out / wheel.name)
    resolved = _resolve_offline(uv_bin, slice_, out)
    if isinstance(resolved, str):
        raise RuntimeError(
            f"sample index: the dependencies of slice {label} do not resolve from {out} alone, even after "
            f"downloading them:\n{resolved}"
        )
    progress(f"{label}: dependencies downloaded ({', '.join(w.name for w in resolved)})")
    return resolved


def _resolve_offline(uv_bin: str, slice_: _Slice, out: Path) -> list[Path] | str:
    """The wheels in `out` that the slice's dependencies resolve to (offline), or uv's complaint."""
    result = subprocess.run(
        [
            uv_bin, "pip", "compile", "-", "--quiet", "--no-header", "--no-annotate", "--no-config",
            "--python", sys.executable, "--no-index", "--find-links", str(out),
        ],
        input="".join(f"{requirement}\n" for requirement in slice_.dependencies),
        capture_output=True, text=True, check=False, env=_uv_env(),
    )  # fmt: skip
    if result.returncode != 0:
        return _tail(result.stderr + result.stdout)
    wheels: list[Path] = []
    for line in result.stdout.splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if not sep:
            continue
        wheel = _find_wheel(out, canonicalize_name(name), Version(version.split(";", 1)[0].strip()))
        if wheel is None:  # resolved to something that is not a wheel here (an sdist): not offline-safe
            return f"{name}=={version} resolved, but {out} has no wheel of it"
        wheels.append(wheel)
    return wheels


# ---------------------------------------------------------------- subprocesses


def _uv_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)  # the caller's environment is not the one being built or resolved
    env["UV_NO_PROGRESS"] = "1"
    return env


def _run(command: list[str], *, what: str) -> None:
    result = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, env=_uv_env()
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"sample index: {what} failed (exit code {result.returncode}); last lines of the output:\n"
            f"{_tail(result.stdout)}"
        )


def _tail(output: str) -> str:
    lines = output.strip().splitlines()
    return "\n".join(lines[-_OUTPUT_TAIL_LINES:]) or "(no output)"
