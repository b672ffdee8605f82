"""The API's models of slices: instances and their states, a slice's status and rollout, entry points, call
statistics, instance logs, autoscaling. Records only: no I/O; public through `aether_node.client`."""

from __future__ import annotations

from typing import ClassVar

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
    restarts: int = 0  # times its node started its process again after it died
    last_exit: str = ""  # how the last of those ended ("killed by signal 9", "memory: ...")


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
    # blue-green SWITCHED: when its grace period ends and the old set kept for a rollback goes (unix
    # seconds; 0: not known, or another phase)
    until: float = 0.0


@attrs.frozen(kw_only=True)
class PauseInfo:
    """A slice's rolling update paused or resumed (`aether slice pause|resume`)."""

    artifact: str  # group:artifact
    paused: bool
    since: float = 0.0  # when it was paused
    status: str = ""  # where its update stands while paused


@attrs.frozen(kw_only=True)
class RetryInfo:
    """A slice's failures let go (`aether slice retry`): the FAILED instances whose nodes the leader tries
    again now, not `failed_retry_after` after each failure (none: nothing had failed)."""

    artifact: str  # group:artifact
    let_go: tuple[InstanceInfo, ...] = ()


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

    # in its JSON too (`client.to_json`): the one rule of convergence, for scripts and agents to read
    JSON_PROPERTIES: ClassVar[tuple[str, ...]] = ("converged",)

    @property
    def converged(self) -> bool:
        """Whether the slice has what its blueprint asks and needs nothing more of the operator or the
        leader: `desired` instances of its version and config ACTIVE (routable), and no other ACTIVE
        instance left to replace. The old set a blue-green rollout keeps once SWITCHED is not one to
        replace: every call goes to the new set, and the old one only stays its grace period as a fast
        rollback path (`kept_for_rollback`). A canary in DEPLOYING or OBSERVING, a blue-green in
        DEPLOYING or a PROMOTED rollout whose old instances still run has not converged; nor has an
        ABORTED one (the stable version serves, not the one asked for: `aborted`, a failure). The one
        decision of convergence: `aether blueprint|slice status`, `apply --wait`, the cluster status."""
        return self.active == self.desired and not self.leftover

    @property
    def kept_for_rollback(self) -> bool:
        """Whether a blue-green rollout to what the slice asks for (its version and config) has SWITCHED:
        its ACTIVE instances of the rollout's stable version are then the old set, kept for the grace
        period (until `rollout.until`)."""
        rollout = self.rollout
        return (
            rollout is not None
            and rollout.phase == "SWITCHED"
            and rollout.strategy == "blue_green"
            and f"{rollout.artifact}:{rollout.candidate}" == self.artifact
            and rollout.candidate_config in ("", self.config_digest)
        )

    @property
    def leftover(self) -> tuple[InstanceInfo, ...]:
        """The ACTIVE instances of another version or config than the slice asks for that are still to be
        replaced (not the old set `kept_for_rollback`)."""
        kept = (
            f"{self.rollout.artifact}:{self.rollout.stable}"
            if self.rollout and self.kept_for_rollback
            else None
        )
        return tuple(
            i
            for i in self.instances
            if i.state == "ACTIVE"
            and not (i.artifact == self.artifact and self.config_digest in ("", i.config_digest))
            and i.artifact != kept
        )

    @property
    def aborted(self) -> str:
        """Why the slice's rollout was aborted and what serves instead ("": none was): it will not reach the
        version the blueprint asks for by itself (apply it again: with the stable version, or a fixed
        one)."""
        rollout = self.rollout
        if rollout is None or rollout.phase != "ABORTED":
            return ""
        if rollout.stable == rollout.candidate:  # a change of config alone
            go_on = "(apply its former config, or another one, to go on)"
        else:
            go_on = "(apply it, or another version, to go on)"
        return f"rollout aborted ({rollout.reason}); {rollout.stable} serves {go_on}"

    @property
    def shortfall(self) -> str:
        """What keeps the slice from converging, in a line ("": nothing): its ACTIVE count of the version
        and config asked for, the others still to replace, an aborted rollout."""
        if self.converged:
            return ""
        leftover = self.leftover
        others = sum(1 for i in leftover if i.artifact != self.artifact)
        configs = len(leftover) - others
        line = f"{self.artifact} {self.active}/{self.desired} ACTIVE"
        line += f", {others} of another version" if others else ""
        line += f", {configs} with another config" if configs else ""
        return line + (f"; {self.aborted}" if self.aborted else "")


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
