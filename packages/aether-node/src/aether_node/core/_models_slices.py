"""The API's models of slices: instances and their states, a slice's status and rollout, entry points, call
statistics, instance logs, autoscaling. Records only: no I/O; public through `aether_node.client`."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class InstanceInfo:
    node_id: str
    artifact: str
    instance: int
    state: str
    reason: str = ""
    timestamp: float = 0.0
    config_digest: str = ""  # the digest of the config it runs (`SliceStatus.config_digest`)


@attrs.frozen(kw_only=True)
class RolloutInfo:
    """A canary or blue-green rollout of one slice (`aether slice promote|abort`, slice and blueprint
    status): from `stable` to `candidate`, its phase (DEPLOYING, OBSERVING, SWITCHED, PROMOTED, ABORTED),
    the candidate's share of the calls (percent; None: by instance count), what it waits for or why it
    was aborted."""

    artifact: str  # group:artifact
    strategy: str  # canary | blue_green
    stable: str
    candidate: str
    phase: str
    step: int = 0  # canary: the current step, counted from 0
    share: int | None = 0
    since: float = 0.0
    reason: str = ""
    config_changed: bool = False  # the config changes too (alone, if `stable == candidate`)
    candidate_config: str = ""  # the candidate's config digest (`InstanceInfo.config_digest`; "": unknown)


@attrs.frozen(kw_only=True)
class PauseInfo:
    """A slice's rolling update paused or resumed (`aether slice pause|resume`)."""

    artifact: str  # group:artifact
    paused: bool
    since: float = 0.0  # when it was paused
    status: str = ""  # where its update stands while paused


@attrs.frozen(kw_only=True)
class SliceStatus:
    artifact: str  # group:artifact:version wanted by the blueprint
    desired: int
    active: int
    instances: tuple[InstanceInfo, ...]
    problem: str = ""
    rollout: RolloutInfo | None = None  # a canary or blue-green rollout in progress (or aborted)
    update: str = "rolling"  # how a version change goes: rolling, canary or blue_green
    paused: bool = False  # its rolling update is paused (`aether slice pause`)
    # The digest of the blueprint's config for it: `active` counts the instances that run it, and an
    # ACTIVE instance with another config (being replaced) keeps it from converging. "": not known.
    config_digest: str = ""

    @property
    def converged(self) -> bool:
        return self.active == self.desired and all(
            i.artifact == self.artifact and self.config_digest in ("", i.config_digest)
            for i in self.instances
            if i.state == "ACTIVE"
        )


@attrs.frozen(kw_only=True)
class SliceTarget:
    """One slice of a blueprint: what it asks for, how many instances of that version are ACTIVE."""

    blueprint: str
    artifact: str
    desired: int
    active: int
    problem: str = ""
    rollout: RolloutInfo | None = None  # a canary or blue-green rollout in progress (or aborted)
    update: str = "rolling"  # how a version change goes: rolling, canary or blue_green
    paused: bool = False  # its rolling update is paused (`aether slice pause`)


@attrs.frozen(kw_only=True)
class EntryInfo:
    """An entry point of a slice as the cluster routes it: `idempotent` if every ACTIVE instance's slice
    declares it so (only then may a call that may have run be sent again)."""

    name: str
    idempotent: bool


@attrs.frozen(kw_only=True)
class CallStats:
    """Calls of one entry point, summed over the nodes that answered: counters since each node started
    (a rate is the difference of two readings); `buckets` are cumulative [upper bound s, calls]."""

    artifact: str
    entry: str
    calls: int
    errors: int
    seconds: float
    buckets: tuple[tuple[float, int], ...]


@attrs.frozen(kw_only=True)
class ClusterCalls:
    at: float  # the reading's time (unix seconds)
    nodes: dict[str, str]  # node id → "ok", or why its figures are missing
    slices: tuple[CallStats, ...]


@attrs.frozen(kw_only=True)
class InstanceLogs:
    """The last lines an instance wrote (stdout and stderr, complete lines only), oldest first."""

    node_id: str
    artifact: str  # group:artifact:version
    instance: int
    lines: tuple[str, ...]


@attrs.frozen(kw_only=True)
class LogLine:
    """One line of a followed instance log; with `error` set, the following of that node's instances
    stopped (the node went away, refused) and `line` is empty."""

    node_id: str
    artifact: str = ""
    instance: int = 0
    line: str = ""
    error: str = ""


@attrs.frozen(kw_only=True)
class AutoscaleDecision:
    """One recorded decision of the leader's autoscaler (newest last in `AutoscaleStatus.decisions`)."""

    at: float
    action: str  # up, down or hold
    current: int
    target: int
    path: tuple[str, ...]  # the decision tree's nodes, root to leaf
    message: str  # `scale org.aether:busy 1 -> 2: p99 312 ms > 150 ms for 3 s`


@attrs.frozen(kw_only=True)
class AutoscaleStatus:
    """One autoscaled slice (`aether slice autoscale status`): its count, the bounds and targets in force
    (the blueprint's `[slices.autoscale]` with the operator's run-time settings over it), and the last
    decisions."""

    artifact: str  # group:artifact
    blueprint: str
    instances: int  # the count its blueprint asks for now
    active: int  # ACTIVE instances of its version
    min: int
    max: int
    targets: dict[str, float]  # cpu, p99_ms, calls_per_second, in_flight: those in force
    settings: dict[str, float]  # what an operator set at run time (over the blueprint's values)
    paused: bool
    decisions: tuple[AutoscaleDecision, ...] = ()
    # with ?signals=1: the figures the controller compares with the targets, measured by the node that
    # answers between its last two readings of every node (1.5 s apart or more), over `signals_s` seconds
    signals: dict[str, float] = attrs.field(factory=dict)
    signals_s: float = 0.0
