"""A paused rolling update on 3 real `aether-node` processes, through the management API, under calls
through every ingress: paused before the change, a new version applied places nothing of it and removes
nothing of the old one (the slice's status says it is paused and where it stands); resumed with a
`max_surge` of 2, it goes on to the new version alone with no failed idempotent call.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from cluster_support import (
    ECHO,
    ECHO_11,
    ECHO_ID,
    SETTLE,
    Callers,
    SliceSpec,
    background,
    exactly_active,
    instances,
    kv_of,
    logs,
    put_blueprint,
    running_cluster,
    wait_for,
)

from aether_node import UpdateSpec
from aether_node.client import ApiClient
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_a_paused_rolling_update_holds_then_resumes_without_failed_calls(
    sample_index: Path, tmp_path: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        api = ApiClient([f"http://{n.management}" for n in cluster.nodes])
        surge = UpdateSpec(max_surge=2)
        await put_blueprint(kv, "paused", SliceSpec(artifact=ECHO, instances=3, update=surge))
        await wait_for(
            kv, exactly_active(3, ECHO), timeout=SETTLE, what="3 ACTIVE", artifact_id=ECHO_ID, cluster=cluster
        )
        paused = await trio.to_thread.run_sync(api.pause_operation, ECHO_ID, "pause")
        assert paused.paused and paused.status.startswith("no version change in progress")
        callers = Callers([n.ingress for n in cluster.nodes])
        async with background(callers):
            await put_blueprint(kv, "paused", SliceSpec(artifact=ECHO_11, instances=3, update=surge))
            status = await wait_until(  # the leader's pass on the new spec says it holds
                lambda: trio.to_thread.run_sync(api.slice_status, ECHO_ID),
                until=lambda status: (
                    "paused: the update to 1.1.0 stays where it is" in (status.problem or "")
                ),
                timeout=SETTLE,
                interval=0.2,
                what="the pause held",
                describe=lambda status: f"{status}\n{logs(cluster)}",
            )
            assert status is not None and "paused" in (status.problem or ""), f"{status}\n{logs(cluster)}"
            found = await instances(kv, ECHO_ID)
            assert exactly_active(3, ECHO)(found), found  # nothing of 1.1.0 placed, nothing of 1.0.0 gone
            resumed = await trio.to_thread.run_sync(api.pause_operation, ECHO_ID, "resume")
            assert not resumed.paused
            await wait_for(
                kv, exactly_active(3, ECHO_11), timeout=SETTLE, what="only 1.1.0", artifact_id=ECHO_ID,
                cluster=cluster,
            )  # fmt: skip
            await callers.made(20)
        assert callers.failures == [], callers.failures[:5]
        kinds = [
            e.kind
            for e in await trio.to_thread.run_sync(
                lambda: api.events(20, kind=["rollout_paused", "rollout_resumed"])
            )
        ]
        assert kinds == ["rollout_paused", "rollout_resumed"], kinds
