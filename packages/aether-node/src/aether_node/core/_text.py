"""Wording shared by the node's messages."""

from __future__ import annotations

from collections.abc import Mapping


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 instance`, `3 instances`, `0 instances`; `many` for an irregular plural."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def replica_label(address: str, names: Mapping[str, str]) -> str:
    """A KV replica in words: its Raft address, and its node where known (`10.0.0.3:7000 (node n3)`;
    `names`: Raft address → node id, `control._membership.replica_names`)."""
    name = names.get(address)
    return f"{address} (node {name})" if name else address
