"""`aether blueprint diff` while a lost node is awaited, on 3 real `aether-node` processes: with a
rebalance delay, a node killed (SIGKILL) keeps its instance in the diff (`awaited`, kept in place) and
the live nodes get nothing, as the leader then does (no instance placed over several reconcile passes);
`later` says where the instance goes once the wait is over, and after `cluster rebalance` it goes there.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import trio
from cluster_support import (
    ECHO,
    ECHO_ID,
    SETTLE,
    SliceSpec,
    exactly_active,
    kv_of,
    leader_node_id,
    put_blueprint,
    running_cluster,
    wait_for,
    wait_for_reconcile_passes,
)
from test_rebalance_delay import DELAY, api, policy_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BLUEPRINT = f'name = "delayed"\n\n[[slices]]\nartifact = "{ECHO}"\ninstances = 3\n'


async def test_the_diff_keeps_an_awaited_nodes_instance_in_place_and_says_where_it_goes_after(
    sample_index: Path, tmp_path: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        client = api(cluster)
        await put_blueprint(kv, "delayed", SliceSpec(artifact=ECHO, instances=3))
        settled = await wait_for(
            kv, exactly_active(3, ECHO), timeout=SETTLE, what="3 ACTIVE", artifact_id=ECHO_ID, cluster=cluster
        )
        await trio.to_thread.run_sync(
            client.set_reconcile_policy, {"rebalance_delay_s": DELAY, "max_moves": None, "preset": None}
        )
        leader = await leader_node_id(cluster, kv)
        victim = next(i.node_id for i in settled if i.node_id != leader)
        await trio.to_thread.run_sync(cluster.kill, victim)
        awaited = [(victim, True)]
        await policy_until(
            cluster, lambda p: [(n.node_id, n.awaited) for n in p.lost] == awaited, f"{victim} awaited"
        )

        diff = await trio.to_thread.run_sync(client.diff_blueprint, BLUEPRINT)
        (echo,) = diff.slices
        nodes = {n.node_id: n for n in echo.nodes}
        assert (nodes[victim].before, nodes[victim].after, nodes[victim].awaited) == (1, 1, True)
        assert (echo.added, echo.moved, echo.removed, echo.instances_after) == (0, 0, 0, 3)
        assert echo.awaiting.startswith(f"waiting: 1 instance on {victim} lost"), echo.awaiting
        later = {n.node_id: n.later for n in echo.nodes if n.later}
        assert victim not in later and sum(later.values()) == 3

        # what the leader then does: nothing, pass after pass (the instance waits where it was)
        await wait_for_reconcile_passes(cluster, kv, 3)
        found = await wait_for(kv, lambda f: True, timeout=SETTLE, what="the records", artifact_id=ECHO_ID)
        assert {(i.node_id, i.instance) for i in found} == {(i.node_id, i.instance) for i in settled}

        # the wait ended: the instance goes where the diff said it would
        await trio.to_thread.run_sync(client.rebalance)
        replaced = await wait_for(
            kv,
            lambda f: exactly_active(3, ECHO)(f) and victim not in {i.node_id for i in f},
            timeout=SETTLE,
            what=f"{victim}'s instance replaced",
            artifact_id=ECHO_ID,
            cluster=cluster,
        )
        assert dict(collections.Counter(i.node_id for i in replaced)) == later
