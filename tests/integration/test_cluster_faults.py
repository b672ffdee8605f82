"""Cluster orchestration under change and failure, with real `aether-node` processes (each test its own
cluster): a node joining (rebalancing that never drops below the wanted ACTIVE count), then a follower
SIGKILLed while callers keep calling; and the leader SIGKILLed in the middle of a scale-up.

Failover budget: node lease TTL 1.5 s (renewed every 0.375 s), Raft elections 0.5–1.5 s.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import trio
from cluster_support import (
    ECHO,
    ECHO_ID,
    Callers,
    Instance,
    SliceSpec,
    Watcher,
    active,
    all_endpoints,
    background,
    exactly_active,
    instances,
    kv_of,
    leader_node_id,
    logs,
    per_node,
    poll,
    processes_under,
    put_blueprint,
    running_cluster,
    show,
    start_node,
    wait_for,
)

from aether_node import EndpointRecord, SliceState
from aether_node.dev import wait_until_ready
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


SETTLE = 60.0  # deadline for instances to become ACTIVE (first installs included)
FAILOVER = 20.0  # deadline for replacements after a SIGKILL (budget: lease 1.5 s + election + activation)


def on_nodes(node_ids: set[str], count: int) -> object:
    """Exactly `count` records of echo 1.0.0, all ACTIVE, all on `node_ids`, distinct instance numbers."""

    def check(found: list) -> bool:
        return (
            exactly_active(count, ECHO)(found)
            and {i.node_id for i in found} <= node_ids
            and len({i.instance for i in found}) == count
        )

    return check


@pytest.mark.long
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
        most, revision, at = watcher.most_placed()
        assert most <= 6 + 1, f"more than one move at a time at revision {revision}: {show(at)}"

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
            await callers.made(50)  # steady load before the fault
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
            await callers.made(100)  # and after the replacement
        failed = callers.failures
        report = (
            f"{victim} killed; replacements ACTIVE after {replaced_at - killed_at:.2f} s; "
            f"{callers.summary()}; failures at +" + ", ".join(f"{r.at - killed_at:.2f}s" for r in failed[:20])
        )
        print(report)
        await wait_until(  # its replica and slice hosts
            lambda: processes_under(Path(cluster.plan(victim).data_dir)),
            until=lambda left: not left,
            timeout=5,
            what=f"the processes of the killed node {victim} to end with it",
        )
        published = await all_endpoints(kv, ECHO_ID)
        assert {e.node_id for e in published.values()} <= survivors, sorted(published)
        assert len(published) == 6, sorted(published)  # one record per instance
        assert {e.entries for e in published.values()} == {("echo", "info")}, published
        assert len(callers.results) > 50, report
        assert not callers.failures_after(replaced_at), f"calls failed after the replacements: {report}"
        assert not failed, f"calls failed during the failover: {report}"


# ---------------------------------------------------------------- the leader dies mid-way


@attrs.frozen(kw_only=True)
class LeaderKill:
    """What happened when the leader was SIGKILLed in the middle of a scale-up 3 → 6 (see `leader_kill`)."""

    leader: str
    survivors: frozenset[str]
    mid_way: list[Instance]  # the records when the leader was killed
    placed: bool  # 6 records on the survivors, distinct numbers, none failed or being removed
    placed_after: float  # s after the kill (or the deadline)
    settled: bool  # ... and all 6 ACTIVE
    settled_after: float
    final: list[Instance]  # 2 s after settling (or at the deadline)
    before_final: list[Instance]
    new_leader: str
    endpoints: dict[str, EndpointRecord]
    watcher: Watcher
    callers: Callers
    log: str

    def describe(self) -> str:
        return (
            f"leader {self.leader} killed mid-way with {show(self.mid_way)}; placed={self.placed} after "
            f"{self.placed_after:.2f} s; all ACTIVE={self.settled} after {self.settled_after:.2f} s; "
            f"final {show(self.final)}; new leader {self.new_leader}; calls: {self.callers.summary()}"
        )


def placed_on(node_ids: frozenset[str], count: int) -> Callable[[list[Instance]], bool]:
    def check(found: list[Instance]) -> bool:
        return (
            len(found) == count
            and {i.node_id for i in found} <= node_ids
            and len({i.instance for i in found}) == count
            and all(i.coordinates == ECHO and i.state not in NOT_PLACED for i in found)
        )

    return check


NOT_PLACED = frozenset({SliceState.FAILED, SliceState.UNLOAD, SliceState.UNLOADING})


async def _leader_kill(directory: Path, index: Path) -> LeaderKill:
    async with running_cluster(directory, index, 3) as cluster, kv_of(cluster) as kv:
        await put_blueprint(kv, "echo", SliceSpec(artifact=ECHO, instances=3))
        await wait_for(kv, exactly_active(3, ECHO), timeout=SETTLE, what="3 ACTIVE", cluster=cluster)
        leader = await leader_node_id(cluster, kv)
        survivors = frozenset(n.node_id for n in cluster.nodes) - {leader}

        watcher = Watcher(kv, ECHO_ID)
        callers = Callers([cluster.plan(n).ingress for n in sorted(survivors)], ECHO_ID, concurrency=4)
        async with background(watcher, callers):
            await callers.made(50)
            await put_blueprint(kv, "echo", SliceSpec(artifact=ECHO, instances=6))
            # Kill the leader as soon as its first new record shows: it is in the middle of the work.
            await wait_until(
                lambda: any(n > 3 for _, n, _ in watcher.keys_seen),
                timeout=10,
                interval=0.002,
                what="the leader's first new record",
            )
            mid_way = sorted(watcher.records.values())
            killed_at = time.monotonic()
            cluster.kill(leader, signal.SIGKILL)
            placed, _, _ = await poll(kv, placed_on(survivors, 6), timeout=FAILOVER, artifact_id=ECHO_ID)
            placed_after = time.monotonic() - killed_at
            settled, before_final, _ = await poll(
                kv, on_nodes(set(survivors), 6), timeout=FAILOVER if placed else 0, artifact_id=ECHO_ID
            )
            settled_after = time.monotonic() - killed_at
            await callers.made(200)  # the new leader must not keep going (several reconcile passes)
        final = await instances(kv, ECHO_ID)
        new_leader = await leader_node_id(cluster, kv)
        scenario = LeaderKill(
            leader=leader,
            survivors=survivors,
            mid_way=mid_way,
            placed=placed,
            placed_after=placed_after,
            settled=settled,
            settled_after=settled_after,
            final=final,
            before_final=before_final,
            new_leader=new_leader,
            endpoints=await all_endpoints(kv, ECHO_ID),
            watcher=watcher,
            callers=callers,
            log=logs(cluster, 40),
        )
        print(scenario.describe())
        return scenario


@pytest.fixture(scope="module")
def leader_kill(sample_index: Path, tmp_path_factory: pytest.TempPathFactory) -> LeaderKill:
    """One cluster of 3: echo 3 ACTIVE; the blueprint scaled to 6; the leader SIGKILLed as soon as its
    first new record shows; then up to FAILOVER s for the new leader to place, and as much to activate,
    while 4 callers call echo through the survivors' ingresses."""
    return trio.run(_leader_kill, tmp_path_factory.mktemp("leader-kill") / "cluster", sample_index)


@pytest.mark.long
def test_leader_was_killed_mid_way(leader_kill: LeaderKill) -> None:
    mid_way = leader_kill.mid_way
    assert any(i.instance > 3 for i in mid_way), f"the leader never started: {show(mid_way)}"
    assert len(active(mid_way)) < 6, f"the leader had finished already: {show(mid_way)}"
    assert leader_kill.new_leader in leader_kill.survivors, leader_kill.describe()


def test_new_leader_places_the_rest_exactly_once(leader_kill: LeaderKill) -> None:
    assert leader_kill.placed, f"{leader_kill.describe()}\n{leader_kill.log}"
    final = leader_kill.final
    assert placed_on(leader_kill.survivors, 6)(final), leader_kill.describe()
    reused = leader_kill.watcher.instance_numbers_reused()
    assert not reused, f"instance numbers used twice (duplicated work): {reused}"
    # Nothing was placed on a survivor and then taken back (no surplus, no duplicate).
    kept = {(i.coordinates, i.instance, i.node_id) for i in final}
    undone = {k for k in leader_kill.watcher.keys_seen if k[2] in leader_kill.survivors} - kept
    assert not undone, f"records created on survivors and removed again: {sorted(undone)}"


def test_new_leader_brings_every_instance_to_active(leader_kill: LeaderKill) -> None:
    assert leader_kill.settled, f"{leader_kill.describe()}\n{leader_kill.log}"
    assert leader_kill.final == leader_kill.before_final, leader_kill.describe()
    published = leader_kill.endpoints
    assert len(published) == 6, sorted(published)  # one record per instance
    assert {e.node_id for e in published.values()} <= leader_kill.survivors, sorted(published)


def test_calls_through_the_survivors_keep_succeeding_while_the_leader_dies(leader_kill: LeaderKill) -> None:
    callers = leader_kill.callers
    assert len(callers.results) > 50, callers.summary()
    assert not callers.failures, callers.summary()
