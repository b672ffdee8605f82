"""`cluster_error_in` (pure): the event pump tells the cluster's errors, alone or in a task group's
(nested) group, from anything else (a bug, the bus's), which it logs as unexpected and starts over on.
`RetryPacing` (pure), and the pump's pace against an address where no node answers. (The pump on a real
cluster: tests/integration/test_mcp_service.py.)"""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
import trio

from aether_mcp._errors import ClusterError
from aether_mcp._gateway import ClusterGateway
from aether_mcp._notifications import EventPump, RetryPacing, cluster_error_in, leaves_of
from support import wait_until


def test_the_cluster_errors_of_a_group_are_told_from_anything_else() -> None:
    unreachable, refused = ClusterError("no node answered"), ClusterError("refused")
    assert cluster_error_in(unreachable) is unreachable
    nested = ExceptionGroup("task group", [ExceptionGroup("inner", [unreachable]), refused])
    assert cluster_error_in(nested) is unreachable
    assert cluster_error_in(ExceptionGroup("task group", [unreachable, RuntimeError("a bug")])) is None
    assert cluster_error_in(RuntimeError("the bus could not take it")) is None


def test_a_bug_raised_inside_the_task_group_or_on_its_own_is_the_same_error() -> None:
    bug, other = RuntimeError("a bug"), KeyError("x")
    assert leaves_of(bug) == [bug]
    assert leaves_of(ExceptionGroup("task group", [ExceptionGroup("inner", [bug]), other])) == [bug, other]


def test_the_waits_double_while_rounds_keep_failing_and_start_over_after_one_that_went_well() -> None:
    pacing = RetryPacing(1.0, 30.0)
    assert [pacing.after(went_well=False) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert pacing.after(went_well=True) == 1
    assert pacing.after(went_well=False) == 2


async def test_the_pump_backs_off_while_no_node_answers(caplog: pytest.LogCaptureFixture) -> None:
    """Every round fails (nothing listens at the node's address): the pump waits longer each time, up to
    its longest, instead of asking (and logging) at a fixed pace for as long as the cluster is down."""
    with socket.socket() as reserved:  # a port nothing listens on (bound, never listening: refused)
        reserved.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{reserved.getsockname()[1]}"
        gateway = ClusterGateway([url], api_key=None, timeout=5)

        async def publish(event: Any) -> None:
            raise AssertionError(f"nothing to publish without a cluster: {event}")

        pump = EventPump(gateway, publish, retry=0.01, longest=0.04, healthy_after=3600)
        caplog.set_level(logging.WARNING, logger="aether_mcp.notifications")

        def waits() -> list[str]:
            return [
                r.getMessage().rpartition(" in ")[2]
                for r in caplog.records
                if "starting over" in r.getMessage()
            ]

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(pump.run)
                await wait_until(waits, until=lambda found: len(found) >= 5, timeout=20, what="five rounds")
                nursery.cancel_scope.cancel()
    assert waits()[:5] == ["0.01 s", "0.02 s", "0.04 s", "0.04 s", "0.04 s"], caplog.text
    assert all(url in r.getMessage() for r in caplog.records if "starting over" in r.getMessage()), (
        caplog.text
    )
