"""The API's models of blueprints: apply results, the blueprints and their revisions, what applying one
would change, a blueprint's status, the reconciliation policy. Records only: no I/O; public through
`aether_node.client`."""

from __future__ import annotations

import collections
from typing import ClassVar

import attrs

from ._models_slices import SliceStatus


@attrs.frozen(kw_only=True)
class ApplyResult:
    name: str
    created: bool
    revision: int  # the KV revision of the write
    slices: int
    blueprint_revision: int = 0  # its number in the blueprint's history (`aether blueprint history`)
    change: str = ""  # how that revision came: applied, rolled back to revision N, scaled ...
    notes: tuple[str, ...] = ()  # what the operator should know of the change
    unchanged: bool = False  # the blueprint was this already: no new revision (a resend, or the same file)


@attrs.frozen(kw_only=True)
class SliceSummary:
    artifact: str
    instances: int
    strategy: str
    health: str = ""  # its [slices.health] in words ("off", "interval 30 s, ..."); "": it has none


@attrs.frozen(kw_only=True)
class BlueprintInfo:
    name: str
    slices: tuple[SliceSummary, ...]
    timestamp: float
    source: str = ""


@attrs.frozen(kw_only=True)
class BlueprintRevision:
    """One kept revision of a blueprint (`aether blueprint history`)."""

    name: str
    revision: int
    timestamp: float
    change: str
    current: bool  # the revision the blueprint is at now
    slices: tuple[SliceSummary, ...]
    source: str = ""


@attrs.frozen(kw_only=True)
class NodePlacement:
    node_id: str
    before: int  # instances of the slice there now (any version; not those being removed or FAILED)
    after: int  # instances the cluster will run there (while lost nodes are awaited: with them kept)
    # A lost node awaited within its rebalance delay: its instances are kept in place (`after`) until
    # it is back or the delay is over.
    awaited: bool = False
    # While a node the slice runs on is awaited: the instances there once the delay is over and the node
    # has not come back (its records deleted, replaced on the live nodes); None when nothing is awaited.
    later: int | None = None


@attrs.frozen(kw_only=True)
class SliceChange:
    """What applying a blueprint would do to one slice (`aether blueprint diff`)."""

    artifact: str  # group:artifact
    change: str  # added | removed | changed | unchanged
    versions_before: tuple[str, ...]  # the versions running now
    version_after: str  # "" if removed
    instances_before: int
    instances_after: int
    added: int  # new placements (beyond moves)
    moved: int  # placements that move from one node to another
    removed: int  # placements that go (beyond moves)
    replaced: int  # running instances replaced (another version, or another config)
    nodes: tuple[NodePlacement, ...]
    problem: str = ""  # what would not fit
    rollout: str = ""  # a canary or blue-green rollout in flight now, or a paused rolling update
    update: str = (
        ""  # how the change would go: its strategy's steps, or what it does to the rollout in flight
    )
    awaiting: str = ""  # instances kept in place on lost nodes within the rebalance delay, and what after
    # its [slices.health] changed: "before -> after" in words ("" when unchanged); the nodes apply it to
    # the running instances, none is restarted for it
    health: str = ""
    config: str = ""  # a change of its `[slices.config]`: the keys, and the running instances it replaces
    # of the instances the blueprint asks for, how many fit on no node (`problem` says why): not placed
    unplaced: int = 0
    # running instances the new spec has no room for that stay: the floor (min_available) holds them
    kept: int = 0


@attrs.frozen(kw_only=True)
class BlueprintDiff:
    name: str
    exists: bool
    revision: int  # the blueprint's current revision (0 if none)
    changed: bool  # whether applying it would change anything
    slices: tuple[SliceChange, ...]


@attrs.frozen(kw_only=True)
class BlueprintStatus:
    name: str
    slices: tuple[SliceStatus, ...]

    JSON_PROPERTIES: ClassVar[tuple[str, ...]] = ("converged",)  # in its JSON too (`client.to_json`)

    @property
    def converged(self) -> bool:
        """Every slice has converged (`SliceStatus.converged`)."""
        return all(s.converged for s in self.slices)

    @property
    def stuck_failures(self) -> list[str]:
        """The failures, once nothing is in transition any more (so it will not converge by itself);
        empty while instances are still on their way."""
        transitional = any(i.state not in ("ACTIVE", "FAILED") for s in self.slices for i in s.instances)
        return [] if transitional else self.failures

    @property
    def failures(self) -> list[str]:
        found = [f"{s.artifact}: {s.problem}" for s in self.slices if s.problem]
        for status in self.slices:
            # instances that failed for the same reason (a dependency missing on every node): one line
            alike: dict[tuple[str, str], list[str]] = {}
            for i in status.instances:
                if i.state == "FAILED":
                    alike.setdefault((i.artifact, i.reason), []).append(f"#{i.instance} on {i.node_id}")
            found += [f"{what}{', '.join(where)}: {why}" for (what, why), where in alike.items()]
        # an aborted rollout will not reach the version the blueprint asks for by itself
        found += [f"{s.artifact}: {s.aborted}" for s in self.slices if s.aborted]
        return found

    @property
    def waiting(self) -> list[str]:
        """What each slice that has not converged still waits for: its ACTIVE count, its instances on
        their way (by state), a rollout in flight (its phase and what it waits for) and its problem."""
        found = []
        for status in self.slices:
            if status.converged:
                continue
            on_the_way = collections.Counter(i.state for i in status.instances if i.state != "ACTIVE")
            parts = [f"{status.active}/{status.desired} ACTIVE"]
            parts += [f"{count} {state}" for state, count in sorted(on_the_way.items())]
            rollout = status.rollout
            if rollout is not None and rollout.phase not in ("PROMOTED", "ABORTED"):
                parts.append(
                    f"{rollout.strategy.replace('_', '-')} rollout {rollout.phase}"
                    + (f": {rollout.reason}" if rollout.reason else "")
                )
            if status.problem:
                parts.append(status.problem)
            found.append(f"{status.artifact}: " + "; ".join(parts))
        return found


@attrs.frozen(kw_only=True)
class LostNodeInfo:
    """A node the leader saw lost whose instance records wait a rebalance delay for it."""

    node_id: str
    since: float  # when the leader saw it lost (unix seconds)
    instances: int  # its instance records then
    delay_s: float  # the longest rebalance delay of its slices
    awaited: bool = True  # False: `aether cluster rebalance` ended the wait: its instances are replaced


@attrs.frozen(kw_only=True)
class BlueprintPolicy:
    """A blueprint's `[policy]` table and what it makes of the cluster's policy for its slices."""

    name: str
    preset: str  # its table's preset ("": none)
    settings: dict[str, float]  # the values its table sets (rebalance_delay_s, max_moves)
    rebalance_delay_s: float
    max_moves: int


@attrs.frozen(kw_only=True)
class ReconcilePolicyInfo:
    """The cluster's reconciliation policy (`aether cluster policy show|set`, `aether cluster
    rebalance`): the values in force for slices whose blueprint has no `[policy]` (the default preset,
    `aggressive`, under what an operator set), the blueprints that override them, and the lost nodes
    whose instances wait."""

    rebalance_delay_s: float
    max_moves: int  # 0: no limit
    preset: str  # the preset an operator set ("": none, the default)
    settings: dict[str, float]  # the values an operator set (rebalance_delay_s, max_moves)
    blueprints: tuple[BlueprintPolicy, ...] = ()
    lost: tuple[LostNodeInfo, ...] = ()
