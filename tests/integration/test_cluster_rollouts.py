"""Availability through changes on 3 real `aether-node` processes (issue 11, defects 3, 4 and 7):

- an upgrade to a version whose install fails (a dependency the index lacks) keeps the old version
  serving at its floor (`min_available`), says in the blueprint status that the upgrade is stuck and why,
  and a later upgrade to a good version goes through; an old instance whose process dies meanwhile is
  restarted where it was and serves again, and one that a killed node ran is replaced with the old
  version on a survivor;
- a whole cluster stopped gracefully (SIGTERM to every node, as `aether dev down` does) and started again
  comes back without a FAILED record and converges;
- a node killed with a FAILED record forgets it when it starts again (the failure was its previous
  run's), and keeps its other records.

Each test runs its own cluster (the second one restarts it).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio
from cluster_support import (
    BROKEN,
    ECHO,
    ECHO_11,
    ECHO_ID,
    GREETER,
    GREETER_ID,
    MISSING,
    SETTLE,
    Callers,
    Instance,
    SliceSpec,
    Watcher,
    active,
    background,
    exactly_active,
    kv_of,
    leader_node_id,
    logs,
    put_blueprint,
    running_cluster,
    show,
    start_node,
    wait_for,
)
from node_support import (
    client_node,
    host_of,
    kill_pid,
    kv_client,
    read_record,
    slice_key,
    wait_for_deleted,
    wait_for_state,
    write_command,
)

from aether_kv import KVClient
from aether_node import SliceState
from aether_node.client import ApiClient, BlueprintStatus
from aether_node.dev import LocalNodeCluster, wait_until_ready
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def blueprint_status(cluster: LocalNodeCluster, name: str) -> BlueprintStatus:
    """The status the operator reads (`aether blueprint status`), through the management API."""
    client = ApiClient([f"http://{n.management}" for n in cluster.nodes])
    return await trio.to_thread.run_sync(client.blueprint_status, name)


async def serving(kv: KVClient, count: int, name: str = "stuck") -> None:
    """Blueprint `name`: `count` echo 1.0.0 (floor `count`), until they are ACTIVE."""
    await put_blueprint(kv, name, SliceSpec(artifact=ECHO, instances=count, min_available=count))
    await wait_for(kv, exactly_active(count, ECHO), timeout=SETTLE, what="ACTIVE", artifact_id=ECHO_ID)


async def upgrade_that_fails(
    cluster: LocalNodeCluster, kv: KVClient, count: int, name: str = "stuck"
) -> list[Instance]:
    """Blueprint `name` upgraded to 9.9.9, which fails to install on every node: the records once each
    of the 3 nodes has tried it and failed (none is left to place it on)."""
    await put_blueprint(kv, name, SliceSpec(artifact=BROKEN, instances=count, min_available=count))
    return await wait_for(
        kv,
        lambda found: len([i for i in found if i.coordinates == BROKEN and i.state == "FAILED"]) == 3,
        timeout=SETTLE,
        what="9.9.9 FAILED on all 3 nodes",
        artifact_id=ECHO_ID,
        cluster=cluster,
    )


async def test_a_failed_upgrade_keeps_the_old_version_serving_and_says_why(
    broken_index: Path, tmp_path: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", broken_index, 3) as cluster, kv_of(cluster) as kv:
        await serving(kv, 2, "rollout")
        watcher = Watcher(kv, ECHO_ID)
        callers = Callers([n.ingress for n in cluster.nodes], concurrency=2)
        async with background(watcher, callers):
            await callers.made(20, timeout=60)
            # every node tries 9.9.9 once and fails (what removed the old instances before the fix)
            await upgrade_that_fails(cluster, kv, 2, "rollout")

            async def problem_now() -> str:
                (status,) = (await blueprint_status(cluster, "rollout")).slices
                return status.problem

            problem = await wait_until(
                problem_now,
                until=lambda problem: "fit on no live node" in problem,
                timeout=30,
                interval=0.1,
                what="the stuck upgrade's problem",
            )
            # the leader has planned on that view (before the fix: UNLOAD of both 1.0.0, "replaced by
            # version 9.9.9"); calls keep being answered by the old version
            await callers.made(50, timeout=60)
            found = await wait_for(kv, lambda _: True, timeout=10, what="a listing", artifact_id=ECHO_ID)
            assert len(active(found, ECHO)) == 2, show(found)
            assert watcher.lowest is not None and watcher.lowest[0] >= 2, watcher.describe_lowest()
            assert "upgrade to 9.9.9 is stuck: 3 new instances failed" in problem, problem
            assert MISSING in problem, problem  # the install failure, as the nodes reported it
            assert "1.0.0 keeps serving (2 ACTIVE)" in problem, problem

            # a good version replaces it: the FAILED 9.9.9 records go, 1.1.0 takes over
            await put_blueprint(kv, "rollout", SliceSpec(artifact=ECHO_11, instances=2, min_available=2))
            await wait_for(
                kv, exactly_active(2, ECHO_11), timeout=SETTLE, what="2 ACTIVE 1.1.0", artifact_id=ECHO_ID
            )
            await callers.made(20, timeout=60)
        assert watcher.lowest is not None and watcher.lowest[0] >= 2, watcher.describe_lowest()
        assert callers.failures == [], callers.summary()
        await wait_until(
            lambda: blueprint_status(cluster, "rollout"),
            until=lambda status: not status.slices[0].problem,
            timeout=30,
            interval=0.1,
            what="the problem cleared",
        )
        assert (await blueprint_status(cluster, "rollout")).slices[0].problem == ""


async def test_an_old_instance_that_crashes_while_an_upgrade_is_stuck_comes_back(
    broken_index: Path, tmp_path: Path
) -> None:
    """The upgrade cannot install anywhere, and a process of the old version that serves dies (SIGKILL):
    its node restarts it and it serves again. Before the fix the leader removed it as a stale instance
    that was not ACTIVE, and the slice was left with one instance for good (with none, had it one)."""
    async with running_cluster(tmp_path / "cluster", broken_index, 3) as cluster, kv_of(cluster) as kv:
        await serving(kv, 2)
        found = await upgrade_that_fails(cluster, kv, 2)
        victim = active(found, ECHO)[0]
        data_dir = Path(cluster.plan(victim.node_id).data_dir)
        host = host_of(data_dir, ECHO, victim.instance)
        assert host is not None, show(found)
        watcher = Watcher(kv, ECHO_ID)
        async with background(watcher):
            kill_pid(host.pid)
            await wait_until(
                lambda: trio.to_thread.run_sync(host_of, data_dir, ECHO, victim.instance),
                until=lambda again: again is not None and again.pid != host.pid,
                timeout=SETTLE,
                what=f"{ECHO}#{victim.instance} running again",
            )
            found = await wait_for(
                kv, lambda found: len(active(found, ECHO)) == 2, timeout=SETTLE, what="2 ACTIVE again",
                artifact_id=ECHO_ID, cluster=cluster,
            )  # fmt: skip
        assert (victim.node_id, victim.instance) in {(i.node_id, i.instance) for i in active(found, ECHO)}, (
            show(found)
        )
        removed = [(r, str(i)) for r, seen in watcher.history for i in seen if i.state == "UNLOAD"]
        assert removed == [], removed


@pytest.mark.parametrize("count", [2, 1], ids=["one-of-two-lost", "the-only-one-lost"])
async def test_a_node_killed_while_an_upgrade_is_stuck_has_the_old_version_replaced_on_a_survivor(
    broken_index: Path, tmp_path: Path, count: int
) -> None:
    """The upgrade cannot install anywhere, and a node that runs an instance of the old version is
    SIGKILLed: the old version is made up to its count on a survivor — from the old instance still
    running, or, where the node took the only one, from the version the leader recorded as the last
    that served (`cluster/serving/`). Before, the only version the leader created was the one that
    fails: the slice stayed short, below its floor (with one instance: offline), until an operator
    changed the blueprint."""
    async with running_cluster(tmp_path / "cluster", broken_index, 3) as cluster, kv_of(cluster) as kv:
        await serving(kv, count)
        found = await upgrade_that_fails(cluster, kv, count)
        # the leader has recorded the version that serves (what it brings back when none is left)
        await wait_until(
            lambda: kv.get(f"cluster/serving/{ECHO_ID}"),
            until=lambda found: found is not None and ECHO.encode() in found.value,
            timeout=30,
            interval=0.05,
            what=f"cluster/serving/ naming {ECHO}",
        )
        leader = await leader_node_id(cluster, kv)
        hosts = {i.node_id for i in active(found, ECHO)}
        victim = min(hosts - {leader} or hosts)  # a follower's if there is one
        survivors = {n.node_id for n in cluster.nodes} - {victim}
        cluster.kill(victim, signal.SIGKILL)
        found = await wait_for(
            kv,
            lambda found: len([i for i in active(found, ECHO) if i.node_id in survivors]) == count,
            timeout=SETTLE,
            what=f"{count} ACTIVE {ECHO} on the survivors after {victim} was killed",
            artifact_id=ECHO_ID,
            cluster=cluster,
        )
        assert not active(found, BROKEN), show(found)


@pytest.mark.long
async def test_a_cluster_stopped_gracefully_comes_back_without_failed_instances(
    sample_index: Path, tmp_path: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster:
        async with kv_of(cluster) as kv:
            await put_blueprint(
                kv, "app", SliceSpec(artifact=ECHO, instances=3), SliceSpec(artifact=GREETER, instances=2)
            )
            for coordinates, artifact_id, count in ((ECHO, ECHO_ID, 3), (GREETER, GREETER_ID, 2)):
                await wait_for(
                    kv, exactly_active(count, coordinates), timeout=SETTLE, what=coordinates,
                    artifact_id=artifact_id, cluster=cluster,
                )  # fmt: skip

        # `aether dev down`: SIGTERM to every node at once; each stops gracefully
        processes = dict(cluster.processes)
        await trio.to_thread.run_sync(cluster.stop_all)
        codes = {node_id: process.returncode for node_id, process in processes.items()}
        assert codes == {node_id: 0 for node_id in processes}, f"{codes}\n{logs(cluster)}"

        # `aether dev up`: the same nodes again
        for node in cluster.nodes:
            start_node(cluster, node.node_id)
        await wait_until_ready(cluster, timeout=60)
        async with kv_of(cluster) as kv:
            watchers = [Watcher(kv, ECHO_ID), Watcher(kv, GREETER_ID)]
            async with background(*watchers):
                for coordinates, artifact_id, count in ((ECHO, ECHO_ID, 3), (GREETER, GREETER_ID, 2)):
                    await wait_for(
                        kv, exactly_active(count, coordinates), timeout=SETTLE, what=f"{coordinates} again",
                        artifact_id=artifact_id, cluster=cluster,
                    )  # fmt: skip
            failed = [
                (revision, str(i))
                for watcher in watchers
                for revision, found in watcher.history
                for i in found
                if i.state == "FAILED"
            ]
            assert failed == [], f"{failed[:10]}\n{logs(cluster)}"


@pytest.mark.long
async def test_a_failure_from_before_a_restart_is_forgotten_when_the_node_starts(
    broken_index: Path, tmp_path: Path
) -> None:
    with client_node(tmp_path, broken_index) as node:  # no leader: the test writes the commands
        async with kv_client(node) as kv:
            failed, serving = slice_key(node.node_id, BROKEN, 1), slice_key(node.node_id, ECHO, 2)
            await write_command(kv, failed, SliceState.ACTIVATE)
            await write_command(kv, serving, SliceState.ACTIVATE)
            await wait_for_state(kv, failed, SliceState.FAILED, SETTLE)
            await wait_for_state(kv, serving, SliceState.ACTIVE, SETTLE)
            node.kill()  # no graceful stop: the records stay as they are
            await trio.to_thread.run_sync(node.start)
            await wait_for_deleted(kv, failed, 30)
            record = await read_record(kv, serving)
            assert record is not None, node.log_tail()
            await wait_for_state(kv, serving, SliceState.ACTIVE, SETTLE)
