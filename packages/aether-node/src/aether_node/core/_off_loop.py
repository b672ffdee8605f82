"""Big JSON work off the node's event loop.

Parsing or writing JSON costs the node's single trio thread ~0.3-0.5 s per 6 MB; a few large calls at once
held it for seconds, and the node's lease keep-alives (and every other call) waited: on a busy machine
its lease lapsed and its endpoints were withdrawn, so a client could push a healthy node out of the
cluster with four large request bodies. Work on more than `BIG` bytes of JSON runs in a worker thread:
the loop gets the GIL back every switch interval (5 ms) and keeps serving. Small work stays inline (a
thread hop costs ~50-100 µs, more than parsing a small body).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import trio

BIG = 256 * 1024  # bytes of JSON worth a thread (~10 ms of parsing)

T = TypeVar("T")


async def run_sized(size: int, function: Callable[..., T], *args: Any) -> T:
    """`function(*args)`, in a worker thread if it handles `size` >= BIG bytes, else here."""
    if size < BIG:
        return function(*args)
    return await trio.to_thread.run_sync(function, *args)


def json_size_at_least(value: Any, limit: int = BIG) -> int:
    """A lower bound of the size of `value`'s JSON, counted until it reaches `limit` (so a small value
    costs a walk of itself, a big one at most ~`limit` items). Pure."""
    size, pending = 0, [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            size += len(item) + 2
        elif isinstance(item, dict):
            size += 2 + 4 * len(item)
            if size < limit:
                pending.extend(item.keys())
                pending.extend(item.values())
        elif isinstance(item, list | tuple):
            size += 2 + len(item)
            if size < limit:
                pending.extend(item)
        else:  # a number, a bool, None
            size += 4
        if size >= limit:
            return size
    return size
