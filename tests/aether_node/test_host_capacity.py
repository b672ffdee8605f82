"""What a node offers where `[capacity]` does not say (`core/_host_capacity.py`): the host's CPUs and
memory cut to its cgroups' quota. A node in a container of 2 cores on a 32-core host offered all 32: the
real cgroups of this machine (v1, as root) hold a process with a quota, and the layouts of v2 and of a
container's own mount are read from directories laid out as the kernel does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aether_node.core._host_capacity import (
    cgroup_limits,
    cgroup_paths,
    cpu_quota_cores,
    host_capacity,
    memory_limit_mib,
)

V1 = Path("/sys/fs/cgroup")
HOST_CPUS = float(len(os.sched_getaffinity(0)))
HOST_MIB = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20


def test_cgroup_paths_reads_v1_and_v2_lines() -> None:
    paths = cgroup_paths("12:memory:/a/b\n4:cpu,cpuacct:/c\n1:name=systemd:/d\n0::/e/f\nnot a line\n")
    assert paths["memory"] == "/a/b"
    assert paths["cpu"] == paths["cpuacct"] == paths["cpu,cpuacct"] == "/c"
    assert paths[""] == "/e/f"


@pytest.mark.parametrize(
    ("quota", "period", "cores"),
    [
        ("150000 100000\n", None, 1.5),
        ("max 100000\n", None, None),
        ("200000\n", "100000\n", 2.0),
        ("-1\n", "100000\n", None),
        ("", None, None),
        ("lots 100000", None, None),
        ("100000 0", None, None),
    ],
)
def test_a_cpu_quota_in_cores(quota: str, period: str | None, cores: float | None) -> None:
    assert cpu_quota_cores(quota, period) == cores


@pytest.mark.parametrize(
    ("limit", "mib"),
    [("536870912\n", 512), ("max\n", None), ("9223372036854771712\n", None), ("", None), ("0", None)],
)
def test_a_memory_limit_in_mib(limit: str, mib: int | None) -> None:
    assert memory_limit_mib(limit) == mib


def lay_out(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_v2_takes_the_lowest_of_the_cgroup_and_those_above_it(tmp_path: Path) -> None:
    root = lay_out(
        tmp_path,
        {
            "cpu.max": "max 100000\n",
            "memory.max": "max\n",
            "system.slice/cpu.max": "300000 100000\n",
            "system.slice/memory.max": "1073741824\n",
            "system.slice/aether.service/cpu.max": "max 100000\n",
            "system.slice/aether.service/memory.max": "4294967296\n",
        },
    )
    assert cgroup_limits(root, "0::/system.slice/aether.service\n") == (3.0, 1024)
    assert cgroup_limits(root, "0::/\n") == (None, None)


def test_a_containers_own_mount_is_its_cgroup(tmp_path: Path) -> None:
    """Without a cgroup namespace, `/proc/self/cgroup` names the host's path, which the container's
    mount does not have: its root is the process's cgroup."""
    root = lay_out(tmp_path, {"cpu.max": "200000 100000\n", "memory.max": "2147483648\n"})
    assert cgroup_limits(root, "0::/docker/0123abcd\n") == (2.0, 2048)


def test_no_cgroup_files_is_no_limit(tmp_path: Path) -> None:
    assert cgroup_limits(tmp_path, "4:memory:/x\n1:cpu:/y\n0::/\n") == (None, None)


def test_the_host_is_offered_where_no_quota_applies() -> None:
    cpus, memory = cgroup_limits()
    assert host_capacity().cpu == (min(HOST_CPUS, cpus) if cpus else HOST_CPUS)
    assert host_capacity().memory_mib == (min(HOST_MIB, memory) if memory else HOST_MIB)


def v1_writable() -> bool:
    return (
        os.geteuid() == 0
        and (V1 / "cpu" / "cpu.cfs_quota_us").exists()
        and (V1 / "memory" / "memory.limit_in_bytes").exists()
    )


@pytest.fixture
def v1_cgroups() -> Iterator[tuple[Path, Path]]:
    """A cpu cgroup and a memory cgroup with a child, made for this test under this process's own (as
    the kernel has them: cgroup v1 here) and removed after it."""
    own = cgroup_paths(Path("/proc/self/cgroup").read_text())
    name = f"aether-capacity-test-{uuid.uuid4().hex[:8]}"
    cpu = V1 / "cpu" / own["cpu"].strip("/") / name
    memory = V1 / "memory" / own["memory"].strip("/") / name
    made: list[Path] = []
    try:
        for directory in (cpu, memory, memory / "child"):
            directory.mkdir()
            made.append(directory)
        yield cpu, memory
    finally:
        for directory in reversed(made):
            directory.rmdir()


@pytest.mark.skipif(not v1_writable(), reason="needs root and the cgroup v1 cpu and memory controllers")
def test_a_process_in_cgroups_with_a_quota_is_offered_the_quota(v1_cgroups: tuple[Path, Path]) -> None:
    cpu, memory = v1_cgroups
    (cpu / "cpu.cfs_period_us").write_text("100000")
    (cpu / "cpu.cfs_quota_us").write_text("150000")  # 1.5 cores
    (memory / "memory.limit_in_bytes").write_text(str(512 * 2**20))
    (memory / "child" / "memory.limit_in_bytes").write_text(str(2048 * 2**20))  # the parent's holds
    code = (
        "import json; from aether_node.core._host_capacity import host_capacity; c = host_capacity();"
        " print(json.dumps([c.cpu, c.memory_mib]))"
    )
    join = 'echo $$ > "$1/cgroup.procs" && echo $$ > "$2/cgroup.procs" && exec "$3" -c "$4"'
    answer = subprocess.run(
        ["sh", "-c", join, "sh", str(cpu), str(memory / "child"), sys.executable, code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(answer.stdout) == [min(1.5, HOST_CPUS), min(512, HOST_MIB)]


@pytest.mark.skipif(not v1_writable(), reason="needs root and the cgroup v1 cpu controller")
def test_a_cgroup_whose_name_is_no_text_leaves_the_host_offered() -> None:
    """What cannot be read (here `/proc/self/cgroup` naming a cgroup in bytes that are no UTF-8; a
    sandbox that forbids a look) must not stop the node from starting: the host is offered."""
    own = cgroup_paths(Path("/proc/self/cgroup").read_text())
    parent = os.fsencode(V1 / "cpu" / own["cpu"].strip("/"))
    odd = os.path.join(parent, b"aether-capacity-\xff-" + uuid.uuid4().hex[:8].encode())
    os.mkdir(odd)
    try:
        code = (
            "import json; from aether_node.core._host_capacity import host_capacity; c = host_capacity();"
            " print(json.dumps([c.cpu, c.memory_mib]))"
        )
        join = 'echo $$ > "$1/cgroup.procs" && exec "$2" -c "$3"'
        answer = subprocess.run(
            [b"sh", b"-c", join.encode(), b"sh", odd, os.fsencode(sys.executable), code.encode()],
            capture_output=True,
            timeout=60,
            check=True,
        )
        assert json.loads(answer.stdout) == [HOST_CPUS, HOST_MIB]
    finally:
        os.rmdir(odd)
