"""The dev supervisor's restart backoff (pure) and how it names an exit."""

from __future__ import annotations

from aether_cli._supervisor import FIRST_BACKOFF, MAX_BACKOFF, STEADY, describe_exit, next_backoff


def test_backoff_doubles_while_a_node_keeps_dying_and_starts_over_once_it_ran_steadily() -> None:
    waits = []
    previous = None
    for _ in range(10):
        previous = next_backoff(previous, ran_for=1.0)
        waits.append(previous)
    assert waits[:4] == [FIRST_BACKOFF, 2 * FIRST_BACKOFF, 4 * FIRST_BACKOFF, 8 * FIRST_BACKOFF]
    assert waits == sorted(waits) and waits[-1] == MAX_BACKOFF
    assert next_backoff(MAX_BACKOFF, ran_for=STEADY) == FIRST_BACKOFF


def test_exits_are_named() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(3) == "exit code 3"
