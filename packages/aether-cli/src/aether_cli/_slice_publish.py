"""`aether slice publish`: put a slice wheel where nodes install slices from. A wheel directory (what
`aether-node --index DIR` and `aether dev up` read with `--find-links`; pypiserver serves the same
directory as a PEP 503 index) gets a copy of the wheel; an index server URL gets an upload (`uv publish`).
With `--with-dependencies`, the wheels the slice needs go there first (`_slice_dependencies.py`).

The wheel is checked first (`_slice_wheel.check_wheel`); `publish_to_directory` and `publish_to_url` do
the I/O.
"""

from __future__ import annotations

import filecmp
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

from cyclopts import Parameter

from ._common import EXIT_FAILED, fail
from ._slice_dependencies import download_dependencies, target, unmet_in_directory
from ._slice_wheel import PublishError, SliceWheel, check_wheel

__all__ = ["PublishError", "check_wheel", "publish_to_directory", "publish_to_url", "slice_publish"]


def publish_to_directory(wheel: SliceWheel, directory: Path) -> bool:
    """Copy the wheel into `directory` (created if needed, in a directory that exists: a mistyped path
    is refused, not made); False if that very file was there already.
    A different wheel of the same name is refused: nodes install each version once and keep it. The copy
    appears atomically (written beside, then renamed), so a node never reads half a wheel."""
    return copy_wheel(wheel.path, directory, _new_version_please(wheel))


def _new_version_please(wheel: SliceWheel) -> str:
    return (
        f"a different wheel of {wheel.distribution} {wheel.version} is already published; publish the"
        " change as a new version (nodes keep each version they installed)"
    )


def check_directory(directory: Path) -> None:
    """PublishError if wheels cannot be published into `directory`: not a directory, or a path whose
    parent does not exist (a typo: it is not made)."""
    if directory.exists() and not directory.is_dir():
        raise PublishError(f"--index {directory}: not a directory")
    if not directory.exists() and not directory.absolute().parent.is_dir():
        raise PublishError(f"--index {directory}: {directory.absolute().parent} does not exist (a typo?)")


def _differs(path: Path, directory: Path) -> bool:
    """Whether `directory` holds another file under `path`'s name."""
    target = directory / path.name
    return target.exists() and not filecmp.cmp(target, path, shallow=False)


def copy_wheel(path: Path, directory: Path, refusal: str) -> bool:
    """`publish_to_directory` for any wheel file, a slice's or one of its dependencies': `refusal` says
    why another file under its name is not replaced."""
    check_directory(directory)
    target = directory / path.name
    if _differs(path, directory):
        raise PublishError(f"{target}: {refusal}")
    if target.exists():  # (that very file)
        return False
    try:
        directory.mkdir(exist_ok=True)
        descriptor, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
        try:
            with os.fdopen(descriptor, "wb") as out, open(path, "rb") as source:
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

    path = wheel.path

    scheme = url.partition("://")[0].lower()
    if scheme not in ("http", "https"):
        raise PublishError(
            f"--index {url}: an upload URL must be http:// or https:// (an index server's), not {scheme}://;"
            " a wheel directory is given as a path"
        )
    result = subprocess.run(
        # (trusted publishing is for CI runners that PyPI trusts, never this: asking costs 3 retries)
        [uv.find_uv_bin(), "publish", "--trusted-publishing", "never", "--publish-url", url, str(path)],
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
        raise PublishError(f"uploading {path.name} to {url} failed:\n{tail}{hint}", EXIT_FAILED)


def _publish_dependencies(wheel: SliceWheel, index: str, source: str | None) -> None:
    """Download what the slice needs as wheels, then copy each into the directory `index`, saying so as
    it goes. Refused before anything is downloaded where the slice itself could not be published."""
    if "://" in index:
        raise PublishError(
            "--with-dependencies publishes into a wheel directory: give the directory the index server"
            " serves (pypiserver serves one) as --index"
        )
    directory = Path(index)
    check_directory(directory)
    if _differs(wheel.path, directory):
        raise PublishError(f"{directory / wheel.path.name}: {_new_version_please(wheel)}")
    requirements = list(wheel.requirements)
    if not requirements:
        print(f"{wheel.path.name} declares no dependencies")
        return
    print(f"resolving {', '.join(requirements)} from {source or 'PyPI'} for {target()}...", flush=True)
    with tempfile.TemporaryDirectory(prefix="aether-dependencies-") as downloaded:
        dependencies = download_dependencies(requirements, Path(downloaded), source)
        for dependency in dependencies:  # (every conflict before the first copy: all or nothing)
            if _differs(dependency, directory):
                raise PublishError(
                    f"{directory / dependency.name}: another wheel of that name is there already (built"
                    " elsewhere?), and nodes may have installed it: nothing was published"
                )
        for dependency in dependencies:
            if copy_wheel(dependency, directory, "another wheel of that name is there already"):
                print(f"  {dependency.name} published to {index}", flush=True)
            else:
                print(f"  {dependency.name} was there already", flush=True)


def _warn_of_unmet_requirements(wheel: SliceWheel, directory: Path) -> None:
    """Say (on stderr) which of the slice's requirements no wheel in `directory` satisfies: a node
    installs from its index alone, and the slice would fail to install on every node."""
    unmet = unmet_in_directory(wheel.requirements, (path.name for path in directory.glob("*.whl")))
    if unmet:
        print(
            f"aether: warning: {directory} holds no wheel of {', '.join(unmet)} for {target()}, which the"
            " slice depends on: a node installs from its index alone, so the slice would fail to install"
            " there; publish them too: `aether slice publish WHEEL --index ... --with-dependencies`",
            file=sys.stderr,
        )


def _warn_of_another_python(wheel: SliceWheel) -> None:
    """Say (on stderr) when the wheel's Requires-Python excludes the Python running this command (a dev
    cluster's nodes run the same): every instance on such a node fails with install_failed."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        accepted = SpecifierSet(wheel.requires_python)
    except InvalidSpecifier:
        return  # (uv says so on the node, as for any other wheel it cannot read)
    here = platform.python_version()
    if not accepted.contains(here, prereleases=True):
        print(
            f"aether: warning: {wheel.artifact_id}:{wheel.version} requires Python {wheel.requires_python},"
            f" and this one is {here} (a dev cluster's nodes run it): a node on a Python it excludes cannot"
            " install it",
            file=sys.stderr,
        )


def _warn_if_the_dev_cluster_reads_elsewhere(directory: Path) -> None:
    """Say (on stderr) when `directory` is a dev cluster's own `index/` but that cluster was started with
    `--index` elsewhere (its `plan.json` says what its nodes read): they never see this wheel."""
    plan = directory / ".." / "plan.json"
    if directory.name != "index" or not plan.is_file():
        return
    try:
        reads = json.loads(plan.read_text()).get("index")
    except (OSError, ValueError):
        return
    if not isinstance(reads, str) or not reads:
        return
    if "://" not in reads and Path(reads).resolve() == directory.resolve():
        return
    print(
        f"aether: warning: the dev cluster in {directory.parent} reads its slices from {reads} (it was"
        f" started with --index), not from {directory}: publish there for its nodes to see the wheel",
        file=sys.stderr,
    )


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
    with_dependencies: Annotated[
        bool,
        Parameter(
            help="First publish the wheels the slice depends on into the wheel directory (resolved and"
            " downloaded with pip, for this Python and platform): a node installs from its index alone."
        ),
    ] = False,
    dependencies_from: Annotated[
        str | None,
        Parameter(help="Where those come from: a wheel directory or an index URL (default: PyPI)."),
    ] = None,
) -> None:
    """Publish a slice wheel: check it, then copy it into a wheel directory or upload it to an index."""
    try:
        checked = check_wheel(wheel)
        if dependencies_from is not None and not with_dependencies:
            raise PublishError("--dependencies-from says where --with-dependencies gets them: give both")
        if with_dependencies:  # (first: a node never sees the slice without what it needs)
            _publish_dependencies(checked, index, dependencies_from)
        if "://" in index:
            publish_to_url(checked, index)
            print(f"{checked.artifact_id}:{checked.version} uploaded to {index}")
        elif publish_to_directory(checked, Path(index)):
            print(f"{checked.artifact_id}:{checked.version} published to {index}/{wheel.name}")
        else:
            print(f"{checked.artifact_id}:{checked.version} was already published to {index} (same wheel)")
        if "://" not in index and not with_dependencies:
            _warn_of_unmet_requirements(checked, Path(index))
        if "://" not in index:
            _warn_if_the_dev_cluster_reads_elsewhere(Path(index))
        _warn_of_another_python(checked)
    except PublishError as error:
        fail(error.code, error.message)
