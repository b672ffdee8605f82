"""Operations on the cluster beyond applying blueprints: blueprint history, rollback and diff, scaling a
slice (a new revision of its blueprint), promoting or aborting a slice's canary or blue-green rollout,
and node operations (cordon, uncordon, drain, stop, restart). Protocol-agnostic
like `_handlers`, whose reads and errors they share: typed request in, typed result out, or a
RequestError. Bad input is refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import trio

from aether_kv import Compare, CompareOp, CompareTarget, EventKind, KeyValue, KVError, Put

from ..client import (
    ApplyResult,
    BlueprintDiff,
    BlueprintRevision,
    NodeInfo,
    PauseInfo,
    RolloutInfo,
)
from ..control._cluster_manager import observe_data
from ..control._diff import diff_blueprint
from ..control._node_ops import LEAVING, decode_operations, quorum_lost_by_stopping, split_operations
from ..control._pause import decode_paused, pause_specs
from ..control._rebalance import decode_reconcile
from ..control._rescale import RescaleError, scaled_blueprint
from ..control._revisions import (
    ATTEMPTS,
    ClaimsChanged,
    RevisionConflict,
    claims_revision,
    history,
    read_current,
    store_revision,
)
from ..control._strategies import RolloutCommandError, carried_on, command, decode_rollouts
from ..control._write_guard import Superseded, superseded_message
from ..core._blueprint import Blueprint
from ..core._blueprint_toml import MAX_INSTANCES
from ..core._error_kinds import ErrorKind
from ..core._errors import RequestError
from ..core._kv_errors import store_errors
from ..core._records import (
    NodeOperation,
    NodeOperationRecord,
    NodeRecord,
    NodeStopRequest,
    PausedRollout,
    RecordError,
    RolloutPhase,
    RolloutRecord,
    decode_record,
    encode_record,
)
from ..core._schema import (
    BLUEPRINTS,
    NODE_OPS,
    NODE_STOPS,
    NODES,
    PAUSED,
    RECONCILE,
    ROLLOUTS,
    SLICES,
    node_op_key,
    node_stop_key,
    paused_key,
    rollout_key,
)
from ..core._text import plural, shown
from ..core._update_spec import UpdateStrategy
from ._handlers import Handlers, applied, node_records, read_blueprint, rollout_info, summaries

NODE_OPERATIONS = ("cordon", "uncordon", "drain", "stop", "restart")
ROLLOUT_OPERATIONS = ("promote", "abort")
PAUSE_OPERATIONS = ("pause", "resume")
STOP_WAIT = 5.0  # seconds `node stop` waits for the node to say it is leaving
HISTORY_READ_TIME = 2.0  # seconds a promote or abort may spend reading its rollout's recent history


class Operations:
    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers
        self.kv = handlers.kv
        self.keep = handlers.history
        self.clock = handlers.clock

    async def store(
        self,
        blueprint: Blueprint,
        change: str,
        *,
        dedupe: bool = False,
        since: int | None = None,
        claims: int | None = None,
        retry_claims: bool = False,
    ) -> ApplyResult:
        try:
            with store_errors("could not store the blueprint"):
                stored = await store_revision(
                    self.kv,
                    blueprint,
                    change=change,
                    keep=self.keep,
                    dedupe=dedupe,
                    since=since,
                    claims=claims,
                )
        except ClaimsChanged:
            if retry_claims:
                raise
            raise RequestError(ErrorKind.CONFLICT, "the blueprints changed meanwhile; try again") from None
        except RevisionConflict as error:
            raise RequestError(ErrorKind.CONFLICT, f"{error}; try again") from None
        except Superseded as error:
            raise RequestError(ErrorKind.CONFLICT, str(error)) from None
        return applied(stored)

    # ------------------------------------------------------------ blueprint history

    async def _history(self, name: str) -> tuple[list[Blueprint], Blueprint | None]:
        await self.handlers._fresh()
        with store_errors():
            kept = await history(self.kv, name)
            current, _ = await read_current(self.kv, name)
        if not kept and current is None:
            raise RequestError(ErrorKind.NOT_FOUND, f"no blueprint named {name!r}")
        return kept, current

    async def blueprint_history(self, name: str) -> list[BlueprintRevision]:
        kept, current = await self._history(name)
        at = current.revision if current else -1
        return [
            BlueprintRevision(
                name=b.name,
                revision=b.revision,
                timestamp=b.timestamp,
                change=b.change,
                current=b.revision == at,
                slices=summaries(b),
                source=b.source,
            )
            for b in kept
        ]

    async def rollback(self, name: str, to: int | None, *, since: int | None = None) -> ApplyResult:
        """Apply revision `to` (default: the one before the current) again, as a new revision (not over a
        blueprint changed after `since`, the revision the client read, unless it holds that content)."""
        kept, current = await self._history(name)
        numbers = [b.revision for b in kept]
        if to is None:
            at = current.revision if current else max(numbers, default=0) + 1
            earlier = [b for b in kept if b.revision < at]
            if not earlier:
                raise RequestError(
                    ErrorKind.BAD_REQUEST,
                    f"blueprint {name!r} has no revision before {at} to roll back to"
                    f" (revisions kept: {', '.join(map(str, numbers)) or 'none'})",
                )
            target = earlier[-1]
        else:
            target = next((b for b in kept if b.revision == to), None)
            if target is None:
                raise RequestError(
                    ErrorKind.NOT_FOUND,
                    f"blueprint {name!r} has no revision {to}"
                    f" (revisions kept: {', '.join(map(str, numbers)) or 'none'})",
                )
        blueprint = attrs.evolve(target, timestamp=self.clock())
        change = f"rolled back to revision {target.revision}"
        for _ in range(ATTEMPTS):
            with store_errors():
                claims = await claims_revision(self.kv)  # before the blueprints refuse_claimed reads
            await self.handlers.refuse_claimed(target, f"revision {target.revision}")
            try:
                return await self.store(blueprint, change, since=since, claims=claims, retry_claims=True)
            except ClaimsChanged:  # another blueprint took slices meanwhile: check against it now
                continue
        raise RequestError(ErrorKind.CONFLICT, "the blueprints kept changing during this rollback; try again")

    # ------------------------------------------------------------ diff

    async def diff(self, text: str, source: str) -> BlueprintDiff:
        blueprint = await read_blueprint(text, source, timestamp=self.clock())
        await self.handlers._fresh()
        await self.handlers.refuse_claimed(blueprint, source)
        prefixes = (BLUEPRINTS, NODES, SLICES, NODE_OPS, ROLLOUTS, PAUSED, RECONCILE)
        data = {prefix: await self.handlers._read(prefix) for prefix in prefixes}
        stored, nodes, instances, stopping = observe_data(data)
        cordoned, draining = split_operations(decode_operations(data[NODE_OPS]))
        records, _ = decode_rollouts(data[ROLLOUTS])
        reconcile = decode_reconcile(data[RECONCILE])
        return diff_blueprint(
            blueprint,
            stored,
            nodes,
            instances,
            now=self.clock(),
            stopping=stopping,
            cordoned=cordoned,
            draining=draining,
            rollouts=records,
            paused=frozenset(decode_paused(data[PAUSED])),
            lost=reconcile.awaited(),
            policy=reconcile.policy,
            retried=reconcile.retried,
        )

    async def _deployed(self, artifact_id: str) -> list[tuple[Blueprint, int]]:
        """(blueprint, index of the slice) of each blueprint that deploys `artifact_id` (read after a
        barrier); refused (404) when none does, so that a command on a slice that is not deployed says
        so rather than what the slice lacks."""
        holders = [
            (b, i)
            for b in (await self.handlers._blueprints()).values()
            for i, s in enumerate(b.slices)
            if s.artifact.rsplit(":", 1)[0] == artifact_id
        ]
        if not holders:
            raise RequestError(
                ErrorKind.NOT_FOUND, f"no blueprint deploys {artifact_id}: apply one that does first"
            )
        return holders

    # ------------------------------------------------------------ scale

    async def scale(self, artifact: str, instances: Any, *, since: int | None = None) -> ApplyResult:
        """A new revision of the blueprint that deploys `artifact`, with `instances` of it (not over a
        blueprint changed after `since`, the revision the client read, unless it has that count)."""
        if isinstance(instances, bool) or not isinstance(instances, int):
            raise RequestError(
                ErrorKind.BAD_REQUEST, f"instances: expected a whole number, got {shown(instances)}"
            )
        if not 0 <= instances <= MAX_INSTANCES:
            raise RequestError(
                ErrorKind.BAD_REQUEST,
                f"instances: must be between 0 and {MAX_INSTANCES}, got {shown(instances)}",
            )
        # As of the blueprints read here if the client says no revision of its own: the scaled copy is
        # never written over a change that came after the read (an apply that took a slice out, another
        # blueprint given it since: the stale copy would put it back, two blueprints deploying it).
        read_at = await self.handlers.current_revision()
        since = read_at if since is None else since
        artifact_id = await self.handlers.named_slice(artifact)
        holders = await self._deployed(artifact_id)
        if len(holders) > 1:
            names = ", ".join(sorted(repr(b.name) for b, _ in holders))
            raise RequestError(
                ErrorKind.CONFLICT,
                f"{artifact_id} is in several blueprints ({names}): change the one you mean",
            )
        blueprint, index = holders[0]
        spec = blueprint.slices[index]
        if spec.min_available is not None and instances < spec.min_available:
            raise RequestError(
                ErrorKind.BAD_REQUEST,
                f"{artifact_id}: cannot scale to {instances}: below its min_available of"
                f" {spec.min_available} (lower min_available in blueprint {blueprint.name!r} first)",
            )
        try:
            scaled = scaled_blueprint(blueprint, index, instances, timestamp=self.clock())
        except RescaleError as error:  # the stored source could not be rewritten as expected
            raise RequestError(ErrorKind.CONFLICT, f"cannot scale {artifact_id}: {error}") from None
        change = f"scaled {artifact_id} from {spec.instances} to {instances}"
        result = await self.store(scaled, change, dedupe=True, since=since)
        if spec.instances != instances:
            return result
        # (the same blueprint: its revision as it was, whose change is some earlier one's)
        already = f"{artifact_id} has {plural(instances, 'instance')} already: nothing changed"
        return attrs.evolve(result, unchanged=True, notes=(*result.notes, already))

    # ------------------------------------------------------------ rollouts

    async def rollout(self, artifact: str, operation: str, *, since: int | None = None) -> RolloutInfo:
        """`promote` or `abort` the canary or blue-green rollout of a slice: its record, changed only if
        no one (the leader) changed it since it was read; the leader carries it out. Refused for a slice
        no blueprint deploys (404) and for one with no rollout its phase lets it take (409). `since`: the
        revision the client read; a rollout changed after it is not commanded (a late promote must not
        promote the next rollout), unless it ended as the command would end it (done)."""
        if operation not in ROLLOUT_OPERATIONS:
            raise RequestError(
                ErrorKind.NOT_FOUND,
                f"no rollout operation {operation!r} (known: {', '.join(ROLLOUT_OPERATIONS)})",
            )
        await self.handlers._fresh()
        artifact_id = await self.handlers.named_slice(artifact, served=True)
        key = rollout_key(artifact_id)
        for _ in range(3):  # the leader may be writing the same record: read again and retry
            await self.handlers._fresh()
            await self._deployed(artifact_id)
            with store_errors(f"could not read the rollout of {artifact_id}"):
                current = await self.kv.get(key)
            records, _ = decode_rollouts({key: current} if current is not None else {})
            if (
                since is not None
                and current is not None
                and current.mod_revision > since
                and not await self._carried_on_since(key, since, current)
            ):
                return _commanded_already(records.get(artifact_id), operation, since, current, artifact_id)
            try:
                changed = command(
                    records.get(artifact_id), operation, now=self.clock(), artifact_id=artifact_id
                )
            except RolloutCommandError as error:
                raise RequestError(ErrorKind.CONFLICT, str(error)) from None
            unchanged = Compare(
                key=key,
                target=CompareTarget.MOD_REVISION,
                op=CompareOp.EQ,
                operand=current.mod_revision if current is not None else 0,
            )
            with store_errors(f"could not {operation} the rollout of {artifact_id}"):
                result = await self.kv.txn([unchanged], [Put(key=key, value=encode_record(changed))])
            if result.succeeded:
                return rollout_info(changed)
        raise RequestError(ErrorKind.CONFLICT, f"the rollout of {artifact_id} keeps changing; try again")

    async def _carried_on_since(self, key: str, since: int, current: KeyValue) -> bool:
        """Whether the rollout at `key` (`current`) is the one it held at revision `since`, only advanced
        by the leader since (`_strategies.carried_on`), read from the store's history of the key: the
        value it held at `since` (the first change after it says what it replaced) and every value after;
        False if that history is gone (compacted) or cannot be read now (the command is then refused as
        before)."""
        if current.create_revision > since:
            return False  # (made after it: another rollout)
        between: list[RolloutRecord | None] = []
        watch = self.kv.watch(key, since + 1)
        try:
            now = decode_record(key, current.value, RolloutRecord)
            with trio.fail_after(HISTORY_READ_TIME):
                async for events in watch:
                    for event in events:
                        if event.kv.key != key:  # (a key the prefix also matches)
                            continue
                        if not between:  # what the key held at `since`, that this change replaced
                            between.append(_rollout_or_none(key, event.prev))
                        gone = event.kind is EventKind.DELETE
                        between.append(None if gone else _rollout_or_none(key, event.kv))
                        if event.revision >= current.mod_revision:
                            return carried_on(now, between)
        except (KVError, RecordError, trio.TooSlowError):
            return False
        finally:
            await watch.aclose()
        return False

    # ------------------------------------------------------------ pause and resume

    async def pause(self, artifact: str, operation: str, *, since: int | None = None) -> PauseInfo:
        """`pause` or `resume` the rolling update of a slice (`cluster/paused/{artifact}`); refused for a
        slice no blueprint deploys (404) or one whose update is canary or blue-green (409: promote or
        abort it), and if its pause changed after `since` (the revision the client read) to the other."""
        if operation not in PAUSE_OPERATIONS:
            raise RequestError(
                ErrorKind.NOT_FOUND, f"no operation {operation!r} (known: {', '.join(PAUSE_OPERATIONS)})"
            )
        await self.handlers._fresh()
        artifact_id = await self.handlers.named_slice(artifact)
        blueprint, index = (await self._deployed(artifact_id))[0]
        spec = blueprint.slices[index]
        if spec.update is not None and spec.update.strategy is not UpdateStrategy.ROLLING:
            raise RequestError(
                ErrorKind.CONFLICT,
                f"{artifact_id} updates by {spec.update.strategy.value}, not rolling: promote or abort its"
                " rollout instead",
            )
        key = paused_key(artifact_id)
        record = PausedRollout(since=self.clock())
        resume = operation == "resume"
        await self.handlers.set_guarded(
            key,
            None if resume else encode_record(record),
            holds=lambda found: (found is None) == resume,
            since=since,
            what=f"the pause of {artifact_id}'s update",
            gone="ended (resumed)",
        )
        if resume:
            return PauseInfo(artifact=artifact_id, paused=False)
        record = decode_paused(await self.handlers._read(PAUSED)).get(artifact_id, record)
        data = {prefix: await self.handlers._read(prefix) for prefix in (BLUEPRINTS, NODES, SLICES)}
        _, _, instances, _ = observe_data(data)
        held = pause_specs([spec], instances, {artifact_id: record})
        status = (
            held.problems[0].message
            if held.problems
            else "no version change in progress: the next one stays where it starts until resumed"
        )
        return PauseInfo(artifact=artifact_id, paused=True, since=record.since, status=status)

    # ------------------------------------------------------------ node operations

    async def node_operation(
        self, node_id: str, operation: str, *, since: int | None = None, force: bool = False
    ) -> NodeInfo:
        """cordon, uncordon, drain (not over a node operation changed after `since`, the revision the
        client read, to another one), stop or restart (refused if that would leave the KV store without
        a majority of its replicas up, unless `force`)."""
        if operation not in NODE_OPERATIONS:
            raise RequestError(
                ErrorKind.NOT_FOUND, f"no node operation {operation!r} (known: {', '.join(NODE_OPERATIONS)})"
            )
        await self.handlers._fresh()
        registered = {n.node_id for n in await self.handlers._nodes()}
        operations = decode_operations(await self.handlers._read(NODE_OPS))
        if node_id not in registered and not (operation == "uncordon" and node_id in operations):
            known = ", ".join(sorted(registered)) or "none"
            # (a node that is not running cannot restart itself: it restarts in its own process)
            gone = (
                "; a node that is not running is started where it runs (`aether-node run` with its"
                " configuration; a dev cluster: `aether dev down`, then `aether dev up`)"
                if operation == "restart"
                else ""
            )
            raise RequestError(
                ErrorKind.NOT_FOUND, f"no node {node_id!r} is registered (registered: {known}){gone}"
            )
        if operation in ("stop", "restart"):
            return await self._stop(node_id, restart=operation == "restart", force=force, since=since)
        key = node_op_key(node_id)
        wanted = {"cordon": NodeOperation.CORDONED, "drain": NodeOperation.DRAINING}.get(operation)

        def holds(found: KeyValue | None) -> bool:
            now = decode_operations({key: found}).get(node_id) if found is not None else None
            return wanted is None if now is None else now.operation is wanted

        record = NodeOperationRecord(operation=wanted, since=self.clock()) if wanted is not None else None
        await self.handlers.set_guarded(
            key,
            encode_record(record) if record is not None else None,
            holds=holds,
            since=since,
            what=f"node {node_id}'s cordon or drain",
            gone="ended (uncordoned)",
        )
        await self.handlers._fresh()
        for info in await self.handlers._node_infos(await self.handlers._instances()):
            if info.node_id == node_id:
                return info
        return _absent(node_id)

    async def _stop(
        self, node_id: str, *, restart: bool = False, force: bool = False, since: int | None = None
    ) -> NodeInfo:
        """Ask the node (this run of it) to stop gracefully (and, `restart`, to start again as the same
        process: `node/_cli.py`), then wait until it says it is leaving (or is gone) for up to STOP_WAIT
        seconds; its state then. Refused (409) if its KV replica's stop would take the store's majority
        away, counting the replicas of nodes leaving or asked to stop already as gone (unless `force`),
        and if the node registered again after `since` (the revision the client read: a late copy of
        the request is for the run before). Done at once if that run is leaving already."""
        doing = "restart" if restart else "stop"
        for _ in range(3):  # (another stop request written between the read and the write: again)
            await self.handlers._fresh()
            nodes = node_records(await self.handlers._read(NODES))
            asked = await self.handlers._read(NODE_STOPS)
            if node_id not in nodes:
                return attrs.evolve(_absent(node_id), state=LEAVING)  # gone already: it has left
            record, registration = nodes[node_id]
            if since is not None and registration.create_revision > since:
                raise RequestError(
                    ErrorKind.CONFLICT,
                    f"node {node_id} registered again at revision {registration.create_revision}, after"
                    f" revision {since} that this request was made from (started again, by an earlier"
                    f" copy of this request or by another): this {doing} was for the run before, and"
                    " nothing was sent; read the nodes again and decide",
                )
            if record.leaving:
                return await self._node_state(node_id)
            if not force:
                await self._refuse_losing_quorum(node_id, record, nodes, asked, doing)
            request = NodeStopRequest(
                started_at=record.started_at, requested_at=self.clock(), restart=restart
            )
            # No other stop lands in between: two stops checked at once would each pass alone.
            others = [
                Compare(
                    key=key,
                    target=CompareTarget.MOD_REVISION,
                    op=CompareOp.EQ,
                    operand=asked[key].mod_revision if key in asked else 0,
                )
                for key in (node_stop_key(n) for n in nodes if n != node_id)
            ]
            with store_errors(f"could not ask node {node_id} to {doing}"):
                put = Put(key=node_stop_key(node_id), value=encode_record(request))
                if (await self.kv.txn(others, [put])).succeeded:
                    break
        else:
            raise RequestError(ErrorKind.CONFLICT, f"other nodes kept being stopped; {doing} {node_id} again")
        with trio.move_on_after(STOP_WAIT):
            while True:  # (this replica's own copy, no barrier: a forced stop may take the majority away)
                last = next((n for n in await self.handlers._nodes() if n.node_id == node_id), None)
                if last is None or last.leaving:
                    break
                await trio.sleep(0.1)
        return await self._node_state(node_id)

    async def _refuse_losing_quorum(
        self,
        node_id: str,
        record: NodeRecord,
        nodes: Mapping[str, tuple[NodeRecord, KeyValue]],
        asked: Mapping[str, KeyValue],
        doing: str,
    ) -> None:
        """Refuse (409) a stop of `node_id` that would leave the KV store fewer replicas up than its
        majority: those its replica's peers are connected to, less the replicas of nodes that are
        leaving or have a stop request already."""
        with store_errors(f"could not check the KV store's replicas before the {doing} of {node_id}"):
            status = await self.kv.status()
        stopping = {
            other.raft
            for other_id, (other, _) in nodes.items()
            if other_id != node_id and other.raft and (other.leaving or node_stop_key(other_id) in asked)
        }
        why = quorum_lost_by_stopping(status, record.raft, stopping=stopping)
        if why is not None:
            try:  # (the replicas down named by their nodes too: only a label, the refusal stands without)
                names = await self.handlers._replica_names()
                why = quorum_lost_by_stopping(status, record.raft, stopping=stopping, names=names)
            except RequestError:
                pass
            raise RequestError(
                ErrorKind.CONFLICT,
                f"a {doing} of node {node_id} (KV replica {record.raft}) would {why}; bring the replicas"
                f" that are down back first (`aether cluster status`), or {doing} it anyway with force"
                " (the CLI's --force, the MCP tools' force)",
                override="force",
            )

    async def _node_state(self, node_id: str) -> NodeInfo:
        for info in await self.handlers._node_infos(await self.handlers._instances()):
            if info.node_id == node_id:
                return info
        return attrs.evolve(_absent(node_id), state=LEAVING)  # gone already: it has left


def _rollout_or_none(key: str, found: KeyValue | None) -> RolloutRecord | None:
    """The rollout record `found` holds (None: no value). Raises RecordError if it does not decode."""
    return decode_record(key, found.value, RolloutRecord) if found is not None else None


def _commanded_already(
    record: RolloutRecord | None, operation: str, since: int, current: KeyValue, artifact_id: str
) -> RolloutInfo:
    """A late `promote` or `abort`: done if the rollout ended as it asks, else refused (409)."""
    ended = RolloutPhase.PROMOTED if operation == "promote" else RolloutPhase.ABORTED
    if record is not None and record.phase is ended:
        return rollout_info(record)
    raise RequestError(
        ErrorKind.CONFLICT, superseded_message(since, current, f"the rollout of {artifact_id}")
    )


def _absent(node_id: str) -> NodeInfo:
    """A node that is not registered (uncordoned while gone, or stopped already)."""
    return NodeInfo(
        node_id=node_id,
        ingress="",
        management="",
        peer="",
        cpu=0.0,
        memory_mib=0,
        role="",
        started_at=0.0,
        instances=0,
        active=0,
        leader=False,
    )
