"""The API's models of the cluster's status and its nodes (`aether cluster status`, `cluster nodes`, `node
...`). Like every `_models_*` module, defined apart from the other models so that a command builds only
the attrs classes it reads (see `aether_node.client`, which makes them public). Records only: no I/O."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class NodeInfo:
    node_id: str
    ingress: str
    management: str
    peer: str
    cpu: float
    memory_mib: int
    role: str
    started_at: float
    instances: int
    active: int
    leader: bool
    # ON_DUTY, CORDONED (no new instances), DRAINING (instances moving off), DRAINED, LEAVING (stopping)
    state: str = "ON_DUTY"
    waiting: str = ""  # a draining node: what its drain waits for
    problems: tuple[str, ...] = ()  # what is wrong on the node itself (`NodeRecord.problems`)


@attrs.frozen(kw_only=True)
class KeptForRollback:
    """A slice whose blue-green rollout has SWITCHED to what its blueprint asks for: its old set is kept
    for a fast rollback until its grace period ends (`SliceStatus.kept_for_rollback`; information, not a
    reason to wait or to call the cluster unhealthy)."""

    artifact: str  # group:artifact
    stable: str  # the old set's version
    until: float = 0.0  # when the grace period ends and the old set goes (unix seconds; 0: not known)


@attrs.frozen(kw_only=True)
class ClusterStatus:
    """The cluster at a glance. `healthy` means `reasons` is empty: the store has a quorum and a leader,
    every expected node is registered, every blueprint has converged, no instance is FAILED, the KV
    replica that answered is connected to every other replica, and every record the leader plans from
    decodes. Fields after `failed` were added later."""

    leader: str | None  # node id whose KV replica leads Raft
    term: int
    revision: int
    has_quorum: bool
    healthy: bool
    nodes: tuple[NodeInfo, ...]  # the registered nodes
    blueprints: int
    instances: int
    active: int
    failed: int
    # nodes that registered once and have not left gracefully (nor been forgotten): lost ones stay here
    expected_nodes: tuple[str, ...] = ()
    missing_nodes: tuple[str, ...] = ()  # expected but not registered now
    unconverged: tuple[str, ...] = ()  # blueprints whose slices do not all have their ACTIVE instances
    disconnected_replicas: tuple[str, ...] = ()  # KV replicas (raft addresses) the answering one cannot reach
    reasons: tuple[str, ...] = ()  # why not healthy, one sentence each
    kept_for_rollback: tuple[KeptForRollback, ...] = ()  # old sets of blue-green rollouts SWITCHED
