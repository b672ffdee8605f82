"""The API's model of a cluster event and the kinds of events (`aether cluster events`, `describe`).
Records only: no I/O; public through `aether_node.client`."""

from __future__ import annotations

import attrs

# The kinds of cluster events (ClusterEvent.kind), for filters and help texts.
EVENT_KINDS = (
    "node_joined",  # a node registered
    "node_left",  # a node shut down gracefully
    "node_lost",  # a node's lease expired (killed, hung or cut off): its instances are placed elsewhere
    "node_restarted",  # a node registered again while its previous run's registration lived (restarted)
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
    "retry_requested",  # an operator let a slice's failures go: their nodes are tried again now
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
    restarts: int = 0  # instance_state: times its node started its process again after it died
    last_exit: str = ""  # instance_state: how the last of those processes ended
