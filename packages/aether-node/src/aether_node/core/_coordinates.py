"""Slice coordinates `group:artifact:version`. Pure: parsing, validation, the distribution name."""

from __future__ import annotations

import functools
import re

import attrs
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ._errors import InvalidCoordinatesError
from ._text import plural, quoted

_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")


@attrs.frozen
class Coordinates:
    group: str
    artifact: str
    version: str

    @classmethod
    def parse(cls, text: str) -> Coordinates:
        """Parse `group:artifact:version`; raise InvalidCoordinatesError saying what is wrong. The same
        text gives the same (immutable) object: a node parses an instance's key at every change of its
        record, and parsing a version is not cheap."""
        if not isinstance(text, str):
            raise InvalidCoordinatesError(f"coordinates must be a string, got {type(text).__name__}")
        return _parsed(text)

    @property
    def artifact_id(self) -> str:
        """`group:artifact`: the name of the slice's entry point and of its endpoints, version-free."""
        return f"{self.group}:{self.artifact}"

    @property
    def distribution(self) -> str:
        """The PEP 503-normalised distribution name `{group}.{artifact}`."""
        return canonicalize_name(f"{self.group}.{self.artifact}")

    def __str__(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"


@functools.lru_cache(maxsize=4096)
def _parsed(text: str) -> Coordinates:
    parts = text.split(":")
    if len(parts) != 3:
        raise InvalidCoordinatesError(
            f"{quoted(text)} is not group:artifact:version (e.g. org.example:echo:1.0.0):"
            f" it has {plural(len(parts), 'part')}"
        )
    group, artifact, version = parts
    for name, value in (("group", group), ("artifact", artifact)):
        if not _PART.fullmatch(value):
            raise InvalidCoordinatesError(
                f"{quoted(text)}: the {name} {quoted(value)} must be letters, digits, '.', '_' or '-',"
                " starting and ending with a letter or digit"
            )
    try:
        if version != version.strip() or any(c.isspace() for c in version):
            raise InvalidVersion(version)
        Version(version)
    except InvalidVersion:
        raise InvalidCoordinatesError(
            f"{quoted(text)}: the version {quoted(version)} is not a PEP 440 version (e.g. 1.0.0)"
        ) from None
    return Coordinates(group, artifact, version)


def parse_artifact_id(text: str) -> str:
    """Validate a version-free `group:artifact`."""
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) != 2 or not all(_PART.fullmatch(p) for p in parts):
        raise InvalidCoordinatesError(f"{quoted(text)} is not group:artifact (e.g. org.example:echo)")
    return text
