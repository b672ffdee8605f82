"""`aether slice publish`: put a slice wheel where nodes install slices from. A wheel directory (what
`aether-node --index DIR` and `aether dev up` read with `--find-links`; pypiserver serves the same
directory as a PEP 503 index) gets a copy of the wheel; an index server URL gets an upload (`uv publish`).

The wheel is checked first, so that a node never fails on what could be seen here: a wheel file name, one
`aether.slices` entry point named `group:artifact` for the distribution `{group}.{artifact}`, and the
module it names in the wheel.
`check_wheel` reads the wheel and nothing else; `publish_to_directory` and `publish_to_url` do the I/O.
"""

from __future__ import annotations

import configparser
import dataclasses
import filecmp
import os
import re
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated

from cyclopts import Parameter

from ._common import EXIT_BAD_INPUT, EXIT_FAILED, fail

ENTRY_POINT_GROUP = "aether.slices"


class PublishError(Exception):
    """The wheel or the index cannot be used (`code` is the exit code: 2 bad input, 1 failed)."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclasses.dataclass(frozen=True, kw_only=True)
class SliceWheel:
    path: Path
    distribution: str  # as in the file name
    version: str
    artifact_id: str  # group:artifact


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project_name(wheel: zipfile.ZipFile, files: list[str]) -> str | None:
    """The distribution's name as its project gives it (METADATA's `Name`, e.g. org.example.hello; the
    file name has it escaped, org_example_hello), or None if the wheel does not say."""
    metadata = [n for n in files if n.endswith(".dist-info/METADATA")]
    if len(metadata) != 1:
        return None
    for line in wheel.read(metadata[0]).decode(errors="replace").splitlines():
        if not line.strip():
            return None  # the headers end at the first empty line
        key, _, value = line.partition(":")
        if key.strip().lower() == "name" and value.strip():
            return value.strip()
    return None


def check_wheel(path: Path) -> SliceWheel:
    """What the wheel at `path` publishes; PublishError saying what is wrong with it otherwise."""
    if not path.exists():
        raise PublishError(f"{path}: no such file")
    parts = path.name.removesuffix(".whl").split("-")
    if not path.name.endswith(".whl") or len(parts) not in (5, 6):
        raise PublishError(f"{path}: not a wheel file name (name-version-python-abi-platform.whl)")
    distribution, version = parts[0], parts[1]
    try:
        with zipfile.ZipFile(path) as wheel:
            files = wheel.namelist()
            names = [n for n in files if n.endswith(".dist-info/entry_points.txt")]
            text = wheel.read(names[0]).decode() if len(names) == 1 else ""
            project = _project_name(wheel, files) or distribution
    except FileNotFoundError:
        raise PublishError(f"{path}: no such file") from None
    except (OSError, zipfile.BadZipFile) as error:
        raise PublishError(f"{path}: cannot read it as a wheel ({error})") from None
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # entry point names are case-sensitive
    try:
        parser.read_string(text)
    except configparser.Error as error:
        raise PublishError(f"{path}: its entry_points.txt does not parse ({error})") from None
    declared = list(parser[ENTRY_POINT_GROUP]) if parser.has_section(ENTRY_POINT_GROUP) else []
    if len(declared) != 1:
        raise PublishError(
            f"{path}: a slice wheel declares exactly one entry point in group {ENTRY_POINT_GROUP}, named "
            f"group:artifact; this one declares {len(declared)} ({', '.join(declared) or 'none'}): see "
            '[project.entry-points."aether.slices"] in its pyproject.toml'
        )
    artifact_id = declared[0]
    if artifact_id.count(":") != 1 or _canonical(artifact_id.replace(":", ".")) != _canonical(distribution):
        expected = ":".join(_canonical(project).replace("-", ".").rpartition(".")[::2])
        raise PublishError(
            f"{path}: its entry point {artifact_id!r} does not match the distribution {project}: a "
            "slice group:artifact is the distribution {group}.{artifact}, and its entry point is named "
            f"group:artifact (for this distribution: {expected!r})"
        )
    module = parser[ENTRY_POINT_GROUP][artifact_id].partition("[")[0].partition(":")[0].strip()
    if not _holds_module(files, module):
        held = sorted({_importable(name).partition("/")[0].removesuffix(".py") for name in files} - {""})
        raise PublishError(
            f"{path}: its entry point {artifact_id!r} names the module {module!r}, which the wheel does not "
            f"hold (it holds: {', '.join(held) or 'nothing importable'}): a node could not import the slice; "
            '[project.entry-points."aether.slices"] in its pyproject.toml names the module, and the build '
            "backend's settings (hatch: [tool.hatch.build.targets.wheel] packages) say what the wheel holds"
        )
    return SliceWheel(path=path, distribution=distribution, version=version, artifact_id=artifact_id)


def _importable(name: str) -> str:
    """A wheel's file `name` as a path from site-packages (a `*.data/purelib|platlib/` one too), or "" if
    it is not importable from there (metadata, scripts, data)."""
    first, _, rest = name.partition("/")
    if first.endswith(".dist-info"):
        return ""
    if first.endswith(".data"):
        scheme, _, rest = rest.partition("/")
        return rest if scheme in ("purelib", "platlib") else ""
    return name


def _holds_module(files: list[str], module: str) -> bool:
    """Whether a wheel of `files` holds the dotted `module`: a package directory of that path, a `.py`
    file, or an extension module (`name.*.so`, `.pyd`)."""
    if not module:
        return False
    stem = module.replace(".", "/")
    for name in filter(None, map(_importable, files)):
        if name.startswith(stem + "/") or name == stem + ".py":
            return True
        if name.startswith(stem + ".") and name.endswith((".so", ".pyd")):
            return True
    return False


def publish_to_directory(wheel: SliceWheel, directory: Path) -> bool:
    """Copy the wheel into `directory` (created if needed, in a directory that exists: a mistyped path
    is refused, not made); False if that very file was there already.
    A different wheel of the same name is refused: nodes install each version once and keep it. The copy
    appears atomically (written beside, then renamed), so a node never reads half a wheel."""
    if directory.exists() and not directory.is_dir():
        raise PublishError(f"--index {directory}: not a directory")
    if not directory.exists() and not directory.absolute().parent.is_dir():
        raise PublishError(f"--index {directory}: {directory.absolute().parent} does not exist (a typo?)")
    target = directory / wheel.path.name
    if target.exists():
        if filecmp.cmp(target, wheel.path, shallow=False):
            return False
        raise PublishError(
            f"{target}: a different wheel of {wheel.distribution} {wheel.version} is already published; "
            "publish the change as a new version (nodes keep each version they installed)"
        )
    try:
        directory.mkdir(exist_ok=True)
        descriptor, staging = tempfile.mkstemp(prefix=f".{wheel.path.name}.", dir=directory)
        try:
            with os.fdopen(descriptor, "wb") as out, open(wheel.path, "rb") as source:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
            os.chmod(staging, 0o644)
            os.replace(staging, target)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise
    except OSError as error:
        raise PublishError(f"--index {directory}: cannot write there ({error})", EXIT_FAILED) from None
    return True


def publish_to_url(wheel: SliceWheel, url: str) -> None:
    """Upload the wheel to an index server that takes uploads (pypiserver, devpi, a PyPI-like registry)
    with `uv publish`; credentials come from uv's usual settings (UV_PUBLISH_USERNAME, ...)."""
    import uv

    scheme = url.partition("://")[0].lower()
    if scheme not in ("http", "https"):
        raise PublishError(
            f"--index {url}: an upload URL must be http:// or https:// (an index server's), not {scheme}://;"
            " a wheel directory is given as a path"
        )
    result = subprocess.run(
        # (trusted publishing is for CI runners that PyPI trusts, never this: asking costs 3 retries)
        [uv.find_uv_bin(), "publish", "--trusted-publishing", "never", "--publish-url", url, str(wheel.path)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stderr + result.stdout).strip()
        hint = ""
        if "Missing credentials" in output:
            hint = (
                "\n(give the server's credentials in UV_PUBLISH_USERNAME and UV_PUBLISH_PASSWORD, "
                "or UV_PUBLISH_TOKEN)"
            )
        tail = "\n".join(output.splitlines()[-10:])
        raise PublishError(f"uploading {wheel.path.name} to {url} failed:\n{tail}{hint}", EXIT_FAILED)


def slice_publish(
    wheel: Path,
    *,
    index: Annotated[
        str,
        Parameter(
            help="A wheel directory (what nodes read with --index DIR; created if its parent exists) or"
            " the upload URL of an index server (pypiserver: http://host:port/)."
        ),
    ],
) -> None:
    """Publish a slice wheel: check it, then copy it into a wheel directory or upload it to an index."""
    try:
        checked = check_wheel(wheel)
        if "://" in index:
            publish_to_url(checked, index)
            print(f"{checked.artifact_id}:{checked.version} uploaded to {index}")
        elif publish_to_directory(checked, Path(index)):
            print(f"{checked.artifact_id}:{checked.version} published to {index}/{wheel.name}")
        else:
            print(f"{checked.artifact_id}:{checked.version} was already published to {index} (same wheel)")
    except PublishError as error:
        fail(error.code, error.message)
