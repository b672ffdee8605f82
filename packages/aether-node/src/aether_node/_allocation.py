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

from ._blueprint import Resources, SliceSpec, Strategy


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

    def __init__(self, key: Callable[[str], Any], node_ids: Iterable[str], *, largest: bool = False) -> None:
        self._key = key
        self._sign = -1 if largest else 1
        self._heap = [(self._signed(i), i) for i in node_ids]
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
) -> Placement:
    """Target instance counts per node for one slice. `usage` is what other slices already take."""
    usage = usage or {}
    by_id = {n.node_id: n for n in nodes}
    ids = sorted(by_id)
    used = {i: _Usage(usage[i].cpu, usage[i].memory_mib) if i in usage else _Usage() for i in ids}
    room = {i: _room(spec, by_id[i], used[i]) for i in ids}
    target = {i: min(current.get(i, 0), room[i]) for i in ids}
    total = sum(target.values())
    packing = spec.strategy is Strategy.BIN_PACK

    def free_after(node_id: str) -> tuple[float, float]:
        """Capacity left if the node took one more instance; bin-packing prefers the tightest fit."""
        node, u, count = by_id[node_id], used[node_id], target[node_id] + 1
        return (
            node.memory_mib - u.memory_mib - count * spec.resources.memory_mib,
            node.cpu - u.cpu - count * spec.resources.cpu,
        )

    def load(node_id: str) -> tuple[int, str]:
        return (target[node_id], node_id)

    order = free_after if packing else load
    if total > spec.instances:  # shrink: the loosest (packing) or fullest (spreading) node first
        shrink = _LazyHeap(order, [i for i in ids if target[i] > 0], largest=True)
        while total > spec.instances:
            victim = shrink.pop(lambda i: target[i] > 0)
            assert victim is not None
            target[victim] -= 1
            total -= 1
            shrink.push(victim)
    if total < spec.instances:  # grow: the tightest fit (packing) or emptiest node (spreading) first
        grow = _LazyHeap(order, [i for i in ids if target[i] < room[i]])
        while total < spec.instances:
            chosen = grow.pop(lambda i: target[i] < room[i])
            if chosen is None:
                break
            target[chosen] += 1
            total += 1
            grow.push(chosen)
    if not packing:  # even out, one move at a time, from the fullest to the emptiest node with room
        donors = _LazyHeap(load, [i for i in ids if target[i] > 0], largest=True)
        receivers = _LazyHeap(load, [i for i in ids if target[i] < room[i]])
        while True:
            donor = donors.top(lambda i: target[i] > 0)
            receiver = receivers.top(lambda i: target[i] < room[i])
            if donor is None or receiver is None or target[donor] - target[receiver] <= 1:
                break
            donors.pop(lambda i: True)
            receivers.pop(lambda i: True)
            target[donor] -= 1
            target[receiver] += 1
            for node_id in (donor, receiver):  # both keys changed; stale entries are skipped
                donors.push(node_id)
                receivers.push(node_id)
    unplaced = spec.instances - total
    reason = ""
    if unplaced:
        reason = (
            f"{unplaced} of {spec.instances} instances of {spec.artifact} fit on no live node"
            f" ({len(ids)} node(s); needs cpu {spec.resources.cpu:g}, memory {spec.resources.memory_mib} MiB"
            + (f", at most {spec.max_per_node} per node" if spec.strategy is Strategy.SPREAD else "")
            + " each)"
        )
    return Placement(counts={i: c for i, c in target.items() if c}, unplaced=unplaced, reason=reason)


def allocate_all(
    specs: Sequence[SliceSpec],
    nodes: Sequence[NodeCapacity],
    current: Mapping[str, Mapping[str, int]],
    excluded: Mapping[str, frozenset[str]] | None = None,
) -> dict[str, Placement]:
    """Placements for every slice (keyed by `spec.artifact`), in artifact order, each one seeing the
    capacity the earlier ones took. `excluded[artifact]` names nodes that may not receive new instances
    of it (where it failed); instances it already has there are kept."""
    excluded = excluded or {}
    usage: dict[str, Resources] = {}
    placements: dict[str, Placement] = {}
    for spec in sorted(specs, key=lambda s: s.artifact):
        here = current.get(spec.artifact, {})
        banned = excluded.get(spec.artifact, frozenset())
        eligible = [n for n in nodes if n.node_id not in banned or here.get(n.node_id)] if banned else nodes
        placement = allocate(spec, eligible, here, usage)
        placements[spec.artifact] = placement
        for node_id, count in placement.counts.items():
            before = usage.get(node_id, Resources())
            usage[node_id] = Resources(
                cpu=before.cpu + count * spec.resources.cpu,
                memory_mib=before.memory_mib + count * spec.resources.memory_mib,
            )
    return placements
