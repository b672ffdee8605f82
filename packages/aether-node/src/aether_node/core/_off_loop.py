"""Big JSON work off the node's event loop.

Parsing or writing JSON costs the node's single trio thread ~0.3-0.5 s per 6 MB; a few large calls at once
held it for seconds, and the node's lease keep-alives (and every other call) waited: on a busy machine
its lease lapsed and its endpoints were withdrawn, so a client could push a healthy node out of the
cluster with four large request bodies. Work on more than `BIG` bytes of JSON runs in a worker thread,
and the loop gets the GIL back every switch interval (5 ms) and keeps serving, but only between two
Python steps: one C call of the json module holds the GIL to its end. So a big value is written in
pieces of at most PIECE items (`in_pieces`), and read with hooks in Python (`loads_yielding`: the
parser calls them per number and object). Small work stays inline (a thread hop costs ~50-100 µs, more
than parsing a small body).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from ._json_hooks import integer, json_object, number

BIG = 256 * 1024  # bytes of JSON worth a thread (~10 ms of parsing)
PIECE = 2048  # items of a list or an object one call of the C encoder writes at most (~1 ms)

T = TypeVar("T")


async def run_sized(
    size: int, function: Callable[..., T], *args: Any, big: Callable[..., T] | None = None
) -> T:
    """`function(*args)` here if it handles fewer than BIG bytes (`size`); else in a worker thread, as
    `big(*args)` if given (the same work done so as to give the GIL back: `in_pieces`)."""
    if size < BIG:
        return function(*args)
    return await trio.to_thread.run_sync(big or function, *args)


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


def in_pieces(encode: Callable[[Any], str]) -> Callable[[Any], str]:
    """`encode` (a compact JSON encoder: separators "," and ":") made to write a big list or object
    PIECE items per call, so that no single call holds the GIL for long. The same text; the same errors
    (the pieces are written by `encode`)."""

    def write(value: Any) -> str:
        if json_size_at_least(value) < BIG:
            return encode(value)
        if isinstance(value, list | tuple):
            return "[" + ",".join(_pieces(list(value), lambda chunk: encode(chunk)[1:-1], write)) + "]"
        if isinstance(value, dict):
            items = list(value.items())
            return "{" + ",".join(_pieces(items, lambda chunk: encode(dict(chunk))[1:-1], _member)) + "}"
        return encode(value)  # (a long string: one fast call)

    def _member(item: tuple[Any, Any]) -> str:
        key, value = item
        return encode({key: 0})[1:-2] + write(value)  # (the key as `encode` writes it: "1" for 1)

    return write


def _pieces(items: list[Any], small: Callable[[list[Any]], str], big: Callable[[Any], str]) -> list[str]:
    texts = []
    for start in range(0, len(items), PIECE):
        chunk = items[start : start + PIECE]
        if json_size_at_least(chunk) < BIG:
            texts.append(small(chunk))
        else:
            texts.extend(big(item) for item in chunk)
    return [text for text in texts if text]  # (an empty chunk writes nothing)


def loads_yielding(text: str | bytes | bytearray) -> Any:
    """`json.loads`, with its numbers and objects made by functions in Python (the same values), so
    that a worker thread parsing a big message lets the event loop's thread run between them."""
    return json.loads(text, parse_float=number, parse_int=integer, object_pairs_hook=json_object)
