"""`aether slice new`: write a new slice project into a new (or empty) directory. Local files only, no
cluster. `project_files` is pure (names → file texts); `write_project` does the I/O, all or nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from cyclopts import Parameter

from . import _slice_templates as templates
from ._common import EXIT_BAD_INPUT, fail

# A subset of what coordinates allow, so that the module name `{group}_{artifact}` is an identifier.
_ARTIFACT = re.compile(r"[A-Za-z][A-Za-z0-9_-]*(?<=[A-Za-z0-9])")
_GROUP = re.compile(rf"{_ARTIFACT.pattern}(?:\.{_ARTIFACT.pattern})*")
DEFAULT_GROUP = "org.example"


class NewSliceError(ValueError):
    """A NAME, GROUP or directory that `slice new` cannot use (the user's input); nothing was written."""


def check_names(name: str, group: str) -> None:
    if not _ARTIFACT.fullmatch(name):
        raise NewSliceError(
            f"slice name {name!r}: use letters, digits, '-' or '_', starting with a letter and ending with a "
            "letter or digit (e.g. hello or order-book)"
        )
    if not _GROUP.fullmatch(group):
        raise NewSliceError(
            f"--group {group!r}: use dot-separated parts of letters, digits, '-' or '_', each starting "
            "with a letter and ending with a letter or digit (e.g. org.example)"
        )


def project_files(name: str, group: str, aether_slice_path: str | None) -> dict[str, str]:
    """The new project's files (relative path → text) for the slice `group:name`. With
    `aether_slice_path`, the project's tests take aether-slice from that directory. Raises NewSliceError."""
    check_names(name, group)
    module = re.sub(r"[.-]", "_", f"{group}.{name}").lower()
    values = {
        "artifact": name,
        "artifact_id": f"{group}:{name}",
        "distribution": f"{group}.{name}",
        "module": module,
        "wheel_prefix": module,
        "sources": templates.SOURCES.substitute(path=json.dumps(aether_slice_path)[1:-1])
        if aether_slice_path
        else "",
    }
    return {
        "pyproject.toml": templates.PYPROJECT.substitute(values),
        "README.md": templates.README.substitute(values),
        ".gitignore": templates.GITIGNORE,
        f"src/{module}/__init__.py": templates.MODULE.substitute(values),
        f"tests/test_{module}.py": templates.TEST.substitute(values),
    }


def write_project(directory: Path, files: dict[str, str]) -> None:
    """Write `files` into `directory`, which must not exist or be empty. All or nothing: the files are
    written beside it and renamed into place in one step. Raises NewSliceError."""
    if directory.exists() and not directory.is_dir():
        raise NewSliceError(f"{directory}: exists and is not a directory; nothing was written")
    if directory.is_dir() and any(directory.iterdir()):
        raise NewSliceError(
            f"{directory}: exists and is not empty; `slice new` writes only into a new or empty directory "
            "(pass --dir elsewhere); nothing was written"
        )
    parent = directory.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=parent))
    except OSError as error:
        raise NewSliceError(f"{parent}: cannot create the project there ({error.strerror})") from None
    try:
        for relative, text in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        staging.chmod(0o777 & ~_umask())
        os.replace(staging, directory)  # replaces an empty directory too
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise NewSliceError(f"{directory}: cannot write the project ({error.strerror})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def installed_aether_slice_path() -> str | None:
    """The directory aether-slice was installed from, when that was a local directory (a development
    checkout); None when it came from an index."""
    from importlib.metadata import PackageNotFoundError, distribution
    from urllib.parse import unquote, urlparse

    try:
        direct = distribution("aether-slice").read_text("direct_url.json")
    except PackageNotFoundError:
        return None
    if not direct:
        return None
    info = json.loads(direct)
    url = urlparse(str(info.get("url", "")))
    if url.scheme != "file" or "dir_info" not in info:
        return None
    return unquote(url.path)


def slice_new(
    name: str,
    *,
    directory: Annotated[
        Path | None, Parameter(name="--dir", help="Where to write the project (default: ./NAME).")
    ] = None,
    group: Annotated[
        str, Parameter(help="The slice's group: its artifact id is GROUP:NAME.")
    ] = DEFAULT_GROUP,
) -> None:
    """Start a slice project NAME: pyproject, module, tests with the slice_host fixture, README."""
    target = directory if directory is not None else Path(name)
    try:
        write_project(target, project_files(name, group, installed_aether_slice_path()))
    except NewSliceError as error:
        fail(EXIT_BAD_INPUT, str(error))
    print(f"slice {group}:{name} written to {target}/")
    print(f"  cd {target} && uv run pytest    # test it in a real slice host, no cluster")
    print("  uv build --wheel                # then publish the wheel to your nodes' index")
