"""The memory an instance may use: its slice's `[slices.resources] memory_mib`, which places it (the
node must have that much left) and bounds it. An instance found over it is killed, and restarted as one
that died is (its restart policy, its reason naming the memory): a slice that leaks or takes a huge
payload in loses that instance, never the machine's memory for the nodes and the KV replicas beside it.

Measured as the process's PSS (its private pages, and its share of the pages it shares: an instance
forked from its slice's template shares most of the template's), every `CHECK_EVERY` s by the instance's
health-check task (`_health_checks.py`), only for slices that declare `memory_mib`; its RSS first, which
is cheap and never below the PSS, so that the PSS (a walk of its pages) is read only for an instance that
may be over. Between two checks
an instance may go over; the kernel's OOM killer, should the host run out meanwhile, takes a slice
instance first (`aether_slice.host` raises their OOM score). Pure.
"""

from __future__ import annotations

CHECK_EVERY = 2.0  # s between two looks at an instance's memory, when its slice declares memory_mib

_MIB = 1 << 20


def over_limit(pss_bytes: int | None, limit_mib: int) -> str | None:
    """Why an instance using `pss_bytes` (None: unknown, its process gone) must be killed under a limit of
    `limit_mib` (0: none); None if it may go on."""
    if limit_mib <= 0 or pss_bytes is None or pss_bytes <= limit_mib * _MIB:
        return None
    return (
        f"memory: it used {pss_bytes / _MIB:.0f} MiB (PSS), over the {limit_mib} MiB its slice declares"
        " ([slices.resources] memory_mib)"
    )
