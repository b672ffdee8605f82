"""The API's composite answers: the dashboard's overview and `aether describe`, made of the other models.
Records only: no I/O; public through `aether_node.client`."""

from __future__ import annotations

import attrs

from ._models_blueprints import BlueprintStatus
from ._models_cluster import ClusterStatus, NodeInfo
from ._models_events import ClusterEvent
from ._models_slices import InstanceInfo, SliceStatus, SliceTarget


@attrs.frozen(kw_only=True)
class Overview:
    """Everything a dashboard shows at once, read at one point of the cluster's history (`revision`:
    instance events after it are news)."""

    status: ClusterStatus
    slices: tuple[SliceTarget, ...]
    instances: tuple[InstanceInfo, ...]
    revision: int


@attrs.frozen(kw_only=True)
class Description:
    """One object (`kind` one of DESCRIBE_KINDS, `name`): its status as its status command answers it, in
    the field named by its kind (the others are None), and its recent events, oldest first."""

    kind: str
    name: str
    events: tuple[ClusterEvent, ...]
    blueprint: BlueprintStatus | None = None
    slice: SliceStatus | None = None
    node: NodeInfo | None = None
