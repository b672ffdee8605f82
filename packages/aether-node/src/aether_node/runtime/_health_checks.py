"""Health checks of a node's ACTIVE instances: finds the hung ones (a process stopped, or an event loop
blocked for good), which answer no call and never die by themselves, and kills them, so that the
deployment manager restarts them as it restarts any instance that died (its restart policy, its
reason). Does not restart anything itself, nor touch the KV.

An instance that sent anything (a reply, a call of its own) within the last `interval` s is not asked:
a busy instance costs no check, an idle one a `health` request per interval. `failures` checks in a row
unanswered within `timeout` s each make it hung; one answer forgives the misses before it, and so does
a check during which the instance's main thread (its event loop) used CPU: a sync entry point computing
for a minute answers nothing meanwhile but is working, while a stopped process, or a loop blocked on a
lock or a sleep, uses none.
"""

from __future__ import annotations

import logging

import trio

from aether_slice.protocol import Kind

from ..core._errors import NodeError, StepTimeoutError
from ..core._policies import HealthChecks
from ..observe._metrics import read_main_thread_cpu
from ._slice_host import SliceHost
from ._slice_store import SliceStore

log = logging.getLogger("aether_node.health_checks")


def is_quiet(host: SliceHost, now: float, checks: HealthChecks) -> bool:
    """Whether `host` has sent nothing for a whole interval (it is due a check)."""
    return now - host.last_heard >= checks.interval


def is_working(cpu_before: float | None, cpu_after: float | None) -> bool:
    """Whether a main thread's CPU time (None: unknown) grew during a check: by a clock tick or more."""
    return cpu_before is not None and cpu_after is not None and cpu_after > cpu_before


async def check_forever(store: SliceStore, checks: HealthChecks) -> None:
    """Check the store's ACTIVE instances every `checks.interval` s until cancelled."""
    misses: dict[SliceHost, int] = {}
    while True:
        await trio.sleep(checks.interval)
        now = trio.current_time()
        due = [i.host for i in store.active() if is_quiet(i.host, now, checks)]
        cpu_before = {host: read_main_thread_cpu(host.pid) for host in due}
        answered: set[SliceHost] = set()
        async with trio.open_nursery() as nursery:
            for host in due:
                nursery.start_soon(_check, host, checks.timeout, answered)
        unanswered = [h for h in due if h not in answered and not h.exited.is_set()]
        working = {h for h in unanswered if is_working(cpu_before[h], read_main_thread_cpu(h.pid))}
        for host in working:
            log.debug("%s: no answer to a health check, but its event loop is computing", host.label)
        misses = {h: misses.get(h, 0) + 1 for h in unanswered if h not in working}
        for host, count in misses.items():
            if count >= checks.failures:
                why = f"hung: {count} health checks in a row unanswered within {checks.timeout:g} s each"
                log.warning("%s: %s; killing it", host.label, why)
                host.kill(because=why)


async def _check(host: SliceHost, timeout: float, answered: set[SliceHost]) -> None:
    try:
        await host.request(Kind.HEALTH, timeout)
    except StepTimeoutError:
        return
    except NodeError:  # it died meanwhile (its death is the deployment manager's to handle)
        return
    answered.add(host)
