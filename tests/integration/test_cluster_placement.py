"""Cluster orchestration on 3 real `aether-node` processes (one cluster for the whole module): blueprints
placed by each allocation strategy, scaling up and down, a version rollout under continuous calls, a slice
calling another slice on a different node, and a deleted blueprint unloading everything.

Each test starts from an empty cluster and leaves it empty (the `kv` fixture deletes every blueprint and
waits until no slice record and no endpoint is left).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import httpx
import pytest
import trio
from cluster_support import (
    ECHO,
    ECHO_11,
    ECHO_ID,
    GREETER,
    GREETER_ID,
    Callers,
    Instance,
    Resources,
    SliceSpec,
    Strategy,
    Watcher,
    active,
    all_endpoints,
    background,
    call,
    delete_blueprint,
    endpoints,
    exactly_active,
    instances,
    kv_of,
    leader_node_id,
    per_node,
    put_blueprint,
    show,
    started_cluster,
    wait_for,
    wait_for_reconcile_passes,
)

from aether_kv import KVClient
from aether_node import SliceRecord, SliceState, encode_record
from aether_node.dev import LocalNodeCluster
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


NODES = ("node-1", "node-2", "node-3")
SETTLE = 60.0  # deadline for instances to become ACTIVE (first installs included)


@pytest.fixture(scope="module")
def cluster(sample_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNodeCluster]:
    # (what each node offers, as its configuration would say: 1 core and 1,024 MiB, whatever this host has)
    capacity = ("--capacity-cpu", "1", "--capacity-memory-mib", "1024")
    directory = tmp_path_factory.mktemp("cluster-placement")
    with started_cluster(directory, sample_index, 3, node_args=capacity) as started:
        yield started


@pytest.fixture
async def kv(cluster: LocalNodeCluster) -> AsyncIterator[KVClient]:
    """A KV client; afterwards every blueprint is deleted and the cluster is left empty."""
    async with kv_of(cluster) as client:
        yield client
        for item in (await client.range("blueprints/")).kvs:
            await client.delete(item.key)
        await wait_for(client, lambda found: not found, timeout=30, what="no slice record left")
        await wait_until(
            lambda: client.range("endpoints/", linearizable=True),
            until=lambda listing: not listing.kvs,
            timeout=10,
            what="no endpoint left",
            describe=lambda listing: [item.key for item in listing.kvs],
        )


def numbers(found: list) -> list[int]:
    return sorted(i.instance for i in found)


def consecutive(found: list, count: int, first: int | None = None) -> bool:
    """Whether the instances are numbered `first`, `first + 1`, … (`count` of them; `first`: the lowest
    one's). The tests share a cluster, whose numbers are never given twice: each starts after the last."""
    taken = numbers(found)
    start = taken[0] if first is None and taken else first
    return start is not None and taken == list(range(start, start + count))


async def leader_log(cluster: LocalNodeCluster, kv: KVClient) -> str:
    leader = await leader_node_id(cluster, kv)
    return (Path(cluster.plan(leader).data_dir) / "node.log").read_text(errors="replace")


# ---------------------------------------------------------------- strategies


@pytest.mark.long
async def test_round_robin_spreads_evenly(cluster: LocalNodeCluster, kv: KVClient) -> None:
    await put_blueprint(kv, "rr", SliceSpec(artifact=ECHO, instances=6, strategy=Strategy.ROUND_ROBIN))
    found = await wait_for(kv, exactly_active(6, ECHO), timeout=SETTLE, what="6 ACTIVE", cluster=cluster)
    assert per_node(found) == {"node-1": 2, "node-2": 2, "node-3": 2}, show(found)
    assert consecutive(found, 6), show(found)


async def test_spread_one_per_node_and_reports_what_does_not_fit(
    cluster: LocalNodeCluster, kv: KVClient
) -> None:
    spec = SliceSpec(artifact=ECHO, instances=3, strategy=Strategy.SPREAD, max_per_node=1)
    await put_blueprint(kv, "spread", spec)
    found = await wait_for(kv, exactly_active(3, ECHO), timeout=SETTLE, what="3 ACTIVE", cluster=cluster)
    assert per_node(found) == dict.fromkeys(NODES, 1), show(found)
    placed = set(numbers(found))

    # One more than the nodes can take with max_per_node=1: 3 stay placed, the 4th is reported.
    watcher = Watcher(kv, ECHO_ID)
    async with background(watcher):
        await put_blueprint(kv, "spread", SliceSpec(**{**_fields(spec), "instances": 4}))
        expected = "1 of 4 instances of org.aether:echo:1.0.0 fit on no live node"
        log = await wait_until(
            lambda: leader_log(cluster, kv),
            until=lambda log: expected in log,
            timeout=15,
            interval=0.1,
            what="the leader to report the unplaced instance",
            describe=lambda log: log[-3000:],
        )
        assert expected in log, f"the leader did not report the unplaced instance:\n{log[-3000:]}"
        await wait_for_reconcile_passes(cluster, kv, 3)  # nothing else must be placed meanwhile
    found = await instances(kv, ECHO_ID)
    assert per_node(found) == dict.fromkeys(NODES, 1) and len(active(found)) == 3, show(found)
    extra = {k for k in watcher.keys_seen if k[1] not in placed}
    assert not extra, f"a 4th instance was placed at some point: {sorted(extra)}"


async def test_switching_to_spread_enforces_the_cap(cluster: LocalNodeCluster, kv: KVClient) -> None:
    await put_blueprint(kv, "switch", SliceSpec(artifact=ECHO, instances=6))
    await wait_for(kv, exactly_active(6, ECHO), timeout=SETTLE, what="6 ACTIVE", cluster=cluster)
    # A floor the cap leaves room for (the default, 4 of 6, would keep a 4th instance ACTIVE beyond the
    # cap and report it: nothing goes below the floor on purpose).
    spread = SliceSpec(artifact=ECHO, instances=6, strategy=Strategy.SPREAD, max_per_node=1, min_available=3)
    await put_blueprint(kv, "switch", spread)
    # A fresh apply of this blueprint gives one instance per node; so must the switch (the surplus
    # ACTIVE instances go although fewer than `instances` can run: the cap wins, down to the floor).
    await wait_for(
        kv,
        lambda found: per_node(found) == dict.fromkeys(NODES, 1) and len(active(found)) == 3,
        timeout=8,
        what="one instance per node (max_per_node=1)",
    )


async def test_bin_pack_fills_the_fewest_nodes(cluster: LocalNodeCluster, kv: KVClient) -> None:
    # Node capacity is 1 cpu / 1024 MiB (the fixture's): 300 MiB each → at most 3 per node.
    spec = SliceSpec(
        artifact=ECHO, instances=5, strategy=Strategy.BIN_PACK, resources=Resources(memory_mib=300)
    )
    await put_blueprint(kv, "packed", spec)
    found = await wait_for(kv, exactly_active(5, ECHO), timeout=SETTLE, what="5 ACTIVE", cluster=cluster)
    assert sorted(per_node(found).values()) == [2, 3], show(found)
    assert len(per_node(found)) == math.ceil(5 / 3)

    await put_blueprint(kv, "packed", SliceSpec(**{**_fields(spec), "instances": 7}))
    found = await wait_for(kv, exactly_active(7, ECHO), timeout=SETTLE, what="7 ACTIVE", cluster=cluster)
    assert sorted(per_node(found).values()) == [1, 3, 3], show(found)


def _fields(spec: SliceSpec) -> dict:
    return {
        name: getattr(spec, name)
        for name in (
            "artifact",
            "instances",
            "strategy",
            "max_per_node",
            "resources",
            "min_available",
            "balancing",
            "config",
        )
    }


# ---------------------------------------------------------------- scaling


async def test_scale_up_then_down_removes_the_newest_first(cluster: LocalNodeCluster, kv: KVClient) -> None:
    await put_blueprint(kv, "scale", SliceSpec(artifact=ECHO, instances=3))
    found = await wait_for(kv, exactly_active(3, ECHO), timeout=SETTLE, what="3 ACTIVE", cluster=cluster)
    assert consecutive(found, 3), show(found)
    first = numbers(found)[0]

    await put_blueprint(kv, "scale", SliceSpec(artifact=ECHO, instances=6))
    found = await wait_for(kv, exactly_active(6, ECHO), timeout=SETTLE, what="6 ACTIVE", cluster=cluster)
    assert consecutive(found, 6, first), show(found)
    assert per_node(found) == dict.fromkeys(NODES, 2), show(found)

    watcher = Watcher(kv, ECHO_ID)
    async with background(watcher):
        await put_blueprint(kv, "scale", SliceSpec(artifact=ECHO, instances=4))
        found = await wait_for(kv, exactly_active(4, ECHO), timeout=30, what="4 ACTIVE", cluster=cluster)
        assert consecutive(found, 4, first), f"scaling 6 → 4 kept {show(found)}"

        await put_blueprint(kv, "scale", SliceSpec(artifact=ECHO, instances=2))
        found = await wait_for(kv, exactly_active(2, ECHO), timeout=30, what="2 ACTIVE", cluster=cluster)
        assert consecutive(found, 2, first), f"scaling 4 → 2 kept {show(found)}"
    created = sorted({n for _, n, _ in watcher.keys_seen})
    assert created == list(range(first, first + 6)), f"scaling down created instances: {created}"
    assert watcher.lowest is not None and watcher.lowest[0] >= 2, watcher.describe_lowest()


async def test_leader_reactivates_an_instance_left_loaded(cluster: LocalNodeCluster, kv: KVClient) -> None:
    await put_blueprint(kv, "loaded", SliceSpec(artifact=ECHO, instances=3))
    found = await wait_for(kv, exactly_active(3, ECHO), timeout=SETTLE, what="3 ACTIVE", cluster=cluster)
    victim = found[0]
    key = f"slices/{victim.node_id}/{victim.coordinates}/{victim.instance}"
    await kv.put(key, encode_record(SliceRecord(state=SliceState.DEACTIVATE, timestamp=time.time())))
    await wait_for(
        kv,
        lambda found: (
            any(i.instance == victim.instance and i.state is SliceState.LOADED for i in found)
            or len(active(found)) == 3
        ),
        timeout=15,
        what=f"{victim} deactivated",
    )
    # The blueprint wants 3 ACTIVE: the leader must activate it again (or replace it).
    await wait_for(kv, lambda found: len(active(found)) == 3, timeout=8, what="3 ACTIVE again")


# ---------------------------------------------------------------- rollout


@attrs.frozen(kw_only=True)
class Rollout:
    """echo 1.0.0 × 3 rolled out to 1.1.0 × 3 while 4 callers call `echo` through every node's ingress."""

    found: list[Instance]  # the records once only 1.1.0 is left, all ACTIVE
    watcher: Watcher
    callers: Callers
    old_endpoints: list[str]
    versions: set[str]  # answers of `info` afterwards, 6 calls through each ingress
    instances_answering: set[int]


async def _rollout(cluster: LocalNodeCluster) -> Rollout:
    async with kv_of(cluster) as kv:
        await put_blueprint(kv, "roll", SliceSpec(artifact=ECHO, instances=3))
        await wait_for(kv, exactly_active(3, ECHO), timeout=SETTLE, what="3 ACTIVE of 1.0.0", cluster=cluster)
        callers = Callers([n.ingress for n in cluster.nodes], ECHO_ID, "echo", concurrency=4)
        watcher = Watcher(kv, ECHO_ID)
        async with background(watcher, callers):
            await callers.made(20)  # calls going before the rollout starts
            await put_blueprint(kv, "roll", SliceSpec(artifact=ECHO_11, instances=3))
            found = await wait_for(
                kv, exactly_active(3, ECHO_11), timeout=SETTLE, what="3 ACTIVE of 1.1.0 only", cluster=cluster
            )
            await callers.made(50)  # calls keep going after the rollout
        old = sorted(await endpoints(kv, ECHO))
        versions, answering = set(), set()
        async with httpx.AsyncClient(timeout=10) as http:
            for node in cluster.nodes:
                for _ in range(6):
                    answer = await call(http, node.ingress, ECHO_ID, "info")
                    assert answer.status_code == 200, answer.text
                    versions.add(answer.json()["version"])
                    answering.add(answer.json()["instance"])
        await delete_blueprint(kv, "roll")
        await wait_for(kv, lambda found: not found, timeout=30, what="no slice record left")
    return Rollout(
        found=found,
        watcher=watcher,
        callers=callers,
        old_endpoints=old,
        versions=versions,
        instances_answering=answering,
    )


@pytest.fixture(scope="module")
def rollout(cluster: LocalNodeCluster) -> Rollout:
    return trio.run(_rollout, cluster)


def test_rollout_fails_no_call(rollout: Rollout) -> None:
    callers = rollout.callers
    assert len(callers.results) > 50, callers.summary()
    assert not callers.failures, f"calls failed during the rollout: {callers.summary()}"


def test_rollout_keeps_the_count_active(rollout: Rollout) -> None:
    watcher = rollout.watcher
    assert watcher.lowest is not None and watcher.lowest[0] >= 3, (
        f"ACTIVE dropped below 3: {watcher.describe_lowest()}"
    )


def test_rollout_ends_with_only_the_new_version(rollout: Rollout) -> None:
    assert len(per_node(rollout.found)) == 3, show(rollout.found)
    assert not rollout.old_endpoints, f"endpoints of 1.0.0 left: {rollout.old_endpoints}"
    assert rollout.versions == {"1.1.0"}
    assert rollout.instances_answering == {i.instance for i in rollout.found}


def test_rollout_respects_the_surge(rollout: Rollout) -> None:
    most, revision, at = rollout.watcher.most_placed()
    over = [
        r for r, found in rollout.watcher.history if sum(i.state is not SliceState.UNLOAD for i in found) > 4
    ]
    assert most <= 3 + 1, f"{most} placed at revision {revision}: {show(at)} (over the bound at {over})"


# ---------------------------------------------------------------- slice to slice across nodes


async def test_slice_calls_a_slice_on_another_node(cluster: LocalNodeCluster, kv: KVClient) -> None:
    # 600 MiB each on 1024 MiB nodes: bin-packing cannot put greeter beside echo.
    big = Resources(memory_mib=600)
    await put_blueprint(
        kv, "echo", SliceSpec(artifact=ECHO, instances=1, strategy=Strategy.BIN_PACK, resources=big)
    )
    await put_blueprint(
        kv, "greeter", SliceSpec(artifact=GREETER, instances=1, strategy=Strategy.BIN_PACK, resources=big)
    )
    found = await wait_for(
        kv,
        lambda found: len(found) == 2 and len(active(found)) == 2,
        timeout=SETTLE,
        what="echo and greeter ACTIVE",
        cluster=cluster,
    )
    (echo,) = [i for i in found if i.coordinates == ECHO]
    (greeter,) = [i for i in found if i.coordinates == GREETER]
    assert echo.node_id != greeter.node_id, show(found)
    (bystander,) = set(NODES) - {echo.node_id, greeter.node_id}
    ingress = cluster.plan(bystander).ingress
    async with httpx.AsyncClient(timeout=10) as http:
        for name in ("ada", "grace", "barbara"):
            for balancing in ("local_first", "round_robin"):
                answer = await call(http, ingress, GREETER_ID, "greet", {"name": name}, balancing=balancing)
                assert answer.status_code == 200, answer.text
                assert answer.json() == {"greeting": f"hello {name}", "via": {"name": name}}
        # The greeter's node has no echo of its own: its call crossed to echo's node.
        answer = await call(http, cluster.plan(greeter.node_id).ingress, GREETER_ID, "greet", {"name": "x"})
        assert answer.status_code == 200, answer.text


# ---------------------------------------------------------------- deleting


async def test_deleted_blueprint_unloads_everything(cluster: LocalNodeCluster, kv: KVClient) -> None:
    await put_blueprint(kv, "doomed", SliceSpec(artifact=ECHO, instances=3))
    found = await wait_for(kv, exactly_active(3, ECHO), timeout=SETTLE, what="3 ACTIVE", cluster=cluster)
    published = await endpoints(kv, ECHO)
    assert len(published) == 3, sorted(published)  # one record per instance, listing echo and info
    assert {e.entries for e in published.values()} == {("echo", "info")}, published
    assert {e.node_id for e in published.values()} == {i.node_id for i in found}

    await delete_blueprint(kv, "doomed")
    await wait_for(kv, lambda found: not found, timeout=30, what="every record gone", cluster=cluster)
    left = await wait_until(
        lambda: all_endpoints(kv, ECHO_ID),
        until=lambda left: not left,
        timeout=10,
        what="no endpoint left after the blueprint was deleted",
        describe=sorted,
    )
    assert not left, f"endpoints left after the blueprint was deleted: {sorted(left)}"
    async with httpx.AsyncClient(timeout=10) as http:
        for node in cluster.nodes:
            answer = await call(http, node.ingress, ECHO_ID, "echo", {"x": 1})
            assert answer.status_code == 404, answer.text
            assert answer.json()["error"]["kind"] == "no_endpoint"
