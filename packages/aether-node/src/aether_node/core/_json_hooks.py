"""Hooks for the json module's parser that make its numbers and objects by functions in Python, giving the
same values. One call of the C parser holds the GIL to its end; with these hooks it runs Python between
values, so a worker thread parsing a big message lets the event loop's thread run (`_off_loop`,
`_strict_json`). Pure."""

from __future__ import annotations

from typing import Any


def number(text: str) -> float:
    return float(text)


def integer(text: str) -> int:
    return int(text)


def json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return dict(pairs)
