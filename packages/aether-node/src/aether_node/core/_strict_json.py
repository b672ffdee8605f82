"""JSON as JSON is, not as Python's parser takes it: no NaN or Infinity, no number too large for a float
(Python makes 1e400 infinite), no nesting past the parser's limit. The one strict parser, used for the
bodies the node reads (`routing/_http.parse_json`) and for the payload the CLI sends (`aether slice invoke
--data`, through `aether_node.client.parse_strict_json`), so both refuse the same things. Pure."""

from __future__ import annotations

import json
import math
from typing import Any

from ._json_hooks import integer, json_object


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


# (numbers and objects made by functions in Python: a worker thread parsing a big body lets the event
# loop's thread run between them, where one call of the C parser would hold the GIL to its end)
_decode = json.JSONDecoder(
    parse_constant=_refuse_constant, parse_float=_finite, parse_int=integer, object_pairs_hook=json_object
).decode


def parse_strict_json(text: str) -> Any:
    """The JSON value of `text`, strictly; raises ValueError saying why it is not JSON."""
    try:
        return _decode(text)
    except RecursionError:  # (the parser's own limit, about a thousand levels)
        raise ValueError("nested too deeply") from None
