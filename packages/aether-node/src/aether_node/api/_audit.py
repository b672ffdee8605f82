"""The audit log's writer: each change made through the management API is put at
`cluster/audit/{node-id}` (an `AuditRecord`: who, method, path, target, status, when), and every such put
is one `audit` event in the KV's history (`observe/_events.py` reads it back), so the log costs one key
per node and reads like every other event.

Never fails the request it records: the change has been made (or refused) already. A write the store did
not take for now (no leader yet, a leader change: its outcome unknown) is sent again until
`WRITE_WITHIN` (a leader change takes less; an outcome unknown sent again is a record twice at worst,
where one lost was a change nobody could account for: stopping the leader's node lost its own record);
a record still not written then is logged and dropped.

Refused requests (an answer of 400 or more) are paced per identity (`RefusalPacing`): 10 at once, then
one a second; the others are counted, and the next record of that identity says how many went
unrecorded. Each record is a Raft write and an event, and the history holds the last 20,000 events: a
viewer key sending refused changes in a loop pushed every real event out of it within minutes, and with
them the revisions a resumed event stream, a change "as of" a revision and a rollout command read.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from aether_kv import KV, ConnectionLostError, KVError, OutcomeUnknownError, UnavailableError

from ..core._records import AuditRecord, encode_record
from ..core._schema import audit_key
from ..core._text import visible

log = logging.getLogger("aether_node.api")
WRITE_WITHIN = 5.0
WRITE_AGAIN_AFTER = 0.25
MAX_TEXT = 200  # a path or target longer than this is cut (a client chose it)


def _text(value: str) -> str:
    """A client's path or target as recorded: at most `MAX_TEXT` characters, its control characters, line
    separators and bidi overrides written as escapes, so that no reader of the log (an operator's
    terminal, an agent reading events through MCP) sees a made-up line."""
    return visible(value[:MAX_TEXT], one_line=True)


REFUSALS_AT_ONCE = 10  # refused requests of one identity recorded one by one in a burst
REFUSALS_PER_SECOND = 1.0  # and after it


class RefusalPacing:
    """Which refused requests of an identity get a record of their own: a token bucket per identity
    (`REFUSALS_AT_ONCE`, refilled at `REFUSALS_PER_SECOND`). Pure: the caller passes the time."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # who → (tokens, when counted)
        self._unrecorded: dict[str, int] = {}  # who → refusals not recorded since its last record

    def admit(self, who: str, now: float) -> int | None:
        """A refusal of `who` at `now`: None if it goes unrecorded (counted), else how many went
        unrecorded before it (the count starts again)."""
        tokens, then = self._buckets.get(who, (float(REFUSALS_AT_ONCE), now))
        # (the wall clock may step back: time that went backwards refills nothing, and takes nothing)
        tokens = min(float(REFUSALS_AT_ONCE), tokens + max(0.0, now - then) * REFUSALS_PER_SECOND)
        if tokens < 1.0:
            self._buckets[who] = (tokens, now)
            self._unrecorded[who] = self._unrecorded.get(who, 0) + 1
            return None
        self._buckets[who] = (tokens - 1.0, now)
        return self._unrecorded.pop(who, 0)

    def recorded(self, who: str) -> int:
        """A record of `who` that is not a refusal is written: how many refusals went unrecorded before
        it (the count starts again)."""
        return self._unrecorded.pop(who, 0)


class AuditLog:
    def __init__(self, kv: KV, node_id: str, *, clock: Any = time.time) -> None:
        self.kv = kv
        self.node_id = node_id
        self.clock = clock
        self.refusals = RefusalPacing()

    async def record(self, who: str, method: str, path: str, target: str, status: int) -> None:
        now = self.clock()
        unrecorded = self.refusals.admit(who, now) if status >= 400 else self.refusals.recorded(who)
        if unrecorded is None:
            return
        record = AuditRecord(
            who=who,
            method=method,
            route=_text(path),
            target=_text(target),
            status=status,
            at=now,
            node_id=self.node_id,
            unrecorded=unrecorded,
        )
        last = "no answer from the store"
        with trio.move_on_after(WRITE_WITHIN):
            while True:
                try:
                    await self.kv.put(audit_key(self.node_id), encode_record(record))
                    return
                except (UnavailableError, OutcomeUnknownError, ConnectionLostError) as error:
                    last = error.message  # (for now: a leader change is over within WRITE_WITHIN)
                except KVError as error:
                    last = error.message
                    break
                await trio.sleep(WRITE_AGAIN_AFTER)
        log.warning("audit record lost (%s %s by %s): %s", method, path, who, last)
