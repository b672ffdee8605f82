"""The stable set of a canary or blue-green rollout in progress, kept whole through node failures. Pure:
(the stable version's spec, one artifact's records, the nodes) → where to place the replacements of
lost stable instances. No I/O, no clock.

While a rollout runs, the reconcile planner is given the candidate (`_strategies.planned_spec`) and
holds the old version's ACTIVE instances (`held`: never removed). Holding alone does not replace what a
lost node took: the stable version would shrink with every node lost, below the slice's floor, and the
canary be judged against (and fall back to) less and less. So the planner also keeps the stable version
at its count (`_strategies.stable_spec`: the slice's `instances`, with the stable version and config):
the held instances of every old variant on live nodes, and the stable version's replacements on their
way, count; what is missing is placed, at once (it replaces lost capacity; it is no surge), on the
nodes that may take new instances. As for any slice, a node lost less than the slice's
`rebalance_delay_s` ago is awaited (`_rebalance.py`): its records count, and only the floor is
replaced meanwhile; and a node where a stable replacement FAILED takes none for a while (`hold`:
`_failure_hold.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from ..core._blueprint import Resources, SliceSpec
from ..core._coordinates import Coordinates
from ..core._records import REMOVING, SliceState
from ..core._text import plural
from ._allocation import NodeCapacity, allocate
from ._failure_hold import FailureHold
from ._instance_index import ArtifactInstances, Variant

if TYPE_CHECKING:  # (the planner imports this module)
    from ._reconcile import ObservedInstance


@attrs.frozen(kw_only=True)
class StableSet:
    """What the planner does for the stable version of one held slice."""

    spec: SliceSpec  # the stable version at its count
    coordinates: Coordinates
    variant: Variant
    create_on: tuple[str, ...]  # one node per replacement to create, in node order
    on_their_way: frozenset[str]  # keys of its records not yet ACTIVE (and those FAILED within the retry):
    # not removed as stale, not counted against the candidate's surge
    retry: tuple[ObservedInstance, ...]  # its FAILED records older than the retry: removed, tried again
    problem: str  # "" or why the stable version is short of its count


def restore(
    spec: SliceSpec,
    group: ArtifactInstances,
    wanted: Variant,
    *,
    live: Collection[str],
    stopping: Collection[str],
    placeable: Sequence[NodeCapacity],
    cordoned: frozenset[str],
    awaited: Collection[str],
    usage: Callable[[], Mapping[str, Resources]],
    now: float,
    hold: FailureHold,
    role: str = "the stable version",
) -> StableSet:
    """The replacements to place for the stable version `spec` of a held slice whose wanted variant (the
    candidate) is `wanted`. `awaited`: the keys of records kept on lost nodes the slice still waits for
    (the rebalance delay); `usage`: what the slices' placements take per node (asked only when something
    is missing); `role`: what the problem calls the version ("the version that serves" where an
    update is stuck: `_reconcile.plan` keeps the old version of a rolling update so)."""
    coordinates = Coordinates.parse(spec.artifact)
    variant = Variant.of(coordinates, spec.config)
    current: dict[str, int] = {}  # node → held instances and stable ones on their way
    on_their_way: set[str] = set()
    retry: list[ObservedInstance] = []
    failed_on: set[str] = set()
    reasons: list[str] = []
    awaited_count = 0
    for node_id, variants in group.nodes.items():
        here = node_id in live and node_id not in stopping
        for found, states in variants.items():
            if found == wanted:
                continue
            for state, bucket in states.items():
                if state in REMOVING:
                    continue
                if not here:
                    if state is not SliceState.FAILED:
                        awaited_count += sum(1 for key in bucket if key in awaited)
                    continue
                if state is SliceState.ACTIVE:
                    current[node_id] = current.get(node_id, 0) + len(bucket)
                elif found != variant:
                    continue  # another old variant on its way: stale, removed as usual
                elif state is SliceState.FAILED:
                    for instance in bucket.values():
                        if hold.keeps_out(instance, now):
                            failed_on.add(node_id)
                            on_their_way.add(instance.key)
                            reasons.append(f"{node_id}: {instance.reason or 'failed'}")
                        else:
                            retry.append(instance)
                else:
                    current[node_id] = current.get(node_id, 0) + len(bucket)
                    on_their_way.update(bucket)
    floor = min(spec.floor, spec.instances)
    count = max(spec.instances - awaited_count, floor)
    missing = count - sum(current.values())
    create_on: list[str] = []
    if missing > 0:
        # (What runs on a live node that takes no new instance, a draining one, stays where it is.)
        open_nodes = {n.node_id for n in placeable}
        here_now = {n: c for n, c in current.items() if n in open_nodes}
        elsewhere = sum(current.values()) - sum(here_now.values())
        target = allocate(
            attrs.evolve(spec, instances=count - elsewhere),
            placeable,
            here_now,
            usage(),
            no_growth=frozenset(failed_on),
            cordoned=cordoned,
        )
        for node_id in sorted(target.counts):
            create_on += [node_id] * max(0, target.counts[node_id] - here_now.get(node_id, 0))
        create_on = create_on[:missing]
    problem = ""
    short = missing - len(create_on)
    if short > 0:
        problem = (
            f"{plural(short, 'lost instance')} of {role} {coordinates.version} cannot be"
            f" replaced now ({sum(current.values())} of {count} running or on their way"
            + (f"; failed on {'; '.join(sorted(reasons))}" if reasons else "; no live node has room")
            + ")"
        )
    return StableSet(
        spec=spec,
        coordinates=coordinates,
        variant=variant,
        create_on=tuple(create_on),
        on_their_way=frozenset(on_their_way),
        retry=tuple(sorted(retry, key=lambda i: i.key)),
        problem=problem,
    )


def usage_of(specs: Sequence[SliceSpec], counts: Mapping[str, Mapping[str, int]]) -> dict[str, Resources]:
    """What the slices' placements (`spec.artifact` → node → instances) take per node."""
    usage: dict[str, Resources] = {}
    for spec in specs:
        if spec.resources.cpu <= 0 and spec.resources.memory_mib <= 0:
            continue
        for node_id, count in counts.get(spec.artifact, {}).items():
            before = usage.get(node_id, Resources())
            usage[node_id] = Resources(
                cpu=before.cpu + count * spec.resources.cpu,
                memory_mib=before.memory_mib + count * spec.resources.memory_mib,
            )
    return usage
