"""Remote text and client values in the node's messages (`core/_text.py`): `visible` escapes what could
drive a terminal or hide in a name; `shown` writes a value in the words of the JSON or TOML it came in."""

from __future__ import annotations

import pytest

from aether_node.core._text import shown, visible


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain words", "plain words"),
        ("clear\x1b[2Jscreen", "clear\\x1b[2Jscreen"),
        ("over\rwrite", "over\\rwrite"),
        ("abc\u202edcba", "abc\\u202edcba"),  # a bidirectional override
        ("abc\u200fdef", "abc\\u200fdef"),  # a right-to-left mark
        ("abc\u061cdef", "abc\\u061cdef"),  # the Arabic letter mark
        ("ad\u200bmin", "ad\\u200bmin"),  # a zero-width space: not "admin"
        ("ad\u2060min", "ad\\u2060min"),  # a word joiner
        ("\ufeffadmin", "\\ufeffadmin"),  # a byte order mark
        ("line\u2028break", "line\\u2028break"),
        ("two\nlines\tand a tab", "two\nlines\tand a tab"),
        ("café 日本 👩‍👩‍👧", "café 日本 👩‍👩‍👧"),  # text, and the joiner inside an emoji, stay as they are
    ],
)
def test_visible_escapes_what_could_drive_a_terminal_or_hide(text: str, expected: str) -> None:
    assert visible(text) == expected


def test_visible_on_one_line_escapes_newlines_and_tabs_too() -> None:
    assert visible("two\nlines\tand\u2029more", one_line=True) == "two\\nlines\\tand\\u2029more"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "true"),
        (False, "false"),
        (None, "null"),
        ("three", '"three"'),
        (2.5, "2.5"),
        (10**20, "100000000000000000000"),
        (float("nan"), "nan"),
        (float("-inf"), "-inf"),
        ([10, 50], "[10, 50]"),
        ({"a": 1}, '{"a": 1}'),
        ("日本", '"日本"'),
        ("new\nline\x1b", '"new\\nline\\u001b"'),  # as JSON writes them: one line, nothing raw
        ("\u202eevil", '"\\u202eevil"'),
    ],
)
def test_shown_writes_a_value_as_json_or_toml_would(value: object, expected: str) -> None:
    assert shown(value) == expected


def test_shown_cuts_a_long_value_to_its_limit() -> None:
    assert shown("x" * 100) == '"' + "x" * 38 + "…"
    assert len(shown(list(range(1000)), 70)) == 70
    assert shown("x" * 100, 200) == '"' + "x" * 100 + '"'


def test_shown_of_what_json_cannot_write_names_its_kind() -> None:
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    assert shown(deep) == "list"
