"""Cluster events → MCP notifications. Follows the cluster's event stream (`/api/v1/events/stream`, the
same one `aether cluster events --follow` reads) and publishes "resource updated" and "resource list
changed" to the MCP subscription bus. Nothing polls: a notification goes out when the cluster says
something changed. If the stream breaks (its node died), it reconnects to another node and, since events
may have been missed meanwhile, tells subscribers that everything may have changed. Rounds that keep
failing (the cluster down, or a bug here) are retried 1 s apart doubling to 30 s (`RetryPacing`), and a
bug's traceback is logged once per spell of the same error, not once a round.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.subscriptions import ResourcesListChanged, ResourceUpdated, ServerEvent

from aether_node.client import ClusterEvent

from ._errors import ClusterError
from ._gateway import ClusterGateway
from ._resources import CLUSTER_STATUS, affected, blueprint_uri, slice_owners, slice_uri

log = logging.getLogger("aether_mcp.notifications")

Publish = Callable[[ServerEvent], Awaitable[None]]


def cluster_error_in(error: BaseException) -> ClusterError | None:
    """`error` if it is a ClusterError, or the first of a (nested) exception group made of nothing else
    (what a task group raises); None otherwise. Pure."""
    if isinstance(error, ClusterError):
        return error
    if isinstance(error, BaseExceptionGroup):
        found = [cluster_error_in(inner) for inner in error.exceptions]
        if found and all(found):
            return found[0]
    return None


def leaves_of(error: BaseException) -> list[BaseException]:
    """The errors in `error`, a (nested) exception group's taken out of it: a bug raised inside the task
    group and raised on its own next round is the same error. Pure."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves_of(inner)]
    return [error]


class RetryPacing:
    """How long the pump waits before its next round: `first` after a round that went well (it delivered
    an event, or lasted long enough: `EventPump.healthy_after`), doubling up to `longest` while rounds
    keep failing. Pure."""

    def __init__(self, first: float, longest: float) -> None:
        self.first = first
        self.longest = max(first, longest)
        self._last = 0.0

    def after(self, *, went_well: bool) -> float:
        self._last = self.first if went_well or not self._last else min(self.longest, self._last * 2)
        return self._last


class EventPump:
    def __init__(
        self,
        gateway: ClusterGateway,
        publish: Publish,
        *,
        retry: float = 1.0,
        longest: float = 30.0,
        healthy_after: float = 30.0,
    ) -> None:
        self.gateway = gateway
        self.publish = publish
        self.pacing = RetryPacing(retry, longest)
        self.healthy_after = healthy_after  # s a round must last to count as gone well without an event
        self.owners: dict[str, str] = {}
        self.delivered = 0  # events turned into notifications (for tests and logs)

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        started = False
        last_bug = ""  # the unexpected error of the spell of rounds failing so (its traceback was logged)
        while True:
            delivered, began = self.delivered, anyio.current_time()
            failure = "the stream ended"
            try:
                revision = (await self.gateway.call(lambda c: c.cluster_status())).revision
                await self._refresh_owners()
                if started:
                    await self._everything_changed()
                send, receive = anyio.create_memory_object_stream[ClusterEvent](math.inf)
                async with anyio.create_task_group() as group:
                    group.start_soon(self._follow, send)
                    if not started:
                        started = True
                        task_status.started()
                    async with receive:
                        async for event in receive:
                            if event.revision > revision:
                                await self._deliver(event)
            except Exception as error:  # (a group too: from the task group, around the publishing)
                cluster_error = cluster_error_in(error)
                if cluster_error is not None:
                    failure = cluster_error.message
                else:  # a bug here, or the bus's, must not end the service: say it, and start over
                    failure = f"unexpected error: {'; '.join(map(repr, leaves_of(error)))}"
                    if failure != last_bug:
                        log.exception("cluster event stream: unexpected error; starting over")
                    last_bug = failure
            went_well = self.delivered > delivered or anyio.current_time() - began >= self.healthy_after
            if went_well:
                last_bug = ""
            wait = self.pacing.after(went_well=went_well)
            log.warning("cluster event stream: %s; starting over in %.3g s", failure, wait)
            if not started:
                started = True
                task_status.started()
            await anyio.sleep(wait)

    async def _follow(self, send: anyio.abc.ObjectSendStream[ClusterEvent]) -> None:
        def pump() -> None:
            try:
                for event in self.gateway.client.follow_events(limit=1):
                    anyio.from_thread.run(send.send, event)
            except Exception as error:  # the stream broke, or the service is stopping; run() decides
                log.info("cluster event stream ended: %s", error)
            finally:
                with contextlib.suppress(Exception):  # the event loop may be gone already
                    anyio.from_thread.run(send.aclose)

        await anyio.to_thread.run_sync(pump, abandon_on_cancel=True)

    async def _refresh_owners(self) -> None:
        self.owners = slice_owners(await self.gateway.call(lambda c: c.list_blueprints()))

    async def _deliver(self, event: ClusterEvent) -> None:
        if event.kind in ("blueprint_applied", "blueprint_deleted"):
            try:
                await self._refresh_owners()
            except ClusterError as error:
                log.info("could not refresh blueprints: %s", error.message)
        uris, list_changed = affected(event, self.owners)
        for uri in uris:
            await self.publish(ResourceUpdated(uri=uri))
        if list_changed:
            await self.publish(ResourcesListChanged())
        self.delivered += 1

    async def _everything_changed(self) -> None:
        await self.publish(ResourceUpdated(uri=CLUSTER_STATUS))
        for slice_id, owner in self.owners.items():
            await self.publish(ResourceUpdated(uri=slice_uri(slice_id)))
            await self.publish(ResourceUpdated(uri=blueprint_uri(owner)))
        await self.publish(ResourcesListChanged())
