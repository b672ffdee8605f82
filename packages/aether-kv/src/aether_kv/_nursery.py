"""A nursery for context managers that run background tasks around their caller's body.

Trio wraps every error that leaves a nursery in an ExceptionGroup, even a single one raised by the body
of `async with open_client(...)`. Callers of this package's context managers should see the error they
raised (or ours), so a group holding exactly one exception is unwrapped here, in one place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


@asynccontextmanager
async def open_service_nursery() -> AsyncIterator[trio.Nursery]:
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
