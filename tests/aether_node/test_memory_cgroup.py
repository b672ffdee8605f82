"""Memory cgroups (`runtime/_memory_cgroup.py`): the parsing of /proc/PID/cgroup and memory.oom_control,
and, where this host lets a process make cgroups (cgroup v1, as root), the real thing: a limit set,
raised, lowered and lifted, a process that joins its cgroup and is ended by the kernel over its limit,
and nothing left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import types
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aether_node.runtime._health_checks import _new_hard_limit
from aether_node.runtime._memory_cgroup import InstanceCgroup, MemoryCgroups, oom_kills, own_memory_cgroup
from support import wait_until

V1 = """12:pids:/user.slice
4:memory:/process_api/abc
0::/user.slice
"""


def test_the_memory_controller_s_path_is_read_from_proc() -> None:
    assert own_memory_cgroup(V1) == "/process_api/abc"
    assert own_memory_cgroup("7:cpu,memory:/x\n") == "/x"
    assert own_memory_cgroup("0::/user.slice/session-1.scope\n") is None  # cgroup v2 alone
    assert own_memory_cgroup("") is None


def test_the_kernel_s_oom_kills_are_read_from_oom_control() -> None:
    assert oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n") == 2
    assert oom_kills("oom_kill_disable 0\nunder_oom 0\n") == 0  # an older kernel says nothing


def test_a_host_without_the_v1_memory_controller_has_no_cgroups(tmp_path: Path) -> None:
    proc_self = tmp_path / "cgroup"
    proc_self.write_text("0::/user.slice\n")
    assert MemoryCgroups.find("n1", tmp_path, root=tmp_path / "memory", proc_self=proc_self) is None
    proc_self.write_text(V1)
    assert MemoryCgroups.find("n1", tmp_path, root=tmp_path / "memory", proc_self=proc_self) is None


@pytest.fixture
async def cgroups(tmp_path: Path) -> AsyncIterator[MemoryCgroups]:
    found = MemoryCgroups.find(f"test-{os.getpid()}", tmp_path)
    if found is None:
        pytest.skip("this host lets no memory cgroup be made here (cgroup v1 as root)")
    try:
        yield found
    finally:
        await found.close()
        assert not found.base.exists()


def _in_cgroup(cgroup: InstanceCgroup, then: str) -> subprocess.Popen[str]:
    """A Python process that joins `cgroup`, then runs `then` (with `sys` imported), its stdin and stdout
    pipes (text)."""
    joins = f"import sys; open(sys.argv[1] + '/cgroup.procs', 'w').write('0'); {then}"
    return subprocess.Popen(
        [sys.executable, "-c", joins, str(cgroup.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _limits(path: Path) -> tuple[int, int]:
    read = [int((path / f"memory.{name}limit_in_bytes").read_text()) for name in ("", "memsw.")]
    return read[0], read[1]


async def test_a_limit_is_set_raised_lowered_and_lifted_with_swap_alike(cgroups: MemoryCgroups) -> None:
    cgroup = cgroups.create("org-example-echo-1", 64)
    assert cgroup is not None and cgroup.limit_mib == 64
    assert _limits(cgroup.path) == (64 << 20, 64 << 20)
    for mib in (128, 32, 48):  # each order the kernel takes (the limit with swap never under the other)
        assert cgroup.set_limit(mib) is None
        assert _limits(cgroup.path) == (mib << 20, mib << 20)
    assert cgroup.set_limit(0) is None
    plain, swap = _limits(cgroup.path)
    assert plain > 1 << 50 and swap > 1 << 50  # none
    assert cgroup.remove() and not cgroup.path.exists()


async def test_a_process_in_its_cgroup_is_ended_by_the_kernel_over_its_limit(cgroups: MemoryCgroups) -> None:
    cgroup = cgroups.create("org-example-hog-1", 32)
    assert cgroup is not None
    child = _in_cgroup(
        cgroup,
        "print('in', flush=True); sys.stdin.readline(); held = bytearray(b'1') * (64 << 20);"
        " print('survived', flush=True)",
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline() == "in\n"
        assert cgroup.holds(child.pid)
        assert not cgroup.holds(os.getpid())
        assert cgroup.oom_kills() == 0
        child.stdin.write("grow\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == -9
        assert child.stdout.read() == ""  # it never got past its allocation
    finally:
        child.kill()
        child.wait()
    assert cgroup.oom_kills() == 1
    assert cgroup.remove()


async def test_a_name_another_node_of_this_id_made_is_neither_taken_nor_removed(
    cgroups: MemoryCgroups,
) -> None:
    """Two nodes of one id on one host (tests run two at once, each a node 'n1') count their cgroups'
    names from the same start: the second passes over the first's, which it must not remove (an empty
    one is an instance about to join it)."""
    one, other = (MemoryCgroups(cgroups.base, cgroups.relative) for _ in range(2))
    first = one.create("org-example-echo-0", 16)
    second = other.create("org-example-echo-0", 16)
    assert first is not None and second is not None
    assert first.path.is_dir() and second.path.is_dir() and first.path != second.path
    assert first.remove() and second.remove()


async def test_a_node_of_the_same_id_elsewhere_on_this_host_leaves_an_instance_s_cgroup_alone(
    cgroups: MemoryCgroups, tmp_path: Path
) -> None:
    """A node starting (it removes the empty cgroups it left behind when killed) or stopping, with the
    id of one already running here but its own data directory (tests run two at once, each a node 'n1';
    two dev clusters), does not remove the other's empty cgroup: an instance about to join it, which
    would then run with no hard limit (a flaky test found this). The same node started again finds its
    own."""
    waiting = cgroups.create("org-example-hog-0", 16)  # made; its instance not in it yet
    assert waiting is not None
    node_id = cgroups.base.name.rsplit("-", 1)[0].removeprefix("aether-")
    other = MemoryCgroups.find(node_id, tmp_path / "elsewhere")
    assert other is not None and other.base != cgroups.base
    await other.close()
    assert waiting.path.is_dir()
    again = MemoryCgroups.find(node_id, tmp_path)  # the first node, started again after being killed
    assert again is not None and again.base == cgroups.base
    assert not waiting.path.exists()  # (it left it behind)


async def test_a_cgroup_still_holding_a_process_is_removed_once_it_has_none(cgroups: MemoryCgroups) -> None:
    """An instance's cgroup that cannot be removed as it ends (a process it started lives on, or is not
    reaped yet) is removed at the next creation, not left until the node stops."""
    held = cgroups.create("org-example-echo-0", 64)
    assert held is not None
    child = _in_cgroup(held, "sys.stdin.read()")
    try:
        await wait_until(lambda: held.holds(child.pid), timeout=10, what="the child in its cgroup")
        assert not held.remove()  # (a process in it)
    finally:
        child.kill()
        child.wait()
    assert held.path.is_dir()
    after = cgroups.create("org-example-echo-1", 64)
    assert after is not None
    assert not held.path.exists()
    assert after.remove()


async def test_what_an_instance_left_running_in_its_cgroup_is_ended_with_it(cgroups: MemoryCgroups) -> None:
    cgroup = cgroups.create("org-example-forker-1", 64)
    assert cgroup is not None
    leaves_one_behind = (
        "import os, subprocess, sys; open(sys.argv[1] + '/cgroup.procs', 'w').write('0');"
        " child = subprocess.Popen([sys.executable, '-c', 'import signal; signal.pause()'],"
        " start_new_session=True, stdout=subprocess.DEVNULL,"
        " stderr=subprocess.DEVNULL);"
        " print(child.pid, flush=True)"
    )
    started = subprocess.run(
        [sys.executable, "-c", leaves_one_behind, str(cgroup.path)],
        capture_output=True,
        text=True,
        check=True,
    )
    left = int(started.stdout)
    try:
        assert cgroup.holds(left)  # its own session, outside the instance's group: in its cgroup still
        assert not cgroup.removed()
        cgroup.kill_all()
        await wait_until(lambda: not cgroup.holds(left), timeout=10, what="the process left behind ended")
        await wait_until(cgroup.removed, timeout=10, what="the cgroup removed")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(left, signal.SIGKILL)


async def test_a_limit_the_cgroup_cannot_take_leaves_the_instance_to_the_checks(
    cgroups: MemoryCgroups,
) -> None:
    cgroup = cgroups.create("org-example-echo-2", 64)
    assert cgroup is not None
    host = types.SimpleNamespace(cgroup=cgroup, label="org.example:echo:1.0#2", hard_limited=True)
    assert cgroup.removed()  # (gone under it: every write of a limit fails, ENOENT)
    assert _new_hard_limit(host, 128) is None  # type: ignore[arg-type]
    assert host.hard_limited is False  # the 2-second checks hold it from now on


async def test_a_lower_limit_the_kernel_cannot_reclaim_down_to_ends_the_instance(
    cgroups: MemoryCgroups,
) -> None:
    cgroup = cgroups.create("org-example-hog-2", 64)
    assert cgroup is not None
    child = _in_cgroup(
        cgroup, "held = bytearray(b'1') * (32 << 20); print('held', flush=True); sys.stdin.readline()"
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        host = types.SimpleNamespace(cgroup=cgroup, label="org.example:hog:1.0#2", hard_limited=True)
        why = _new_hard_limit(host, 8)  # type: ignore[arg-type]
        assert why is not None and "uses more than the 8 MiB its slice now declares" in why
        assert host.hard_limited is True
    finally:
        child.kill()
        child.wait()
