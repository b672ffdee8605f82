"""Canary and blue-green rollouts on 3 real `aether-node` processes, under calls through every ingress:

- blue-green: the full 1.1.0 set comes up ACTIVE beside 1.0.0, every call switches to it in one step,
  1.0.0 stays for the grace period and then goes; no idempotent call fails and the ACTIVE count never
  drops below the slice's instances;
- blue-green switched back: once switched, the blueprint has converged (the old set is only kept for a
  rollback); an abort in the grace period sends every call (through every ingress) back to 1.0.0 and
  removes 1.1.0, with no failed call, and the blueprint then has not converged, its slice saying why;
- canary to a version whose install fails aborts on its own with the nodes' reason, and 1.0.0 keeps every
  instance and every call;
- canary to a version whose entry point raises: the leader judges the step from the nodes' calls per
  version, aborts, and only the canary's share of the calls failed meanwhile;
- a canary of a good version that nobody calls (nothing to judge) waits after its window, and `promote`
  through the management API completes it with no failed call.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import node_support
import pytest
import trio
from cluster_support import (
    BROKEN,
    ECHO,
    ECHO_11,
    ECHO_ID,
    MISSING,
    SETTLE,
    Callers,
    SliceSpec,
    Watcher,
    active,
    background,
    call,
    canary_waiting_for_an_operator,
    exactly_active,
    kv_of,
    put_blueprint,
    rollout_phase,
    running_cluster,
    show,
    wait_for,
)

from aether_kv import KVClient
from aether_node import UpdateSpec, UpdateStrategy, rollout_key
from aether_node.client import ApiClient, RolloutInfo
from aether_node.dev import LocalNodeCluster
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


BLUE_GREEN = UpdateSpec(strategy=UpdateStrategy.BLUE_GREEN, grace_s=2.0)
CANARY = UpdateSpec(strategy=UpdateStrategy.CANARY, steps=(50, 100), step_window_s=1.0)


RAISING = "org.aether:echo:1.2.0"  # its echo raises


@pytest.fixture
def raising_index(sample_index: Path, tmp_path: Path) -> Path:
    """The sample index plus `org.aether.echo` 1.2.0, whose `echo` raises on every call."""
    index = tmp_path / "index"
    shutil.copytree(sample_index, index)
    source = (
        "from aether_slice import EntryPoint, hookimpl\n\n\n"
        "@hookimpl\n"
        "def aether_entry_points(context):\n"
        "    def echo(payload):\n"
        "        raise RuntimeError('1.2.0 is broken')\n\n"
        "    return [EntryPoint(name='echo', function=echo, idempotent=True)]\n"
    )
    node_support.build_wheel(
        tmp_path / "raising-echo",
        index,
        name="org.aether.echo",
        version="1.2.0",
        entry_point=ECHO_ID,
        source=source,
    )
    return index


async def rollout_gone(kv: KVClient, *, timeout: float = SETTLE) -> None:
    await wait_until(
        lambda: kv.get(rollout_key(ECHO_ID)),
        until=lambda found: found is None,
        timeout=timeout,
        what="no rollout",
    )


def api(cluster: LocalNodeCluster) -> ApiClient:
    return ApiClient([f"http://{n.management}" for n in cluster.nodes])


async def test_blue_green_switches_in_one_step_with_no_failed_call(
    sample_index: Path, tmp_path: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        await put_blueprint(kv, "web", SliceSpec(artifact=ECHO, instances=2, update=BLUE_GREEN))
        await wait_for(
            kv, exactly_active(2, ECHO), timeout=SETTLE, what="2 ACTIVE 1.0.0", artifact_id=ECHO_ID
        )
        watcher = Watcher(kv, ECHO_ID)
        callers = Callers([n.ingress for n in cluster.nodes], concurrency=3)
        async with background(watcher, callers):
            await callers.made(20, timeout=30)
            await put_blueprint(kv, "web", SliceSpec(artifact=ECHO_11, instances=2, update=BLUE_GREEN))
            switched = await rollout_phase(kv, "SWITCHED")
            assert (switched.stable, switched.candidate, switched.share) == ("1.0.0", "1.1.0", 100)
            found = await wait_for(kv, lambda _: True, timeout=10, what="a listing", artifact_id=ECHO_ID)
            assert len(active(found, ECHO_11)) == 2, show(found)
            await callers.made(20, timeout=30)
            # the nodes' metrics count the calls per version while the rollout splits them
            assert await rollout_calls(cluster, "1.1.0") > 0
            await wait_for(
                kv, exactly_active(2, ECHO_11), timeout=SETTLE, what="only 1.1.0 left", artifact_id=ECHO_ID
            )
            await rollout_gone(kv)
            await callers.made(20, timeout=30)
        assert callers.failures == [], callers.summary()
        assert watcher.lowest is not None and watcher.lowest[0] >= 2, watcher.describe_lowest()
        kinds = [e.kind for e in await trio.to_thread.run_sync(lambda: api(cluster).events(limit=200))]
        assert {"rollout_started", "rollout_switched", "rollout_promoted", "rollout_done"} <= set(kinds)


async def rollout_calls(cluster: LocalNodeCluster, version: str) -> float:
    """The calls every node's metrics count to `version` of echo while a rollout splits its calls."""
    series = f'aether_rollout_invocations_total{{artifact="{ECHO_ID}",version="{version}"}} '
    total = 0.0
    async with httpx.AsyncClient(timeout=5.0) as http:
        for node in cluster.nodes:
            answer = await http.get(f"http://{node.management}/metrics")
            answer.raise_for_status()
            counted = [line.split()[-1] for line in answer.text.splitlines() if line.startswith(series)]
            total += sum(map(float, counted))
    return total


async def versions_answering(http: httpx.AsyncClient, ingresses: list[str], calls: int) -> set[str]:
    """The versions that answer `calls` calls of echo's `info` through each ingress."""
    found = set()
    for ingress in ingresses:
        for _ in range(calls):
            response = await call(http, ingress, ECHO_ID, "info")
            assert response.status_code == 200, response.text
            found.add(response.json()["version"])
    return found


async def until_only(http: httpx.AsyncClient, ingresses: list[str], version: str) -> float:
    """Wait until every ingress routes `info` to `version` alone (10 calls each); how long it took."""
    started = trio.current_time()
    await wait_until(
        lambda: versions_answering(http, ingresses, 10),
        until=lambda versions: versions == {version},
        timeout=10,
        interval=0.01,
        what=f"only {version} answering",
    )
    return trio.current_time() - started


@pytest.mark.long
async def test_blue_green_switches_back_on_abort_with_no_failed_call(
    sample_index: Path, tmp_path: Path
) -> None:
    long_grace = UpdateSpec(strategy=UpdateStrategy.BLUE_GREEN, grace_s=300.0)
    async with (
        running_cluster(tmp_path / "cluster", sample_index, 3) as cluster,
        kv_of(cluster) as kv,
        httpx.AsyncClient(timeout=30) as http,
    ):
        ingresses = [n.ingress for n in cluster.nodes]
        await put_blueprint(kv, "web", SliceSpec(artifact=ECHO, instances=2, update=long_grace))
        await wait_for(
            kv, exactly_active(2, ECHO), timeout=SETTLE, what="2 ACTIVE 1.0.0", artifact_id=ECHO_ID
        )
        callers = Callers(ingresses, concurrency=2)
        async with background(callers):
            await callers.made(20, timeout=30)
            await put_blueprint(kv, "web", SliceSpec(artifact=ECHO_11, instances=2, update=long_grace))
            await rollout_phase(kv, "SWITCHED")
            switch = await until_only(http, ingresses, "1.1.0")
            assert await versions_answering(http, ingresses, 10) == {"1.1.0"}
            # switched: converged (what `apply --wait` waits for), the old set only kept for a rollback
            status = await trio.to_thread.run_sync(lambda: api(cluster).blueprint_status("web"))
            assert status.converged and status.slices[0].kept_for_rollback, status
            assert status.slices[0].rollout is not None and status.slices[0].rollout.until > 0, status
            await wait_until(
                lambda: trio.to_thread.run_sync(lambda: api(cluster).cluster_status()),
                until=lambda cluster_status: cluster_status.unconverged == (),
                timeout=10,
                what="the cluster status to count web converged",
            )
            aborted: RolloutInfo = await trio.to_thread.run_sync(
                lambda: api(cluster).rollout_command(ECHO_ID, "abort")
            )
            assert (aborted.phase, aborted.share) == ("ABORTED", 0)
            # aborted: settled, not converged (1.0.0 serves, not 1.1.0), and the slice says why
            status = await trio.to_thread.run_sync(lambda: api(cluster).blueprint_status("web"))
            assert not status.converged and status.slices[0].aborted.startswith("rollout aborted ("), status
            back = await until_only(http, ingresses, "1.0.0")
            assert await versions_answering(http, ingresses, 10) == {"1.0.0"}
            await wait_for(
                kv, exactly_active(2, ECHO), timeout=SETTLE, what="1.1.0 removed", artifact_id=ECHO_ID
            )
            await callers.made(20, timeout=30)
        assert callers.failures == [], callers.summary()
        print(
            f"\nevery ingress on 1.1.0 {switch:.3f} s after the switch was seen;"
            f" back on 1.0.0 {back:.3f} s after abort (upper bounds: each check is 30 calls)"
        )


@pytest.mark.long
async def test_a_canary_whose_new_version_fails_aborts_and_the_old_version_keeps_serving(
    broken_index: Path, tmp_path: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", broken_index, 3) as cluster, kv_of(cluster) as kv:
        await put_blueprint(kv, "web", SliceSpec(artifact=ECHO, instances=2, update=CANARY))
        await wait_for(
            kv, exactly_active(2, ECHO), timeout=SETTLE, what="2 ACTIVE 1.0.0", artifact_id=ECHO_ID
        )
        watcher = Watcher(kv, ECHO_ID)
        callers = Callers([n.ingress for n in cluster.nodes], concurrency=3)
        async with background(watcher, callers):
            await callers.made(20, timeout=30)
            await put_blueprint(kv, "web", SliceSpec(artifact=BROKEN, instances=2, update=CANARY))
            aborted = await rollout_phase(kv, "ABORTED")
            assert re.match(r"\d+ new instances? failed: node-", aborted.reason), aborted.reason
            assert MISSING in aborted.reason, aborted.reason
            await wait_for(
                kv,
                lambda found: (
                    [i.coordinates for i in found] == [ECHO, ECHO] and len(active(found, ECHO)) == 2
                ),
                timeout=SETTLE,
                what="the failed canary removed, 1.0.0 whole",
                artifact_id=ECHO_ID,
            )
            await callers.made(20, timeout=30)
        assert callers.failures == [], callers.summary()
        assert watcher.lowest is not None and watcher.lowest[0] >= 2, watcher.describe_lowest()


@pytest.mark.long
async def test_a_canary_waits_for_an_operator_after_its_window_and_promote_completes_it(
    sample_index: Path, tmp_path: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        observing = await canary_waiting_for_an_operator(kv, CANARY)
        assert (observing.candidate, observing.share) == ("1.1.0", 50)
        observing = await wait_until(
            lambda: rollout_phase(kv, "OBSERVING"),
            until=lambda observing: "waiting for `aether slice promote`" in observing.reason,
            timeout=30,
            interval=0.1,
            what="the canary waiting for an operator",
            describe=lambda observing: observing.reason,
        )
        assert "0 calls on the new version in the window" in observing.reason, observing.reason
        watcher = Watcher(kv, ECHO_ID)
        callers = Callers([n.ingress for n in cluster.nodes], concurrency=3)
        async with background(watcher, callers):
            await callers.made(20, timeout=30)
            promoted: RolloutInfo = await trio.to_thread.run_sync(
                lambda: api(cluster).rollout_command(ECHO_ID, "promote")
            )
            assert (promoted.phase, promoted.share) == ("PROMOTED", None)
            await wait_for(
                kv, exactly_active(2, ECHO_11), timeout=SETTLE, what="only 1.1.0 left", artifact_id=ECHO_ID
            )
            await rollout_gone(kv)
            await callers.made(20, timeout=30)
        assert callers.failures == [], callers.summary()
        assert watcher.lowest is not None and watcher.lowest[0] >= 2, watcher.describe_lowest()


@pytest.mark.long
async def test_a_canary_that_raises_is_judged_from_the_calls_and_aborted(
    raising_index: Path, tmp_path: Path
) -> None:
    canary = UpdateSpec(strategy=UpdateStrategy.CANARY, steps=(10, 100), step_window_s=2.0)
    async with running_cluster(tmp_path / "cluster", raising_index, 3) as cluster, kv_of(cluster) as kv:
        await put_blueprint(kv, "web", SliceSpec(artifact=ECHO, instances=2, update=canary))
        await wait_for(
            kv, exactly_active(2, ECHO), timeout=SETTLE, what="2 ACTIVE 1.0.0", artifact_id=ECHO_ID
        )
        watcher = Watcher(kv, ECHO_ID)
        callers = Callers([n.ingress for n in cluster.nodes], concurrency=3)
        async with background(watcher, callers):
            await callers.made(20, timeout=30)
            await put_blueprint(kv, "web", SliceSpec(artifact=RAISING, instances=2, update=canary))
            aborted = await rollout_phase(kv, "ABORTED")
            assert aborted.reason.startswith("step 1 (10%): error rate 100.0% > stable 0.0% + 1.0%"), aborted
            await wait_for(
                kv,
                lambda found: (
                    [i.coordinates for i in found] == [ECHO, ECHO] and len(active(found, ECHO)) == 2
                ),
                timeout=SETTLE,
                what="the canary removed, 1.0.0 whole",
                artifact_id=ECHO_ID,
            )
            after = len(callers.results)
            await callers.made(40, timeout=30)
        failed = callers.failures
        assert failed, "the canary got no call"
        assert all(f.status == 500 and "1.2.0 is broken" in f.detail for f in failed), callers.summary()
        # the split sends 10 of every 100 calls routed by a node to the canary: 3 nodes route calls
        assert len(failed) <= len(callers.results[:after]) // 10 + 3, callers.summary()
        assert not [f for f in callers.results[after:] if not f.ok], callers.summary()
        assert watcher.lowest is not None and watcher.lowest[0] >= 2, watcher.describe_lowest()
