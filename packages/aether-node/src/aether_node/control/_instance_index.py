"""The observed instances, indexed for the planners: per artifact id, node, variant (coordinates and
config digest: `Variant`) and state. Pure data, no I/O: kept up to date one record at a time (`put`,
`remove`) by the leader as its watch brings changes, or built at once from a list (`InstanceIndex.of`,
what the planners do when given one). The planners (`_reconcile`, `_strategies`, `_rebalance`,
`_pause`) read counts per bucket and enumerate only the buckets they act on, so a pass over a converging
slice costs per node and state, not per instance.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ..core._config_digest import config_digest
from ..core._coordinates import Coordinates
from ..core._records import SliceState

if TYPE_CHECKING:  # (the planner that defines ObservedInstance imports this module)
    from ._reconcile import ObservedInstance

Bucket = dict[str, "ObservedInstance"]  # key → instance, of one node, variant and state


@attrs.frozen
class Variant:
    """What an instance runs: its coordinates and its config (`config_digest`). An instance whose
    variant is not the one the blueprint asks for is stale, whether its version or its config differs."""

    coordinates: Coordinates
    config: str  # the config's digest

    @classmethod
    def of(cls, coordinates: Coordinates, config: Mapping[str, Any]) -> Variant:
        return cls(coordinates, config_digest(config))

    @property
    def version(self) -> str:
        return self.coordinates.version

    @property
    def artifact_id(self) -> str:
        return self.coordinates.artifact_id

    def __str__(self) -> str:
        return str(self.coordinates)


class ArtifactInstances:
    """The records of one artifact id: node → variant → state → bucket."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[Variant, dict[SliceState, Bucket]]] = {}
        self.count = 0
        self._numbers: Counter[int] = Counter()  # instance number → records with it
        self._heap: list[int] = []  # negated numbers; stale entries are skipped

    def _add(self, instance: ObservedInstance) -> None:
        versions = self.nodes.setdefault(instance.node_id, {})
        versions.setdefault(instance.variant, {}).setdefault(instance.state, {})[instance.key] = instance
        self.count += 1
        if not self._numbers[instance.instance]:
            heapq.heappush(self._heap, -instance.instance)
        self._numbers[instance.instance] += 1

    def _remove(self, instance: ObservedInstance) -> None:
        versions = self.nodes[instance.node_id]
        states = versions[instance.variant]
        bucket = states[instance.state]
        del bucket[instance.key]
        if not bucket:
            del states[instance.state]
            if not states:
                del versions[instance.variant]
                if not versions:
                    del self.nodes[instance.node_id]
        self.count -= 1
        self._numbers[instance.instance] -= 1
        if not self._numbers[instance.instance]:
            del self._numbers[instance.instance]

    def highest(self) -> int:
        """The highest instance number recorded (0: none)."""
        heap = self._heap
        while heap and -heap[0] not in self._numbers:
            heapq.heappop(heap)
        return -heap[0] if heap else 0

    def on(self, node_id: str) -> Iterator[ObservedInstance]:
        """Every record of this artifact on the node."""
        for states in self.nodes.get(node_id, {}).values():
            for bucket in states.values():
                yield from bucket.values()

    def __iter__(self) -> Iterator[ObservedInstance]:
        for node_id in self.nodes:
            yield from self.on(node_id)


_EMPTY = ArtifactInstances()


class InstanceIndex:
    """Every observed instance record by key and by artifact id; and, across artifacts, the records per
    node and those of moves (`moved_from`)."""

    def __init__(self) -> None:
        self._by_key: dict[str, ObservedInstance] = {}
        self._artifacts: dict[str, ArtifactInstances] = {}
        self._per_node: dict[str, Counter[str]] = {}  # node → artifact id → records
        self.moves: dict[str, ObservedInstance] = {}  # key → a record with `moved_from`

    @classmethod
    def of(cls, instances: Iterable[ObservedInstance]) -> InstanceIndex:
        index = cls()
        for instance in instances:
            index.put(instance)
        return index

    def put(self, instance: ObservedInstance) -> None:
        """Add a record, or replace the one with its key."""
        self.remove(instance.key)
        artifact_id = instance.coordinates.artifact_id
        self._by_key[instance.key] = instance
        group = self._artifacts.get(artifact_id)
        if group is None:
            group = self._artifacts[artifact_id] = ArtifactInstances()
        group._add(instance)
        self._per_node.setdefault(instance.node_id, Counter())[artifact_id] += 1
        if instance.moved_from:
            self.moves[instance.key] = instance

    def remove(self, key: str) -> None:
        """Forget the record with this key (if any)."""
        instance = self._by_key.pop(key, None)
        if instance is None:
            return
        artifact_id = instance.coordinates.artifact_id
        group = self._artifacts[artifact_id]
        group._remove(instance)
        if not group.count:
            del self._artifacts[artifact_id]
        counts = self._per_node[instance.node_id]
        counts[artifact_id] -= 1
        if not counts[artifact_id]:
            del counts[artifact_id]
            if not counts:
                del self._per_node[instance.node_id]
        self.moves.pop(key, None)

    def get(self, key: str) -> ObservedInstance | None:
        return self._by_key.get(key)

    def artifact(self, artifact_id: str) -> ArtifactInstances:
        """The records of one artifact id (empty if none; not to be changed)."""
        return self._artifacts.get(artifact_id, _EMPTY)

    def artifact_ids(self) -> Iterable[str]:
        return self._artifacts.keys()

    def per_node(self) -> Iterable[tuple[str, Counter[str]]]:
        """(node, artifact id → records there) for every node that holds a record."""
        return self._per_node.items()

    def __iter__(self) -> Iterator[ObservedInstance]:
        return iter(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)


def as_index(instances: Iterable[ObservedInstance] | InstanceIndex) -> InstanceIndex:
    """The index itself, or one built from a list of records (one per key, as in the KV: a later record
    with the same key replaces an earlier one)."""
    return instances if isinstance(instances, InstanceIndex) else InstanceIndex.of(instances)
