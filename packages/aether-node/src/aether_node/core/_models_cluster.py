"""The API's models of the cluster as a whole: its status and nodes (`aether cluster status`, `cluster
nodes`, `node ...`), its events, the named API keys and the agent lease. Defined apart from the other models
so that a command builds only the attrs classes it reads (~0.5 ms of CPU each at import; see `client`).
Records only: no I/O."""

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


@attrs.frozen(kw_only=True)
class ClusterStatus:
    """The cluster at a glance. `healthy` means `reasons` is empty: the store has a quorum and a leader,
    every expected node is registered, every blueprint has converged, no instance is FAILED, and the KV
    replica that answered is connected to every other replica. Fields after `failed` were added later."""

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


# The kinds of cluster events (ClusterEvent.kind), for filters and help texts.
EVENT_KINDS = (
    "node_joined",  # a node registered
    "node_left",  # a node shut down gracefully
    "node_lost",  # a node's lease expired (killed, hung or cut off): its instances are placed elsewhere
    "leader_elected",  # a node's KV replica became the Raft leader and took over the cluster manager
    "blueprint_applied",
    "blueprint_deleted",
    "instance_state",  # an instance's record changed state (state, reason)
    "instance_removed",  # an instance's record was deleted
    "rebalance_move",  # the leader moves an instance from one node (from_node_id) to another (node_id)
    "node_cordoned",  # an operator cordoned a node: no new instance goes there
    "node_draining",  # an operator drains a node: its instances move off
    "node_uncordoned",  # an operator put a node back on duty
    "autoscale_decision",  # the leader's autoscaler scaled a slice up or down, or holds (and why)
    "rollout_started",  # a canary or blue-green rollout of a slice began (stable -> candidate version)
    "rollout_step",  # a canary step: new instances come up, or its share of the calls goes to them
    "rollout_switched",  # blue-green: every call goes to the new set; the old one stays for the grace period
    "rollout_promoted",  # the new version takes over; the old instances go
    "rollout_aborted",  # rolled back (a failure, a verdict, an operator): every call on the stable version
    "rollout_paused",  # an operator paused a slice's rolling update: it stays where it is
    "rollout_resumed",  # an operator resumed it
    "rollout_done",  # its record was removed (the new version runs alone, or the blueprint moved on)
    "reconcile_policy_set",  # an operator changed the cluster's reconciliation policy
    "rebalance_delayed",  # a lost node's instances wait its rebalance delay before they are replaced
    "rebalance_delay_ended",  # no longer waiting for a lost node: it came back, or its instances are replaced
    "rebalance_requested",  # an operator ended every rebalance delay now (`aether cluster rebalance`)
    "audit",  # a change through the management API: who (a key's name), what (method, path, target), status
)


@attrs.frozen(kw_only=True)
class ClusterEvent:
    """One thing that happened in the cluster, derived from the KV's history (`revision` orders them).
    Fields after `reason` were added later; every field but the first five may be empty."""

    revision: int
    # when it was written: the same on every query (0.0: not known yet, the store could not stamp it)
    timestamp: float
    kind: str  # one of EVENT_KINDS
    subject: str  # what it is about: a node id, a blueprint name, `group:artifact:version#instance`
    message: str  # one line for a person
    node_id: str = ""
    state: str = ""
    reason: str = ""  # why: a FAILED instance's cause, how a node was lost, what a leader replaced
    artifact: str = ""  # group:artifact:version of instance events
    instance: int = 0  # the instance number of instance events
    from_node_id: str = ""  # rebalance_move: the node the instance moves away from
    who: str = ""  # audit: a key's name, `config-key` (a key of a node's configuration), `node:ID` (open API)
    status: int = 0  # audit: the HTTP status the change was answered with (403: refused)


@attrs.frozen(kw_only=True)
class ApiKeyInfo:
    """A named API key (`aether key list`): never its secret, which is shown once, at creation."""

    name: str
    role: str  # viewer, operator or admin
    created_at: float
    created_by: str  # who created it (a key's name, `config-key`, `node:ID`)
    last_used: float = 0.0  # when a node last accepted it, to a minute (0.0: never)


@attrs.frozen(kw_only=True)
class CreatedApiKey:
    """A key just created: `secret` is what a client sends (Authorization: Bearer SECRET); the cluster
    keeps only its hash, so this is the one time it can be read."""

    name: str
    role: str
    created_at: float
    created_by: str
    secret: str


@attrs.frozen(kw_only=True)
class AgentLease:
    """Who operates the cluster as its one agent (the MCP service takes this lease for its agent)."""

    holder: str
    since: float
    ttl: float
