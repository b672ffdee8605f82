"""KV key layout (docs/ARCHITECTURE.md, "KV schema"). Pure: building and parsing keys."""

from __future__ import annotations

import attrs

from ._coordinates import Coordinates

NODES = "nodes/"
BLUEPRINTS = "blueprints/"
ALLOCATIONS = "allocations/"
SLICES = "slices/"
ENDPOINTS = "endpoints/"
LEADER_KEY = "cluster/leader"  # the leader's claim, a fencing key (LeaderClaim)
PROBLEMS_PREFIX = "cluster/problems/"  # the leader's problems, one per artifact
BLUEPRINT_REVISIONS = "blueprint-revisions/"  # every applied revision of every blueprint (bounded)
NODE_OPS = "cluster/node-ops/"  # an operator's cordon or drain of a node (NodeOperation)
NODE_STOPS = "cluster/node-stop/"  # an operator's request that a node stop gracefully (NodeStopRequest)
AUTOSCALE = "cluster/autoscale/"  # an operator's run-time autoscaling settings of a slice (AutoscaleSettings)
AUTOSCALE_DECISIONS = "cluster/autoscale-decisions/"  # the leader's last decisions per slice (AutoscaleLog)
ROLLOUTS = "cluster/rollouts/"  # a canary or blue-green rollout of one slice (RolloutRecord)
API_KEYS = "cluster/api-keys/"  # named API keys, hashed (ApiKeyRecord)
PAUSED = "cluster/paused/"  # an operator paused a slice's rolling update (PausedRollout)
RECONCILE = "cluster/reconcile/"  # the reconciliation policy and its state (below)
RECONCILE_POLICY = "cluster/reconcile/policy"  # the cluster's reconciliation policy (ReconcilePolicy)
LOST_NODES = "cluster/reconcile/lost/"  # a lost node whose instances wait a rebalance delay (LostNodeRecord)
REBALANCE_KEY = "cluster/reconcile/rebalance"  # an operator's `cluster rebalance` (RebalanceRequest)
RETRIES = "cluster/reconcile/retry/"  # an operator's `slice retry`: failures let go (RetryRequest)
AUDIT = "cluster/audit/"  # the last change through each node's management API (AuditRecord), one per node
JOIN_TOKENS = "cluster/join-tokens/"  # short-lived, single-use tokens for a new node (JoinTokenRecord)
# put with every blueprint write that may give a blueprint a slice (apply, rollback), compared at the mod
# revision read before the check that no other blueprint deploys it: two such writes at once cannot both pass
SLICE_CLAIMS = "cluster/slice-claims"
TOMBSTONES = "cluster/tombstones/"  # when an operator's write last deleted a key (control/_write_guard.py)
INSTANCE_NUMBERS = "cluster/instance-numbers/"  # the next instance number of each slice (InstanceNumbers)
SERVING = "cluster/serving/"  # the version (and config) that last served each slice (ServingVersion)
REPLICAS = "cluster/replicas/"  # the node whose KV replica has a Raft address (ReplicaRecord)


@attrs.frozen(order=True)
class InstanceKey:
    """One slice instance on one node: `slices/{node-id}/{group:artifact:version}/{instance}`."""

    node_id: str
    coordinates: Coordinates = attrs.field(order=str)
    instance: int

    @property
    def key(self) -> str:
        return f"{SLICES}{self.node_id}/{self.coordinates}/{self.instance}"

    @property
    def label(self) -> str:
        return f"{self.coordinates}#{self.instance}"

    @classmethod
    def parse(cls, key: str) -> InstanceKey | None:
        """The instance a `slices/` key names, or None if the key is not one."""
        parts = key.split("/")
        if len(parts) != 4 or parts[0] + "/" != SLICES or not parts[3].isdigit():
            return None
        try:
            return cls(parts[1], Coordinates.parse(parts[2]), int(parts[3]))
        except Exception:
            return None


def node_slices_prefix(node_id: str) -> str:
    return f"{SLICES}{node_id}/"


def node_key(node_id: str) -> str:
    return f"{NODES}{node_id}"


def endpoint_key(coordinates: Coordinates, instance: int) -> str:
    """`endpoints/{group:artifact:version}/{instance}`: one record per ACTIVE instance, listing its entry
    points."""
    return f"{ENDPOINTS}{coordinates}/{instance}"


def parse_endpoint_key(key: str) -> tuple[Coordinates, int] | None:
    parts = key.split("/")
    if len(parts) != 3 or parts[0] + "/" != ENDPOINTS or not parts[2].isdigit():
        return None
    try:
        return Coordinates.parse(parts[1]), int(parts[2])
    except Exception:
        return None


def revision_prefix(name: str) -> str:
    """Where the revisions of blueprint `name` live (`blueprint-revisions/{name}/`)."""
    return f"{BLUEPRINT_REVISIONS}{name}/"


def revision_key(name: str, revision: int) -> str:
    """`blueprint-revisions/{name}/{revision:08d}`: zero-padded, so keys sort in revision order."""
    return f"{revision_prefix(name)}{revision:08d}"


def node_op_key(node_id: str) -> str:
    return f"{NODE_OPS}{node_id}"


def paused_key(artifact_id: str) -> str:
    """`cluster/paused/{group:artifact}`."""
    return f"{PAUSED}{artifact_id}"


def lost_node_key(node_id: str) -> str:
    return f"{LOST_NODES}{node_id}"


def node_stop_key(node_id: str) -> str:
    return f"{NODE_STOPS}{node_id}"


def autoscale_key(artifact_id: str) -> str:
    """`cluster/autoscale/{group:artifact}`: the operator's run-time settings of that slice."""
    return f"{AUTOSCALE}{artifact_id}"


def autoscale_decisions_key(artifact_id: str) -> str:
    """`cluster/autoscale-decisions/{group:artifact}`: the leader's last decisions for that slice."""
    return f"{AUTOSCALE_DECISIONS}{artifact_id}"


def retry_key(artifact_id: str) -> str:
    """`cluster/reconcile/retry/{group:artifact}`."""
    return f"{RETRIES}{artifact_id}"


def rollout_key(artifact_id: str) -> str:
    """`cluster/rollouts/{group:artifact}`."""
    return f"{ROLLOUTS}{artifact_id}"


def instance_numbers_key(artifact_id: str) -> str:
    """`cluster/instance-numbers/{group:artifact}`: the next number the leader gives an instance of it."""
    return f"{INSTANCE_NUMBERS}{artifact_id}"


def serving_key(artifact_id: str) -> str:
    """`cluster/serving/{group:artifact}`: the version and config that last served the slice."""
    return f"{SERVING}{artifact_id}"


def replica_key(raft_address: str) -> str:
    """`cluster/replicas/{raft-address}`: which node runs the KV replica at that address."""
    return f"{REPLICAS}{raft_address}"


def api_key_key(name: str) -> str:
    return f"{API_KEYS}{name}"


def audit_key(node_id: str) -> str:
    return f"{AUDIT}{node_id}"


def join_token_key(token_id: str) -> str:
    return f"{JOIN_TOKENS}{token_id}"
