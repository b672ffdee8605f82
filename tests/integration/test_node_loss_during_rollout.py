"""A node SIGKILLed during a canary rollout, on 3 real `aether-node` processes: the stable version's
instance it ran is replaced on a survivor (the slice back at its count and floor), and the canary stays
in its step, waiting for its verdict or an operator. Before the fix the lost stable instance was never
replaced (the held old version only shrank), and a canary whose stable instances were all lost was
promoted with no verdict ("stable version gone")."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from cluster_support import (
    ECHO,
    ECHO_11,
    ECHO_ID,
    SETTLE,
    active,
    canary_waiting_for_an_operator,
    instances,
    kv_of,
    leader_node_id,
    logs,
    rollout_phase,
    running_cluster,
    show,
    wait_for,
)

from aether_node import UpdateSpec, UpdateStrategy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# No calls reach the slice, so after its 1 s window the step has nothing to judge from: it waits for an
# operator. Only a node's loss could (wrongly) move it on.
CANARY = UpdateSpec(strategy=UpdateStrategy.CANARY, steps=(10, 50, 100), step_window_s=1.0)


async def test_a_node_killed_mid_canary_has_its_stable_instance_replaced_and_the_canary_holds(
    sample_index: Path, tmp_path: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        observing = await canary_waiting_for_an_operator(kv, CANARY)
        found = await wait_for(
            kv,
            lambda found: len(active(found, ECHO)) == 2 and len(active(found, ECHO_11)) == 1,
            timeout=SETTLE,
            what="2 ACTIVE 1.0.0 and the canary's 1.1.0",
            artifact_id=ECHO_ID,
            cluster=cluster,
        )
        leader = await leader_node_id(cluster, kv)
        stable = {i.node_id for i in active(found, ECHO)} - {leader}
        assert stable, show(found)  # 2 stable instances on 3 nodes: one is on a follower
        canary = {i.node_id for i in active(found, ECHO_11)}
        victim = min(stable - canary or stable)  # a node of the stable version, the canary's if need be
        survivors = {n.node_id for n in cluster.nodes} - {victim}

        cluster.kill(victim, signal.SIGKILL)
        found = await wait_for(
            kv,
            lambda found: (
                len([i for i in active(found, ECHO) if i.node_id in survivors]) == 2
                and len([i for i in active(found, ECHO_11) if i.node_id in survivors]) == 1
            ),
            timeout=SETTLE,
            what=f"2 ACTIVE 1.0.0 and 1 ACTIVE 1.1.0 on the survivors after {victim} was killed",
            artifact_id=ECHO_ID,
            cluster=cluster,
        )
        now = await rollout_phase(kv, "OBSERVING", timeout=10)
        # the same step, never left: not promoted, not moved on (its `since` is the step's start)
        assert (now.candidate, now.step, now.since) == (
            observing.candidate,
            observing.step,
            observing.since,
        ), f"{now}\n{logs(cluster)}"
        assert victim not in {i.node_id for i in await instances(kv, ECHO_ID)}, show(found)
