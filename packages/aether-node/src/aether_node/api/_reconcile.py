"""`aether cluster policy show|set` and `aether cluster rebalance`: the cluster's reconciliation policy
(`cluster/reconcile/policy`, `ReconcilePolicy`), the blueprints that override it, the lost nodes whose
instances wait a rebalance delay, and an operator's request to end every such wait now
(`cluster/reconcile/rebalance`). Protocol-agnostic like `_handlers`: typed request in, typed result out,
or a RequestError. Bad input is refused before anything is written; the leader
(`control/_cluster_manager.py`) acts on its next pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from ..client import BlueprintPolicy, LostNodeInfo, ReconcilePolicyInfo
from ..control._rebalance import decode_reconcile
from ..control._write_guard import holds_setting
from ..core._error_kinds import ErrorKind
from ..core._errors import RequestError
from ..core._kv_errors import store_errors
from ..core._reconcile_spec import KEYS, ReconcilePolicy, parse_policy, resolve
from ..core._records import RebalanceRequest, encode_record
from ..core._schema import REBALANCE_KEY, RECONCILE, RECONCILE_POLICY
from ..core._table_problems import Problem
from ._handlers import Handlers


def _settings(policy: ReconcilePolicy | None) -> dict[str, float]:
    """The values a layer sets (its preset apart)."""
    if policy is None:
        return {}
    values = {"rebalance_delay_s": policy.rebalance_delay_s, "max_moves": policy.max_moves}
    return {k: float(v) for k, v in values.items() if v is not None}


def _refuse(found: Sequence[Problem]) -> RequestError:
    return RequestError(ErrorKind.BAD_REQUEST, "; ".join(f"{p.path}: {p.message}" for p in found))


class ReconcileOperations:
    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers
        self.kv = handlers.kv
        self.clock = handlers.clock

    async def status(self) -> ReconcilePolicyInfo:
        await self.handlers._fresh()
        state = decode_reconcile(await self.handlers._read(RECONCILE))
        resolved = resolve(state.policy)
        blueprints = tuple(
            BlueprintPolicy(
                name=b.name,
                preset=b.policy.preset,
                settings=_settings(b.policy),
                rebalance_delay_s=(mine := resolve(state.policy, b.policy)).rebalance_delay_s,
                max_moves=mine.max_moves,
            )
            for b in sorted((await self.handlers._blueprints()).values(), key=lambda b: b.name)
            if b.policy is not None
        )
        awaited = state.awaited()
        lost = tuple(
            LostNodeInfo(
                node_id=node_id,
                since=record.since,
                instances=record.instances,
                delay_s=record.delay_s,
                awaited=node_id in awaited,
            )
            for node_id, record in sorted(state.lost.items())
        )
        return ReconcilePolicyInfo(
            rebalance_delay_s=resolved.rebalance_delay_s,
            max_moves=resolved.max_moves,
            preset=state.policy.preset if state.policy else "",
            settings=_settings(state.policy),
            blueprints=blueprints,
            lost=lost,
        )

    async def set(self, raw: Any, *, since: int | None = None) -> ReconcilePolicyInfo:
        """Lay `raw` (preset, rebalance_delay_s, max_moves; a None value changes nothing) over the
        cluster's policy. A preset given drops the values set before that are not given again: `set
        --preset conservative` gives exactly the preset. Not over a policy changed after `since` (the
        revision the client read) to another one."""
        if not isinstance(raw, dict):
            raise RequestError(ErrorKind.BAD_REQUEST, "the policy must be a JSON object")
        given = {k: v for k, v in raw.items() if v is not None}
        if not given:
            raise RequestError(
                ErrorKind.BAD_REQUEST, f"nothing to set: give any of {', '.join(sorted(KEYS))}"
            )
        changes = parse_policy(given, "policy", _refuse)
        await self.handlers._fresh()
        before = decode_reconcile(await self.handlers._read(RECONCILE)).policy
        base = ReconcilePolicy() if changes.preset or before is None else before  # (a preset: afresh)
        updated = attrs.evolve(
            base,
            preset=changes.preset or base.preset,
            rebalance_delay_s=base.rebalance_delay_s
            if changes.rebalance_delay_s is None
            else changes.rebalance_delay_s,
            max_moves=base.max_moves if changes.max_moves is None else changes.max_moves,
            updated=self.clock(),
        )
        await self.handlers.set_guarded(
            RECONCILE_POLICY,
            encode_record(updated),
            holds=holds_setting(updated),
            since=since,
            what="the reconciliation policy",
        )
        return await self.status()

    async def rebalance(self, *, since: int | None = None) -> ReconcilePolicyInfo:
        """End the wait of every node lost until now, or until `since` (the revision the client read:
        a late copy ends no wait of a node lost after it); the leader compares revisions, so nothing
        lost later is touched, and replaces their instances on its next pass. Never moves the mark
        back (a late copy after a later rebalance changes nothing)."""
        covers = 0
        if since is not None:
            await self.handlers._fresh()
            covers = max(since, decode_reconcile(await self.handlers._read(RECONCILE)).rebalanced_at)
        request = RebalanceRequest(requested_at=self.clock(), covers=covers)
        with store_errors("could not ask for a rebalance"):
            await self.kv.put(REBALANCE_KEY, encode_record(request))
        return await self.status()
