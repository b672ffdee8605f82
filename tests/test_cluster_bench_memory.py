"""benchmarks/cluster_bench.py: what it counts as an instance's memory (PSS and RSS from the kernel, for real
processes) and how it estimates an N from the last one measured; and its memory guard, which must end a
run before the machine runs short."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import trio

from support import wait_until

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cluster_bench.py"
_spec = importlib.util.spec_from_file_location("cluster_bench", SCRIPT)
assert _spec is not None and _spec.loader is not None
cluster_bench = importlib.util.module_from_spec(_spec)
sys.modules["cluster_bench"] = cluster_bench
_spec.loader.exec_module(cluster_bench)


def test_a_forked_child_counts_its_shared_pages_in_rss_but_only_a_share_in_pss() -> None:
    ballast = bytearray(os.urandom(32 * 1024 * 1024))  # 32 MiB the child shares until it writes
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: wait until measured, touching nothing
        os.close(write)
        os.read(read, 1)
        os._exit(0)
    os.close(read)
    try:
        found = cluster_bench.memory_kib([os.getpid(), pid])
        rss, pss = found[pid]
        assert rss >= 32 * 1024  # the shared ballast is all in the child's RSS...
        assert pss <= rss - 15 * 1024  # ...and half of it, at most, in its PSS
        figures = cluster_bench.memory_figures([pid], {pid: "instance"})
        assert figures["count_instance"] == 1
        assert figures["pss_instance_mib"] == pytest.approx(pss / 1024, rel=0.2)
    finally:
        os.write(write, b"x")
        os.close(write)
        os.waitpid(pid, 0)
        del ballast


def test_the_estimate_uses_what_an_n_added_not_rss_nor_the_nodes_fixed_memory() -> None:
    assert cluster_bench.instance_estimate_mib([]) == cluster_bench.INSTANCE_MIB
    measured = {
        "instances": 1000,
        "available_drop_mib": 3000.0,
        "pss_instance_mib": 3100.0,
        "rss_instance_mib": 18300.0,
        "pss_node_mib": 180.0,
    }
    assert cluster_bench.instance_estimate_mib([measured]) == pytest.approx(1.25 * 3.1)
    dropped_more = {**measured, "available_drop_mib": 3400.0}
    assert cluster_bench.instance_estimate_mib([measured, dropped_more]) == pytest.approx(1.25 * 3.4)


async def test_the_guard_ends_the_run_when_memory_available_falls_under_the_floor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, object] = {}
    monkeypatch.setattr(cluster_bench, "MEMORY_FLOOR_MIB", cluster_bench.available_mib() + 1024 * 1024)
    with pytest.raises(cluster_bench.BenchError, match="MemAvailable"):  # plain: main() catches it
        async with cluster_bench.memory_guarded(seen):
            await trio.sleep_forever()
    assert seen["available_min_mib"] == pytest.approx(cluster_bench.available_mib(), rel=0.2)


async def test_the_guard_leaves_a_body_alone_while_memory_is_available() -> None:
    seen: dict[str, object] = {}
    async with cluster_bench.memory_guarded(seen):
        await wait_until(lambda: seen.get("looks", 0) >= 3, timeout=10, what="the guard's third look")
    assert "aborted" not in seen
    assert seen["available_min_mib"] > cluster_bench.MEMORY_FLOOR_MIB
