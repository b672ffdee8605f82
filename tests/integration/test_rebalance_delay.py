"""The rebalance delay on 3 real `aether-node` processes (issue 13, item 5), set through the management
API: a node killed (SIGKILL) and started again within the delay keeps its instance where it was: no
replacement is placed anywhere meanwhile, the node runs its own instance again from its kept record, and
the event log says the node was awaited and then no longer. Killed again, `aether cluster rebalance`
(through the API) ends the wait: its instance is replaced on a live node long before the delay is over.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from cluster_support import (
    ECHO,
    ECHO_ID,
    SETTLE,
    SliceSpec,
    Watcher,
    background,
    exactly_active,
    kv_of,
    leader_node_id,
    logs,
    put_blueprint,
    running_cluster,
    start_node,
    wait_for,
)

from aether_node.client import ApiClient, ReconcilePolicyInfo
from aether_node.dev import LocalNodeCluster
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


DELAY = 600.0  # far longer than the test: only the node's return (or a rebalance) may end the wait


def api(cluster: LocalNodeCluster) -> ApiClient:
    return ApiClient([f"http://{n.management}" for n in cluster.nodes])


async def policy_until(
    cluster: LocalNodeCluster,
    condition: Callable[[ReconcilePolicyInfo], bool],
    what: str,
    *,
    timeout: float = SETTLE,
) -> ReconcilePolicyInfo:
    """Ask `cluster policy show` until `condition(answer)` holds; fail with the last answer."""
    client = api(cluster)
    return await wait_until(
        lambda: trio.to_thread.run_sync(client.reconcile_policy),
        until=condition,
        timeout=timeout,
        interval=0.2,
        what=what,
        describe=lambda last: f"{last}\n{logs(cluster)}",
    )


async def test_a_node_back_within_the_delay_keeps_its_instances_and_a_rebalance_ends_the_wait(
    sample_index: Path, tmp_path: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        client = api(cluster)
        await put_blueprint(kv, "delayed", SliceSpec(artifact=ECHO, instances=3))  # floor 2
        settled = await wait_for(
            kv, exactly_active(3, ECHO), timeout=SETTLE, what="3 ACTIVE", artifact_id=ECHO_ID, cluster=cluster
        )
        set_to = await trio.to_thread.run_sync(
            client.set_reconcile_policy, {"rebalance_delay_s": DELAY, "max_moves": None, "preset": None}
        )
        assert set_to.rebalance_delay_s == DELAY and set_to.settings == {"rebalance_delay_s": DELAY}
        leader = await leader_node_id(cluster, kv)
        victim = next(i.node_id for i in settled if i.node_id != leader)
        placed = {(i.coordinates, i.instance, i.node_id) for i in settled}

        watcher = Watcher(kv, ECHO_ID)
        async with background(watcher):
            await trio.to_thread.run_sync(cluster.kill, victim)
            lost = await policy_until(
                cluster,
                lambda p: [(n.node_id, n.awaited) for n in p.lost] == [(victim, True)],
                f"{victim} awaited",
            )
            assert lost.lost[0].instances == 1 and lost.lost[0].delay_s == DELAY
            start_node(cluster, victim)
            await wait_for(
                kv,
                lambda found: exactly_active(3, ECHO)(found) and victim in {i.node_id for i in found},
                timeout=SETTLE,
                what=f"{victim}'s instance ACTIVE again",
                artifact_id=ECHO_ID,
                cluster=cluster,
            )
            await policy_until(cluster, lambda p: p.lost == (), f"{victim} no longer awaited")
        # no replacement was ever placed: every record seen is one of the three placed before
        assert watcher.keys_seen == placed, f"{sorted(watcher.keys_seen)} vs {sorted(placed)}"
        kinds = [
            (e.kind, e.node_id)
            for e in await trio.to_thread.run_sync(
                lambda: client.events(50, kind=["rebalance_delayed", "rebalance_delay_ended"])
            )
        ]
        assert kinds == [("rebalance_delayed", victim), ("rebalance_delay_ended", victim)], kinds

        # killed again: a rebalance ends the wait at once, and the instance is replaced on a live node
        await trio.to_thread.run_sync(cluster.kill, victim)
        await policy_until(cluster, lambda p: [n.node_id for n in p.lost] == [victim], f"{victim} awaited")
        answer = await trio.to_thread.run_sync(client.rebalance)
        assert [(n.node_id, n.awaited) for n in answer.lost] == [(victim, False)]
        replaced = await wait_for(
            kv,
            lambda found: exactly_active(3, ECHO)(found) and victim not in {i.node_id for i in found},
            timeout=SETTLE,
            what=f"{victim}'s instance replaced",
            artifact_id=ECHO_ID,
            cluster=cluster,
        )
        assert max(i.instance for i in replaced) == 4  # a new instance, far within the delay
        await policy_until(cluster, lambda p: p.lost == (), "the lost record gone with its instance")
