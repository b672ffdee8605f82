"""A slice wheel as `aether slice publish` checks it, so that a node never fails on what could be seen
here: a wheel file name, one `aether.slices` entry point named `group:artifact` for the distribution
`{group}.{artifact}`, and the module it names in the wheel. Reads the wheel and nothing else.
"""

from __future__ import annotations

import configparser
import dataclasses
import email.message
import email.parser
import re
import zipfile
from pathlib import Path

from ._common import EXIT_BAD_INPUT

ENTRY_POINT_GROUP = "aether.slices"
PROVIDED = "aether-slice"  # every node places its own in each slice's virtualenv: never a slice's dependency


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
    requirements: tuple[str, ...] = ()  # what it depends on (METADATA's Requires-Dist, markers kept)
    requires_python: str = ""  # METADATA's Requires-Python ("": any)


def canonical_name(name: str) -> str:
    """A distribution name as indexes compare them (PEP 503). Pure."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata(wheel: zipfile.ZipFile, files: list[str]) -> email.message.Message:
    """The headers of the wheel's METADATA (none if it has not exactly one)."""
    names = [n for n in files if n.endswith(".dist-info/METADATA")]
    text = wheel.read(names[0]).decode(errors="replace") if len(names) == 1 else ""
    return email.parser.HeaderParser().parsestr(text)


def _requirements(path: Path, declared: list[str]) -> tuple[str, ...]:
    """The requirements `declared` (Requires-Dist), each checked as a node's uv will read it: a name, not a
    direct URL (`name @ https://...`: a node installs from its index alone), and never aether-slice (every
    node provides its own) outside an extra's. PublishError naming the first that is wrong."""
    from packaging.requirements import InvalidRequirement, Requirement

    for text in declared:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as error:
            raise PublishError(f"{path}: its dependency {text!r} does not parse ({error})") from None
        if requirement.url:
            raise PublishError(
                f"{path}: its dependency {text!r} names a URL: a node installs from its index alone;"
                " depend on a name and version, and publish that wheel to the index (--with-dependencies)"
            )
        extra_only = requirement.marker is not None and "extra" in str(requirement.marker)
        if canonical_name(requirement.name) == PROVIDED and not extra_only:
            raise PublishError(
                f"{path}: it depends on {PROVIDED}, which every node provides to its slices (a node installs"
                " from its index alone, where it is not): remove it from [project] dependencies in its"
                " pyproject.toml (a dependency group, for the tests, is where it goes)"
            )
    return tuple(declared)


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
            metadata = _metadata(wheel, files)
    except FileNotFoundError:
        raise PublishError(f"{path}: no such file") from None
    except (OSError, zipfile.BadZipFile) as error:
        raise PublishError(f"{path}: cannot read it as a wheel ({error})") from None
    # (the name as its project gives it, e.g. org.example.hello: the file name has it escaped)
    project = str(metadata.get("Name") or "").strip() or distribution
    requires = [str(value).strip() for value in metadata.get_all("Requires-Dist") or []]
    requirements = _requirements(path, requires)
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
    named = canonical_name(artifact_id.replace(":", "."))
    if artifact_id.count(":") != 1 or named != canonical_name(distribution):
        expected = ":".join(canonical_name(project).replace("-", ".").rpartition(".")[::2])
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
    return SliceWheel(
        path=path,
        distribution=distribution,
        version=version,
        artifact_id=artifact_id,
        requirements=requirements,
        requires_python=str(metadata.get("Requires-Python") or "").strip(),
    )


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
