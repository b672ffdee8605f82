"""Wording shared by the node's messages, and remote text made safe to show (`visible`)."""

from __future__ import annotations

import re
from collections.abc import Mapping

# Control characters but newline and tab: what remote text (a slice's exception message, a client's
# path, an agent's name) could use to drive a terminal (ESC sequences: clear it, retitle it) or to
# overwrite a line (CR); the line and paragraph separators (Python's `splitlines` breaks at them); the
# bidirectional overrides and isolates, which reorder what is shown (a made-up line could read as another).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# ... and newline and tab too, for text that must stay on one line (an event, a log's record)
_CONTROL_IN_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def visible(text: str, *, one_line: bool = False) -> str:
    """`text` with its control characters written as escapes (`\\x1b`, `\\r`, `\\u202e`), newlines and
    tabs kept unless `one_line`. Pure."""
    control = _CONTROL_IN_LINE if one_line else _CONTROL
    return control.sub(lambda found: repr(found.group())[1:-1], text)


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 instance`, `3 instances`, `0 instances`; `many` for an irregular plural."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def replica_label(address: str, names: Mapping[str, str]) -> str:
    """A KV replica in words: its Raft address, and its node where known (`10.0.0.3:7000 (node n3)`;
    `names`: Raft address → node id, `control._membership.replica_names`)."""
    name = names.get(address)
    return f"{address} (node {name})" if name else address
