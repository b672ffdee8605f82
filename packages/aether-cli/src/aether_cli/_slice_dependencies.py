"""`aether slice publish --with-dependencies`: the wheels a slice needs, put beside it in the index.

A node installs a slice from its index alone (a wheel directory read with `--no-index`, or the one index
URL it was given), so what the slice depends on must be there too. The slice wheel's requirements
(`SliceWheel.requirements`, checked by `check_wheel`) are resolved and downloaded as wheels by pip (`uv
tool run --from pip pip download`; wheels only: a node builds nothing) from PyPI, or from the index given,
for the Python that runs this command (a dev cluster's nodes run the same) and this machine's platform.
pip reads no configuration of the user's (an extra index there would be another source than the one
said).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import EXIT_FAILED
from ._slice_wheel import PROVIDED, PublishError, canonical_name

if TYPE_CHECKING:
    from packaging.tags import Tag


def target() -> str:
    """The Python and platform the wheels are for, as said to the user: "Python 3.11 on Linux x86_64"."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"Python {version} on {platform.system()} {platform.machine()}"


def source_arguments(source: str | None) -> list[str]:
    """pip's arguments for where the dependencies come from: PyPI (None), a wheel directory, or an
    index URL. Pure."""
    if source is None:
        return ["--index-url", "https://pypi.org/simple/"]
    if "://" in source:
        return ["--index-url", source]
    return ["--no-index", "--find-links", source]


def download_dependencies(requirements: list[str], into: Path, source: str | None) -> list[Path]:
    """Download wheels of `requirements` and of everything they need into `into`; the wheels, sorted.
    PublishError with pip's reason if they cannot all be had as wheels for `target()`."""
    import uv

    if not requirements:
        return []
    command = [
        uv.find_uv_bin(),
        *("tool", "run", "--quiet", "--python", sys.executable, "--from", "pip", "pip", "download"),
        *("--isolated", "--dest", str(into), "--only-binary=:all:", "--disable-pip-version-check", "--quiet"),
        *source_arguments(source),
        "--",
        *requirements,
    ]
    # (no PIP_* setting of the user's, no config file: the source is the one said)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    result = subprocess.run(
        command, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, check=False
    )
    if result.returncode != 0:
        output = "\n".join((result.stderr + result.stdout).strip().splitlines()[-8:])
        raise PublishError(
            f"the slice's dependencies ({', '.join(requirements)}) cannot all be had as wheels from"
            f" {source or 'PyPI'} for {target()}; nothing was published:\n{output}",
            EXIT_FAILED,
        )
    wheels = sorted(into.glob("*.whl"))
    for wheel in wheels:
        if canonical_name(wheel.name.split("-")[0]) == PROVIDED:
            raise PublishError(
                f"a dependency of the slice needs {PROVIDED} ({wheel.name} from {source or 'PyPI'}), which"
                " every node provides its own of: nothing was published"
            )
    return wheels


def unmet_in_directory(
    requirements: Sequence[str], wheel_names: Iterable[str], tags: Collection[Tag] | None = None
) -> list[str]:
    """The requirements of `requirements` (the slice's own, for this environment's markers) that no wheel
    of `wheel_names` (file names of a wheel directory) for `tags` (default: this Python and platform's,
    as `target()` says them) satisfies: what a node installing from that directory alone would not find.
    Only the slice's direct requirements: theirs are pip's to resolve. Pure given `tags`."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.tags import sys_tags
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

    supported = set(sys_tags() if tags is None else tags)
    held: dict[str, list[Any]] = {}
    for name in wheel_names:
        try:
            distribution, version, _, wheel_tags = parse_wheel_filename(name)
        except InvalidWheelFilename:
            continue
        if supported.isdisjoint(wheel_tags):
            continue  # for another Python or platform: not installable here
        held.setdefault(canonicalize_name(distribution), []).append(version)
    unmet = []
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue  # (check_wheel read them: not reached)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        versions = held.get(canonicalize_name(requirement.name), [])
        # (as uv, which installs on a node, chooses: a pre-release only if every version there is one, or
        # the requirement names one)
        every_one = bool(versions) and all(version.is_prerelease for version in versions)
        allowed = every_one or any(_names_prerelease(spec.version) for spec in requirement.specifier)
        if not any(requirement.specifier.contains(v, prereleases=allowed) for v in versions):
            unmet.append(text)
    return unmet


def _names_prerelease(text: str) -> bool:
    """Whether a specifier's version is a pre-release (`>=25.1rc1`; a wildcard or a bad one is not)."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(text).is_prerelease
    except InvalidVersion:
        return False
