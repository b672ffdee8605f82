"""The agent lease: at most one AI agent operates the cluster at a time (the MCP service takes it).

The lease is one KV key bound to a KV lease: it goes when its holder releases it, or when the holder's
service stops renewing it (a dead service loses it within `ttl` seconds). A holder proves itself with a
secret token it chose; the token is never shown to anyone else. Writes go through Raft like every write.
"""

from __future__ import annotations

import re
import time
from typing import Any

import attrs

from aether_kv import KV, Compare, CompareOp, CompareTarget, LeaseNotFoundError, Put

from ..client import AgentLease
from ..core._error_kinds import ErrorKind
from ..core._errors import RequestError
from ..core._kv_errors import store_errors
from ..core._records import SCHEMA_VERSION, RecordError, decode_record, encode_record

AGENT_LEASE_KEY = "agents/lease"
MIN_TTL, MAX_TTL = 2.0, 300.0
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


@attrs.frozen(kw_only=True)
class AgentLeaseRecord:
    holder: str
    token: str
    since: float
    ttl: float
    schema_version: int = SCHEMA_VERSION


def check_request(holder: object, token: object, ttl: object) -> tuple[str, str, float]:
    """Validate an acquire request; a RequestError (bad_request) names the field at fault."""
    if not isinstance(holder, str) or not 1 <= len(holder.strip()) <= 200:
        raise RequestError(
            ErrorKind.BAD_REQUEST, "holder: expected a description of the agent, 1 to 200 characters"
        )
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise RequestError(
            ErrorKind.BAD_REQUEST, "token: expected 16 to 128 characters of A-Z, a-z, 0-9, _ or -"
        )
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not MIN_TTL <= ttl <= MAX_TTL:
        raise RequestError(
            ErrorKind.BAD_REQUEST, f"ttl: expected a number of seconds from {MIN_TTL:g} to {MAX_TTL:g}"
        )
    return holder.strip(), token, float(ttl)


def _public(record: AgentLeaseRecord) -> AgentLease:
    return AgentLease(holder=record.holder, since=record.since, ttl=record.ttl)


def _since(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


class AgentLeases:
    def __init__(self, kv: KV, *, clock: Any = time.time) -> None:
        self.kv = kv
        self.clock = clock

    async def _current(self) -> tuple[Any, AgentLeaseRecord | None]:
        stored = await self.kv.get(AGENT_LEASE_KEY, linearizable=True)
        if stored is None:
            return None, None
        try:
            return stored, decode_record(AGENT_LEASE_KEY, stored.value, AgentLeaseRecord)
        except RecordError:
            return stored, None

    async def current(self) -> AgentLease | None:
        with store_errors():
            _, record = await self._current()
        return None if record is None else _public(record)

    async def acquire(self, holder: object, token: object, ttl: object) -> AgentLease:
        """Take the lease, or renew it if `token` already holds it. Another holder → a `conflict` error
        that names it."""
        holder, token, ttl = check_request(holder, token, ttl)
        with store_errors("could not take the agent lease"):
            for _ in range(5):
                stored, record = await self._current()
                if stored is None or record is None:
                    if await self._create(holder, token, ttl, stored):
                        return AgentLease(holder=holder, since=self.clock(), ttl=ttl)
                    continue
                if record.token != token:
                    raise RequestError(
                        ErrorKind.CONFLICT,
                        f"another agent is operating this cluster: {record.holder} (since"
                        f" {_since(record.since)}). Only one agent at a time: the lease goes when that"
                        f" agent disconnects, or at most {record.ttl:g} s after its MCP service stops.",
                    )
                try:
                    await self.kv.lease_keepalive(stored.lease)
                except LeaseNotFoundError:
                    continue  # it expired a moment ago; its key is going away with it
                return _public(record)
        raise RequestError(
            ErrorKind.UNAVAILABLE, "could not take the agent lease: it changed hands repeatedly"
        )

    async def _create(self, holder: str, token: str, ttl: float, stored: Any) -> bool:
        lease = await self.kv.lease_grant(ttl)
        record = AgentLeaseRecord(holder=holder, token=token, since=self.clock(), ttl=ttl)
        expected = 0 if stored is None else stored.mod_revision
        result = await self.kv.txn(
            [
                Compare(
                    key=AGENT_LEASE_KEY, target=CompareTarget.MOD_REVISION, op=CompareOp.EQ, operand=expected
                )
            ],
            [Put(key=AGENT_LEASE_KEY, value=encode_record(record), lease=lease.lease)],
        )
        if not result.succeeded:
            await self.kv.lease_revoke(lease.lease)
        return result.succeeded

    async def release(self, token: object) -> bool:
        """Give the lease up if `token` holds it; True if it did. Idempotent."""
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise RequestError(
                ErrorKind.BAD_REQUEST, "token: expected 16 to 128 characters of A-Z, a-z, 0-9, _ or -"
            )
        with store_errors("could not release the agent lease"):
            try:
                stored, record = await self._current()
                if record is None or record.token != token:
                    return False
                await self.kv.lease_revoke(stored.lease)
            except LeaseNotFoundError:
                return False
        return True
