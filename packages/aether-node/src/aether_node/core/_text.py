"""Wording shared by the node's messages."""

from __future__ import annotations


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 instance`, `3 instances`, `0 instances`; `many` for an irregular plural."""
    return f"{count} {word if count == 1 else many or word + 's'}"
