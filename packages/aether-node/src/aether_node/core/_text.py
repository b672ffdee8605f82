"""Wording shared by the node's messages, and remote text made safe to show (`visible`)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

# Control characters but newline and tab: what remote text (a slice's exception message, a client's
# path, an agent's name) could use to drive a terminal (ESC sequences: clear it, retitle it) or to
# overwrite a line (CR); the line and paragraph separators (Python's `splitlines` breaks at them); the
# bidirectional overrides, isolates and marks, which reorder what is shown (a made-up line could read as
# another); the characters that show nothing (zero-width space, word joiner, byte order mark): two names
# that look the same could differ by one.
_HIDDEN = r"\u2028\u2029\u202a-\u202e\u2066-\u2069\u061c\u200e\u200f\u200b\u2060-\u2064\ufeff\u180e"
_CONTROL = re.compile(rf"[\x00-\x08\x0b-\x1f\x7f-\x9f{_HIDDEN}]")
# ... and newline and tab too, for text that must stay on one line (an event, a log's record)
_CONTROL_IN_LINE = re.compile(rf"[\x00-\x1f\x7f-\x9f{_HIDDEN}]")


def visible(text: str, *, one_line: bool = False) -> str:
    """`text` with its control characters written as escapes (`\\x1b`, `\\r`, `\\u202e`), newlines and
    tabs kept unless `one_line`. Pure."""
    control = _CONTROL_IN_LINE if one_line else _CONTROL
    return control.sub(lambda found: repr(found.group())[1:-1], text)


def shown(value: Any, limit: int = 40) -> str:
    """A value a client sent, for an error message: in the words of the JSON or TOML it came in (`true`,
    `null`, `"text"`, `[10, 50]`, not Python's `True`, `None`, `'text'`), on one line, its control
    characters escaped, cut to `limit` characters with an ellipsis. Pure."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # TOML's words (nan, inf, -inf); JSON has none
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    text = visible(text, one_line=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 instance`, `3 instances`, `0 instances`; `many` for an irregular plural."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def replica_label(address: str, names: Mapping[str, str]) -> str:
    """A KV replica in words: its Raft address, and its node where known (`10.0.0.3:7000 (node n3)`;
    `names`: Raft address → node id, `control._membership.replica_names`)."""
    name = names.get(address)
    return f"{address} (node {name})" if name else address
