"""The leader's autoscaler: the I/O shell around the pure controller (`_autoscale.decide`).

While this node leads (`follow_while_leading`), once a second it asks every live node for its usage per
slice (`observe/_slice_usage.py`: this node directly, the others over the peer connections, never through
consensus), turns the answers into a `Reading` per autoscaled slice, keeps a window of them, and asks
`decide`. An up or down becomes a new revision of the slice's blueprint, written like `aether slice scale`
does (`_rescale.scaled_blueprint`, change `autoscaled group:artifact from A to B`); decisions are recorded
at `cluster/autoscale-decisions/{group:artifact}` (each write is an `autoscale_decision` event). Every
write is fenced on the leader's claim. A node that does not answer in time counts as missing: the
controller holds ("partial") and the recorded decision says which node.

A new leader reads when each slice was last scaled from the blueprint's revision history, so cooldowns
survive a leader change; its window starts empty ("warming up"). Paused slices (`cluster/autoscale/`,
`aether slice autoscale pause`) get no decision. A KV error ends the pass; `follow_while_leading` starts
over after a backoff. Never raises out of `run` but on cancellation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from aether_kv import KV, Compare, CompareOp, CompareTarget, Put

from ..core._bad_records import log_once
from ..core._blueprint import Blueprint
from ..core._kv_cache import KVCache
from ..core._records import (
    AutoscaleLog,
    AutoscaleSettings,
    LeaderClaim,
    NodeRecord,
    RecordError,
    decode_record,
    encode_record,
)
from ..core._schema import (
    AUTOSCALE,
    AUTOSCALE_DECISIONS,
    BLUEPRINTS,
    LEADER_KEY,
    NODES,
    autoscale_decisions_key,
)
from ._autoscale import Action, Decision, Reading, decide, reading_for, trim
from ._autoscale_plan import (
    Scaled,
    appended,
    autoscaled,
    entry_of,
    last_scaled_at,
    paused_decision,
    scale_change,
    worth_recording,
)
from ._cluster_manager import LeadershipMonitor, follow_while_leading
from ._rescale import RescaleError, scaled_blueprint
from ._revisions import DEFAULT_KEEP, RevisionConflict, history, store_revision
from ._write_guard import Superseded

log = logging.getLogger("aether_node.autoscaler")

USAGE_TIMEOUT = 0.8  # seconds a node has to give its usage; later counts as no answer (partial)

# node's peer address, timeout → its usage answer (raises on no answer)
AskPeer = Callable[[str, float], Awaitable[Any]]


def decode_settings(data: Mapping[str, Any]) -> dict[str, AutoscaleSettings]:
    """`cluster/autoscale/` records → artifact id → settings (records that do not decode are skipped)."""
    found = {}
    for key, item in data.items():
        try:
            found[key[len(AUTOSCALE) :]] = decode_record(key, item.value, AutoscaleSettings)
        except RecordError as error:
            log_once(log, error, key, item.mod_revision)
    return found


def decode_log(key: str, value: bytes | None) -> AutoscaleLog | None:
    if value is None:
        return None
    try:
        return decode_record(key, value, AutoscaleLog)
    except RecordError:
        return None


class Autoscaler:
    def __init__(
        self,
        kv: KV,
        node_id: str,
        *,
        local_usage: Callable[[], Any],
        ask_peer: AskPeer,
        interval: float = 1.0,
        keep: int = DEFAULT_KEEP,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kv = kv
        self.node_id = node_id
        self.local_usage = local_usage
        self.ask_peer = ask_peer
        self.interval = interval
        self.keep = keep
        self.clock = clock

    async def run(self, leadership: LeadershipMonitor) -> None:
        """Forever: lead the autoscaling while this node leads. Runs until cancelled."""
        await follow_while_leading(leadership, self._lead, "autoscaler")

    async def _fence(self) -> Compare:
        """The leader's claim, once the cluster manager of this node has written it."""
        while True:
            found = await self.kv.get(LEADER_KEY, linearizable=True)
            if found is not None:
                try:
                    claim = decode_record(LEADER_KEY, found.value, LeaderClaim)
                except RecordError:
                    claim = None
                if claim is not None and claim.node_id == self.node_id:
                    return Compare(
                        key=LEADER_KEY,
                        target=CompareTarget.MOD_REVISION,
                        op=CompareOp.EQ,
                        operand=found.mod_revision,
                    )
            await trio.sleep(0.2)

    async def _lead(self) -> None:
        fence = await self._fence()
        cache = KVCache(self.kv, [BLUEPRINTS, NODES, AUTOSCALE, AUTOSCALE_DECISIONS])
        windows: dict[str, list[Reading]] = {}
        scaled_at: dict[str, float | None] = {}
        counts: dict[str, int] = {}  # the count each slice had when its last scale time was read
        async with trio.open_nursery() as nursery:
            await nursery.start(cache.run)
            while True:
                started = trio.current_time()
                targets = autoscaled(self._blueprints(cache), decode_settings(cache.data[AUTOSCALE]))
                for gone in set(windows) - {t.artifact_id for t in targets}:
                    del windows[gone]
                    scaled_at.pop(gone, None)
                    counts.pop(gone, None)
                if targets:
                    nodes = self._nodes(cache)
                    answers = await self._gather(nodes)
                    at = self.clock()
                    for target in targets:
                        if counts.get(target.artifact_id) != target.slice.instances:
                            # first seen, or scaled by someone else (`slice scale`, an apply, a
                            # rollback): when, from the revisions
                            revisions = await history(self.kv, target.blueprint)
                            scaled_at[target.artifact_id] = last_scaled_at(revisions, target.artifact_id)
                            counts[target.artifact_id] = target.slice.instances
                        reading = reading_for(target.artifact_id, at, answers)
                        before = windows.get(target.artifact_id, [])
                        window = trim([*before, reading], at, target.spec)
                        windows[target.artifact_id] = window
                        step = self._step(cache, target, window, sorted(nodes), at, scaled_at, fence)
                        counts[target.artifact_id] = await step
                await trio.sleep_until(started + self.interval)

    async def _step(
        self,
        cache: KVCache,
        target: Scaled,
        window: list[Reading],
        expected: list[str],
        at: float,
        scaled_at: dict[str, float | None],
        fence: Compare,
    ) -> int:
        """Decide for one slice and carry it out; the count its blueprint asks for afterwards."""
        current = target.slice.instances
        if target.paused:
            decision = paused_decision(current, target.spec)
        else:
            decision = decide(
                target.spec,
                current=current,
                window=window,
                expected=expected,
                now=at,
                last_scaled_at=scaled_at.get(target.artifact_id),
                min_available=target.slice.min_available,
            )
        if decision.action is not Action.HOLD:
            if not await self._scale(cache, target, decision, fence):
                return current
            scaled_at[target.artifact_id] = at
        await self._record(cache, target.artifact_id, decision, at, fence)
        return decision.target

    async def _scale(self, cache: KVCache, target: Scaled, decision: Decision, fence: Compare) -> bool:
        """Write the decision as a new revision of the slice's blueprint; whether it was written."""
        current = cache.data[BLUEPRINTS].get(BLUEPRINTS + target.blueprint)
        if current is None:
            return False
        try:
            blueprint = decode_record(current.key, current.value, Blueprint)
            scaled = scaled_blueprint(blueprint, target.index, decision.target, timestamp=self.clock())
        except (RecordError, RescaleError) as error:
            log.warning("cannot autoscale %s: %s", target.artifact_id, error)
            return False
        change = scale_change(target.artifact_id, decision.current, decision.target)
        try:  # (as of the copy it scaled: an operator's apply or delete since is not written over)
            stored = await store_revision(
                self.kv, scaled, change=change, keep=self.keep, fence=fence, since=current.mod_revision
            )
        except RevisionConflict as error:
            log.warning("autoscaling %s: %s", target.artifact_id, error)
            return False
        except Superseded:
            log.info(
                "autoscaling %s: its blueprint changed since this pass read it; decided again next",
                target.artifact_id,
            )
            return False
        log.info("%s", decision.message(target.artifact_id))
        await cache.caught_up(BLUEPRINTS, stored.kv_revision)  # the next pass sees the new count
        return True

    async def _record(
        self, cache: KVCache, artifact_id: str, decision: Decision, at: float, fence: Compare
    ) -> None:
        key = autoscale_decisions_key(artifact_id)
        found = cache.data[AUTOSCALE_DECISIONS].get(key)
        before = decode_log(key, found.value if found else None)
        entry = entry_of(decision, artifact_id, at)
        if not worth_recording(entry, before):
            return
        result = await self.kv.txn([fence], [Put(key=key, value=encode_record(appended(before, entry)))])
        if result.succeeded:
            await cache.caught_up(AUTOSCALE_DECISIONS, result.revision)

    def _blueprints(self, cache: KVCache) -> list[Blueprint]:
        found = []
        for key, item in sorted(cache.data[BLUEPRINTS].items()):
            try:
                found.append(decode_record(key, item.value, Blueprint))
            except RecordError:
                continue  # (the cluster manager logs it)
        return found

    def _nodes(self, cache: KVCache) -> dict[str, str]:
        """Live nodes that are not leaving → their peer address."""
        found = {}
        for key, item in cache.data[NODES].items():
            try:
                record = decode_record(key, item.value, NodeRecord)
            except RecordError:
                continue
            if not record.leaving:
                found[record.node_id] = record.peer
        return found

    async def _gather(self, nodes: Mapping[str, str]) -> dict[str, Any]:
        """node id → its usage answer, None for a node that did not answer within USAGE_TIMEOUT."""
        answers: dict[str, Any] = dict.fromkeys(nodes)

        async def ask(node_id: str, peer: str) -> None:
            if node_id == self.node_id:
                answers[node_id] = self.local_usage()
                return
            if not peer:
                return
            with trio.move_on_after(USAGE_TIMEOUT):
                try:
                    answers[node_id] = await self.ask_peer(peer, USAGE_TIMEOUT)
                except Exception as error:  # whatever a peer does, it only counts as no answer
                    log.debug("no usage from %s: %r", node_id, error)

        async with trio.open_nursery() as nursery:
            for node_id, peer in nodes.items():
                nursery.start_soon(ask, node_id, peer)
        return answers
