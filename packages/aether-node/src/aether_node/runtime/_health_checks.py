"""Health checks of a node's ACTIVE instances: finds the hung ones (a process stopped, or an event loop
blocked for good), which answer no call and never die by themselves, and kills them, so that the
deployment manager restarts them as it restarts any instance that died (its restart policy, its
reason). Does not restart anything itself, nor touch the KV.

Each instance is checked by its slice's settings (`SliceHealth`: the blueprint's `[slices.health]` over
the node's `[health]`), read again before every check: a change of them applies to the running
instances, none is restarted for it; a slice may turn the checks off.

An instance that sent anything (a reply, a call of its own) within the last `interval` s is not asked:
a busy instance costs no check, an idle one a `health` request per interval. `failures` checks in a row
unanswered within `timeout` s each make it hung; one answer forgives the misses before it, and so does
a check during which the instance's main thread (its event loop) used CPU: a sync entry point computing
for a minute answers nothing meanwhile but is working, while a stopped process, or a loop blocked on a
lock or a sleep, uses none. Not once a request to it has timed out with nothing heard from it since: it
computes for a caller that gave up (a sync entry point in an endless loop), and every call routed to it
would time out too.
"""

from __future__ import annotations

import errno
import logging
import math

import trio

from aether_slice.protocol import Kind

from ..core._errors import NodeError, StepTimeoutError
from ..core._policies import HealthChecks
from ..observe._metrics import read_main_thread_cpu, read_pss_bytes, read_rss_bytes
from ._broadcast import Broadcast, wait_any
from ._health_settings import SliceHealth
from ._lifecycle import Phase
from ._memory_limit import CHECK_EVERY, over_limit
from ._slice_host import SliceHost
from ._slice_store import LocalInstance, SliceStore

log = logging.getLogger("aether_node.health_checks")


def is_quiet(host: SliceHost, now: float, checks: HealthChecks) -> bool:
    """Whether `host` has sent nothing for a whole interval (it is due a check)."""
    return now - host.last_heard >= checks.interval


def is_working(cpu_before: float | None, cpu_after: float | None) -> bool:
    """Whether a main thread's CPU time (None: unknown) grew during a check: by a clock tick or more."""
    return cpu_before is not None and cpu_after is not None and cpu_after > cpu_before


async def check_forever(store: SliceStore, settings: SliceHealth) -> None:
    """Check each of the store's ACTIVE instances by its slice's settings until cancelled: a task per
    instance process, from the time it becomes ACTIVE (the store calls `watch`) until it leaves ACTIVE or
    ends."""
    watched: set[SliceHost] = set()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(settings.follow)

        def watch(instance: LocalInstance) -> None:
            if instance.host not in watched:
                watched.add(instance.host)
                nursery.start_soon(_watch, instance, settings, watched)

        for instance in store.active():
            watch(instance)
        store.activation_listeners.add(watch)
        try:
            await trio.sleep_forever()
        finally:
            store.activation_listeners.discard(watch)


async def _watch(instance: LocalInstance, settings: SliceHealth, watched: set[SliceHost]) -> None:
    """Check one instance once it has been quiet for `interval` s, and at most every `interval` s, until
    it is no longer ACTIVE, ends, or is killed as hung; and, if its slice declares `memory_mib`, its
    memory every `_memory_limit.CHECK_EVERY` s (killed over it), unless its memory cgroup holds it to the
    limit (`_memory_cgroup.py`: a new limit is given to the cgroup). Its slice's settings are read again
    before each check, and a change of any slice's settings ends the wait at once (to read them again): a
    shorter interval, or checks turned on, count from the last check."""
    host = instance.host
    artifact_id = instance.key.coordinates.artifact_id
    misses = 0
    rested_since = trio.current_time()
    memory_due = rested_since
    try:
        while instance.phase is Phase.ACTIVE and instance.alive:
            checks = settings.of(artifact_id)
            limit = settings.memory_mib(artifact_id)
            if host.hard_limited:  # (the kernel holds it to its limit: given the new one, if it changed)
                why = _new_hard_limit(host, limit)
                limit = 0
            elif limit and trio.current_time() >= memory_due:
                why = await _over_memory(host.pid, limit)
                memory_due = trio.current_time() + CHECK_EVERY
            else:
                why = None
            if why is not None:
                log.warning("%s: %s; killing it", host.label, why)
                host.kill(because=why)
                return
            due = math.inf if checks is None else max(rested_since, host.last_heard) + checks.interval
            if checks is None or trio.current_time() < due:
                await _until(min(due, memory_due) if limit else due, settings.changed, host.exited)
                continue
            if not is_quiet(host, trio.current_time(), checks) or await _passes(host, checks.timeout):
                misses = 0
            else:
                misses += 1
            if misses >= checks.failures:
                why = f"hung: {misses} health checks in a row unanswered within {checks.timeout:g} s each"
                log.warning("%s: %s; killing it", host.label, why)
                host.kill(because=why)
                return
            rested_since = trio.current_time()
    finally:
        watched.discard(host)


def _new_hard_limit(host: SliceHost, limit_mib: int) -> str | None:
    """Give `host`'s memory cgroup its slice's limit now, `limit_mib` (0: none), if that changed; why it
    must be killed if the kernel could not bring it under a lower one (EBUSY). Any other failure to set
    it leaves the instance to the 2-second checks (`hard_limited` off), said in the log."""
    cgroup = host.cgroup
    assert cgroup is not None
    if limit_mib == cgroup.limit_mib:
        return None
    lowered = limit_mib > 0 and (cgroup.limit_mib <= 0 or limit_mib < cgroup.limit_mib)
    error = cgroup.set_limit(limit_mib)
    if error is None:
        log.info("%s: its memory limit is now %s", host.label, f"{limit_mib} MiB" if limit_mib else "none")
        return None
    if lowered and error.errno == errno.EBUSY:
        return (
            f"memory: it uses more than the {limit_mib} MiB its slice now declares ([slices.resources]"
            " memory_mib; the kernel could not reclaim enough)"
        )
    log.warning("%s: %s; its memory is checked every 2 s instead", host.label, error.strerror)
    host.hard_limited = False
    return None


async def _over_memory(pid: int | None, limit_mib: int) -> str | None:
    """Why the process `pid` must be killed under a limit of `limit_mib` (`_memory_limit.over_limit`), or
    None. Its RSS, never below its PSS, is read first and mostly settles it (an instance shares ~14 MiB of
    its template's pages, counted whole in its RSS); its PSS, a walk of its pages (~0.2-0.5 ms, more for a
    big process), off the event loop."""
    if pid is None:
        return None
    rss = read_rss_bytes(pid)
    if rss is None or over_limit(rss, limit_mib) is None:
        return None
    return over_limit(await trio.to_thread.run_sync(read_pss_bytes, pid), limit_mib)


async def _passes(host: SliceHost, timeout: float) -> bool:
    """One check: whether `host` passed it: it answered `health` within `timeout` s, died meanwhile (its
    death is the deployment manager's to handle), or kept its event loop computing all along (working,
    not hung)."""
    cpu_before = read_main_thread_cpu(host.pid)
    try:
        await host.request(Kind.HEALTH, timeout)
        return True
    except StepTimeoutError:
        pass
    except NodeError:
        return True
    if host.exited.is_set():
        return True
    if is_working(cpu_before, read_main_thread_cpu(host.pid)):
        if host.given_up_on():
            log.info("%s: no answer to a health check, computing since a request to it timed out", host.label)
            return False
        log.debug("%s: no answer to a health check, but its event loop is computing", host.label)
        return True
    return False


async def _until(deadline: float, *events: Broadcast) -> None:
    """Wait until `deadline` (trio's clock) or until any of `events` is set."""
    with trio.move_on_at(deadline):
        await wait_any(*events)
