"""Cluster orchestration under change and failure, with real `aether-node` processes (each test its own
cluster): a node joining (rebalancing that never drops below the wanted ACTIVE count), then a follower
SIGKILLed while callers keep calling; and the leader SIGKILLed in the middle of a scale-up.

Failover budget: node lease TTL 2 s, Raft elections 0.5–1.5 s.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import node_support
import pytest
import trio
from cluster_support import (
    ECHO,
    ECHO_ID,
    Callers,
    SliceSpec,
    Watcher,
    active,
    all_endpoints,
    background,
    exactly_active,
    instances,
    kv_of,
    leader_node_id,
    per_node,
    processes_under,
    put_blueprint,
    running_cluster,
    show,
    start_node,
    wait_for,
)

from aether_node._local_cluster import LocalNodeCluster, wait_until_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]

sample_index = node_support.sample_index  # the session's wheel index (a shared fixture)

SETTLE = 60.0  # deadline for instances to become ACTIVE (first installs included)
FAILOVER = 20.0  # deadline for replacements after a SIGKILL (budget: lease 2 s + election + activation)


def on_nodes(node_ids: set[str], count: int) -> object:
    """Exactly `count` records of echo 1.0.0, all ACTIVE, all on `node_ids`, distinct instance numbers."""

    def check(found: list) -> bool:
        return (
            exactly_active(count, ECHO)(found)
            and {i.node_id for i in found} <= node_ids
            and len({i.instance for i in found}) == count
        )

    return check


async def wait_gone(directory: Path, timeout: float) -> list[int]:
    """Until no process runs from `directory` (a killed node's replica and slice hosts); the survivors."""
    with trio.move_on_after(timeout):
        while processes_under(directory):
            await trio.sleep(0.05)
    return processes_under(directory)


async def test_join_rebalances_then_a_follower_dies(sample_index: Path, tmp_path: Path) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        await put_blueprint(kv, "echo", SliceSpec(artifact=ECHO, instances=6))
        found = await wait_for(kv, exactly_active(6, ECHO), timeout=SETTLE, what="6 ACTIVE", cluster=cluster)
        assert per_node(found) == {"node-1": 2, "node-2": 2, "node-3": 2}, show(found)

        # ---- a 4th node joins: work moves to it, each replacement ACTIVE before the old one goes
        watcher = Watcher(kv, ECHO_ID)
        async with background(watcher):
            joined = cluster.add_node()
            start_node(cluster, joined.node_id)
            await wait_until_ready(cluster, timeout=60)
            found = await wait_for(
                kv,
                lambda found: (
                    exactly_active(6, ECHO)(found)
                    and per_node(found).get(joined.node_id, 0) >= 1
                    and max(per_node(found).values()) - min(per_node(found).values()) <= 1
                    and len(per_node(found)) == 4
                ),
                timeout=SETTLE,
                what=f"6 ACTIVE, evened out over 4 nodes including {joined.node_id}",
                cluster=cluster,
            )
        assert watcher.lowest is not None and watcher.lowest[0] >= 6, (
            f"ACTIVE dropped below 6 while rebalancing: {watcher.describe_lowest()}"
        )
        assert not watcher.instance_numbers_reused(), watcher.instance_numbers_reused()

        # ---- SIGKILL a follower (a Raft voter, not the leader) that hosts instances, under calls
        leader = await leader_node_id(cluster, kv)
        victim = max(
            (n for n in ("node-1", "node-2", "node-3") if n != leader),
            key=lambda n: (per_node(found).get(n, 0), n),
        )
        assert per_node(found).get(victim, 0) >= 1, show(found)
        survivors = {n.node_id for n in cluster.nodes} - {victim}
        callers = Callers(
            [cluster.plan(n).ingress for n in sorted(survivors)], ECHO_ID, "echo", concurrency=4
        )
        async with background(callers):
            await trio.sleep(0.5)
            killed_at = time.monotonic()
            cluster.kill(victim, signal.SIGKILL)
            found = await wait_for(
                kv,
                on_nodes(survivors, 6),
                timeout=FAILOVER,
                what=f"6 ACTIVE on the survivors after {victim} was killed",
                cluster=cluster,
            )
            replaced_at = time.monotonic()
            await trio.sleep(1.0)
        failed = callers.failures
        report = (
            f"{victim} killed; replacements ACTIVE after {replaced_at - killed_at:.2f} s; "
            f"{callers.summary()}; failures at +" + ", ".join(f"{r.at - killed_at:.2f}s" for r in failed[:20])
        )
        print(report)
        left = await wait_gone(Path(cluster.plan(victim).data_dir), 5)
        assert not left, f"processes of the killed node {victim} outlived it: {left}"
        published = await all_endpoints(kv, ECHO_ID)
        assert {e.node_id for e in published.values()} <= survivors, sorted(published)
        assert len(published) == 6 * 2, sorted(published)
        assert len(callers.results) > 50, report
        assert not callers.failures_after(replaced_at), f"calls failed after the replacements: {report}"
        assert not failed, f"calls failed during the failover: {report}"


async def test_leader_dies_in_the_middle_of_a_scale_up(sample_index: Path, tmp_path: Path) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        await put_blueprint(kv, "echo", SliceSpec(artifact=ECHO, instances=3))
        await wait_for(kv, exactly_active(3, ECHO), timeout=SETTLE, what="3 ACTIVE", cluster=cluster)
        leader = await leader_node_id(cluster, kv)
        survivors = {n.node_id for n in cluster.nodes} - {leader}

        watcher = Watcher(kv, ECHO_ID)
        callers = Callers([cluster.plan(n).ingress for n in sorted(survivors)], ECHO_ID, concurrency=4)
        async with background(watcher, callers):
            await trio.sleep(0.5)
            await put_blueprint(kv, "echo", SliceSpec(artifact=ECHO, instances=6))
            # Kill the leader as soon as its first new record shows: it is in the middle of the work.
            with trio.move_on_after(10):
                while not any(n > 3 for _, n, _ in watcher.keys_seen):
                    await trio.sleep(0.002)
            mid_way = await instances(kv, ECHO_ID)
            killed_at = time.monotonic()
            cluster.kill(leader, signal.SIGKILL)
            assert any(i.instance > 3 for i in mid_way), f"the leader never started: {show(mid_way)}"
            assert len(active(mid_way)) < 6, f"the leader had finished already: {show(mid_way)}"
            found = await wait_for(
                kv,
                on_nodes(survivors, 6),
                timeout=FAILOVER,
                what=f"6 ACTIVE on the survivors after the leader {leader} was killed",
                cluster=cluster,
            )
            replaced_at = time.monotonic()
            await trio.sleep(2.0)  # the new leader must not keep going
        print(
            f"leader {leader} killed with {show(mid_way)}; 6 ACTIVE after {replaced_at - killed_at:.2f} s;"
            f" {callers.summary()}"
        )
        final = await instances(kv, ECHO_ID)
        assert final == found, f"records changed after the work was done: {show(found)} → {show(final)}"
        assert len({i.instance for i in final}) == 6, show(final)
        new_leader = await leader_node_id(cluster, kv)
        assert new_leader in survivors
        reused = watcher.instance_numbers_reused()
        assert not reused, f"instance numbers used twice (duplicated work): {reused}"
        published = await all_endpoints(kv, ECHO_ID)
        assert len(published) == 6 * 2 and {e.node_id for e in published.values()} <= survivors, sorted(
            published
        )
        assert not callers.failures_after(replaced_at), callers.summary()
