"""Why a call found no endpoint to go to, and the error it is answered with. Pure: no I/O, no clock.

- 404 `no_endpoint`: a slice nothing knows (no blueprint deploys it, no instance of it is recorded: a typo,
  most often), or an entry point its instances do not have (known only while some instance publishes its
  entry points);
- 503 `unavailable`: a slice a blueprint deploys (or whose instances are recorded) with no ACTIVE instance
  now: it is starting or restarting (processes died, a rolling restart, its nodes lost, the first seconds
  after a deploy), and a later call may well be served; or one scaled to zero (it exists: no typo).

Only the invoker's no-endpoint branch and the management API's invoke ask: never a call that found one.
"""

from __future__ import annotations

from collections.abc import Iterable, Set

from ..core._blueprint import Blueprint
from ..core._error_kinds import ErrorKind
from ..core._errors import NoEndpointError
from ..core._text import plural

# (blueprint name, instances it asks for) of each blueprint that deploys a slice
Deployment = tuple[str, int]


def deployments(blueprints: Iterable[Blueprint]) -> dict[str, tuple[Deployment, ...]]:
    """What the blueprints ask for, per artifact id (group:artifact): each deploying blueprint's name
    and its number of instances, by blueprint name."""
    found: dict[str, list[Deployment]] = {}
    for blueprint in blueprints:
        for spec in blueprint.slices:
            found.setdefault(spec.artifact.rsplit(":", 1)[0], []).append((blueprint.name, spec.instances))
    return {artifact_id: tuple(sorted(asked)) for artifact_id, asked in found.items()}


def no_endpoint_error(
    artifact_id: str, entry: str, *, entries: Set[str], deployed: Iterable[Deployment]
) -> NoEndpointError:
    """The error for a call of `entry` of `artifact_id` that found no endpoint. `entries`: the entry points
    recorded instances of the slice publish (any node's); `deployed`: the blueprints that deploy it."""
    if entries and entry not in entries:
        known = ", ".join(sorted(entries))
        return NoEndpointError(
            ErrorKind.NO_ENDPOINT, f"{artifact_id} has no entry point {entry!r} (it has: {known})"
        )
    deployed = tuple(deployed)
    if deployed:
        asked = ", ".join(f"blueprint {name} asks for {plural(n, 'instance')}" for name, n in deployed)
        if not any(n for _, n in deployed):  # (exists, but nothing will serve it: still not a 404)
            return NoEndpointError(
                ErrorKind.UNAVAILABLE, f"no instance of {artifact_id} runs: {asked} (it is scaled to zero)"
            )
        return NoEndpointError(
            ErrorKind.UNAVAILABLE,
            f"no ACTIVE instance of {artifact_id} now: {asked}, starting or restarting"
            f" (`aether slice status {artifact_id}`); try again shortly",
        )
    if entries:  # recorded instances, none on a registered node now (a lost node's, a lapsed lease's)
        return NoEndpointError(
            ErrorKind.UNAVAILABLE,
            f"no ACTIVE instance of {artifact_id} on a registered node now; try again shortly",
        )
    return NoEndpointError(
        ErrorKind.NO_ENDPOINT,
        f"no blueprint deploys {artifact_id} and no instance of it runs (`aether blueprint list`)",
    )
