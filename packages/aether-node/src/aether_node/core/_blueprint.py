"""Blueprints: what the operator asks for. Records only (stored at `blueprints/{name}`); parsing TOML and
validation with line numbers belong to the CLI side."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

from ._autoscale_spec import AutoscaleSpec
from ._health_spec import HealthSpec
from ._reconcile_spec import ReconcilePolicy
from ._records import SCHEMA_VERSION
from ._update_spec import DEFAULT_MIN_READY_S, UpdateSpec


class Strategy(enum.StrEnum):
    ROUND_ROBIN = "round_robin"  # even spread over the nodes (the default)
    SPREAD = "spread"  # distinct nodes first, at most `max_per_node` per node
    BIN_PACK = "bin_pack"  # fill the fullest node that still fits, by cpu and memory


class Balancing(enum.StrEnum):
    ROUND_ROBIN = "round_robin"
    RANDOM = "random"
    POWER_OF_TWO = "power_of_two"  # the less busy of two random endpoints (in-flight calls)
    LOCAL_FIRST = "local_first"


@attrs.frozen(kw_only=True)
class Resources:
    cpu: float = 0.0
    memory_mib: int = 0


@attrs.frozen(kw_only=True)
class SliceSpec:
    """One slice of a blueprint: coordinates `group:artifact:version` and how many instances."""

    artifact: str
    instances: int
    strategy: Strategy = Strategy.ROUND_ROBIN
    max_per_node: int = 1  # for `spread`
    resources: Resources = attrs.field(factory=Resources)
    min_available: int | None = None  # availability floor; default: more than half
    balancing: Balancing = Balancing.ROUND_ROBIN
    config: Mapping[str, Any] = attrs.field(factory=dict)
    autoscale: AutoscaleSpec | None = None  # [slices.autoscale]; None: a fixed number of instances
    update: UpdateSpec | None = None  # [slices.update]; None: rolling
    health: HealthSpec | None = None  # [slices.health]; None: each node's own [health] settings

    @property
    def floor(self) -> int:
        return self.min_available if self.min_available is not None else self.instances // 2 + 1

    @property
    def min_ready_s(self) -> float:
        """How long a new instance must have stayed ACTIVE (the leader) or published (each node's router)
        before it counts: for removals, a canary step, the blue-green switch and a rollout's share."""
        return self.update.min_ready_s if self.update is not None else DEFAULT_MIN_READY_S


@attrs.frozen(kw_only=True)
class Blueprint:
    name: str
    slices: tuple[SliceSpec, ...]
    timestamp: float = 0.0
    source: str = ""  # the TOML it was applied from, as the operator wrote it
    revision: int = 0  # its number in the blueprint's history (`blueprint-revisions/`); 0: before history
    change: str = ""  # how this revision came: "applied", "rolled back to revision 2", "scaled ..."
    policy: ReconcilePolicy | None = None  # [policy]: over the cluster's reconciliation policy; None: as is
    schema_version: int = SCHEMA_VERSION
