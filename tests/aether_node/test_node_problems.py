"""What is wrong on a node itself (`runtime/_node_problems.py`): one line per source, in a stable order,
an event at each change (taken before the lines are read, so none is missed), and the instance logs that
cannot be written as one line counting them."""

from __future__ import annotations

from pathlib import Path

from aether_node.runtime._node_problems import LogTrouble, NodeProblems


def test_each_source_keeps_one_line_and_each_change_sets_the_event_taken_before_it() -> None:
    problems = NodeProblems()
    first = problems.next_change()
    problems.set("logs", "a")
    assert first.is_set() and problems.lines() == ("a",)
    second = problems.next_change()
    problems.set("logs", "a")  # the same: no change
    assert not second.is_set()
    problems.set("disk", "b")
    assert second.is_set() and problems.lines() == ("b", "a")  # (by source)
    third = problems.next_change()
    problems.set("logs", None)
    problems.set("nothing", None)
    assert third.is_set() and problems.lines() == ("b",)


def test_the_logs_that_cannot_be_written_are_one_line_until_none_is_left() -> None:
    problems = NodeProblems()
    trouble = LogTrouble(problems, Path("/data/logs"))
    trouble.failed(Path("/data/logs/a.log"), "No space left on device")
    said = "1 instance's output cannot be written under /data/logs (No space left on device)"
    assert problems.lines() == (f"{said}: dropped until it can",)
    trouble.failed(Path("/data/logs/b.log"), "No space left on device")
    assert problems.lines()[0].startswith("2 instances' output cannot be written")
    trouble.over(Path("/data/logs/a.log"))
    trouble.over(Path("/data/logs/a.log"))  # (told twice: nothing more)
    assert problems.lines()[0].startswith("1 instance's output")
    trouble.over(Path("/data/logs/b.log"))
    assert problems.lines() == ()
