"""`aether node drain NODE --wait` during a canary rollout, on 3 real `aether-node` processes: the
canary holds the stable version's instances until it is promoted or aborted, so the drain waits, and it
says that it waits for the rollout (before, it said "its replacement is not ACTIVE yet", forever). Once
the canary is promoted, the drain completes."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from cli_support import CliRun, run_aether
from cluster_support import (
    ECHO,
    ECHO_ID,
    active,
    canary_waiting_for_an_operator,
    instances,
    kv_of,
    running_cluster,
)

from aether_node import UpdateSpec, UpdateStrategy

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.long]  # (`nox -s long`)

CANARY = UpdateSpec(strategy=UpdateStrategy.CANARY, steps=(10, 50, 100), step_window_s=1.0)


async def test_a_drain_during_a_canary_waits_for_the_rollout_and_says_so(
    sample_index: Path, tmp_path: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        await canary_waiting_for_an_operator(kv, CANARY)
        stable = sorted(i.node_id for i in active(await instances(kv, ECHO_ID), ECHO))
        node = stable[0]
        env = {"AETHER_CLUSTER": ",".join(f"http://{n.management}" for n in cluster.nodes)}

        def aether(*args: str) -> CliRun:
            return run_aether(*args, cwd=tmp_path, env=env)

        waited = await trio.to_thread.run_sync(aether, "node", "drain", node, "--wait", "--timeout", "10")
        assert waited.returncode == 1, waited
        said = waited.stderr  # where it stood at the timeout (the canary's own instance may move first)
        assert f"{node} is not DRAINED after 10 s (drain of {node} waits for 1 instance" in said, waited
        assert f"the canary rollout of {ECHO_ID} holds the old version's instances" in said, waited
        assert "promote or abort it" in said and "its replacement is not ACTIVE yet" not in said, waited

        promoted = await trio.to_thread.run_sync(aether, "slice", "promote", ECHO_ID)
        assert promoted.returncode == 0, promoted
        drained = await trio.to_thread.run_sync(aether, "node", "drain", node, "--wait", "--timeout", "120")
        assert drained.returncode == 0, drained
        assert f"node {node}: DRAINED" in drained.stdout, drained
        found = await instances(kv, ECHO_ID)
        assert node not in {i.node_id for i in found}, found
