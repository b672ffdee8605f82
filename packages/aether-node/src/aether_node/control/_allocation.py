"""Allocation: where each slice's instances should run. Pure: (slice specs, live nodes with capacity,
current placement, strategy) → target placement. No I/O, no clock, no randomness.

Every strategy keeps what already runs where it may (minimal movement), never exceeds a node's capacity
(cpu and memory, counting every slice placed before in the same pass), and reports instances that fit
nowhere instead of dropping them.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from ..core._blueprint import Resources, SliceSpec, Strategy
from ..core._text import plural


@attrs.frozen(kw_only=True)
class NodeCapacity:
    node_id: str
    cpu: float
    memory_mib: int


@attrs.frozen(kw_only=True)
class Placement:
    counts: Mapping[str, int]  # node id → instances (only nodes with at least one)
    unplaced: int = 0
    reason: str = ""


@attrs.define
class _Usage:
    cpu: float = 0.0
    memory_mib: int = 0


def _room(spec: SliceSpec, node: NodeCapacity, usage: _Usage) -> int:
    """How many instances of `spec` the node can hold on top of `usage` (capped for `spread`)."""
    limits = []
    if spec.resources.cpu > 0:
        limits.append(math.floor((node.cpu - usage.cpu) / spec.resources.cpu + 1e-9))
    if spec.resources.memory_mib > 0:
        limits.append((node.memory_mib - usage.memory_mib) // spec.resources.memory_mib)
    if spec.strategy is Strategy.SPREAD:
        limits.append(spec.max_per_node)
    room = min(limits) if limits else spec.instances
    return max(0, min(room, spec.instances))


class _LazyHeap:
    """A heap of node ids ordered by `key(node_id)`, where keys change: stale entries are skipped."""

    def __init__(
        self,
        key: Callable[[str], Any],
        node_ids: Iterable[str],
        *,
        largest: bool = False,
        entries: list[tuple[Any, str]] | None = None,
    ) -> None:
        self._key = key
        self._sign = -1 if largest else 1
        self._heap = entries if entries is not None else [(self._signed(i), i) for i in node_ids]
        heapq.heapify(self._heap)

    def _signed(self, node_id: str) -> Any:
        key = self._key(node_id)
        if self._sign == 1:
            return key
        return tuple(_negate(part) for part in key)

    def push(self, node_id: str) -> None:
        heapq.heappush(self._heap, (self._signed(node_id), node_id))

    def top(self, valid: Callable[[str], bool]) -> str | None:
        while self._heap:
            key, node_id = self._heap[0]
            if valid(node_id) and key == self._signed(node_id):
                return node_id
            heapq.heappop(self._heap)
        return None

    def pop(self, valid: Callable[[str], bool]) -> str | None:
        node_id = self.top(valid)
        if node_id is not None:
            heapq.heappop(self._heap)
        return node_id


def _negate(part: Any) -> Any:
    if isinstance(part, str):  # reverse string order for a max-heap: compare negated code points
        return (*(-ord(c) for c in part), 1)
    return -part


def allocate(
    spec: SliceSpec,
    nodes: Sequence[NodeCapacity],
    current: Mapping[str, int],
    usage: Mapping[str, Resources] | None = None,
    *,
    no_growth: frozenset[str] = frozenset(),
    cordoned: frozenset[str] = frozenset(),
    crowd: Mapping[str, int] | None = None,
) -> Placement:
    """Target instance counts per node for one slice. `usage` is what other slices already take, `crowd`
    how many instances of them each node holds (spreading, of nodes holding as many of this slice, the
    one with fewest of the others' comes first: one-instance slices went to the same first node);
    nodes in `no_growth` (excluded after failures) or `cordoned` (by an operator) keep at most what they
    have."""
    crowd = crowd or {}
    usage = usage or {}
    by_id = {n.node_id: n for n in nodes}
    ids = sorted(by_id)
    rooms: dict[str, int] = {}  # computed on demand: most nodes are never looked at for a given slice
    no_usage = Resources()

    def room(node_id: str) -> int:
        found = rooms.get(node_id)
        if found is None:
            u = usage.get(node_id, no_usage)
            found = _room(spec, by_id[node_id], _Usage(u.cpu, u.memory_mib))
            if node_id in no_growth or node_id in cordoned:
                found = min(found, current.get(node_id, 0))
            rooms[node_id] = found
        return found

    target = {i: min(c, room(i)) for i, c in current.items() if c > 0 and i in by_id}  # sparse
    total = sum(target.values())
    packing = spec.strategy is Strategy.BIN_PACK

    def free_after(node_id: str) -> tuple[float, float]:
        """Capacity left if the node took one more instance; bin-packing prefers the tightest fit."""
        node, u, count = by_id[node_id], usage.get(node_id, no_usage), target.get(node_id, 0) + 1
        return (
            node.memory_mib - u.memory_mib - count * spec.resources.memory_mib,
            node.cpu - u.cpu - count * spec.resources.cpu,
        )

    def load(node_id: str) -> tuple[int, int, str]:
        return (target.get(node_id, 0), crowd.get(node_id, 0), node_id)

    def has_room(node_id: str) -> bool:
        return target.get(node_id, 0) < room(node_id)

    def holds(node_id: str) -> bool:
        return target.get(node_id, 0) > 0

    def add(node_id: str, delta: int) -> None:
        target[node_id] = target.get(node_id, 0) + delta

    order = free_after if packing else load

    def by_load() -> list[tuple[Any, str]]:  # the `load` keys, built without a call per node
        return [((target.get(i, 0), crowd.get(i, 0), i), i) for i in ids]

    if total > spec.instances:  # shrink: the loosest (packing) or fullest (spreading) node first
        shrink = _LazyHeap(order, list(target), largest=True)
        while total > spec.instances:
            victim = shrink.pop(holds)
            assert victim is not None
            add(victim, -1)
            total -= 1
            shrink.push(victim)
    if total < spec.instances:  # grow: the tightest fit (packing) or emptiest node (spreading) first
        grow = _LazyHeap(order, ids, entries=None if packing else by_load())
        while total < spec.instances:
            chosen = grow.pop(has_room)
            if chosen is None:
                break
            add(chosen, 1)
            total += 1
            grow.push(chosen)
    if not packing and max(target.values(), default=0) > 1:  # even out: fullest → emptiest with room
        donors = _LazyHeap(load, [i for i, c in target.items() if c > 0], largest=True)
        receivers = _LazyHeap(load, ids, entries=by_load())
        while True:
            donor = donors.top(holds)
            receiver = receivers.top(has_room)
            if donor is None or receiver is None or target[donor] - target.get(receiver, 0) <= 1:
                break
            donors.pop(lambda i: True)
            receivers.pop(lambda i: True)
            add(donor, -1)
            add(receiver, 1)
            for node_id in (donor, receiver):  # both keys changed; stale entries are skipped
                donors.push(node_id)
                receivers.push(node_id)
    unplaced = spec.instances - total
    reason = ""
    if unplaced:
        reason = (
            f"{unplaced} of {spec.instances} instances of {spec.artifact} fit on no live node"
            f" ({plural(len(ids), 'node')}"
            + (
                f", {len(no_growth & by_id.keys())} of them excluded after failures"
                if no_growth & by_id.keys()
                else ""
            )
            + (f", {len(cordoned & by_id.keys())} of them cordoned" if cordoned & by_id.keys() else "")
            + _limits(spec, nodes)
            + ")"
        )
    return Placement(counts={i: c for i, c in target.items() if c}, unplaced=unplaced, reason=reason)


def _limits(spec: SliceSpec, nodes: Sequence[NodeCapacity]) -> str:
    """What bounds an instance's placement, for a reason: its resources (those it asks for, and what the
    largest node has where no node could hold one even empty) and a spread's cap per node; nothing when
    neither applies."""
    needs = [f"cpu {spec.resources.cpu:g}"] if spec.resources.cpu else []
    needs += [f"memory {spec.resources.memory_mib} MiB"] if spec.resources.memory_mib else []
    parts = [f"needs {', '.join(needs)} each"] if needs else []
    most_cpu = max((n.cpu for n in nodes), default=0.0)
    most_memory = max((n.memory_mib for n in nodes), default=0)
    short = [f"cpu {most_cpu:g}"] if spec.resources.cpu > most_cpu + 1e-9 else []
    short += [f"memory {most_memory} MiB"] if spec.resources.memory_mib > most_memory else []
    if nodes and short:
        parts.append(f"the largest node has {' and '.join(short)}")
    if spec.strategy is Strategy.SPREAD:
        parts.append(f"at most {spec.max_per_node} per node")
    return "".join(f"; {part}" for part in parts)


def allocate_all(
    specs: Sequence[SliceSpec],
    nodes: Sequence[NodeCapacity],
    current: Mapping[str, Mapping[str, int]],
    excluded: Mapping[str, frozenset[str]] | None = None,
    cordoned: frozenset[str] = frozenset(),
) -> dict[str, Placement]:
    """Placements for every slice (keyed by `spec.artifact`). See `_allocate_pass`; when something is left
    unplaced, or a slice that needs resources gave up room on a live node (which a slice placed before it
    could have used), the pass is repeated from its own result (which the reservations then match
    exactly), so capacity freed by moves is used and the result is a fixed point."""
    live = {n.node_id for n in nodes}
    placements = _allocate_pass(specs, nodes, current, excluded, cordoned)
    for _ in range(3):
        if not any(p.unplaced for p in placements.values()) and not _freed_room(
            specs, live, current, placements
        ):
            break
        current = {a: p.counts for a, p in placements.items()}
        again = _allocate_pass(specs, nodes, current, excluded, cordoned)
        if again == placements:
            break
        placements = again
    return placements


def _freed_room(
    specs: Sequence[SliceSpec],
    live: set[str],
    current: Mapping[str, Mapping[str, int]],
    placements: Mapping[str, Placement],
) -> bool:
    """Whether a slice that takes cpu or memory has fewer instances on some live node than before."""
    for spec in specs:
        if spec.resources.cpu <= 0 and spec.resources.memory_mib <= 0:
            continue
        after = placements[spec.artifact].counts
        before = current.get(spec.artifact, {})
        if any(count > after.get(node_id, 0) for node_id, count in before.items() if node_id in live):
            return True
    return False


def _allocate_pass(
    specs: Sequence[SliceSpec],
    nodes: Sequence[NodeCapacity],
    current: Mapping[str, Mapping[str, int]],
    excluded: Mapping[str, frozenset[str]] | None = None,
    cordoned: frozenset[str] = frozenset(),
) -> dict[str, Placement]:
    """Placements for every slice (keyed by `spec.artifact`), in artifact order, each one seeing the
    capacity the earlier ones took. `excluded[artifact]` names nodes that may not receive new instances
    of it (where it failed), `cordoned` nodes that may receive none of any slice; instances already
    there are kept."""
    excluded = excluded or {}
    # Every slice sees what the others run: their current instances count as used until their own turn
    # replaces them with their target, so no slice evicts another's running instances.
    by_spec = {spec.artifact: spec for spec in specs}
    usage: dict[str, Resources] = {}
    crowd: dict[str, int] = {}  # node → instances of every slice on it, counted as `usage` is

    def account(spec: SliceSpec, counts: Mapping[str, int], sign: int) -> None:
        for node_id, count in counts.items():
            crowd[node_id] = crowd.get(node_id, 0) + sign * count
            before = usage.get(node_id, Resources())
            usage[node_id] = Resources(
                cpu=before.cpu + sign * count * spec.resources.cpu,
                memory_mib=before.memory_mib + sign * count * spec.resources.memory_mib,
            )

    capacity = {n.node_id: n for n in nodes}

    def kept(spec: SliceSpec, counts: Mapping[str, int]) -> dict[str, int]:
        """What of the current placement the slice can keep: a slice scaling down (or placed beyond a
        node's capacity) frees the rest."""
        left, result = spec.instances, {}
        plain = attrs.evolve(spec, strategy=Strategy.ROUND_ROBIN) if counts else spec
        for node_id in sorted(counts):
            if node_id not in capacity:
                continue
            taken = usage.get(node_id, Resources())
            room = _room(plain, capacity[node_id], _Usage(taken.cpu, taken.memory_mib))
            take = min(counts[node_id], left, room)
            if take > 0:
                result[node_id] = take
                left -= take
        return result

    reserved: dict[str, dict[str, int]] = {}
    for artifact in sorted(a for a in current if a in by_spec):  # what fits of what runs, in order
        reserved[artifact] = kept(by_spec[artifact], current[artifact])
        account(by_spec[artifact], reserved[artifact], +1)
    placements: dict[str, Placement] = {}
    for spec in sorted(specs, key=lambda s: s.artifact):
        here = current.get(spec.artifact, {})
        account(spec, reserved.get(spec.artifact, {}), -1)
        banned = excluded.get(spec.artifact, frozenset())
        placement = allocate(spec, nodes, here, usage, no_growth=banned, cordoned=cordoned, crowd=crowd)
        placements[spec.artifact] = placement
        account(spec, placement.counts, +1)
    return placements
