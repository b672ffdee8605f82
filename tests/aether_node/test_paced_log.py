"""`PacedLog`: a line a client could make over and over is said at most once per spell, and the times
it was held back are counted into the next one."""

from __future__ import annotations

import logging

import pytest

from aether_node.core._paced_log import PacedLog


def test_a_line_is_said_once_per_spell_and_the_rest_counted_into_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    paced = PacedLog(logging.getLogger("test.paced"), 10.0, clock=lambda: now[0])
    said = [paced.warning("join", "join refused for %s", f"10.0.0.{n}") for n in range(5)]
    assert said == [True, False, False, False, False]
    assert paced.warning("other", "another trouble")  # (each kind of line has its own spell)
    now[0] += 12.0
    assert paced.warning("join", "join refused for %s", "10.0.0.9")
    lines = [r.getMessage() for r in caplog.records if r.name == "test.paced"]
    assert lines == [
        "join refused for 10.0.0.0",
        "another trouble",
        "join refused for 10.0.0.9 (and 4 more like it in the last 12 s, not logged)",
    ]
