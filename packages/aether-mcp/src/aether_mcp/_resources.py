"""The cluster as MCP resources, and which of them a cluster event changes. Pure: URIs and rules only.

aether://cluster/status          the cluster's status (`aether cluster status --json`)
aether://blueprints/{name}       a blueprint as applied and its status, desired vs actual
aether://slices/{artifact}       one slice (group:artifact): desired vs ACTIVE and every instance
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aether_node.client import BlueprintInfo, ClusterEvent, InstanceInfo

SCHEME = "aether://"
CLUSTER_STATUS = "aether://cluster/status"
BLUEPRINT_TEMPLATE = "aether://blueprints/{name}"
SLICE_TEMPLATE = "aether://slices/{artifact}"


def blueprint_uri(name: str) -> str:
    return BLUEPRINT_TEMPLATE.format(name=name)


def slice_uri(artifact_id: str) -> str:
    return SLICE_TEMPLATE.format(artifact=artifact_id)


def artifact_id(coordinates: str) -> str:
    """group:artifact:version (or group:artifact) → group:artifact."""
    parts = coordinates.split(":")
    return ":".join(parts[:2])


def slice_owners(blueprints: Iterable[BlueprintInfo]) -> dict[str, str]:
    """group:artifact → the blueprint that deploys it."""
    return {artifact_id(s.artifact): b.name for b in blueprints for s in b.slices}


def known_slices(blueprints: Iterable[BlueprintInfo], instances: Iterable[InstanceInfo]) -> list[str]:
    """Every slice with a resource: wanted by a blueprint or with an instance somewhere."""
    found = set(slice_owners(blueprints)) | {artifact_id(i.artifact) for i in instances}
    return sorted(found)


def affected(event: ClusterEvent, owners: Mapping[str, str]) -> tuple[list[str], bool]:
    """The resource URIs a cluster event changes, and whether the list of resources may have changed."""
    uris = [CLUSTER_STATUS]
    if event.kind in ("blueprint_applied", "blueprint_deleted"):
        # its slices' too: a new count or version changes what each slice's resource says (their desired
        # count, their problem), before any instance event (a subscriber to a slice heard nothing)
        owned = [slice_uri(slice_id) for slice_id, owner in sorted(owners.items()) if owner == event.subject]
        return [*uris, blueprint_uri(event.subject), *owned], True
    coordinates = event.artifact or (
        event.subject.split("#", 1)[0] if event.kind.startswith("instance") else ""
    )
    if coordinates:  # an instance event or a rebalance move
        slice_id = artifact_id(coordinates)
        uris.append(slice_uri(slice_id))
        owner = owners.get(slice_id)
        if owner:
            uris.append(blueprint_uri(owner))
        return uris, slice_id not in owners
    return uris, False
