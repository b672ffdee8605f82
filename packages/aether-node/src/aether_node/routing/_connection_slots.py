"""How many connections each of the node's servers holds at once. A flood of connections on one server
must not take the file descriptors the node needs for everything else.

Before this, 1,100 idle TCP connections to a node's ingress (open to the application's clients) held
every descriptor of a node whose limit was 1,024. While they stayed open:
- the node's management API and its peer port accepted nothing (`cluster status` through that node got
  no answer within 10 s);
- an instance that died could not be started again, and a dropped KV connection could not be made again;
- trio logged EMFILE, with a traceback, ten times a second.

Now each server holds at most its share of the open-files limit (`connection_limit`). At that limit it
accepts no more: new connections wait in the kernel's backlog until one of its connections closes, and
the log says so at most once a minute. An accept that still meets EMFILE (the instances took the rest)
waits 0.1 s and tries again, also said at most once a minute.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import trio

from aether_kv import out_of_files_hint

from ..core._paced_log import PacedLog

log = logging.getLogger("aether_node.connections")

# Each server's share of the node's open-files limit. The rest (5/16) is the instances' (two files each,
# three once one writes output: its log file), the KV's connections and the logs'. So the shares assume a
# limit sized for the instances: at the unit's 65,536, ~6,000 instances beside an ingress full of clients.
SHARES = {"ingress": 1 / 2, "peer": 1 / 8, "management": 1 / 16}
FEWEST = 16  # connections a server takes at least, however low the limit
SAY_AGAIN_AFTER = 60.0  # s between two log lines about the same trouble
RETRY_ACCEPT = 0.1  # s before an accept that met EMFILE is tried again (as `trio.serve_listeners` does)
# (what `trio.serve_listeners` waits out too: no descriptor, no memory for the socket)
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})

S = TypeVar("S", bound=trio.abc.AsyncResource)


def connection_limit(server: str, open_files: int) -> int:
    """The most connections `server` (ingress, peer, management) holds at once, for a node whose
    open-files limit is `open_files`. Pure."""
    return max(FEWEST, int(open_files * SHARES[server]))


class ConnectionSlots:
    """The connections one server holds: `listeners` wrap its listeners so that an accept first takes a
    slot, `handler` wraps its connection handler so that the slot is given back once it ends."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self._free = trio.Semaphore(limit)
        self._log = PacedLog(log, SAY_AGAIN_AFTER, clock=trio.current_time)

    @property
    def held(self) -> int:
        return self.limit - self._free.value

    def listeners(self, listeners: Sequence[trio.abc.Listener[S]]) -> list[trio.abc.Listener[S]]:
        return [_SlotListener(listener, self) for listener in listeners]

    def handler(self, handler: Callable[[S], Awaitable[None]]) -> Callable[[S], Awaitable[None]]:
        async def served(stream: S) -> None:
            try:
                await handler(stream)
            finally:
                self._free.release()

        return served

    async def take(self) -> None:
        if self._free.value == 0:
            self._say(
                "full",
                "%s: %d connections at once, the most it takes (its share of the node's open-files limit):"
                " new connections wait until one of them closes",
                self.name,
                self.limit,
            )
        await self._free.acquire()

    def give_back(self) -> None:
        self._free.release()

    def out_of_resources(self, error: OSError) -> None:
        self._say(
            "accept",
            "%s: cannot accept a connection (%s): %s; trying again every %.1f s",
            self.name,
            error.strerror or error,
            out_of_files_hint(error) or "the system is short of memory for sockets",
            RETRY_ACCEPT,
        )

    def _say(self, trouble: str, message: str, *args: object) -> None:
        self._log.warning(trouble, message, *args)


class _SlotListener(trio.abc.Listener[S]):
    def __init__(self, inner: trio.abc.Listener[S], slots: ConnectionSlots) -> None:
        self.inner = inner
        self.slots = slots

    async def accept(self) -> S:
        await self.slots.take()
        try:
            while True:
                try:
                    return await self.inner.accept()
                except OSError as error:
                    if error.errno not in _OUT_OF_RESOURCES:
                        raise
                    self.slots.out_of_resources(error)
                    await trio.sleep(RETRY_ACCEPT)
        except BaseException:
            self.slots.give_back()
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()
