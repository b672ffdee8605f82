"""A blue-green rollout, and a canary, to a config whose instances crash soon after they start never
give it a call, on 3 real `aether-node` processes with the sample index: `org.aether:faulty` with
`mode = "crash_after_start"` starts, goes ACTIVE, and kills its own process `crash_delay` (0.5 s) later;
the node restarts it until its crash loop ends in FAILED (test_crash_loop_rollout.py is the rolling
update's version of this).

Found by review: the switch (every call) and a canary step (its share) went to the new instances the
moment they were ACTIVE, so such a version got all the traffic half a second before it died. With
`[slices.update] min_ready_s` (default 2 s) they count only once they have stayed ACTIVE that long:
every revision of the rollout record (watched through the KV) keeps the share at 0 and the rollout
DEPLOYING until the crash loop aborts it; every revision of the slice records keeps the healthy config's
three instances ACTIVE; and the healthy config answers the calls afterwards.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
from cluster_support import (
    SETTLE,
    Instance,
    RolloutWatcher,
    SliceState,
    Watcher,
    background,
    call,
    instances,
    kv_of,
    put_blueprint,
    running_cluster,
    show,
)
from node_support import FAULTY
from test_crash_loop_rollout import CRASHING, FAULTY_ID, HEALTHY, old_set

from aether_node import SliceSpec, UpdateSpec, UpdateStrategy
from aether_node.client import ApiClient, BlueprintStatus
from aether_node.dev import LocalNodeCluster
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BLUE_GREEN = UpdateSpec(strategy=UpdateStrategy.BLUE_GREEN, grace_s=2.0)
# The first step is one instance: ACTIVE alone, it would have taken its 10 % at once.
CANARY = UpdateSpec(strategy=UpdateStrategy.CANARY, steps=(10, 100), step_window_s=1.0)


def spec(config: dict[str, object], update: UpdateSpec) -> SliceSpec:
    return SliceSpec(artifact=FAULTY, instances=3, config=config, update=update)


async def status(cluster: LocalNodeCluster) -> BlueprintStatus:
    client = ApiClient([f"http://{n.management}" for n in cluster.nodes])
    return await trio.to_thread.run_sync(client.blueprint_status, "crashing")


@pytest.mark.parametrize(
    "update",
    [pytest.param(BLUE_GREEN, marks=pytest.mark.long, id="blue_green"), pytest.param(CANARY, id="canary")],
)  # (blue-green in `nox -s long`)
async def test_a_config_whose_instances_crash_after_start_never_gets_the_switch_or_a_step(
    update: UpdateSpec, sample_index: Path, tmp_path: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        await put_blueprint(kv, "crashing", spec(HEALTHY, update))
        old = await old_set(kv)
        records = Watcher(kv, FAULTY_ID)
        rollout = RolloutWatcher(kv, FAULTY_ID)

        def old_active(found: list[Instance]) -> int:
            return sum(
                1
                for i in found
                if i.state is SliceState.ACTIVE and (i.coordinates, i.instance, i.node_id) in old
            )

        async with background(records, rollout):
            await put_blueprint(kv, "crashing", spec(CRASHING, update))
            # (or the share given to the new config, the bug: then the assertions below say so at once)
            ended = await wait_until(
                lambda: rollout.latest,
                until=lambda r: r is not None and (r.phase.value == "ABORTED" or r.share != 0),
                timeout=2 * SETTLE,
                interval=0.2,
                what="the rollout aborted on the crash loop",
            )
            given = [(revision, r) for revision, r in rollout.history if r is not None and r.share != 0]
            assert not given, f"the crashing config got calls: {given[0]}"
            phases = {r.phase.value for _, r in rollout.history if r is not None}
            assert phases == {"DEPLOYING", "ABORTED"}, phases
            assert "new instance" in ended.reason and "crash loop" in ended.reason, ended.reason
            # The window, not a failure to start, held it: new instances did come up ACTIVE (and crashed).
            new_active = {
                (i.instance, i.node_id)
                for _, found in records.history
                for i in found
                if i.state is SliceState.ACTIVE and (i.coordinates, i.instance, i.node_id) not in old
            }
            assert new_active, "no new instance ever went ACTIVE"

            # The healthy config kept its three instances ACTIVE throughout, and goes on serving.
            lowest, revision, found = min((old_active(f), r, f) for r, f in records.history)
            assert lowest == 3, f"healthy config: {lowest} ACTIVE at revision {revision}: {show(found)}"
            await wait_until(
                lambda: instances(kv, FAULTY_ID),
                until=lambda f: {(i.coordinates, i.instance, i.node_id) for i in f} == old,
                timeout=SETTLE,
                interval=0.2,
                what="the new instances removed, the healthy config alone",
            )
        seen = await status(cluster)
        assert seen.slices[0].rollout is not None and seen.slices[0].rollout.phase == "ABORTED"
        async with httpx.AsyncClient(timeout=30) as http:
            for node in cluster.nodes:
                answer = await call(http, node.ingress, FAULTY_ID, "work", {})
                assert (answer.status_code, answer.json()) == (200, "ok"), answer.text
