"""Resolution and installation of slices: coordinates → a virtualenv under the node's data dir.

Each `group:artifact:version` is installed once, with uv, into its own virtualenv (created from the node's
own interpreter), checked for its `aether.slices` entry point, and reused afterwards. The slice runtime
(`aether_slice` and `pluggy`, at the node's own versions) is added to every slice virtualenv through a
`.pth` file, so slices never depend on it and their own dependencies win over it. The runtime's directory
is named by its versions and a digest of its code, and a virtualenv made by an earlier node (another
version, or a checkout changed since) is pointed at this node's runtime the first time this node finds
it: its template then speaks this node's host protocol.

A virtualenv (and the runtime) is built under a temporary name, written to disk (`_to_disk`: a power
cut after the rename would otherwise leave an install marked ready whose files are empty), then renamed
into place; temporary ones a crash left behind are removed when the node starts (`_remove_stale_builds`).

This module owns the uv subprocess and the translation of its failures into ResolutionError kinds.
"""

from __future__ import annotations

import configparser
import contextlib
import ctypes
import difflib
import functools
import hashlib
import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path

import attrs
import pluggy
import trio
import uv
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

import aether_slice

from ..core._coordinates import Coordinates
from ..core._errors import ResolutionError

ENTRY_POINT_GROUP = "aether.slices"
READY_MARKER = ".aether-ready"


@attrs.frozen
class InstalledSlice:
    coordinates: Coordinates
    venv: Path
    python: Path


def index_arguments(index: str) -> list[str]:
    """uv arguments for the index: a wheel directory (`--find-links`, never a public index) or a PEP 503
    simple index URL (file:// or http(s)://) used as the only index."""
    if "://" not in index:
        return ["--no-index", "--find-links", index]
    return ["--index-url", index]


# uv's reason when a requirement is in no index it was given (after the slice's own name is ruled out)
_MISSING_DEPENDENCY = re.compile(r"(\S+) was not found in the (provided package locations|package registry)")
# ... and when the index holds it, but no version the slice accepts ("only attrs==23.2.0 is available")
_DEPENDENCY_VERSIONS = re.compile(
    r"(?:only the following versions of|only|there is no version of) ([a-z0-9][a-z0-9._-]*)"
)


def wheels_held(index: str) -> dict[str, list[Version]] | None:
    """What a wheel directory holds: canonical distribution name → its versions (None for an index URL,
    or a directory that cannot be read)."""
    if "://" in index:
        return None
    held: dict[str, list[Version]] = {}
    try:
        names = [entry.name for entry in os.scandir(index) if entry.name.endswith(".whl")]
    except OSError:
        return None
    for name in names:
        try:
            distribution, version, _, _ = parse_wheel_filename(name)
        except InvalidWheelFilename:
            continue
        held.setdefault(canonicalize_name(distribution), []).append(version)
    return held


def _what_it_holds(dist: str, held: dict[str, list[Version]] | None) -> str:
    """For a slice not found in a wheel directory: the versions of it there, or names like it. Pure."""
    if held is None:
        return ""
    versions = sorted(set(held.get(canonicalize_name(dist), [])))
    if versions:
        shown = ", ".join(str(v) for v in versions[-10:])
        return f" (it holds {'the last 10 of its versions: ' if len(versions) > 10 else ''}{shown})"
    close = difflib.get_close_matches(canonicalize_name(dist), list(held), n=3)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def classify_uv_failure(
    coordinates: Coordinates, index: str, output: str, held: dict[str, list[Version]] | None = None
) -> ResolutionError:
    """uv's error text → the ResolutionError kind an operator can act on; `held`: what the wheel
    directory holds (`wheels_held`), to say which versions or names it has. Pure.

    Only a failure about the slice's own distribution is not_found / version_not_found; a missing or
    conflicting dependency, a broken wheel or anything else is install_failed with uv's explanation."""
    dist, version = coordinates.distribution, coordinates.version
    text = " ".join(output.lower().split())
    unreachable = (
        "failed to fetch",
        "error sending request",
        "connection refused",
        "dns error",
        "failed to connect",
        "failed to read from the registry",
    )
    if "no solution found" not in text and any(marker in text for marker in unreachable):
        return ResolutionError(
            "index_unreachable", f"the package index {index} cannot be reached: {_tail(output)}"
        )
    first_reason = text.split("because ", 1)[1] if "because " in text else text
    first_reason = first_reason.split(" and ", 1)[0]
    name = re.escape(dist)
    if re.match(
        rf"(there is no version of {name}==|only {name}[=<>! ]|only the following versions of {name}\b"
        rf"|{name}=={re.escape(version)} (is|was) not)",
        first_reason,
    ) or re.match(rf"there is no version of {name}\b", first_reason):
        return ResolutionError(
            "version_not_found",
            f"{coordinates}: version {version} of {dist} is not in the index {index}"
            + _what_it_holds(dist, held),
        )
    if re.match(rf"{name} was not found", first_reason):
        return ResolutionError(
            "not_found",
            f"{coordinates}: no distribution {dist} in the index {index}" + _what_it_holds(dist, held),
        )
    hint = ""
    missing = _MISSING_DEPENDENCY.match(first_reason)
    versions = _DEPENDENCY_VERSIONS.match(first_reason)
    if missing:  # a dependency: the node installs from its index alone
        hint = (
            f" (the index {index} does not hold {missing.group(1)}, which the slice depends on: publish the"
            " slice's dependencies there too, `aether slice publish WHEEL --index ... --with-dependencies`)"
        )
    elif versions:  # (the slice's own name was ruled out above)
        hint = (
            f" (the index {index} holds no version of {versions.group(1)} that the slice accepts: publish"
            " the one it needs there too, `aether slice publish WHEEL --index ... --with-dependencies`)"
        )
    return ResolutionError(
        "install_failed", f"{coordinates}: installing {dist}=={version} failed: {_tail(output)}{hint}"
    )


def _tail(output: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in output.strip().splitlines()[-lines:] if line.strip())


def declared_entry_points(site_packages: Path, distribution: str, version: str) -> dict[str, str]:
    """The entry points in group `aether.slices` declared by the installed distribution (dist-info
    metadata): name → object reference (`module:attr`)."""
    wanted = canonicalize_name(distribution)
    for info in site_packages.glob("*.dist-info"):
        name, _, dist_version = info.name[: -len(".dist-info")].rpartition("-")
        if canonicalize_name(name) != wanted or dist_version != version:
            continue
        parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        entry_points = info / "entry_points.txt"
        if entry_points.exists():
            parser.read(entry_points)
        return dict(parser[ENTRY_POINT_GROUP]) if parser.has_section(ENTRY_POINT_GROUP) else {}
    raise ResolutionError(
        "install_failed", f"{distribution} {version} is not in the virtualenv after installing it"
    )


def _check_declared(coordinates: Coordinates, site_packages: Path) -> None:
    """Raise ResolutionError (`entry_point_missing`) unless the distribution installed in `site_packages`
    declares the entry point `coordinates` names."""
    names = declared_entry_points(site_packages, coordinates.distribution, coordinates.version)
    if coordinates.artifact_id not in names:
        declared = ", ".join(repr(n) for n in names) or "none"
        raise ResolutionError(
            "entry_point_missing",
            f"{coordinates}: {coordinates.distribution} {coordinates.version} does not declare the"
            f" entry point {coordinates.artifact_id!r} in group {ENTRY_POINT_GROUP!r}"
            f" (it declares: {declared})",
        )


def entry_point_reference(installed: InstalledSlice) -> str | None:
    """The object reference (`module:attr`) of the installed slice's own entry point, read from its
    metadata (None if it cannot be read: the slice's template then finds it itself). Blocking I/O."""
    coordinates = installed.coordinates
    try:
        declared = declared_entry_points(
            _site_packages(installed.venv), coordinates.distribution, coordinates.version
        )
    except (ResolutionError, OSError, configparser.Error):
        return None
    return declared.get(coordinates.artifact_id)


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


RUNTIME_PTH = "aether-runtime.pth"  # in a slice virtualenv's site-packages: the runtime's directory


@functools.cache
def runtime_name() -> str:
    """The name of the runtime's directory: its versions, and a digest of aether_slice's code (a node of
    a changed checkout, at the same version, gets a runtime of its own, not the last one's)."""
    package = Path(aether_slice.__file__).parent  # type: ignore[arg-type]
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0" + source.read_bytes())
    code = digest.hexdigest()[:12]
    return f"aether-slice-{aether_slice.__version__}-{code}-pluggy-{pluggy.__version__}"


class SliceInstaller:
    """Installs slices on demand; safe to call concurrently (one install per coordinates at a time)."""

    def __init__(self, index: str, data_dir: Path, *, timeout: float = 300.0) -> None:
        self.index = index
        self.slices_dir = data_dir / "slices"
        self.runtime_dir = data_dir / "runtime"
        self.timeout = timeout
        for directory in (self.slices_dir, self.runtime_dir):
            _remove_stale_builds(directory, older_than=timeout)
        self._locks: dict[Coordinates, trio.Lock] = {}
        self._ready: dict[Coordinates, InstalledSlice] = {}  # found installed (`installed`)
        self._runtime_made = False  # this node's runtime is there (`install` makes it first)
        self._uv = uv.find_uv_bin()

    def venv_path(self, coordinates: Coordinates) -> Path:
        return self.slices_dir / f"{coordinates.distribution}-{coordinates.version}"

    def installed(self, coordinates: Coordinates) -> InstalledSlice | None:
        """The slice's virtualenv if it is installed (None: not yet), found on disk once per coordinates
        (the node never removes one). One made for the same distribution spelled otherwise (its name is
        case-insensitive, an entry point's is not: `COM.X:Y` and `com.x:y`) must declare this entry point
        too: raises ResolutionError (`entry_point_missing`) if it does not."""
        found = self._ready.get(coordinates)
        if found is not None:
            return found
        venv = self.venv_path(coordinates)
        marker = venv / READY_MARKER
        if not marker.exists():
            return None
        if marker.read_text() != str(coordinates):
            _check_declared(coordinates, _site_packages(venv))
        self._point_at_runtime(venv)
        found = self._ready[coordinates] = InstalledSlice(coordinates, venv, venv / "bin" / "python")
        return found

    def _point_at_runtime(self, venv: Path) -> None:
        """Make `venv`'s runtime this node's (its `.pth` names another if an earlier node made it: an
        upgrade, or a changed checkout). Once per virtualenv and node process; the runtime is there once
        `install` has run (otherwise it is copied here, ~200 KiB, on the caller's thread)."""
        pth = _site_packages(venv) / RUNTIME_PTH
        target = self.runtime_dir / runtime_name()
        try:
            if pth.read_text().strip() == str(target):
                return
        except OSError:
            pass
        pth.write_text(f"{self._ensure_runtime()}\n")

    async def install(self, coordinates: Coordinates) -> InstalledSlice:
        """The slice's virtualenv, installing it first if needed. Raises ResolutionError."""
        if not self._runtime_made:  # on a worker thread, once (its copy is written to disk)
            await trio.to_thread.run_sync(self._ensure_runtime)
            self._runtime_made = True
        found = self.installed(coordinates)
        if found is not None:
            return found
        lock = self._locks.setdefault(coordinates, trio.Lock())
        async with lock:
            found = self.installed(coordinates)
            if found is not None:
                return found
            with trio.fail_after(self.timeout):
                return await self._install(coordinates)

    async def _install(self, coordinates: Coordinates) -> InstalledSlice:
        if "://" not in self.index and not Path(self.index).is_dir():
            raise ResolutionError(
                "index_unreachable", f"the package index directory {self.index} does not exist"
            )
        runtime = await trio.to_thread.run_sync(self._ensure_runtime)
        final = self.venv_path(coordinates)
        building = final.with_name(f"{final.name}.tmp-{uuid.uuid4().hex[:8]}")
        self.slices_dir.mkdir(parents=True, exist_ok=True)
        try:
            await self._uv_run(coordinates, ["venv", "--quiet", "--python", sys.executable, str(building)])
            python = building / "bin" / "python"
            requirement = f"{coordinates.distribution}=={coordinates.version}"
            await self._uv_run(
                coordinates,
                [
                    "pip",
                    "install",
                    "--quiet",
                    "--python",
                    str(python),
                    *index_arguments(self.index),
                    requirement,
                ],
            )
            site_packages = _site_packages(building)
            _check_declared(coordinates, site_packages)
            (site_packages / RUNTIME_PTH).write_text(f"{runtime}\n")
            (building / READY_MARKER).write_text(str(coordinates))
            await trio.to_thread.run_sync(_to_disk, building)
            if final.exists():  # a stale half-install from a crash
                shutil.rmtree(final, ignore_errors=True)
            building.rename(final)
            await trio.to_thread.run_sync(_entries_to_disk, self.slices_dir)  # (the rename)
        finally:
            if building.exists():
                shutil.rmtree(building, ignore_errors=True)
        return InstalledSlice(coordinates, final, final / "bin" / "python")

    async def _uv_run(self, coordinates: Coordinates, args: list[str]) -> None:
        env = {**os.environ, "UV_NO_PROGRESS": "1", "VIRTUAL_ENV": ""}
        env.pop("VIRTUAL_ENV")
        result = await trio.run_process(
            [self._uv, *args], capture_stdout=True, capture_stderr=True, check=False, env=env
        )
        if result.returncode != 0:
            output = (result.stderr or b"").decode(errors="replace") + (result.stdout or b"").decode(
                errors="replace"
            )
            raise classify_uv_failure(coordinates, self.index, output, wheels_held(self.index))

    def _ensure_runtime(self) -> Path:
        """A directory holding this node's `aether_slice` and `pluggy`, shared by every slice venv."""
        target = self.runtime_dir / runtime_name()
        if target.exists():
            return target
        building = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex[:8]}")
        for module in (aether_slice, pluggy):
            source = Path(module.__file__).parent  # type: ignore[arg-type]
            shutil.copytree(source, building / source.name, ignore=shutil.ignore_patterns("__pycache__"))
        _to_disk(building)
        try:
            building.rename(target)
        except OSError:  # another node process won the race
            shutil.rmtree(building, ignore_errors=True)
        _entries_to_disk(self.runtime_dir)
        return target


_BUILDING = re.compile(r"\.tmp-[0-9a-f]{8}$")  # the suffix of a virtualenv or runtime being built


def _remove_stale_builds(directory: Path, *, older_than: float) -> None:
    """Remove what a build left under `directory` when its node was killed or lost power (a temporary
    name, untouched for longer than an install may take: another build may still run)."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        with contextlib.suppress(OSError):
            if _BUILDING.search(entry.name) and time.time() - entry.stat().st_mtime > older_than:
                shutil.rmtree(entry.path, ignore_errors=True)


@functools.cache
def _syncfs() -> object | None:
    """libc's syncfs (Linux), or None."""
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


def _to_disk(directory: Path) -> None:
    """Write the file system holding `directory` to disk (its files and its own entries): syncfs where
    there is one (one file system), sync elsewhere. Blocking: from a worker thread."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        syncfs = _syncfs()
        if syncfs is None or syncfs(fd) != 0:  # type: ignore[operator]
            os.sync()
    finally:
        os.close(fd)


def _entries_to_disk(directory: Path) -> None:
    """fsync `directory` itself: its entries (a rename into it) on disk. Blocking: from a worker thread."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
