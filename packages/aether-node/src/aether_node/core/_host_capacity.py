"""What a node offers the slices' `[slices.resources]` when its configuration does not say (`[capacity]`,
`--capacity-cpu`, `--capacity-memory-mib`): the CPUs this process may run on and the machine's memory, as
Kubernetes' kubelet and Nomad's client find them. Before, a node offered 1 core and 1,024 MiB whatever
the host had: on a 32-core host a slice asking for 2 cores could be placed nowhere. A container's quota
(cgroup `cpu.max`, `memory.max`) is not read: where one applies, set `[capacity]` to it.
"""

from __future__ import annotations

import os

from ._records import Capacity


def host_capacity() -> Capacity:
    """This host's CPUs (those this process may run on) and memory (MiB)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20
    return Capacity(cpu=float(cpus), memory_mib=int(memory))
