"""`follow_while_leading` (the leader's liveness watch, event times and autoscaler run in it): a follow
that fails starts over, and is said as what failed it. A KV error of a task inside the follow's own
nursery comes out in an exception group: it is the same KV error (a warning; a compaction quietly), not
"unexpected" (it was logged at ERROR with a traceback on every KV hiccup of the liveness watch and the
autoscaler: a review, 2026-12-06)."""

from __future__ import annotations

import logging

import pytest
import trio

from aether_kv import CompactedError, MemoryStore, UnavailableError
from aether_node.control._cluster_manager import LeadershipMonitor, follow_while_leading
from aether_node.core._kv_errors import kv_errors_in
from support import wait_until

WHAT = "the test's follow"


async def _in_a_task(*errors: BaseException) -> None:
    """Raise `errors` from tasks of a nursery, as a follow's watches and caches fail."""

    async def fail(error: BaseException) -> None:
        raise error

    async with trio.open_nursery() as nursery:
        for error in errors:
            nursery.start_soon(fail, error)


def _no_leader() -> UnavailableError:
    return UnavailableError("no leader known")


def _compacted() -> CompactedError:
    return CompactedError("history compacted", compact_revision=9)


RETRIED = [("WARNING", f"{WHAT}: no leader known; trying again")]
UNEXPECTED = [("ERROR", f"{WHAT}: unexpected error; starting over")]


@pytest.mark.parametrize(
    ("failing", "said"),
    [
        (lambda: _in_a_task(_no_leader()), RETRIED),
        (lambda: _in_a_task(_compacted(), _no_leader()), RETRIED),
        (lambda: _in_a_task(_compacted()), []),
        (lambda: _in_a_task(RuntimeError("a bug")), UNEXPECTED),
        (lambda: _in_a_task(_no_leader(), RuntimeError("a bug")), UNEXPECTED),
    ],
    ids=["kv-error-in-a-task", "two-kv-errors", "compaction-in-a-task", "bug-in-a-task", "kv-error-and-bug"],
)
async def test_a_failed_follow_starts_over_and_is_said_as_what_failed_it(
    failing: object, said: list[tuple[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    kv = MemoryStore()
    leadership = LeadershipMonitor(kv)
    calls = 0

    async def follow() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await failing()  # type: ignore[operator]
        await trio.sleep_forever()

    caplog.set_level(logging.INFO)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(leadership.run)
        nursery.start_soon(follow_while_leading, leadership, follow, WHAT)
        await wait_until(lambda: calls == 2, timeout=10, what="the follow started over")
        nursery.cancel_scope.cancel()
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.getMessage().startswith(WHAT)] == said


def test_kv_errors_in_finds_the_kv_errors_of_nested_groups_and_nothing_else() -> None:
    no_leader, compacted = _no_leader(), _compacted()
    assert kv_errors_in(no_leader) == [no_leader]
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [compacted]), no_leader])
    assert kv_errors_in(nested) == [compacted, no_leader]
    assert kv_errors_in(ExceptionGroup("g", [no_leader, ValueError("x")])) is None
    assert kv_errors_in(RuntimeError("a bug")) is None
