"""JSON as JSON is, not as Python's parser takes it: no NaN or Infinity, no number too large for a float
(Python makes 1e400 infinite), no nesting past the parser's limit, no key twice in one object, no string
holding a lone UTF-16 surrogate (`"\\ud800"`: valid JSON syntax, but no text; Python's parser makes a
string that no UTF-8 encoder takes, and such a string, once in, failed wherever it went out: the answer
to a call (a 500 after the slice had run), a record stored and read back (every read of the events after
it failed)).
The one strict parser, used for the bodies the node reads (`routing/_http.parse_json`) and for the
payload the CLI sends (`aether slice invoke --data`, through `aether_node.client.parse_strict_json`), so
both refuse the same things. Pure."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any

from ._json_hooks import integer
from ._text import shown


class _NotJsonConstant(ValueError):
    """NaN, Infinity or -Infinity (Python's parser takes them, JSON has no such value), or a number too
    large for a float."""


def _refuse_constant(name: str) -> float:
    raise _NotJsonConstant(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise _NotJsonConstant(f"{text} is too large for a number")
    return number


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different. JSON's grammar lets a key come twice, leaving its meaning
    to the reader (Python's keeps the last, others the first or both): `{"instances": 1, "instances": 5}`
    is refused, not read one way here and another by the one who wrote it."""
    made = dict(pairs)
    if len(made) != len(pairs):
        twice = next(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
        raise ValueError(f"the key {shown(twice)} is given twice in one object")
    return made


# (numbers and objects made by functions in Python: a worker thread parsing a big body lets the event
# loop's thread run between them, where one call of the C parser would hold the GIL to its end)
_decode = json.JSONDecoder(
    parse_constant=_refuse_constant, parse_float=_finite, parse_int=integer, object_pairs_hook=_unique_keys
).decode


# An escape of a surrogate, high or low (led by a literal: the engine finds `\\u` fast). A lone one is one
# not half of a pair (`\\ud83d\\ude00` is one character, and fine; json.dumps writes every emoji so).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE_PAIR_ESCAPE = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def parse_strict_json(text: str, *, from_utf8: bool = False) -> Any:
    """The JSON value of `text`, strictly; raises ValueError saying why it is not JSON. `from_utf8`: the
    text was decoded strictly from bytes, so it holds no surrogate itself (not checked again)."""
    if not from_utf8 and not text.isascii():  # (only then: from surrogateescape, an argv's)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            lone = ord(text[error.start])
            raise ValueError(f"it holds a lone UTF-16 surrogate (\\u{lone:04x}), which is not text") from None
    try:
        value = _decode(text)
    except RecursionError:  # (the parser's own limit, about a thousand levels)
        raise ValueError("nested too deeply") from None
    # (no backslash, no escape: the common body pays one scan for a character, ~0.02 ms a MiB)
    if "\\" in text and _SURROGATE_ESCAPE.search(text) and _lone_surrogate_escape(text):
        _refuse_lone_surrogates(value)  # (what the escapes suggest, the parsed strings confirm)
    return value


def _lone_surrogate_escape(text: str) -> bool:
    """Whether `text` escapes a surrogate that is not half of a pair: what is left once every escaped pair
    is taken out (both in C: a Python loop over the pairs of an emoji-rich body cost more than parsing
    it). A filter only: an escaped backslash before `u` fools it."""
    return _SURROGATE_ESCAPE.search(_SURROGATE_PAIR_ESCAPE.sub("", text)) is not None


def _refuse_lone_surrogates(value: Any) -> None:
    """Raise ValueError if a string of `value` (a key too) holds a lone surrogate."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str) and not item.isascii():
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as error:
                raise ValueError(
                    f"a string holds a lone UTF-16 surrogate (\\u{ord(item[error.start]):04x}), which is not"
                    " text: a surrogate is escaped in JSON only as half of a pair"
                ) from None
