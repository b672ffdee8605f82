"""Command handlers: the operations behind the management API (and so the CLI and the MCP service).
Protocol-agnostic: typed request in, typed result (from `client`) out, or a RequestError whose kind
(`core/_error_kinds.py`) the API turns into its answer. KV errors become `unavailable` in one place
(`core/_kv_errors.py`).

Reads that decide anything are linearizable; writes go through Raft like every KV write.
"""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import trio

from aether_kv import (
    KV,
    CompactedError,
    ConnectionLostError,
    Event,
    KeyValue,
    KVError,
    NoQuorumError,
    OutcomeUnknownError,
    Status,
    UnavailableError,
)

from ..client import (
    ApplyResult,
    BlueprintInfo,
    BlueprintStatus,
    ClusterCalls,
    ClusterEvent,
    ClusterStatus,
    EntryInfo,
    InstanceInfo,
    KeptForRollback,
    NodeInfo,
    Overview,
    RolloutInfo,
    SliceStatus,
    SliceSummary,
    SliceTarget,
)
from ..control._event_clock import EventClock
from ..control._membership import expected_nodes, forget, replica_names
from ..control._node_ops import DRAINING, decode_operations, drain_waits, node_state
from ..control._pause import decode_paused
from ..control._revisions import (
    ATTEMPTS,
    DEFAULT_KEEP,
    ClaimsChanged,
    RevisionConflict,
    Stored,
    WriteInDoubt,
    claims_revision,
    store_revision,
)
from ..control._strategies import decode_rollouts, update_of
from ..control._write_guard import (
    Superseded,
    changed_after,
    guarded_delete,
    guarded_put,
    read_guarded,
    superseded_message,
    unchanged_since,
)
from ..core._blueprint import Blueprint, SliceSpec
from ..core._blueprint_toml import BlueprintError, parse_blueprint
from ..core._config_digest import config_change, config_digest
from ..core._coordinates import Coordinates, parse_artifact_id
from ..core._error_kinds import ErrorKind
from ..core._errors import InvalidCoordinatesError, NoEndpointError, RequestError
from ..core._health_spec import describe as describe_health
from ..core._kv_errors import FAILOVER_TIME, store_error, store_errors
from ..core._off_loop import run_sized
from ..core._records import (
    REMOVING,
    LeaderClaim,
    NodeOperationRecord,
    NodeRecord,
    RecordError,
    RolloutPhase,
    RolloutRecord,
    decode_record,
)
from ..core._schema import (
    BLUEPRINTS,
    LEADER_KEY,
    NODE_OPS,
    NODES,
    PAUSED,
    PROBLEMS_PREFIX,
    REPLICAS,
    ROLLOUTS,
    SLICES,
)
from ..core._text import plural, replica_label, shown
from ..observe._events import ALL_EVENTS, EventFilter, describe, needs_time
from ..routing._invoker import ClusterInvoker
from ..routing._no_endpoint import deployments, no_endpoint_error
from ._cluster_view import ClusterView, Snapshot, instance_info

# An apply that a leader change failed goes again (until FAILOVER_TIME), after these waits (doubling).
APPLY_RETRY_START = 0.05
APPLY_RETRY_MAX = 0.5
RESENDABLE = (UnavailableError, OutcomeUnknownError, ConnectionLostError)  # KV errors an apply outlasts


def _current(instance: InstanceInfo, artifact: str, digest: str) -> bool:
    """Whether the instance runs what the blueprint asks of its slice: the version (`artifact`) and the
    config (`digest`)."""
    return instance.artifact == artifact and instance.config_digest == digest


def slice_status_of(
    spec: SliceSpec,
    instances: Iterable[InstanceInfo],
    *,
    problem: str = "",
    rollout: RolloutInfo | None = None,
) -> SliceStatus:
    """A blueprint's slice as it stands: its instances (any version), the ACTIVE ones of the version and
    config it asks for, the leader's `problem` with it and its `rollout` (a SWITCHED blue-green one with
    the end of its grace period, from the slice's `grace_s`)."""
    artifact_id = _slice_id(spec)
    mine = tuple(i for i in instances if i.artifact.rsplit(":", 1)[0] == artifact_id)
    digest = config_digest(spec.config)
    if rollout is not None and rollout.phase == RolloutPhase.SWITCHED.value:
        rollout = attrs.evolve(rollout, until=rollout.since + update_of(spec).grace_s)
    return SliceStatus(
        artifact=spec.artifact,
        desired=spec.instances,
        active=sum(1 for i in mine if i.state == "ACTIVE" and _current(i, spec.artifact, digest)),
        instances=mine,
        problem=problem,
        rollout=rollout,
        config_digest=digest,
    )


def _slice_statuses(
    blueprints: dict[str, Blueprint],
    instances: list[InstanceInfo],
    rollouts: Mapping[str, RolloutInfo],
) -> dict[str, list[SliceStatus]]:
    """Per blueprint: each of its slices as it stands (`slice_status_of`, with its rollout)."""
    return {
        name: [
            slice_status_of(spec, instances, rollout=rollouts.get(_slice_id(spec)))
            for spec in blueprint.slices
        ]
        for name, blueprint in blueprints.items()
    }


def _convergence(statuses: Mapping[str, Sequence[SliceStatus]]) -> dict[str, str]:
    """Per blueprint: why it has not converged (`SliceStatus.converged`: its slices short of ACTIVE
    instances of the wanted version and config, with others left to replace, or an aborted rollout), or
    "" if it has."""
    return {name: "; ".join(s.shortfall for s in slices if s.shortfall) for name, slices in statuses.items()}


def kept_for_rollback(slices: Iterable[SliceStatus]) -> tuple[KeptForRollback, ...]:
    """The old sets that blue-green rollouts SWITCHED keep for a rollback (`SliceStatus.kept_for_rollback`),
    with until when: what `slice status` and `blueprint status` say of a slice, for the cluster status."""
    return tuple(
        KeptForRollback(artifact=s.rollout.artifact, stable=s.rollout.stable, until=s.rollout.until)
        for s in slices
        if s.rollout is not None and s.kept_for_rollback
    )


def node_records(items: Mapping[str, KeyValue]) -> dict[str, tuple[NodeRecord, KeyValue]]:
    """The registered nodes (`nodes/` keys) by id in key order, each with its key-value (its create
    revision tells its run); a record that does not decode is left out."""
    found = {}
    for key, kv in sorted(items.items()):
        try:
            record = decode_record(key, kv.value, NodeRecord)
        except RecordError:
            continue
        found[record.node_id] = (record, kv)
    return found


def _decode_blueprints(items: Iterable[KeyValue]) -> dict[str, Blueprint]:
    """The blueprints stored under `blueprints/`, by name (records that do not decode are skipped)."""
    found = {}
    for item in items:
        try:
            blueprint = decode_record(item.key, item.value, Blueprint)
        except RecordError:
            continue
        found[blueprint.name] = blueprint
    return found


def _apply_failed(doing: str, last: KVError, in_doubt: bool) -> RequestError:
    """The answer to an apply that did not get through in FAILOVER_TIME, or at once for want of a KV
    quorum (`NoQuorumError`: no majority for longer than a leader change takes; waiting does not help).
    `last`: the last attempt's KV error; `in_doubt`: a write of the apply went unanswered."""
    if not isinstance(last, NoQuorumError):
        doing = f"{doing} in {FAILOVER_TIME:g} s of trying"
    if in_doubt and not isinstance(last, WriteInDoubt):
        doing += (
            " (a write of it went unanswered and may have landed: read the blueprint before applying again)"
        )
    return store_error(last, doing)


async def read_blueprint(text: str, source: str, *, timestamp: float = 0.0) -> Blueprint:
    """The blueprint `text` holds (a big one parsed off the event loop); a `bad_request` error naming
    every problem if it is not one."""
    try:
        return await run_sized(
            len(text), functools.partial(parse_blueprint, timestamp=timestamp), text, source
        )
    except BlueprintError as error:
        raise RequestError(ErrorKind.BAD_REQUEST, error.message) from None


def applied(stored: Stored, *, notes: tuple[str, ...] = ()) -> ApplyResult:
    return ApplyResult(
        name=stored.blueprint.name,
        created=stored.created,
        revision=stored.kv_revision,
        slices=len(stored.blueprint.slices),
        blueprint_revision=stored.blueprint.revision,
        change=stored.blueprint.change,
        notes=notes,
    )


def config_notes(before: Blueprint | None, after: Blueprint) -> tuple[str, ...]:
    """What an operator should know of a change of a slice's `[slices.config]`: which keys changed, and
    that the running instances are replaced with it by the slice's update strategy (as for a new
    version; `aether blueprint status` follows it). Configs compare by value. Pure."""
    previous = {_slice_id(s): s.config for s in before.slices} if before is not None else {}
    notes = []
    for spec in after.slices:
        artifact_id = _slice_id(spec)
        keys = config_change(previous[artifact_id], spec.config) if artifact_id in previous else ""
        if keys:
            strategy = update_of(spec).strategy.value.replace("_", "-")
            notes.append(
                f"{artifact_id}: config changed ({keys}): the running instances are replaced with it"
                f" ({strategy} update)"
            )
    return tuple(notes)


def _slice_id(spec: SliceSpec) -> str:
    return spec.artifact.rsplit(":", 1)[0]


def _node_infos(
    nodes: list[NodeRecord],
    instances: list[InstanceInfo],
    leader: str | None,
    operations: Mapping[str, NodeOperationRecord],
    problems: Mapping[str, str],
) -> list[NodeInfo]:
    """Every node with its counts and state (and, while draining, what the drain waits for). Pure."""
    per_node = collections.Counter(i.node_id for i in instances)
    active = collections.Counter(i.node_id for i in instances if i.state == "ACTIVE")

    def state(node: NodeRecord) -> dict[str, str]:
        found = node_state(
            operations.get(node.node_id), leaving=node.leaving, instances=per_node[node.node_id]
        )
        if found != DRAINING:
            return {"state": found}
        here = [i for i in instances if i.node_id == node.node_id]
        labels = [f"{i.artifact}#{i.instance}" for i in here]
        removing = {f"{i.artifact}#{i.instance}" for i in here if i.state in REMOVING}
        return {"state": found, "waiting": drain_waits(node.node_id, labels, problems, removing)}

    return [
        NodeInfo(
            node_id=n.node_id,
            ingress=n.ingress,
            management=n.management,
            peer=n.peer,
            cpu=n.capacity.cpu,
            memory_mib=n.capacity.memory_mib,
            role=n.role,
            started_at=n.started_at,
            instances=per_node[n.node_id],
            active=active[n.node_id],
            leader=n.node_id == leader,
            problems=tuple(n.problems),
            **state(n),
        )
        for n in nodes
    ]


def summaries(blueprint: Blueprint) -> tuple[SliceSummary, ...]:
    """Its slices in short (`aether blueprint list`, `history`)."""
    return tuple(
        SliceSummary(
            artifact=s.artifact,
            instances=s.instances,
            strategy=str(s.strategy),
            health=describe_health(s.health) if s.health is not None else "",
        )
        for s in blueprint.slices
    )


def _info(blueprint: Blueprint) -> BlueprintInfo:
    return BlueprintInfo(
        name=blueprint.name,
        slices=summaries(blueprint),
        timestamp=blueprint.timestamp,
        source=blueprint.source,
    )


class Handlers:
    def __init__(
        self,
        kv: KV,
        invoker: ClusterInvoker,
        *,
        clock: Any = time.time,
        history: int = DEFAULT_KEEP,
        view: ClusterView | None = None,
    ) -> None:
        self.kv = kv
        self.history = history  # revisions kept per blueprint
        self.invoker = invoker
        self.clock = clock
        self.event_clock = EventClock(kv)
        self.view = view  # a watch-fed copy for `cluster_status` (else it reads the KV each time)

    async def _fresh(self) -> None:
        """One barrier through the Raft log: the reads that follow on this replica are linearizable."""
        with store_errors():
            await self.kv.barrier()

    async def _read(self, prefix: str) -> dict[str, Any]:
        """A local read; callers put one `_fresh()` before their reads (cheaper than a barrier each)."""
        return (await self._read_at(prefix))[0]

    async def _read_at(self, prefix: str) -> tuple[dict[str, Any], int]:
        """`_read`, and the revision the read saw."""
        with store_errors():
            listing = await self.kv.range(prefix)
        return {kv.key: kv for kv in listing.kvs}, listing.revision

    # ------------------------------------------------------------ blueprints

    async def validate_blueprint(self, text: str, source: str) -> BlueprintInfo:
        return _info(await read_blueprint(text, source))

    async def refuse_claimed(self, blueprint: Blueprint, source: str) -> dict[str, Blueprint]:
        """Refuse a blueprint with a slice another blueprint deploys; the stored blueprints."""
        stored = await self._blueprints()
        self._refuse_claimed(blueprint, source, stored)
        return stored

    @staticmethod
    def _refuse_claimed(blueprint: Blueprint, source: str, stored: Mapping[str, Blueprint]) -> None:
        claimed = {
            s.artifact.rsplit(":", 1)[0]: b.name
            for b in stored.values()
            for s in b.slices
            if b.name != blueprint.name
        }
        for spec in blueprint.slices:
            owner = claimed.get(spec.artifact.rsplit(":", 1)[0])
            if owner:
                raise RequestError(
                    ErrorKind.BAD_REQUEST,
                    f"{source}: {spec.artifact}: this slice is already deployed by blueprint {owner!r}",
                )

    async def current_revision(self) -> int:
        """The KV's revision now (after a barrier): what an operator's client sends its next change
        with (`since`, `control/_write_guard.py`)."""
        await self._fresh()
        return await self.local_revision()

    async def local_revision(self) -> int:
        """The revision this node's replica has applied (no barrier: at most the cluster's)."""
        with store_errors():
            return (await self.kv.get_with_revision(LEADER_KEY)).revision

    async def apply_blueprint(self, text: str, source: str, *, since: int | None = None) -> ApplyResult:
        """Store the blueprint as a new revision (the same content again keeps its number). A leader change
        on the way (a barrier, read or write that failed, or a write whose answer was lost) is waited out:
        the apply goes again until FAILOVER_TIME has passed (then 503; at once if the store has no
        quorum), and a write in doubt is sent again only while nothing else changed the blueprint
        (`store_revision`'s `in_doubt`): else 409, never an
        overwrite. `since`: the revision the client read; a blueprint changed after it is not written
        over (409, unless it holds this content already)."""
        blueprint = await read_blueprint(text, source, timestamp=self.clock())
        doing = "could not store the blueprint"
        in_doubt: int | None = None  # the mod revision a write whose answer was lost compared against
        deadline = trio.current_time() + FAILOVER_TIME
        wait = APPLY_RETRY_START
        claims_moved = 0  # attempts another blueprint's write of slices came between the check and write
        while True:  # (an attempt under way is not cut short: its requests have deadlines of their own)
            try:
                with store_errors(doing, passing=RESENDABLE):
                    await self.kv.barrier()  # the reads below are linearizable
                    claims = await claims_revision(self.kv)  # before the blueprints it guards
                    current = await self._blueprints_raw()
                    self._refuse_claimed(blueprint, source, current)
                    stored = await store_revision(
                        self.kv,
                        blueprint,
                        change="applied",
                        keep=self.history,
                        dedupe=True,
                        in_doubt=in_doubt,
                        since=since,
                        claims=claims,
                    )
                before = current.get(blueprint.name)
                result = applied(stored, notes=config_notes(before, blueprint))
                same = before is not None and before.revision == stored.blueprint.revision
                return attrs.evolve(result, unchanged=True) if same else result
            except ClaimsChanged as error:
                # another blueprint took slices meanwhile: check against it now, at once (its writer got
                # through, so the cluster moves on), but not for ever: every apply moves the claims, and
                # a stream of them on other nodes could win every time
                claims_moved += 1
                if claims_moved < ATTEMPTS:
                    continue
                raise RequestError(
                    ErrorKind.CONFLICT,
                    f"{error}, {ATTEMPTS} times over: the blueprints kept changing; try again",
                ) from None
            except RevisionConflict as error:
                raise RequestError(ErrorKind.CONFLICT, f"{error}; try again") from None
            except Superseded as error:
                raise RequestError(ErrorKind.CONFLICT, str(error)) from None
            except WriteInDoubt as error:
                in_doubt, last = error.compared, error
            except RESENDABLE as error:
                last = error
            if trio.current_time() >= deadline or isinstance(last, NoQuorumError):
                raise _apply_failed(doing, last, in_doubt is not None)
            await trio.sleep(wait)
            wait = min(wait * 2, APPLY_RETRY_MAX)

    async def _blueprints(self) -> dict[str, Blueprint]:
        return _decode_blueprints((await self._read(BLUEPRINTS)).values())

    async def _blueprints_raw(self) -> dict[str, Blueprint]:
        """`_blueprints`, with the KV's own errors (for a caller that retries them)."""
        return _decode_blueprints((await self.kv.range(BLUEPRINTS)).kvs)

    async def list_blueprints(self) -> list[BlueprintInfo]:
        await self._fresh()
        return [_info(b) for _, b in sorted((await self._blueprints()).items())]

    async def get_blueprint(self, name: str) -> BlueprintInfo:
        await self._fresh()
        blueprint = (await self._blueprints()).get(name)
        if blueprint is None:
            raise RequestError(ErrorKind.NOT_FOUND, f"no blueprint named {name!r}")
        return _info(blueprint)

    async def delete_blueprint(self, name: str, *, since: int | None = None) -> None:
        """Delete blueprint `name` (its revisions stay: rollback brings it back), leaving a tombstone;
        refused (409) if it changed after `since`, the revision the client read."""
        what = f"blueprint {name!r}"
        if not await self.set_guarded(
            BLUEPRINTS + name, None, holds=lambda found: found is None, since=since, what=what
        ):
            raise RequestError(ErrorKind.NOT_FOUND, f"no blueprint named {name!r}")

    async def set_guarded(
        self,
        key: str,
        value: bytes | None,
        *,
        holds: Callable[[KeyValue | None], bool],
        since: int | None,
        what: str,
        gone: str = "deleted",
    ) -> bool:
        """Make `key` hold `value` (None: no key) unless what it holds already `holds` (is what was asked);
        refused (409) if the key changed after `since` (`control/_write_guard.py`; `gone`: what the key's
        absence means, for the refusal). Whether it wrote."""
        for _ in range(3):  # (another writer's change between the read and the write: read again)
            await self._fresh()
            with store_errors(f"could not change {what}"):
                found, tombstone = await read_guarded(self.kv, key)
                if holds(found):
                    return False
                if changed_after(since, found, tombstone):
                    message = superseded_message(since or 0, found, what, gone=gone)
                    raise RequestError(ErrorKind.CONFLICT, message)
                ops = guarded_put(key, value) if value is not None else guarded_delete(key)
                if (await self.kv.txn(unchanged_since(key, found, tombstone), ops)).succeeded:
                    return True
        raise RequestError(ErrorKind.CONFLICT, f"{what} kept changing; try again")

    async def blueprint_status(self, name: str) -> BlueprintStatus:
        await self._fresh()
        blueprint = (await self._blueprints()).get(name)
        if blueprint is None:
            raise RequestError(ErrorKind.NOT_FOUND, f"no blueprint named {name!r}")
        instances = await self._instances()
        problems = await self._problems()
        rollouts = await self._rollouts()
        statuses = [
            slice_status_of(
                spec,
                instances,
                problem=problems.get(_slice_id(spec), ""),
                rollout=rollouts.get(_slice_id(spec)),
            )
            for spec in blueprint.slices
        ]
        return BlueprintStatus(name=name, slices=tuple(statuses))

    async def _rollouts(self) -> dict[str, RolloutInfo]:
        """The rollouts of `cluster/rollouts/` by artifact id (a record that does not decode: none)."""
        records, _ = decode_rollouts(await self._read(ROLLOUTS))
        return {artifact_id: rollout_info(record) for artifact_id, record in records.items()}

    async def _problems(self) -> dict[str, str]:
        return {
            key[len(PROBLEMS_PREFIX) :]: kv.value.decode()
            for key, kv in (await self._read(PROBLEMS_PREFIX)).items()
        }

    # ------------------------------------------------------------ slices

    async def _instances(self, raw: dict[str, Any] | None = None) -> list[InstanceInfo]:
        found = []
        for key, kv in sorted((raw if raw is not None else await self._read(SLICES)).items()):
            info = instance_info(key, kv)  # (a record that does not decode is skipped)
            if isinstance(info, InstanceInfo):
                found.append(info)
        return found

    async def list_slices(self) -> list[InstanceInfo]:
        await self._fresh()
        return await self._instances()

    async def instances_of(self, artifact: str) -> tuple[str, list[InstanceInfo]]:
        """`artifact` as named (group:artifact, or group:artifact:version for that version's alone;
        checked: a bad one is a bad request) and its instances."""
        artifact_id = self._artifact_id(artifact)
        versioned = artifact.count(":") == 2
        await self._fresh()
        return artifact if versioned else artifact_id, [
            i
            for i in await self._instances()
            if (i.artifact == artifact if versioned else i.artifact.rsplit(":", 1)[0] == artifact_id)
        ]

    async def slice_status(self, artifact: str) -> SliceStatus:
        await self._fresh()
        artifact_id = self._artifact_id(artifact)
        mine = tuple(i for i in await self._instances() if i.artifact.rsplit(":", 1)[0] == artifact_id)
        wanted = None
        for blueprint in (await self._blueprints()).values():
            for spec in blueprint.slices:
                if spec.artifact.rsplit(":", 1)[0] == artifact_id:
                    wanted = spec
        if wanted is None and not mine:
            raise RequestError(
                ErrorKind.NOT_FOUND, f"no blueprint deploys {artifact_id} and no instance of it exists"
            )
        problem = (await self._problems()).get(artifact_id, "")
        rollout = (await self._rollouts()).get(artifact_id)
        if wanted is not None:
            return slice_status_of(wanted, mine, problem=problem, rollout=rollout)
        # (no blueprint asks for it: what is left of it runs, none wanted)
        return SliceStatus(
            artifact=mine[0].artifact,
            desired=0,
            active=sum(1 for i in mine if i.state == "ACTIVE" and i.artifact == mine[0].artifact),
            instances=mine,
            problem=problem,
            rollout=rollout,
        )

    async def named_slice(self, artifact: str, *, served: bool = False) -> str:
        """The group:artifact of `artifact` (a bad one: 400). A version in it must be one a blueprint
        deploys (with `served`, or one an ACTIVE instance serves, as mid-rollout): a slice is named by
        group:artifact, and a version given that is not there is a mistake, never a filter (it was dropped:
        `slice scale g:a:0.1.0` scaled 0.5.0; found by an adversarial operator). One nothing deploys is
        left to the caller's own 404. Reads this replica's copy (callers read after their barrier)."""
        artifact_id = self._artifact_id(artifact)
        if artifact.count(":") != 2:
            return artifact_id
        version = Coordinates.parse(artifact).version
        versions = {
            Coordinates.parse(spec.artifact).version
            for blueprint in (await self._blueprints()).values()
            for spec in blueprint.slices
            if spec.artifact.rsplit(":", 1)[0] == artifact_id
        }
        if served:
            registry = self.invoker.registry
            versions |= {
                e.coordinates.version
                for entry in registry.entries(artifact_id)
                for e in registry.endpoints(artifact_id, entry)
            }
        if not versions or version in versions:
            return artifact_id
        raise RequestError(
            ErrorKind.BAD_REQUEST,
            f"{artifact}: {artifact_id} runs at version {', '.join(sorted(versions))}, not {version}; name"
            f" the slice without a version ({artifact_id}): a version is not a filter",
        )

    @staticmethod
    def _artifact_id(artifact: str) -> str:
        try:
            if artifact.count(":") == 2:
                return Coordinates.parse(artifact).artifact_id
            return parse_artifact_id(artifact)
        except InvalidCoordinatesError as error:
            raise RequestError(ErrorKind.BAD_REQUEST, error.message) from None

    async def invoke(self, artifact: str, entry: str, payload: Any, *, timeout: float | None = None) -> Any:
        """The call, given `timeout` seconds (the node's configured invoke timeout if None). A call that
        finds no endpoint is told as the invoker tells it (`routing/_no_endpoint.py`): a slice nothing
        serves and no blueprint deploys (a typo in its name, most often) is a 404 `no_endpoint`, a deployed
        one whose instances are all down a 503 `unavailable`; the blueprints are read from the store for a
        404, so a deploy this node's copy has not seen yet is not taken for a typo."""
        artifact_id = await self.named_slice(artifact, served=True)  # (no I/O without a version)
        try:
            return await self.invoker.invoke(artifact_id, entry, payload, timeout, source="api")
        except NoEndpointError as error:
            if error.kind != ErrorKind.NO_ENDPOINT or self.invoker.registry.entries(artifact_id):
                raise
            await self._fresh()  # (on this path only: a deploy through another node a moment ago counts)
            deployed = deployments((await self._blueprints()).values()).get(artifact_id)
            if not deployed:
                raise
            raise no_endpoint_error(artifact_id, entry, entries=set(), deployed=deployed) from None

    async def entry_points(self, artifact: str) -> list[EntryInfo]:
        """The entry points ACTIVE instances of `artifact` serve (from this node's endpoint table); one is
        idempotent if every instance that serves it declares it so."""
        artifact_id = self._artifact_id(artifact)
        registry = self.invoker.registry
        found = []
        for name in sorted(registry.entries(artifact_id)):
            endpoints = registry.endpoints(artifact_id, name)
            if endpoints:
                found.append(EntryInfo(name=name, idempotent=all(e.idempotent for e in endpoints)))
        return found

    # ------------------------------------------------------------ cluster

    async def _nodes(self) -> list[NodeRecord]:
        return [record for record, _ in node_records(await self._read(NODES)).values()]

    async def _leader_node(self) -> str | None:
        with store_errors():
            claim = await self.kv.get(LEADER_KEY)
        if claim is None:
            return None
        try:
            return decode_record(LEADER_KEY, claim.value, LeaderClaim).node_id
        except RecordError:
            return None

    async def nodes(self) -> list[NodeInfo]:
        await self._fresh()
        return await self._node_infos(await self._instances())

    async def _node_infos(self, instances: list[InstanceInfo]) -> list[NodeInfo]:
        operations = decode_operations(await self._read(NODE_OPS))
        problems = await self._problems() if operations else {}
        return _node_infos(await self._nodes(), instances, await self._leader_node(), operations, problems)

    async def _status(self) -> Status:
        with store_errors():
            return await self.kv.status()

    async def cluster_status(self) -> ClusterStatus:
        status = await self._status()
        if self.view is not None and self.view.ready:
            return self._cached_status(status, self.view.snapshot())
        nodes = await self.nodes()
        instances = await self._instances()
        blueprints = await self._blueprints()
        expected = await self._expected()
        return self._summary(
            status,
            nodes,
            instances,
            blueprints,
            expected,
            rollouts=await self._rollouts(),
            replicas=await self._replica_names(),
        )

    async def _replica_names(self) -> dict[str, str]:
        """Raft address → the node whose KV replica it is (`replica_names`)."""
        return replica_names(await self._read(REPLICAS), await self._nodes())

    def _cached_status(self, status: Status, snapshot: Snapshot) -> ClusterStatus:
        """`cluster_status` from the watch-fed view: derived once per change of the view and of the KV
        status, so an unchanged cluster answers in constant time however many instances it runs."""
        key = (
            "status",
            status.has_quorum,
            status.term,
            status.revision,
            status.self_address,
            tuple((m.raft_address, m.connected) for m in status.members),
            status.problems,
        )
        found = snapshot.derived.get(key)
        if not isinstance(found, ClusterStatus):
            snapshot.derived.clear()  # one status per view is enough
            nodes = _node_infos(
                snapshot.nodes, snapshot.instances, snapshot.leader, snapshot.operations, snapshot.problems
            )
            found = self._summary(
                status,
                nodes,
                snapshot.instances,
                snapshot.blueprints,
                snapshot.expected,
                rollouts={artifact_id: rollout_info(r) for artifact_id, r in snapshot.rollouts.items()},
                undecodable=snapshot.undecodable,
                replicas=snapshot.replicas,
            )
            snapshot.derived[key] = found
        return found

    async def _expected(self) -> list[str]:
        with store_errors():
            return await expected_nodes(self.kv)

    async def forget_node(self, node_id: str) -> dict[str, str]:
        """Stop expecting a node that is gone for good (it is no longer counted as missing)."""
        await self._fresh()
        if node_id in {n.node_id for n in await self._nodes()}:
            raise RequestError(
                ErrorKind.CONFLICT,
                f"node {node_id} is registered: a running node is not forgotten; stop it"
                f" (`aether node stop {node_id}`) and it leaves by itself",
            )
        with store_errors("could not forget the node"):
            forgotten = await forget(self.kv, node_id)
        if not forgotten:
            raise RequestError(ErrorKind.NOT_FOUND, f"node {node_id} is not expected by the cluster")
        return {"forgotten": node_id}

    @staticmethod
    def _summary(
        status: Status,
        nodes: list[NodeInfo],
        instances: list[InstanceInfo],
        blueprints: dict[str, Blueprint],
        expected: list[str],
        *,
        rollouts: Mapping[str, RolloutInfo] | None = None,
        undecodable: Mapping[str, str] | None = None,
        replicas: Mapping[str, str] | None = None,
    ) -> ClusterStatus:
        """The status; `rollouts`: the slices' rollouts by artifact id (a blue-green one SWITCHED keeps
        its old set without keeping the blueprint from converging); `undecodable`: the records the
        cluster skips because they do not decode (key → why; from the watch-fed view only); `replicas`:
        Raft address → the node whose KV replica it is, to name it (an address not in it is shown as
        it is)."""
        failed = [i for i in instances if i.state == "FAILED"]
        leader = next((n.node_id for n in nodes if n.leader), None)
        registered = {n.node_id for n in nodes}
        missing = tuple(n for n in expected if n not in registered)
        statuses = _slice_statuses(blueprints, instances, rollouts or {})
        convergence = _convergence(statuses)
        unconverged = {name: why for name, why in sorted(convergence.items()) if why}
        disconnected = tuple(
            m.raft_address
            for m in status.members
            if not m.connected and m.raft_address != status.self_address
        )
        reasons = []
        if not status.has_quorum:
            reasons.append("the KV store has no quorum: it cannot commit anything")
        elif leader is None:
            reasons.append("no node leads the cluster (a leader is being elected)")
        if missing:
            reasons.append(
                f"{len(registered & set(expected))} of {len(expected)} expected nodes are registered;"
                f" missing: {', '.join(missing)}"
            )
        reasons += [f"blueprint {name} has not converged: {why}" for name, why in unconverged.items()]
        if failed:
            shown = "; ".join(f"{i.artifact}#{i.instance} on {i.node_id}: {i.reason}" for i in failed[:3])
            more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
            reasons.append(f"{plural(len(failed), 'instance')} FAILED: {shown}{more}")
        if disconnected:
            names = replicas or {}
            unreached = ", ".join(replica_label(address, names) for address in disconnected)
            reasons.append(
                f"KV replica {replica_label(status.self_address, names)} is not connected to {unreached}"
            )
        reasons += status.problems  # each names its replica ("KV replica …: disk full: …")
        reasons += [f"node {n.node_id}: {problem}" for n in nodes for problem in n.problems]
        if undecodable:
            shown = "; ".join(list(undecodable.values())[:3])
            more = f" (and {len(undecodable) - 3} more)" if len(undecodable) > 3 else ""
            one = len(undecodable) == 1
            reasons.append(
                f"{plural(len(undecodable), 'KV record')} that {'does' if one else 'do'} not decode, skipped"
                f" (fix or delete {'it' if one else 'them'}): {shown}{more}"
            )
        return ClusterStatus(
            leader=leader,
            term=status.term,
            revision=status.revision,
            has_quorum=status.has_quorum,
            healthy=not reasons,
            nodes=tuple(nodes),
            blueprints=len(blueprints),
            instances=len(instances),
            active=sum(1 for i in instances if i.state == "ACTIVE"),
            failed=len(failed),
            expected_nodes=tuple(expected),
            missing_nodes=missing,
            unconverged=tuple(unconverged),
            disconnected_replicas=disconnected,
            reasons=tuple(reasons),
            kept_for_rollback=kept_for_rollback(s for _, slices in sorted(statuses.items()) for s in slices),
        )

    async def overview(self) -> Overview:
        """Status, nodes, every slice's desired vs ACTIVE and every instance, from one linearizable view."""
        status = await self._status()
        await self._fresh()
        raw, revision = await self._read_at(SLICES)
        instances = await self._instances(raw)
        nodes = await self._node_infos(instances)
        blueprints = await self._blueprints()
        problems = await self._problems()
        rollouts = await self._rollouts()
        paused = decode_paused(await self._read(PAUSED))
        active = collections.Counter((i.artifact, i.config_digest) for i in instances if i.state == "ACTIVE")
        slices = tuple(
            SliceTarget(
                blueprint=name,
                artifact=spec.artifact,
                desired=spec.instances,
                active=active[spec.artifact, config_digest(spec.config)],
                problem=problems.get(spec.artifact.rsplit(":", 1)[0], ""),
                rollout=rollouts.get(spec.artifact.rsplit(":", 1)[0]),
                update=update_of(spec).strategy.value,
                paused=spec.artifact.rsplit(":", 1)[0] in paused,
            )
            for name, blueprint in sorted(blueprints.items())
            for spec in blueprint.slices
        )
        return Overview(
            status=self._summary(
                status,
                nodes,
                instances,
                blueprints,
                await self._expected(),
                rollouts=rollouts,
                replicas=await self._replica_names(),
            ),
            slices=slices,
            instances=tuple(instances),
            revision=revision,
        )

    async def calls(self) -> ClusterCalls:
        """Every node's call statistics, summed per entry point (nodes that do not answer are named)."""
        await self._fresh()
        return await self.invoker.cluster_calls(await self._nodes(), now=self.clock())

    # ------------------------------------------------------------ events

    async def recent_events(
        self, limit: int, selection: EventFilter = ALL_EVENTS
    ) -> tuple[list[ClusterEvent], int]:
        """The last `limit` cluster events that match `selection` (from the store's history) and the
        revision they end at. Looks back 20 revisions per event wanted, then further (×8 each time, up to
        the whole history the store keeps) while too few matched."""
        for _ in range(3):  # compaction may overtake a scan; start over from a new status then
            status = await self._status()
            oldest = max(status.compact_revision + 1, 1)
            window = max(limit, 1) * 20
            try:
                while True:
                    start = max(oldest, status.revision - window + 1)
                    found = await self._history(start, status.revision, selection)
                    if len(found) >= limit or start <= oldest:
                        return await self._timed(found[-limit:]), status.revision
                    window *= 8
            except CompactedError:
                continue
        raise RequestError(
            ErrorKind.UNAVAILABLE, "the store's history moved on too fast to be read; try again"
        )

    async def events_after(
        self, since: int, limit: int, selection: EventFilter = ALL_EVENTS
    ) -> list[ClusterEvent]:
        """The first `limit` cluster events after revision `since` that match `selection`, oldest first,
        and the others of the last one's revision (an agent that polls reads on from the last revision it
        saw, missing none and seeing none twice).
        Looks forward 20 revisions per event wanted, then further (×8 each time) while too few matched."""
        await self.check_history(since)
        status = await self._status()
        found: list[tuple[bool, ClusterEvent]] = []
        start, window = since + 1, max(limit, 1) * 20
        try:
            while start <= status.revision and len(found) < limit:
                end = min(status.revision, start + window - 1)
                found += await self._history(start, end, selection)
                start, window = end + 1, window * 8
        except CompactedError:
            await self.check_history(since)  # says that the history moved past `since`
            raise RequestError(
                ErrorKind.UNAVAILABLE, "the store's history moved on too fast to be read; try again"
            ) from None
        return await self._timed(_whole_revisions(found, limit))

    async def _timed(self, found: list[tuple[bool, ClusterEvent]]) -> list[ClusterEvent]:
        """The events, those marked as needing one with their stamped time (`_event_clock`)."""
        revisions = [event.revision for timed, event in found if timed]
        with store_errors():
            times = await self.event_clock.times(revisions) if revisions else {}
        # (a time that cannot be stamped now, without a quorum, stays 0.0: unknown, not made up)
        return [attrs.evolve(e, timestamp=times.get(e.revision, 0.0)) if timed else e for timed, e in found]

    async def describe(self, raw: Event, selection: EventFilter = ALL_EVENTS) -> list[ClusterEvent]:
        """The events of one KV change that match `selection`, with their times (for event streams).
        Never raises: a time that cannot be read now is left unknown (0.0), the stream goes on."""
        timed = needs_time(raw)
        found = [(timed, e) for e in describe(raw) if selection.matches(e)]
        try:
            return await self._timed(found)
        except RequestError:
            return [e for _, e in found]

    async def _history(self, start: int, end: int, selection: EventFilter) -> list[tuple[bool, ClusterEvent]]:
        """The events of revisions start..end that match, each marked if its time is to be looked up.
        Every revision has at least one change, so the watch of every key reaches `end`."""
        if start > end:
            return []
        found: list[tuple[bool, ClusterEvent]] = []
        stream = self.kv.watch("", start)
        try:
            with trio.fail_after(10), store_errors(passing=(CompactedError,)):
                while True:
                    batch = await stream.__anext__()
                    for raw in batch:
                        if raw.revision <= end:
                            timed = needs_time(raw)
                            found += [(timed, e) for e in describe(raw) if selection.matches(e)]
                    if batch[-1].revision >= end:
                        return found
        except trio.TooSlowError:
            raise RequestError(ErrorKind.UNAVAILABLE, "reading the store's history took too long") from None
        finally:
            await stream.aclose()

    async def check_history(self, since: int) -> None:
        """That events after revision `since` can still be read from the store's history."""
        status = await self._status()
        if since < 0:
            raise RequestError(ErrorKind.BAD_REQUEST, f"since: must be a revision ≥ 0, got {shown(since)}")
        if since < status.compact_revision:
            raise RequestError(
                ErrorKind.BAD_REQUEST,
                f"since: revision {since} is no longer in the history (it starts after revision"
                f" {status.compact_revision}); read the state again and follow from its revision",
            )

    def follow(self, start_revision: int):  # type: ignore[no-untyped-def]
        return self.kv.watch("", start_revision)


def _whole_revisions(found: list[tuple[bool, ClusterEvent]], limit: int) -> list[tuple[bool, ClusterEvent]]:
    """The first `limit` events, and the others of the last one's revision (one change can say several
    things: a reader that goes on after that revision would miss the rest)."""
    end = min(limit, len(found))
    while 0 < end < len(found) and found[end][1].revision == found[end - 1][1].revision:
        end += 1
    return found[:end]


def rollout_info(record: RolloutRecord) -> RolloutInfo:
    return RolloutInfo(
        artifact=record.artifact_id,
        strategy=record.strategy,
        stable=record.stable,
        candidate=record.candidate,
        phase=record.phase.value,
        step=record.step,
        share=record.share,
        since=record.since,
        reason=record.reason,
        config_changed=record.stable_config is not None,
        candidate_config=record.candidate_config,
    )
