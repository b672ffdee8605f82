"""`resources/subscribe` for agents on protocol versions before 2026-07-28 (most desktop agents today).

Newer clients open a `subscriptions/listen` stream and the SDK's subscription bus serves them; older ones
subscribe per URI and are sent `notifications/resources/updated` on their session's standalone channel.
Both are fed by the same cluster events (`_notifications.EventPump`), through `publish`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import ResourcesListChanged, ResourceUpdated, ServerEvent
from mcp.types import EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

log = logging.getLogger("aether_mcp.subscriptions")

Identify = Callable[[ServerRequestContext[Any, Any]], str]


class LegacySubscriptions:
    def __init__(self, identify: Identify) -> None:
        self.identify = identify
        self._by_uri: dict[str, dict[str, Any]] = {}  # uri → subscriber key → its session

    async def subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams
    ) -> EmptyResult:
        self._by_uri.setdefault(str(params.uri), {})[self.identify(ctx)] = ctx.session
        return EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams
    ) -> EmptyResult:
        self._by_uri.get(str(params.uri), {}).pop(self.identify(ctx), None)
        return EmptyResult()

    async def publish(self, event: ServerEvent) -> None:
        if isinstance(event, ResourceUpdated):
            targets = list(self._by_uri.get(event.uri, {}).items())
        elif isinstance(event, ResourcesListChanged):
            targets = list({k: s for subs in self._by_uri.values() for k, s in subs.items()}.items())
        else:
            return
        for key, session in targets:
            try:
                if isinstance(event, ResourceUpdated):
                    await session.send_resource_updated(event.uri)
                else:
                    await session.send_resource_list_changed()
            except Exception as error:  # the subscriber has gone: forget it everywhere
                log.info("dropping subscriber %s: %s", key, error)
                for subs in self._by_uri.values():
                    subs.pop(key, None)
