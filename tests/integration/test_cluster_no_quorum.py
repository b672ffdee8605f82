"""Two of three machines hung (every process of node-2 and node-3, their KV replicas included, stopped
with SIGSTOP: their sockets stay open, as a hung machine's do). Through the one node left, with real
processes: `GET /api/v1/cluster` says the KV store has no quorum (it said "healthy, quorum yes" for as
long as they stayed stopped), an apply is refused with 503 `unavailable` saying "no quorum" at once
instead of after every node's timeout, nothing is written, the data path still answers (its instance
there), and once the two are back the same apply goes through.

The client asks the two hung nodes too (a node cut off from the KV may be the one in the minority); each
costs it its timeout once, not once per round."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest
import trio
from cluster_support import ECHO, SliceSpec, exactly_active, kv_of, put_blueprint, running_cluster, wait_for

from aether_node.client import ApiClient, ApiError
from support import processes_under, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SETTLE = 90.0  # first installs included, on a busy machine
BLUEPRINT = 'name = "more"\n\n[[slices]]\nartifact = "org.aether:greeter:1.0.0"\ninstances = 1\n'


async def test_two_hung_machines_of_three_the_third_says_no_quorum_and_refuses_changes_at_once(
    sample_index: Path, tmp_path: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        await put_blueprint(kv, "echo", SliceSpec(artifact=ECHO, instances=3))
        await wait_for(kv, exactly_active(3, ECHO), timeout=SETTLE, what="3 echo ACTIVE")
        survivor = cluster.plan("node-1")
        api = ApiClient([f"http://{n.management}" for n in cluster.nodes], timeout=5.0)
        assert (await trio.to_thread.run_sync(api.cluster_status)).has_quorum

        hung = [p.pid for n in ("node-2", "node-3") for p in processes_under(Path(cluster.plan(n).data_dir))]
        assert len(hung) >= 4, hung  # (two nodes, two replicas, their slice processes)
        try:
            for pid in hung:
                _signal(pid, signal.SIGSTOP)
            alone = ApiClient([f"http://{survivor.management}"], timeout=30.0, read_patience=0.0)
            status = await wait_until(
                lambda: trio.to_thread.run_sync(alone.cluster_status),
                until=lambda s: not s.has_quorum,
                timeout=30,
                what="the status to say no quorum",
            )
            assert not status.healthy
            assert any("no quorum" in reason for reason in status.reasons), status.reasons

            with trio.fail_after(20):  # the node's answer, not its client's timeout (30 s)
                with pytest.raises(ApiError) as refused:
                    await trio.to_thread.run_sync(alone.apply_blueprint, BLUEPRINT)
            assert refused.value.status == 503 and "no quorum" in refused.value.message, refused.value

            async with httpx.AsyncClient(timeout=10) as http:  # the data path still serves
                url = f"http://{survivor.ingress}/invoke/{ECHO.rsplit(':', 1)[0]}/echo?balancing=local_first"
                answer = await http.post(url, json={"a": 1})
            assert answer.status_code == 200 and answer.json() == {"a": 1}, answer.text
        finally:
            for pid in hung:
                _signal(pid, signal.SIGCONT)

        back = await wait_until(
            lambda: _applied(api),
            until=lambda r: not isinstance(r, ApiError),
            timeout=60,
            what="the apply once the two are back",
        )
        assert not isinstance(back, ApiError) and back.name == "more"
        assert back.created and back.blueprint_revision == 1, back  # the refused apply wrote nothing


def _signal(pid: int, number: signal.Signals) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:  # (a slice process that ended meanwhile)
        pass


async def _applied(api: ApiClient) -> object:
    try:
        return await trio.to_thread.run_sync(api.apply_blueprint, BLUEPRINT)
    except ApiError as error:
        return error
