"""A graceful stop asked through the management API (`aether node stop` or `restart`): follows this
node's `cluster/node-stop/{node-id}` key and sets an event when a request for this run (its
`started_at`) is there, saying whether a restart was asked; `serve_node` then runs its graceful stop, as
on SIGTERM, and (a restart) tells its caller to start the node again. A restart the node could not come
back from (its configuration, read again, is refused) is not done: the node runs on and says why. Only
reads; a record that does not decode, or is for another run, is ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs
import trio

from aether_kv import KV

from ..core._kv_cache import KVCache
from ..core._records import NodeStopRequest, RecordError, decode_record
from ..core._schema import node_stop_key

log = logging.getLogger("aether_node.node")


@attrs.define
class StopAsked:
    """Set once a stop of this run was asked through the API; `restart`: start again after it."""

    event: trio.Event = attrs.field(factory=trio.Event)
    restart: bool = False


async def follow_stop_requests(
    kv: KV,
    node_id: str,
    started_at: float,
    requested: StopAsked,
    *,
    startable: Callable[[], str | None] | None = None,
    refused: Callable[[str], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Set `requested` (and whether it is a restart) once a stop request for this run is stored; runs
    until cancelled (then it ends its watch). A restart is refused if `startable()` says why the node
    would not start again (its configuration edited since, and broken): the node goes on running, and
    `refused(why)` is awaited (it drops the request and says so). Ready at once: a KV error while
    following is the supervisor's to retry, never a start-up failure of the node."""
    key = node_stop_key(node_id)
    cache = KVCache(kv, [key])
    task_status.started()
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)
        while not requested.event.is_set():
            changed = cache.changed
            found = cache.data[key].get(key)  # (the prefix also matches longer ids: the exact key only)
            if found is not None:
                try:
                    request = decode_record(key, found.value, NodeStopRequest)
                except RecordError as error:
                    log.error("%s", error.message)
                else:
                    ours = request.started_at == started_at
                    refusing = ours and request.restart and startable is not None
                    problem = startable() if refusing else None  # (reads the configuration files)
                    if problem is not None:
                        log.error(
                            "node %s: a restart was asked, but the node would not start again: %s;"
                            " it goes on running",
                            node_id,
                            problem,
                        )
                        if refused is not None:
                            await refused(problem)
                    elif ours:
                        what = "restart" if request.restart else "graceful stop"
                        log.info("node %s: a %s was asked through the API", node_id, what)
                        requested.restart = request.restart
                        requested.event.set()
                        continue
            await changed.wait()
        await trio.sleep_forever()  # the node stops now and cancels this
