"""A blueprint with one slice's instance count changed: its TOML rewritten on the `instances` line
(comments and layout kept) and parsed again, so the new revision reads like one the operator wrote. Pure.
Used by `aether slice scale` (`api/_operations.py`) and by the leader's autoscaler (`_autoscaler.py`).
"""

from __future__ import annotations

import re

from ..core._blueprint import Blueprint
from ..core._blueprint_toml import MAX_RESCALED_BYTES, BlueprintError, parse_blueprint

_INSTANCES = re.compile(r"^(\s*instances\s*=\s*)([^#\s]+)(.*)$")


class RescaleError(Exception):
    """The blueprint's stored TOML could not be rewritten to the new count (the message says why)."""


def rescaled_source(source: str, index: int, instances: int) -> str:
    """The blueprint's TOML with the `instances` of its slice number `index` set (comments and layout
    kept): the line is rewritten in that `[[slices]]` table, or added right after its header."""
    lines = source.splitlines()
    headers = [i for i, line in enumerate(lines) if line.split("#", 1)[0].replace(" ", "") == "[[slices]]"]
    if index >= len(headers):
        return source
    start = headers[index]
    end = next((h for h in headers if h > start), len(lines))
    for number in range(start + 1, end):
        stripped = lines[number].strip()
        if stripped.startswith("["):  # a sub-table ([slices.resources]): the slice's own keys are above
            break
        match = _INSTANCES.match(lines[number])
        if match:
            lines[number] = f"{match.group(1)}{instances}{match.group(3)}"
            return "\n".join(lines) + "\n"
    lines.insert(start + 1, f"instances = {instances}")
    return "\n".join(lines) + "\n"


def scaled_blueprint(blueprint: Blueprint, index: int, instances: int, *, timestamp: float) -> Blueprint:
    """`blueprint` with slice number `index` at `instances`, parsed from its rewritten TOML. Raises
    RescaleError if the TOML does not parse any more or does not say `instances` afterwards."""
    source = rescaled_source(blueprint.source, index, instances)
    try:
        scaled = parse_blueprint(  # (a blueprint at the operator's size limit may be scaled)
            source, f"blueprint {blueprint.name}", timestamp=timestamp, max_stored=MAX_RESCALED_BYTES
        )
    except BlueprintError as error:
        raise RescaleError(error.message) from None
    if len(scaled.slices) <= index or scaled.slices[index].instances != instances:
        raise RescaleError("its blueprint's TOML could not be rewritten")
    return scaled
