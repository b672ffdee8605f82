"""KV records (docs/ARCHITECTURE.md, "KV schema"): frozen attrs records, one cattrs converter, JSON.

Every record carries `schema_version`; decoding rejects what it does not understand with a message that
names the key.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs
import cattrs

from ._errors import NodeError

SCHEMA_VERSION = 1
T = TypeVar("T")


class SliceState(enum.StrEnum):
    LOAD = "LOAD"
    LOADING = "LOADING"
    LOADED = "LOADED"
    ACTIVATE = "ACTIVATE"
    ACTIVATING = "ACTIVATING"
    ACTIVE = "ACTIVE"
    DEACTIVATE = "DEACTIVATE"
    DEACTIVATING = "DEACTIVATING"
    UNLOAD = "UNLOAD"
    UNLOADING = "UNLOADING"
    FAILED = "FAILED"


COMMAND_STATES = frozenset({SliceState.LOAD, SliceState.ACTIVATE, SliceState.DEACTIVATE, SliceState.UNLOAD})
REMOVING = frozenset({SliceState.UNLOAD, SliceState.UNLOADING})  # on its way out: asked or doing it
WORKING_STATES = frozenset(
    {SliceState.LOADING, SliceState.ACTIVATING, SliceState.DEACTIVATING, SliceState.UNLOADING}
)


@attrs.frozen(kw_only=True)
class SliceRecord:
    """`slices/{node-id}/{artifact}/{instance}`: command states by the leader, the rest by the node."""

    state: SliceState
    reason: str = ""
    timestamp: float = 0.0
    config: Mapping[str, Any] = attrs.field(factory=dict)
    # The command being carried out while the state is an -ING state (e.g. ACTIVATE while LOADING), so
    # that an interrupted step resumes toward what was asked, not toward its own intermediate outcome.
    command: SliceState | None = None
    # On the leader's ACTIVATE of an instance that replaces one on another node (a rebalancing move);
    # the node keeps it through its own writes, so the leader can count the moves in flight.
    moved_from: str = ""
    # How many times its node started its process again after it died, and how the last one ended
    # ("killed by signal 9", "memory: ..."): kept through every later write of the record, as
    # Kubernetes keeps a container's restart count and last state.
    restarts: int = 0
    last_exit: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def intent(self) -> SliceState:
        """The state that says what is wanted: the command in progress, else the state itself."""
        return self.command if self.command is not None and self.state in WORKING_STATES else self.state


@attrs.frozen(kw_only=True)
class EndpointRecord:
    """`endpoints/{group:artifact:version}/{instance}`: an ACTIVE instance's entry points, one record per
    instance (not per entry point: one KV write and one watch event per instance); written by the owning
    node, bound to its lease."""

    node_id: str
    instance: int
    entries: tuple[str, ...] = ()  # the entry points a call may name, sorted
    idempotent: tuple[str, ...] = ()  # those of `entries` whose failed calls may be retried elsewhere
    state: str = "ACTIVE"
    timestamp: float = 0.0
    schema_version: int = SCHEMA_VERSION


@attrs.frozen(kw_only=True)
class LeaderClaim:
    """`cluster/leader`: the node whose replica leads, since when, in which Raft term."""

    node_id: str
    since: float
    term: int = 0  # the Raft term in which this node's replica became the leader


@attrs.frozen(kw_only=True)
class Capacity:
    cpu: float = 1.0
    memory_mib: int = 1024


@attrs.frozen(kw_only=True)
class NodeRecord:
    """`nodes/{node-id}`: a node's registration, bound to its lease (it vanishes when the node dies)."""

    node_id: str
    ingress: str
    management: str = ""
    peer: str = ""
    capacity: Capacity = Capacity()
    labels: Mapping[str, str] = attrs.field(factory=dict)
    role: str = "worker"
    started_at: float = 0.0
    lease_ttl: float = 0.0  # its lease's TTL: how long the cluster waits before it counts the node lost
    leaving: bool = False  # written just before a graceful shutdown revokes the lease (left, not lost)
    raft: str = ""  # its KV replica's Raft address ("": it runs none): a stop is checked against the quorum
    # what is wrong on the node itself, one line each (its instances' output cannot be written: a full
    # disk); the cluster's status names them; older records without the field read as none
    problems: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION


class NodeOperation(enum.StrEnum):
    """What an operator asked of a node (`cluster/node-ops/{node-id}`); no record: on duty."""

    CORDONED = "CORDONED"  # no new instance is placed there; what runs there stays
    DRAINING = "DRAINING"  # cordoned, and its instances are moved off (DRAINED once none is left)


@attrs.frozen(kw_only=True)
class NodeOperationRecord:
    """`cluster/node-ops/{node-id}`: written by the management API, kept across the node's restarts and
    leader changes (not bound to any lease), deleted by `aether node uncordon`."""

    operation: NodeOperation
    since: float = 0.0
    schema_version: int = SCHEMA_VERSION


@attrs.frozen(kw_only=True)
class LostNodeRecord:
    """`cluster/reconcile/lost/{node-id}`: the leader saw the node lost (its registration gone, its
    instance records left) at `since`, with `instances` records, and waits a rebalance delay before it
    replaces them; deleted when the node is back or its records are gone."""

    since: float
    instances: int = 0
    delay_s: float = 0.0  # the longest delay of its slices when it was written (for the event's message)
    schema_version: int = SCHEMA_VERSION


@attrs.frozen(kw_only=True)
class ReplicaRecord:
    """`cluster/replicas/{raft-address}`: the node that runs the KV replica at that Raft address, put by
    the node with each registration (not bound to its lease: the replica stays a member of the store
    when its node stops, and `cluster status` names it by its node then too)."""

    node_id: str
    schema_version: int = SCHEMA_VERSION


@attrs.frozen(kw_only=True)
class InstanceNumbers:
    """`cluster/instance-numbers/{group:artifact}`: the number the leader gives the slice's next new
    instance (any version). Written by the leader in the transaction that creates the instances it
    numbered, so no number is given twice, also across leader changes; kept when the slice leaves every
    blueprint (one applied again goes on from it). Absent (a cluster from before it): `highest + 1`."""

    next: int
    schema_version: int = SCHEMA_VERSION


@attrs.frozen(kw_only=True)
class ServingVersion:
    """`cluster/serving/{group:artifact}`: the version and config that last served the slice (as many
    of its instances ACTIVE on live nodes as its floor asks: the wanted one if it has them, else the one
    with the most), by the leader's observation. While an
    update cannot place its new version (an install that fails), the leader brings this one back where
    lost nodes took every instance of it (`control/_serving.py`). Deleted once the slice is in no
    blueprint."""

    coordinates: str
    config: Mapping[str, Any] = attrs.field(factory=dict)
    schema_version: int = SCHEMA_VERSION


@attrs.frozen(kw_only=True)
class PausedRollout:
    """`cluster/paused/{group:artifact}`: an operator paused the slice's rolling update (`aether slice
    pause`) at `since`; deleted by `aether slice resume`."""

    since: float
    schema_version: int = SCHEMA_VERSION


@attrs.frozen(kw_only=True)
class RebalanceRequest:
    """`cluster/reconcile/rebalance`: `aether cluster rebalance` ends, at `requested_at`, the wait for
    every node lost before it (the leader compares revisions: the record's mod revision against each
    lost node's), or before `covers` if not 0: the revision the operator's client read before it sent
    the request, so that a late copy of it ends no wait of a node lost after that."""

    requested_at: float
    covers: int = 0
    schema_version: int = SCHEMA_VERSION


@attrs.frozen(kw_only=True)
class RetryRequest:
    """`cluster/reconcile/retry/{group:artifact}`: `aether slice retry` lets go, at `requested_at`, of the
    slice's failures recorded up to revision `covers` (what the operator's client read before it sent
    the request, or what the node read: a late copy lets go of no failure after it): the nodes they kept
    out of the running are tried again at once, not `failed_retry_after` after the failure."""

    requested_at: float
    covers: int
    schema_version: int = SCHEMA_VERSION


@attrs.frozen(kw_only=True)
class NodeStopRequest:
    """`cluster/node-stop/{node-id}`: `aether node stop` asks that run of the node (its `started_at`) to
    stop gracefully; the node deletes it as it stops. A request for an earlier run is ignored."""

    started_at: float
    requested_at: float = 0.0
    restart: bool = False  # `aether node restart`: after the stop the node starts again (same identity, data)
    schema_version: int = SCHEMA_VERSION


@attrs.frozen(kw_only=True)
class AutoscaleSettings:
    """`cluster/autoscale/{group:artifact}`: an operator's run-time change to a slice's `[slices.autoscale]`
    (`aether slice autoscale set|pause|resume`). A field left None keeps the blueprint's value; `paused`
    stops the leader's decisions for the slice. Kept across leader changes and blueprint revisions."""

    paused: bool = False
    min: int | None = None
    max: int | None = None
    cpu: float | None = None
    p99_ms: float | None = None
    calls_per_second: float | None = None
    in_flight: float | None = None
    updated: float = 0.0
    schema_version: int = SCHEMA_VERSION


@attrs.frozen(kw_only=True)
class AutoscaleEntry:
    """One decision of the leader's autoscaler, as recorded (and shown as an `autoscale_decision` event)."""

    at: float
    action: str  # up, down or hold
    current: int
    target: int
    path: tuple[str, ...]
    message: str  # `scale org.aether:busy 1 -> 2: p99 312 ms > 150 ms for 3 s`


@attrs.frozen(kw_only=True)
class AutoscaleLog:
    """`cluster/autoscale-decisions/{group:artifact}`: the leader's last decisions for a slice, newest
    last (every up and down; a hold when its reason changes)."""

    entries: tuple[AutoscaleEntry, ...] = ()
    schema_version: int = SCHEMA_VERSION


class RolloutPhase(enum.StrEnum):
    """Where a canary or blue-green rollout stands (`cluster/rollouts/{group:artifact}`)."""

    DEPLOYING = (
        "DEPLOYING"  # the new instances of this step (canary) or the full new set (blue-green) come up
    )
    OBSERVING = (
        "OBSERVING"  # canary: the step's share of the calls goes to the new version, judged after its window
    )
    SWITCHED = (
        "SWITCHED"  # blue-green: every call goes to the new set; the old one stays for the grace period
    )
    PROMOTED = "PROMOTED"  # the new version won: the old instances go, one by one, never below the floor
    ABORTED = "ABORTED"  # rolled back: every call goes to the stable version; the new instances go


@attrs.frozen(kw_only=True)
class RolloutRecord:
    """`cluster/rollouts/{group:artifact}`: a canary or blue-green rollout of one slice, from `stable` to
    `candidate` (versions; with `stable_config`, a change of config too, or of config alone). Written by
    the leader as it advances (fenced) and by the management API for `aether slice promote|abort`
    (compare-and-swap); read by every node's router for `share`."""

    artifact_id: str
    strategy: str  # canary | blue_green (UpdateStrategy's values)
    stable: str
    candidate: str
    phase: RolloutPhase
    step: int = 0  # canary: the index of the current step in the slice's `steps`
    share: int | None = 0  # percent of the calls routed to `candidate`; None: by instance count (unweighted)
    since: float = 0.0  # when the current phase (or step) began
    reason: str = ""  # what it waits for, or why it was aborted
    # The candidate's config digest (`_config_digest`; "": a record from before configs rolled out, the
    # version alone names the candidate), and the stable instances' config when it is not the
    # candidate's (None: the same config). A config change alone has `stable == candidate`.
    candidate_config: str = ""
    stable_config: Mapping[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION


@attrs.frozen(kw_only=True)
class ApiKeyRecord:
    """`cluster/api-keys/{name}`: a named API key, kept hashed (`digest`: the SHA-256 of the secret, hex);
    the secret itself is shown once, when the key is created, and stored nowhere."""

    name: str
    role: str  # viewer, operator or admin
    digest: str
    created_at: float = 0.0
    created_by: str = ""  # who created it (an audit identity: a key's name, `config-key`, `node:ID`)
    last_used: float = 0.0  # when a node last let it through, to a minute (`api/_api_keys.USE_RESOLUTION`)
    schema_version: int = SCHEMA_VERSION


@attrs.frozen(kw_only=True)
class JoinTokenRecord:
    """`cluster/join-tokens/{id}`: a join token (`aether-node token create`), kept hashed (`digest`: the
    SHA-256 of its secret, hex). Redeemed once (`used_at` set by compare-and-swap), refused after
    `expires_at`; the key goes with its lease a little after that."""

    token_id: str
    digest: str
    expires_at: float
    created_at: float = 0.0
    used_at: float = 0.0  # 0: not used yet
    schema_version: int = SCHEMA_VERSION


@attrs.frozen(kw_only=True)
class AuditRecord:
    """`cluster/audit/{node-id}`: the last change made through that node's management API. Each put is one
    `audit` event in the KV's history (the key only holds the latest), so the log costs one key per node."""

    who: str  # a key's name, `config-key` (a key of the node's configuration) or `node:ID` (an open API)
    method: str
    route: str  # the route's template, e.g. /api/v1/blueprints/{name}
    target: str = ""  # what it acted on: a blueprint, slice, node or key name ("" when none)
    status: int = 0  # the HTTP status answered
    at: float = 0.0
    node_id: str = ""  # the node that served it
    # refused requests of the same identity not recorded one by one just before this one (a flood of
    # them is paced: `api/_audit.RefusalPacing`)
    unrecorded: int = 0
    schema_version: int = SCHEMA_VERSION


converter = cattrs.Converter(forbid_extra_keys=False)


class RecordError(NodeError):
    """A KV record could not be decoded (a bug or a newer schema). Names the key."""


def encode_record(record: object) -> bytes:
    """The record as stored. A lone UTF-16 surrogate in one of its strings (a slice's failure message or
    entry point name: the slice protocol passes them through) is stored as its escape in words
    (`\\udcff`, as text): stored as the character, it came back as one no UTF-8 encoder takes, and every
    read that answered the record (the events, a slice's status, the dashboard) failed with a 500."""
    data = converter.unstructure(record)
    text = json.dumps(data, separators=(",", ":"))  # (ASCII: every character past it escaped)
    if "\\ud" in text:  # (a surrogate's escape, json.dumps's lowercase: most often half of a pair, an emoji)
        text = json.dumps(surrogates_escaped(data), separators=(",", ":"))
    return text.encode()


def surrogates_escaped(value: Any) -> Any:
    """`value` (JSON data) with each lone surrogate of its strings, keys too, written as its escape."""
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {surrogates_escaped(k): surrogates_escaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [surrogates_escaped(item) for item in value]
    return value


def decode_record(key: str, value: bytes, cls: type[T]) -> T:
    try:
        data = json.loads(value)
        if b"\\ud" in value or b"\\uD" in value:  # (one stored before encode_record escaped them)
            data = surrogates_escaped(data)
        if not isinstance(data, dict):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise TypeError(f"schema_version {version} is not understood (this node reads {SCHEMA_VERSION})")
        return converter.structure(data, cls)
    except (ValueError, TypeError, KeyError, cattrs.BaseValidationError) as error:
        detail = (
            "; ".join(cattrs.transform_error(error))
            if isinstance(error, cattrs.BaseValidationError)
            else error
        )
        raise RecordError(f"{key}: not a valid {cls.__name__} record: {detail}") from None
