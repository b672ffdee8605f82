"""The reason a FAILED instance record gives for a slice's own failure (`describe_failure`): the message,
the traceback's last line only when it says more, and where the whole traceback is (the instance's log,
where the slice host wrote it)."""

from __future__ import annotations

from aether_node.core._errors import SliceHostError
from aether_node.runtime._slice_store import describe_failure

TRACEBACK = 'Traceback (most recent call last):\n  File "x.py", line 3, in aether_start\n'


def test_a_raised_hook_says_its_message_once_and_where_its_traceback_is() -> None:
    error = SliceHostError(
        "raised", "ValueError: no database", TRACEBACK + "ValueError: no database\n", "ValueError"
    )
    assert describe_failure("activate", error) == (
        "activate: the slice failed (raised): ValueError: no database"
        " (the traceback is in the instance's log: `aether slice logs`)"
    )


def test_an_import_error_says_its_message_once() -> None:
    error = SliceHostError(
        "import", "importing m failed: RuntimeError: boom", TRACEBACK + "RuntimeError: boom\n"
    )
    assert describe_failure("load", error) == (
        "load: the slice failed (import): importing m failed: RuntimeError: boom"
        " (the traceback is in the instance's log: `aether slice logs`)"
    )


def test_a_last_line_that_says_more_than_the_message_is_kept() -> None:
    error = SliceHostError(
        "import", "importing m failed: boom", TRACEBACK + "RuntimeError: boom (from deep inside)\n"
    )
    assert describe_failure("load", error) == (
        "load: the slice failed (import): importing m failed: boom [RuntimeError: boom (from deep inside)]"
        " (the traceback is in the instance's log: `aether slice logs`)"
    )


def test_a_failure_without_a_traceback_names_no_log() -> None:
    error = SliceHostError("entry_point", "the slice declares no entry points (hook aether_entry_points)")
    assert describe_failure("load", error) == (
        "load: the slice failed (entry_point): the slice declares no entry points (hook aether_entry_points)"
    )
