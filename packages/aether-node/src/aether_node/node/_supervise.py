"""Supervision of the node's long-running services: an unexpected error in one service restarts that
service (with backoff), never ends the node.

No error from the KV, a peer, a slice or a client may end a node. Each service handles the failures it
expects; `supervise` is the net under them for the ones nobody expected (a bug, a record that does not
decode, an error type a library added). It must not hide what stops the node on purpose: cancellation
(trio.Cancelled, and so SIGTERM and a hard stop) always propagates, and so do KeyboardInterrupt and
other BaseExceptions.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

log = logging.getLogger("aether_node.supervise")

Service = Callable[..., Awaitable[Any]]  # async def service(*, task_status=...) -> None


async def supervise(
    name: str,
    service: Service,
    *,
    on_restart: Callable[[], Awaitable[None]] | None = None,
    on_failure: Callable[[str], None] | None = None,
    initial: float = 0.1,
    maximum: float = 10.0,
    healthy_after: float = 30.0,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `service` (started with `nursery.start`, so it reports when it is ready) until cancelled.

    The first start is the node's: an error before the service reports started propagates (a port that
    cannot be bound is a configuration error to report, not to retry forever). After that, whenever the
    service raises (or returns), it is logged and started again after a backoff of `initial`·2ⁿ s
    (at most `maximum`; back to `initial` once a run lasted `healthy_after` s): `on_failure(name)` is
    told (a metric), and `on_restart` runs once it has reported started again. Cancellation passes
    through at once.
    """
    started = False
    delay = initial
    while True:
        began = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                value = await nursery.start(service)
                if not started:
                    started = True
                    task_status.started(value)
                elif on_restart is not None:
                    await on_restart()
            log.error("service %s ended on its own", name)
        except Exception:  # an ExceptionGroup too; a group holding Cancelled is a BaseExceptionGroup
            if not started:
                raise
            log.exception("service %s failed", name)
        if on_failure is not None:
            on_failure(name)
        if trio.current_time() - began >= healthy_after:
            delay = initial
        log.warning("starting service %s again in %.1f s", name, delay)
        await trio.sleep(delay)
        delay = min(delay * 2, maximum)


def run_forever(service: Callable[[], Awaitable[Any]]) -> Service:
    """Adapt a service that has no readiness to report (`async def run()`) to `supervise`: it counts as
    started at once."""

    async def adapted(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await service()

    return adapted
