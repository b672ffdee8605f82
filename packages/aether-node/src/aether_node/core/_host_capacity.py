"""What a node offers the slices' `[slices.resources]` when its configuration does not say (`[capacity]`,
`--capacity-cpu`, `--capacity-memory-mib`): the CPUs this process may run on and the machine's memory, as
Kubernetes' kubelet and Nomad's client find them, each cut to the quota of the cgroups the process is in
(a container's: cgroup v2 `cpu.max` and `memory.max`, v1 `cpu.cfs_quota_us` over `cpu.cfs_period_us` and
`memory.limit_in_bytes`, the lowest of the process's cgroup and those above it). Before, a node offered
1 core and 1,024 MiB whatever the host had: on a 32-core host a slice asking for 2 cores could be placed
nowhere; and a node in a container of 2 cores on that host offered all 32.

Parsing is pure (`cgroup_paths`, `cpu_quota_cores`, `memory_limit_mib`); `cgroup_limits` reads the files.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ._records import Capacity

CGROUP_ROOT = Path("/sys/fs/cgroup")
_MIB = 1 << 20
# v1 says "no limit" with the largest multiple of the page size that fits an int64; anything near it is none
_V1_UNLIMITED = 1 << 62


def host_capacity(cgroup_root: Path = CGROUP_ROOT) -> Capacity:
    """This host's CPUs (those this process may run on) and memory (MiB), each cut to the quota of this
    process's cgroups (`cgroup_limits`)."""
    cpus = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // _MIB
    try:
        quota_cpus, quota_memory = cgroup_limits(cgroup_root)
    except (OSError, ValueError):  # (a sandbox that forbids a stat, a cgroup name that is no UTF-8)
        quota_cpus, quota_memory = None, None
    return Capacity(
        cpu=min(cpus, quota_cpus) if quota_cpus is not None else cpus,
        memory_mib=int(min(memory, quota_memory) if quota_memory is not None else memory),
    )


def cgroup_paths(proc_cgroup: str) -> dict[str, str]:
    """A process's cgroup per controller, from its `/proc/PID/cgroup`: v1's lines (`4:memory:/a/b`,
    `2:cpu,cpuacct:/`) under each controller's name and under their list as written (the name of its
    mount's directory); v2's one line (`0::/a/b`) under "". Pure."""
    paths: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        paths[controllers] = path
        for controller in controllers.split(","):
            paths.setdefault(controller, path)
    return paths


def cpu_quota_cores(quota: str, period: str | None = None) -> float | None:
    """The cores a CPU quota allows: v2's `cpu.max` ("150000 100000": 1.5; "max 100000": none), or v1's
    `cpu.cfs_quota_us` ("-1": none) with its `cpu.cfs_period_us` as `period`. None if there is no quota or
    it does not read as one. Pure."""
    fields = quota.split()
    if period is None:  # v2: both in one file
        if len(fields) != 2:
            return None
        fields, period = fields[:1], fields[1]
    try:
        allowed, every = int(fields[0]), int(period.strip())
    except (ValueError, IndexError):
        return None
    return allowed / every if allowed > 0 and every > 0 else None


def memory_limit_mib(limit: str) -> int | None:
    """The MiB a memory limit allows: v2's `memory.max` ("max": none) or v1's `memory.limit_in_bytes`
    (a number near 2^63: none). None if there is no limit or it does not read as one. Pure."""
    try:
        value = int(limit.strip())
    except ValueError:
        return None
    return value // _MIB if 0 < value < _V1_UNLIMITED else None


def cgroup_limits(
    root: Path = CGROUP_ROOT, proc_cgroup: str | None = None
) -> tuple[float | None, int | None]:
    """The cores and MiB the cgroups of this process allow (None: no limit found), the lowest of its own
    cgroup's and those above it, in v2 (`root` is the unified hierarchy) or v1 (`root/cpu`, `root/memory`).
    `proc_cgroup`: its `/proc/self/cgroup` (read if None). Nothing readable: (None, None)."""
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None, None
    paths = cgroup_paths(proc_cgroup)
    cpus: list[float] = []
    memory: list[int] = []
    if "" in paths:  # v2 (controllers bound to v1 leave its files out: nothing found there)
        for directory in _upwards(root, paths[""]):
            cpus += _found(cpu_quota_cores(_read(directory / "cpu.max")))
            memory += _found(memory_limit_mib(_read(directory / "memory.max")))
    cpu_mount = next((root / name for name in ("cpu", "cpu,cpuacct") if (root / name).is_dir()), None)
    if "cpu" in paths and cpu_mount is not None:
        for directory in _upwards(cpu_mount, paths["cpu"]):
            quota = _read(directory / "cpu.cfs_quota_us")
            cpus += _found(cpu_quota_cores(quota, _read(directory / "cpu.cfs_period_us")) if quota else None)
    if "memory" in paths and (root / "memory").is_dir():
        for directory in _upwards(root / "memory", paths["memory"]):
            memory += _found(memory_limit_mib(_read(directory / "memory.limit_in_bytes")))
    return (min(cpus) if cpus else None), (min(memory) if memory else None)


def _upwards(mount: Path, path: str) -> list[Path]:
    """The directories of a cgroup and of those above it, up to its hierarchy's mount. Where the path
    is not under the mount (a container whose cgroups are mounted from its own: `/proc/self/cgroup` names
    the host's path), the mount's root is the process's cgroup."""
    directory = mount / path.strip("/")
    if not directory.is_dir():
        return [mount]
    found = [directory]
    while directory != mount and directory.parent != directory:
        directory = directory.parent
        found.append(directory)
    return found


def _read(file: Path) -> str:
    try:
        return file.read_text()
    except OSError:
        return ""


def _found(value: float | int | None) -> list:
    return [value] if value is not None and math.isfinite(value) else []
