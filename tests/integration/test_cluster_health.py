"""The cluster's health on a real cluster: a node SIGKILLed makes it unhealthy, saying which node is
missing (expected: it registered and never left), until it is back; a node that leaves gracefully is no
longer expected; `aether cluster forget` stops expecting one that is gone for good."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from cli_support import run_aether
from cluster_support import ECHO, SliceSpec, kv_of, logs, put_blueprint, running_cluster, start_node

from aether_node.client import ApiClient, ClusterStatus
from aether_node.dev import LocalNodeCluster
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.long]

SETTLE = 90.0


async def status_until(
    api: ApiClient, holds: Callable[[ClusterStatus], bool], what: str, cluster: object
) -> ClusterStatus:

    async def status() -> ClusterStatus | Exception:
        try:
            return await trio.to_thread.run_sync(api.cluster_status)
        except Exception as error:  # a node on its way down or up
            return error

    def describe(last: ClusterStatus | Exception) -> str:
        try:
            events = [e.message for e in api.events(40, kind=["node_joined", "node_left", "node_lost"])]
        except Exception as error:
            events = [repr(error)]
        return f"{last}\nnode events: {events}\n{logs(cluster)}"  # type: ignore[arg-type]

    found = await wait_until(
        status,
        until=lambda last: isinstance(last, ClusterStatus) and holds(last),
        timeout=SETTLE,
        interval=0.2,
        what=what,
        describe=describe,
    )
    assert isinstance(found, ClusterStatus)
    return found


async def restart(cluster: LocalNodeCluster, node_id: str) -> None:
    """Start the node again and wait until it says it is ready (a node asked to stop while it is still
    starting stops at once, without leaving gracefully)."""
    log = Path(cluster.plan(node_id).data_dir) / "node.log"
    ready = f"node {node_id} ready"
    before = log.read_text().count(ready)
    start_node(cluster, node_id)
    await wait_until(
        lambda: log.read_text().count(ready) > before,
        timeout=SETTLE,
        interval=0.1,
        what=f"{node_id} to start again",
        describe=lambda _: f"its log:\n{cluster.log_tail(node_id)}",
    )


async def test_health_names_a_missing_node_until_it_is_back(tmp_path: Path, sample_index: Path) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 4) as cluster, kv_of(cluster) as kv:
        api = ApiClient([f"http://{n.management}" for n in cluster.nodes if n.node_id != "node-4"])
        await put_blueprint(kv, "demo", SliceSpec(artifact=ECHO, instances=2))
        everyone = ("node-1", "node-2", "node-3", "node-4")
        healthy = await status_until(
            api, lambda s: s.healthy and s.expected_nodes == everyone, "healthy with 4 nodes", cluster
        )
        assert healthy.reasons == () and healthy.missing_nodes == ()

        # node-4 (not a KV replica) is killed: unhealthy, naming it, for as long as it is away
        cluster.kill("node-4")
        lost = await status_until(
            api, lambda s: s.missing_nodes == ("node-4",), "node-4 missing (and only node-4)", cluster
        )
        assert not lost.healthy and lost.expected_nodes == everyone, lost
        assert "3 of 4 expected nodes are registered; missing: node-4" in lost.reasons, lost.reasons
        env = {"AETHER_CLUSTER": ",".join(api.urls)}
        run = run_aether("cluster", "status", cwd=tmp_path, env=env)
        assert run.returncode == 4, run  # answered: unhealthy
        assert "cluster unhealthy" in run.stdout and "expected nodes registered" in run.stdout, run
        assert "missing: node-4" in run.stdout, run
        # (a while later, still: the blueprint converges on the other nodes, the node stays missing)
        converged = await status_until(api, lambda s: not s.unconverged, "echo back at 2 ACTIVE", cluster)
        assert "node-4" in converged.missing_nodes and not converged.healthy, converged

        # it comes back: healthy again
        await restart(cluster, "node-4")
        back = await status_until(api, lambda s: s.healthy, "healthy again", cluster)
        assert back.missing_nodes == () and back.reasons == (), back

        # it leaves gracefully: no longer expected, still healthy
        cluster.kill("node-4", signal.SIGTERM)
        await status_until(
            api,
            lambda s: s.expected_nodes == everyone[:3] and s.healthy,
            "node-4 no longer expected",
            cluster,
        )

        # gone for good: forgotten by the operator (a registered node cannot be)
        await restart(cluster, "node-4")
        await status_until(api, lambda s: s.expected_nodes == everyone, "node-4 expected again", cluster)
        run = run_aether("cluster", "forget", "node-4", cwd=tmp_path, env=env)
        assert run.returncode == 1 and "node node-4 is registered" in run.stderr, run
        cluster.kill("node-4")
        await status_until(api, lambda s: s.missing_nodes == ("node-4",), "node-4 missing again", cluster)
        run = run_aether("cluster", "forget", "node-4", cwd=tmp_path, env=env)
        assert run.returncode == 0 and "node node-4 forgotten" in run.stdout, run
        await status_until(
            api, lambda s: s.healthy and s.expected_nodes == everyone[:3], "healthy without node-4", cluster
        )
        run = run_aether("cluster", "forget", "node-4", cwd=tmp_path, env=env)
        assert run.returncode == 1 and "node node-4 is not expected" in run.stderr, run


async def test_a_record_that_does_not_decode_is_named_by_the_health_and_logged_once_per_change(
    tmp_path: Path, sample_index: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 1) as cluster, kv_of(cluster) as kv:
        api = ApiClient([f"http://{n.management}" for n in cluster.nodes])
        await status_until(api, lambda s: s.healthy, "healthy", cluster)
        log = Path(cluster.plan("node-1").data_dir) / "node.log"
        said = "nodes/bogus: not a valid NodeRecord record"

        # a registration written by hand, that no node could have written
        await kv.put("nodes/bogus", b"not json")
        bad = await status_until(api, lambda s: not s.healthy, "unhealthy for nodes/bogus", cluster)
        assert bad.reasons == (
            "1 KV record that does not decode, skipped (fix or delete it): nodes/bogus: not a valid"
            " NodeRecord record: Expecting value: line 1 column 1 (char 0)",
        ), bad.reasons
        run = run_aether("cluster", "status", cwd=tmp_path, env={"AETHER_CLUSTER": api.urls[0]})
        assert run.returncode == 4 and "cluster unhealthy" in run.stdout and "nodes/bogus" in run.stdout, run
        # the leader plans on, over many passes (each reads nodes/), and says it once
        await put_blueprint(kv, "demo", SliceSpec(artifact=ECHO, instances=1))
        converged = await status_until(
            api, lambda s: s.active == 1 and not s.unconverged, "echo ACTIVE beside the bad record", cluster
        )
        assert converged.reasons == bad.reasons, converged.reasons
        assert log.read_text().count(said) == 1, log.read_text()

        # changed (still bad): said once more, with its new reason
        await kv.put("nodes/bogus", b'{"node_id": 7}')
        await status_until(
            api, lambda s: any("missing" in r for r in s.reasons), "the health naming the new reason", cluster
        )
        await wait_until(lambda: log.read_text().count(said) == 2, timeout=SETTLE, what="the change logged")

        # deleted: healthy again
        await kv.delete("nodes/bogus")
        healthy = await status_until(api, lambda s: s.healthy, "healthy once the record is gone", cluster)
        assert healthy.active == 1 and healthy.reasons == (), healthy
        assert log.read_text().count(said) == 2
