"""The audit log's writer: each change made through the management API is put at
`cluster/audit/{node-id}` (an `AuditRecord`: who, method, path, target, status, when), and every such put
is one `audit` event in the KV's history (`observe/_events.py` reads it back), so the log costs one key
per node and reads like every other event.

Never fails the request it records: the change has been made (or refused) already. A record that cannot
be written within 2 s is logged and dropped.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from aether_kv import KV, KVError

from ..core._records import AuditRecord, encode_record
from ..core._schema import audit_key

log = logging.getLogger("aether_node.api")
WRITE_WITHIN = 2.0
MAX_TEXT = 200  # a path or target longer than this is cut (a client chose it)


class AuditLog:
    def __init__(self, kv: KV, node_id: str, *, clock: Any = time.time) -> None:
        self.kv = kv
        self.node_id = node_id
        self.clock = clock

    async def record(self, who: str, method: str, path: str, target: str, status: int) -> None:
        record = AuditRecord(
            who=who,
            method=method,
            route=path[:MAX_TEXT],
            target=target[:MAX_TEXT],
            status=status,
            at=self.clock(),
            node_id=self.node_id,
        )
        with trio.move_on_after(WRITE_WITHIN) as scope:
            try:
                await self.kv.put(audit_key(self.node_id), encode_record(record))
                return
            except KVError as error:
                log.warning("audit record lost (%s %s by %s): %s", method, path, who, error.message)
                return
        if scope.cancelled_caught:
            log.warning("audit record lost (%s %s by %s): no answer from the store", method, path, who)
