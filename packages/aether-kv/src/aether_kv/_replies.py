"""Requests waiting for their replies on one multiplexed connection: numbered in order, matched to their
replies by id, and all answered with None when the connection ends. The one copy of this bookkeeping for
every request/reply connection of Aether (the KV client's, the node's peer connections, its slice
template and slice host pipes); the connection itself (framing, sending, reading, closing) stays with
its owner. No I/O and no timing here: a waiter that gives up (a deadline, a cancellation) `discard`s its
id, and a caller that wants expiry keeps deadlines on its own waiters (`pending()` lists them).
"""

from __future__ import annotations

import itertools
from typing import Any, Generic, Protocol, TypeVar

import trio


class Waiter(Protocol):
    def resolve(self, reply: dict[str, Any] | None) -> None:
        """Hand the reply over (None: there will be none). Called at most once per added waiter."""


W = TypeVar("W", bound=Waiter)


class Reply:
    """The plain waiter: `await wait()` gives the reply, or None when the connection ended first."""

    __slots__ = ("_done", "reply")

    def __init__(self) -> None:
        self._done = trio.Event()
        self.reply: dict[str, Any] | None = None

    def resolve(self, reply: dict[str, Any] | None) -> None:
        if not self._done.is_set():
            self.reply = reply
            self._done.set()

    async def wait(self) -> dict[str, Any] | None:
        await self._done.wait()
        return self.reply


class Replies(Generic[W]):
    """The waiters of one connection by request id. `ended` once `end()` ran: a waiter added after that
    is answered None at once, so nothing waits on a connection that can no longer answer."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[int, W] = {}
        self.ended = False

    def next_id(self) -> int:
        """A fresh id, for a message that is not a request with one reply (a watch's stream)."""
        return next(self._ids)

    def add(self, waiter: W) -> int:
        """Wait for the reply to a request; returns the id the request must carry."""
        request_id = next(self._ids)
        if self.ended:
            waiter.resolve(None)
        else:
            self._waiting[request_id] = waiter
        return request_id

    def discard(self, request_id: int) -> None:
        """The waiter gave up (or got its reply): a reply that comes later is dropped."""
        self._waiting.pop(request_id, None)

    def deliver(self, message: dict[str, Any]) -> bool:
        """Hand `message` to the waiter its `id` names; False if none waits for it (a late reply, or a
        message that is not a reply)."""
        request_id = message.get("id")
        if type(request_id) is not int:
            return False
        waiter = self._waiting.pop(request_id, None)
        if waiter is None:
            return False
        waiter.resolve(message)
        return True

    def end(self) -> None:
        """The connection ended: every waiter gets None, now and from now on."""
        self.ended = True
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            waiter.resolve(None)

    def pending(self) -> list[tuple[int, W]]:
        """The waiters still waiting, by id (a snapshot: safe to discard while going through it)."""
        return list(self._waiting.items())

    def __len__(self) -> int:
        return len(self._waiting)
