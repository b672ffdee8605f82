"""`parse_strict_json` on text as it reaches it from a command line: a lone surrogate in the text itself (an
argument of bytes that are not UTF-8, made a string with "surrogateescape"), or escaped alone, is no text
and is refused; an escaped pair is one character. (Request bodies through the node's servers:
test_http.py, tests/integration/test_management_bodies.py.)"""

from __future__ import annotations

import re

import pytest

from aether_node.core._strict_json import parse_strict_json


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('"a\udcff"', "it holds a lone UTF-16 surrogate (\\udcff), which is not text"),
        ('["ok", {"k": "\\ud800"}]', "a string holds a lone UTF-16 surrogate (\\ud800), which is not text"),
        ('{"\\udfff": 1}', "a string holds a lone UTF-16 surrogate (\\udfff), which is not text"),
    ],
)
def test_a_lone_surrogate_is_refused_saying_which(text: str, why: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(why)):
        parse_strict_json(text)


def test_an_escaped_pair_and_an_escaped_backslash_before_u_are_text() -> None:
    assert parse_strict_json('["\\ud83d\\ude00", "\\\\ud800"]') == ["\U0001f600", "\\ud800"]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('{"instances": 1, "instances": 5}', "instances"),
        ('[{"ok": 1}, {"x": {"b": 1, "c": 2, "b": 1}}]', "b"),
        ('{"\\u0061": 1, "a": 2}', "a"),  # the same key, once escaped
    ],
)
def test_a_key_given_twice_in_one_object_is_refused_naming_it(text: str, key: str) -> None:
    with pytest.raises(ValueError, match=f'^the key "{key}" is given twice in one object$'):
        parse_strict_json(text)


def test_the_same_key_in_different_objects_is_fine() -> None:
    assert parse_strict_json('[{"a": 1}, {"a": 2, "b": {"a": 3}}]') == [{"a": 1}, {"a": 2, "b": {"a": 3}}]
