"""Hard memory limits: a memory cgroup per instance of a slice that declares `[slices.resources]
memory_mib`, whose limit the kernel enforces. The one module that touches the cgroup file system.

Where the node may make cgroups (the cgroup v1 memory controller, mounted at `/sys/fs/cgroup/memory`, and
the node's own cgroup there writable: as root, or delegated), `MemoryCgroups.find` makes
`aether-{node_id}-{hash of its data directory}` under the node's own cgroup (one per node on this host, the
same after a restart: two nodes of one id, tests or two dev clusters, never remove each other's), and
`create` one cgroup per instance process in it, its
limit (and its limit with swap, so that an instance over it is not swapped out instead) the slice's
`memory_mib`. The template's child joins it as its first step, before any code of the slice runs (the FORK
names it: `aether_slice.host`), and the node checks after LOAD that it did (`holds`). The kernel then
charges the instance with the pages it writes (its copies of the template's shared pages among them, not
the pages it still shares) and, at the limit, reclaims its cache or ends it (the OOM killer, within the
cgroup: nothing else on the machine is touched); `oom_kills` tells the node so, for the instance's exit
reason. A cgroup is removed once its process has ended (one still holding a process the instance started,
or a zombie not yet reaped, at the node's next `create` or its `close`); the ones a node left behind (it
was killed) when it starts again.

Where it cannot (no v1 memory controller: a host of cgroup v2 alone, where a node needs a delegated
subtree it does not have; not root; `--no-memory-cgroups`), or an instance did not join, the node looks at
the instance's memory every 2 s instead (`_memory_limit.py`): a soft limit. Pure parsing apart
(`own_memory_cgroup`, `oom_kills`); the rest is small writes and reads of cgroupfs files, on the event
loop (each a few µs: the kernel's, no disk). Cgroups of a node id no node runs again stay behind, empty.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import signal
from pathlib import Path

import trio

log = logging.getLogger("aether_node.memory")

V1_ROOT = Path("/sys/fs/cgroup/memory")
_MIB = 1 << 20
UNLIMITED = -1  # what memory.limit_in_bytes takes for no limit
_NAME_TRIES = 100  # names `create` tries past those another process made


def own_memory_cgroup(proc_cgroup: str) -> str | None:
    """The path of a process's cgroup of the v1 memory controller, from its `/proc/PID/cgroup`
    (`4:memory:/some/path`); None if it has none (a cgroup v2 host). Pure."""
    for line in proc_cgroup.splitlines():
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        if "memory" in controllers.split(","):
            return path
    return None


def oom_kills(oom_control: str) -> int:
    """How many processes the kernel's OOM killer ended in a cgroup, from its `memory.oom_control`
    (`oom_kill N`; 0 if the kernel does not say). Pure."""
    found = re.search(r"^oom_kill (\d+)$", oom_control, re.MULTILINE)
    return int(found.group(1)) if found else 0


def base_name(node_id: str, data_dir: Path) -> str:
    """The name of the cgroup of a node's instances: its id and its data directory's (one node at a time
    uses a data directory; a node started again finds what it left). Pure but for resolving the path."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:10]
    return f"aether-{re.sub(r'[^A-Za-z0-9_.-]', '_', node_id)}-{digest}"


class InstanceCgroup:
    """One instance's cgroup: `path` (in cgroupfs), `relative` (as `/proc/PID/cgroup` names it), its limit."""

    def __init__(
        self, path: Path, relative: str, limit_mib: int, *, left: list[InstanceCgroup] | None = None
    ) -> None:
        self.path = path
        self.relative = relative
        self.limit_mib = 0
        self._left = left  # where `remove` leaves it if it cannot remove it yet (`MemoryCgroups`)
        error = self.set_limit(limit_mib)
        if error is not None:
            raise error

    def set_limit(self, limit_mib: int) -> OSError | None:
        """Make the limit `limit_mib` (0: none), with and without swap alike; the error if it could not
        (EBUSY: lowered under what the instance uses, and the kernel could not reclaim enough)."""
        value = str(limit_mib * _MIB if limit_mib > 0 else UNLIMITED)
        swap = self.path / "memory.memsw.limit_in_bytes"
        # The limit with swap may never be under the one without: raise it first, lower it last.
        raising = limit_mib <= 0 or (0 < self.limit_mib < limit_mib)
        steps = (
            [swap, self.path / "memory.limit_in_bytes"]
            if raising
            else [self.path / "memory.limit_in_bytes", swap]
        )
        try:
            for file in steps:
                if file is swap and not swap.exists():  # (no swap accounting in this kernel)
                    continue
                file.write_text(value)
        except OSError as error:
            what = f"could not set the memory limit of {self.path} to {limit_mib} MiB: {error.strerror}"
            return OSError(error.errno, what)
        self.limit_mib = limit_mib
        return None

    def kill_all(self) -> None:
        """SIGKILL every process left in the cgroup (once its instance has ended: what it started, also
        outside its process group, is its own and ends with it; a cgroup with a process in it cannot be
        removed)."""
        try:
            pids = (self.path / "cgroup.procs").read_text().split()
        except OSError:
            return
        for pid in pids:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid), signal.SIGKILL)

    def holds(self, pid: int) -> bool:
        """Whether process `pid` is in this cgroup (False if it is gone)."""
        try:
            return own_memory_cgroup(Path(f"/proc/{pid}/cgroup").read_text()) == self.relative
        except OSError:
            return False

    def oom_kills(self) -> int:
        """How many of its processes the kernel ended at the limit (0 if it cannot tell)."""
        try:
            return oom_kills((self.path / "memory.oom_control").read_text())
        except OSError:
            return 0

    def remove(self) -> bool:
        """Remove the cgroup (once its processes have ended); False if it could not yet (a process in it:
        one the instance started that has not ended, or not been reaped, yet), and then it is removed
        later (its `MemoryCgroups`' next `create`, or `close`)."""
        if self.removed():
            return True
        if self._left is not None and self not in self._left:
            self._left.append(self)
        return False

    def removed(self) -> bool:
        """Remove the cgroup now if it can be; whether it is gone."""
        try:
            self.path.rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


class MemoryCgroups:
    """The node's cgroups of instances: `create(name, limit_mib)` one, under `base`."""

    def __init__(self, base: Path, relative: str) -> None:
        self.base = base
        self.relative = relative  # as /proc/PID/cgroup names `base`
        self._made = 0
        self._left: list[InstanceCgroup] = []  # those of ended instances not removable when they ended

    @classmethod
    def find(
        cls,
        node_id: str,
        data_dir: Path,
        *,
        root: Path = V1_ROOT,
        proc_self: Path = Path("/proc/self/cgroup"),
    ) -> MemoryCgroups | None:
        """The cgroups of instances of the node `node_id` whose data directory is `data_dir`, made (and
        those it left behind when it was killed removed), if this host and process allow it; None (said,
        once) if not."""
        try:
            own = own_memory_cgroup(proc_self.read_text())
        except OSError:
            own = None
        if own is None or not (root / "memory.limit_in_bytes").exists():
            log.info("memory limits are checked every 2 s: no cgroup v1 memory controller here")
            return None
        name = base_name(node_id, data_dir)
        relative = f"{own.rstrip('/')}/{name}"
        base = root / relative.lstrip("/")
        cgroups = cls(base, relative)
        try:
            base.mkdir(exist_ok=True)
            cgroups.remove_left_behind()
            probe = cgroups.create("probe", 1)  # (made and gone: the limits can be set here)
            if probe is None or not probe.remove():
                raise OSError("its probe could not be made and removed")
        except OSError as error:
            log.info("memory limits are checked every 2 s: cannot make memory cgroups in %s: %s", base, error)
            return None
        log.info("memory limits are the kernel's: a cgroup per instance under %s", base)
        return cgroups

    def create(self, name: str, limit_mib: int) -> InstanceCgroup | None:
        """A new cgroup for one instance process (`name` made unique here), limited to `limit_mib`; None
        (said) if it could not be made. Those of ended instances that could not be removed then go now."""
        self._left[:] = [cgroup for cgroup in self._left if not cgroup.removed()]
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        for _ in range(_NAME_TRIES):
            self._made += 1
            leaf = f"{safe}.{self._made}"
            path = self.base / leaf
            try:
                self.base.mkdir(exist_ok=True)  # (someone may have removed it while it had no instance)
                path.mkdir()
            except FileExistsError:
                # not ours (a node of this id before this process, or another one on this host): never
                # taken over, nor removed
                continue
            except OSError as error:
                return self._not_made(path, error)
            try:
                return InstanceCgroup(path, f"{self.relative}/{leaf}", limit_mib, left=self._left)
            except OSError as error:
                try:
                    path.rmdir()  # (made just now, empty)
                except OSError:
                    pass
                return self._not_made(path, error)
        return self._not_made(self.base / f"{safe}.*", OSError(f"{_NAME_TRIES} names in use"))

    @staticmethod
    def _not_made(path: Path, error: OSError) -> None:
        log.warning("cannot make the memory cgroup %s (its memory is checked every 2 s): %s", path, error)

    def remove_left_behind(self) -> None:
        """Remove the cgroups of instances gone (a node killed before it could); those of instances that
        still run stay (and stay limited)."""
        for entry in os.scandir(self.base):
            if entry.is_dir(follow_symlinks=False):
                try:
                    os.rmdir(entry.path)
                except OSError:
                    pass

    async def close(self, patience: float = 2.0) -> None:
        """Remove what is left, the node's own cgroup too, once its instances have ended (waiting up to
        `patience` s for the last of them to go: a cgroup with a process in it cannot be removed)."""
        with trio.move_on_after(patience):
            while True:
                try:
                    self.remove_left_behind()
                    self.base.rmdir()
                    return
                except FileNotFoundError:
                    return
                except OSError:
                    await trio.sleep(0.05)
