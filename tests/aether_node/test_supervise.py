"""`supervise`: a service that fails after it started is started again (with backoff); one that fails
before it first started, and cancellation, pass through."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from aether_node.node._supervise import run_forever, supervise
from aether_node.observe._metrics import NodeMetrics

RUN = 1.0  # (virtual s) how long each failing run of `Flaky` lasts: the restart gaps are this plus backoff


class Flaky:
    """A service that reports started, then fails its first `failures` runs with `error`."""

    def __init__(self, failures: int, error: BaseException) -> None:
        self.failures = failures
        self.error = error
        self.starts = 0
        self.running = trio.Event()

    async def __call__(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        self.starts += 1
        task_status.started(f"run {self.starts}")
        if self.starts <= self.failures:
            async with trio.open_nursery() as nursery:  # failures inside a nursery: an ExceptionGroup
                nursery.start_soon(self._fail)
        self.running.set()
        await trio.sleep_forever()

    async def _fail(self) -> None:
        await trio.sleep(RUN)  # the stimulus: a run that lasts, then fails (virtual time)
        raise self.error


async def test_a_service_that_fails_after_starting_is_started_again_with_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = Flaky(3, trio.BrokenResourceError("connection reset by peer"))
    restarts: list[float] = []
    metrics = NodeMetrics()

    async def on_restart() -> None:
        restarts.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        first = await nursery.start(
            lambda task_status: supervise(
                "flaky",
                service,
                on_restart=on_restart,
                on_failure=metrics.service_restarted,
                task_status=task_status,
            )
        )
        await service.running.wait()
        nursery.cancel_scope.cancel()
    assert first == "run 1"  # started is reported once, by the first run
    assert service.starts == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(restarts)]
    assert gaps == [pytest.approx(RUN + 0.2), pytest.approx(RUN + 0.4)]  # backoff 0.1, 0.2, 0.4
    restarted = metrics.registry.get_sample_value("aether_node_service_restarts_total", {"service": "flaky"})
    assert restarted == 3


async def test_a_service_that_returns_is_started_again(autojump_clock: trio.testing.MockClock) -> None:
    runs = 0
    again = trio.Event()

    async def short() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            again.set()
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervise, "short", run_forever(short))
        await again.wait()
        nursery.cancel_scope.cancel()
    assert runs == 3


async def test_a_failure_before_the_first_start_propagates() -> None:
    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise OSError("address already in use")

    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, "broken", broken)
    assert caught.group_contains(OSError, match="address already in use", depth=None)


async def test_cancellation_is_not_swallowed(autojump_clock: trio.testing.MockClock) -> None:
    service = Flaky(0, RuntimeError())
    with trio.move_on_after(5) as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, "forever", service)
    assert scope.cancelled_caught
    assert service.starts == 1


async def test_a_base_exception_is_not_swallowed(autojump_clock: trio.testing.MockClock) -> None:
    service = Flaky(1, KeyboardInterrupt())
    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, "interrupted", service)
    assert caught.group_contains(KeyboardInterrupt)
    assert service.starts == 1
