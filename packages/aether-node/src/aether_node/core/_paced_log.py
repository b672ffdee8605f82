"""A log line that a client (or a flood) could make over and over, said at most once per spell: the
times it was held back are counted into the next one. Without it, a stranger sending refused requests
(a join with a made-up token) wrote a warning into the node's log per request."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class PacedLog:
    def __init__(self, logger: logging.Logger, every: float, *, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.every = every
        self.clock = clock
        self._said: dict[str, float] = {}  # what → when it was last said
        self._held: dict[str, int] = {}  # what → times held back since

    def warning(self, what: str, message: str, *args: object) -> bool:
        """Log `message % args` as a warning unless `what` was said less than `every` seconds ago (then
        count it); returns whether it was said."""
        now = self.clock()
        last = self._said.get(what)
        if last is not None and 0 <= now - last < self.every:
            self._held[what] = self._held.get(what, 0) + 1
            return False
        self._said[what] = now
        held = self._held.pop(what, 0)
        if held:
            message += f" (and {held} more like it in the last %.0f s, not logged)"
            args = (*args, now - last if last is not None else 0.0)
        self.logger.warning(message, *args)
        return True
