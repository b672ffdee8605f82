"""Where `aether dev up` gets its slices, and the example blueprint it can apply.

Either a package index the nodes install from as it is (`--index`: a wheel directory or a PEP 503
index URL), or a directory of slice projects that `dev up` first builds into a wheel index (`--source`).
Without either: `./sample-slices` (the repository root), else the sample slices bundled in this package
(`_bundled/`, put there by the wheel's build hook, `hatch_build.py`), else those of the source checkout
this package runs from (an editable install). So `dev up` works from any directory.

Looks at the file system only; builds and starts nothing. Bad input raises `SliceSourceError` with
the message for the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BUNDLED = Path(__file__).resolve().with_name("_bundled")
# src/aether_cli/ → packages/aether-cli/src → packages/aether-cli → packages → the checkout
CHECKOUT = Path(__file__).resolve().parents[4]
SAMPLE_SLICES = "sample-slices"
INDEX_SCHEMES = ("http", "https", "file")


class SliceSourceError(ValueError):
    """`--source`/`--index` name nothing usable, or no slice sources can be found (the user's input)."""


@dataclass(frozen=True)
class SliceSource:
    """Exactly one of `index` (the nodes' `--index`, as given or an absolute directory) and `source`
    (slice projects to build into a wheel index first)."""

    index: str | None = None
    source: Path | None = None


def choose(*, source: Path | None, index: str | None, cwd: Path) -> SliceSource:
    """The slices of a dev cluster, from the `--source` and `--index` options (see the module)."""
    if source is not None and index is not None:
        raise SliceSourceError("give --source (slice projects to build) or --index (wheels), not both")
    if index is not None:
        return SliceSource(index=_check_index(index, cwd))
    if source is not None:
        if not (cwd / source).is_dir():
            raise SliceSourceError(f"--source {source} is not a directory of slice projects")
        return SliceSource(source=source)
    if (cwd / SAMPLE_SLICES).is_dir():
        return SliceSource(source=Path(SAMPLE_SLICES))
    for candidate in (BUNDLED / "slices", CHECKOUT / SAMPLE_SLICES):
        if candidate.is_dir():
            return SliceSource(source=candidate)
    raise SliceSourceError(
        f"no slices to run: no {SAMPLE_SLICES}/ here and none bundled with aether-cli; "
        "give --source DIR (slice projects) or --index URL|DIR (wheels)"
    )


def _check_index(index: str, cwd: Path) -> str:
    scheme, separator, _ = index.partition("://")
    if separator:
        if scheme.lower() not in INDEX_SCHEMES:
            raise SliceSourceError(
                f"--index {index}: a package index URL must start with http://, https:// or file://"
            )
        return index
    directory = cwd / index
    if not directory.is_dir():
        raise SliceSourceError(
            f"--index {index} is neither a directory of wheels nor an http(s):// or file:// index URL"
        )
    if not any(directory.glob("*.whl")):
        raise SliceSourceError(f"--index {index} holds no wheel (*.whl): nothing could be installed from it")
    return str(directory.resolve())


def example_blueprint(cwd: Path) -> Path | None:
    """The example blueprint (`examples/blueprint.toml`): the one here (the repository root, returned
    relative to `cwd`), else the bundled copy, else the source checkout's; None if there is none."""
    here = Path("examples", "blueprint.toml")
    if (cwd / here).is_file():
        return here
    for candidate in (BUNDLED / "blueprint.toml", CHECKOUT / here):
        if candidate.is_file():
            return candidate
    return None
