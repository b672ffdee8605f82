"""Remote text and client values in the node's messages (`core/_text.py`): `visible` escapes what could
drive a terminal or hide in a name; `shown` writes a value in the words of the JSON or TOML it came in."""

from __future__ import annotations

import datetime

import pytest

from aether_node.core._table_problems import key_named
from aether_node.core._text import quoted, shown, visible


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
        ("soft\u00adhyphen", "soft\\xadhyphen"),
        ("a\u3164b", "a\\u3164b"),  # a Hangul filler: shows as a blank (Python would print it as is)
        ("tag\U000e0041", "tag\\U000e0041"),  # a tag character
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
        ("del\x7f c1\x85", '"del\\u007f c1\\u0085"'),  # as JSON escapes them
        ("\U000e0041", '"\\udb40\\udc41"'),
        (datetime.datetime(1979, 5, 27, 7, 32), "1979-05-27T07:32:00"),  # a TOML datetime, not a string
        (datetime.date(1979, 5, 27), "1979-05-27"),
    ],
)
def test_shown_writes_a_value_as_json_or_toml_would(value: object, expected: str) -> None:
    assert shown(value) == expected


def test_shown_cuts_a_long_value_to_its_limit() -> None:
    assert shown("x" * 100) == '"' + "x" * 38 + "…"
    # never in the middle of an escape, nor after half of a pair
    assert shown("x" * 36 + "\x1b" + "z" * 10) == '"' + "x" * 36 + "…"
    assert shown("x" * 30 + "\U000e0041" + "z" * 10) == '"' + "x" * 30 + "…"
    assert shown("x" * 31 + "\U000e0041" + "z" * 10) == '"' + "x" * 31 + "…"
    assert len(shown(list(range(1000)), 70)) == 70
    assert shown("x" * 100, 200) == '"' + "x" * 100 + '"'


def test_shown_of_what_json_cannot_write_names_its_kind() -> None:
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    assert shown(deep) == "list"


def test_quoted_writes_a_name_as_python_does_cut() -> None:
    assert quoted("echo") == "'echo'"
    assert quoted("x" * 100) == repr("x" * 80) + "…"
    assert quoted("a\u202eb") == "'a\\u202eb'"
    assert quoted(None) == "null"  # (what is no string: as `shown` writes it)


@pytest.mark.parametrize(
    ("key", "named"),
    [
        ("replicas", "replicas"),
        ("max-surge_2", "max-surge_2"),
        ("x y", '"x y"'),
        ("", '""'),
        ("k" * 41, '"' + "k" * 38 + "…"),
    ],
)
def test_a_key_in_a_path_is_bare_where_toml_writes_it_bare(key: str, named: str) -> None:
    assert key_named(key) == named
