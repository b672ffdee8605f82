"""Wording shared by the node's messages, and remote text made safe to show (`visible`)."""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Mapping
from typing import Any

# Control characters but newline and tab: what remote text (a slice's exception message, a client's
# path, an agent's name) could use to drive a terminal (ESC sequences: clear it, retitle it) or to
# overwrite a line (CR); the line and paragraph separators (Python's `splitlines` breaks at them); the
# format characters (Unicode's category Cf: bidirectional overrides, isolates and marks, which reorder
# what is shown, so that a made-up line could read as another; zero-width spaces, joiners, the soft
# hyphen, tags, which show nothing) but the zero-width joiner and non-joiner that emoji and scripts
# need; and the fillers that show as blank. Two names that look the same could differ by one of them.
_HIDDEN = (
    "\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f\u1160\u180e\u200b"
    "\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\u3164\ufeff\uffa0\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)
_CONTROL = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_HIDDEN}]")
# ... and newline and tab too, for text that must stay on one line (an event, a log's record)
_CONTROL_IN_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_HIDDEN}]")


def visible(text: str, *, one_line: bool = False) -> str:
    """`text` with its control characters written as escapes (`\\x1b`, `\\r`, `\\u202e`), newlines and
    tabs kept unless `one_line`. Pure."""
    control = _CONTROL_IN_LINE if one_line else _CONTROL
    return control.sub(_escaped, text)


def _escaped(found: re.Match[str]) -> str:
    """A character as Python escapes it (`\\x1b`, `\\r`), or by its code where Python would show it
    as it is (a filler that shows as blank: `\\u3164`)."""
    character = found.group()
    escape = repr(character)[1:-1]
    if escape != character:
        return escape
    return f"\\u{ord(character):04x}" if ord(character) < 0x10000 else f"\\U{ord(character):08x}"


def shown(value: Any, limit: int = 40) -> str:
    """A value a client sent, for an error message: in the words of the JSON or TOML it came in (`true`,
    `null`, `"text"`, `[10, 50]`, not Python's `True`, `None`, `'text'`; a TOML date as written, not
    quoted), on one line, what could not be seen escaped as JSON escapes it (`\\u001b`), cut to `limit`
    characters with an ellipsis (never in the middle of an escape). Pure."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # TOML's words (nan, inf, -inf); JSON has none
    if isinstance(value, datetime.date | datetime.time):
        text = value.isoformat()
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError, RecursionError):
            text = type(value).__name__
    text = _CONTROL_IN_LINE.sub(lambda found: json.dumps(found.group())[1:-1], text)
    if len(text) <= limit:
        return text
    return _PARTIAL_ESCAPE.sub("", text[: limit - 1]) + "…"


# An escape cut short at the end of a text (`\\`, `\\u20`), or the first half of a pair left alone
_PARTIAL_ESCAPE = re.compile(r"(?:\\u[dD][89abAB][0-9a-fA-F]{2})?(?:\\(?:u[0-9a-fA-F]{0,3})?)?$")


def quoted(name: Any, limit: int = 80) -> str:
    """A name a client gave (a blueprint's, a slice's coordinates), for a message: quoted and escaped as
    Python writes a string (`'echo'`), cut to `limit` characters with an ellipsis; what is no string as
    `shown` writes it. Pure."""
    if not isinstance(name, str):
        return shown(name)
    return repr(name[:limit]) + ("…" if len(name) > limit else "")


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 instance`, `3 instances`, `0 instances`; `many` for an irregular plural."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def replica_label(address: str, names: Mapping[str, str]) -> str:
    """A KV replica in words: its Raft address, and its node where known (`10.0.0.3:7000 (node n3)`;
    `names`: Raft address → node id, `control._membership.replica_names`)."""
    name = names.get(address)
    return f"{address} (node {name})" if name else address


def carried(fields: Mapping[str, Any]) -> dict[str, Any]:
    """An error's fields with each text as UTF-8 can carry it: a lone surrogate (from a slice's exception:
    its message, its traceback) written as its escape's text (`\\udcff`). Rendered as it was, the answer
    failed, and the caller got a bare 500. Pure."""
    return {
        key: value.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(value, str) else value
        for key, value in fields.items()
    }
