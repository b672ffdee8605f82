"""Waiting for whichever of several events comes first, with no task per event.

`Broadcast` is a trio.Event that also sets the events relayed to it; `wait_any` waits on a new event
relayed by each broadcast it is given. An instance's worker waits for its record to change or its process
to end, and a health check for a change of settings or the process's end: a nursery with a waiting task
per event cost ~45 µs per wait (three per instance as it starts) and kept two tasks per instance waiting
for as long as it ran.
"""

from __future__ import annotations

import trio


class Broadcast:
    """An event (set once, never cleared, as trio.Event) that also sets each event relayed to it."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self._relays: set[trio.Event] = set()

    def set(self) -> None:
        self._event.set()
        relays, self._relays = self._relays, set()
        for relay in relays:
            relay.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    def relay(self, event: trio.Event) -> None:
        """Set `event` when this is set (at once if it is already)."""
        if self._event.is_set():
            event.set()
        else:
            self._relays.add(event)

    def unrelay(self, event: trio.Event) -> None:
        self._relays.discard(event)


async def wait_any(*broadcasts: Broadcast) -> None:
    """Return once any of `broadcasts` is set (at once if one is already)."""
    woken = trio.Event()
    for broadcast in broadcasts:
        broadcast.relay(woken)
    try:
        await woken.wait()
    finally:
        for broadcast in broadcasts:
            broadcast.unrelay(woken)
