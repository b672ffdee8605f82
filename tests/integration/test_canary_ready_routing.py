"""A canary's share of the calls goes, on every node, only to candidate instances that have stood
`min_ready_s`, on 3 real `aether-node` processes with the sample index: `org.aether:faulty` with
`mode = "crash_after_start"` and a `crash_delay` longer than `min_ready_s` stays up long enough for the
leader to give its canary step a share, then dies and is restarted by its node (a crash loop, slow
enough to pass the leader's window once).

Found in review: the leader counts a new instance for a step only once it has stayed ACTIVE
`min_ready_s`, but every node's router sent the step's share to any ACTIVE candidate instance, one that
had just restarted too (only the leader knew the ACTIVE-since times). Now each node keeps when its own
endpoint watch first saw each endpoint record (a restart publishes a new one) and a candidate's endpoint
gets none of the share until it has stood `min_ready_s` by that node's clock; with no candidate ready,
the share goes to the stable config. Calls through a node that is not the leader, made as soon as the
restarted candidate's record is published (well within its window), all reach the stable config; before
the crash, once the candidate has stood its window, that node does send it its share.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
from cluster_support import (
    SETTLE,
    RolloutWatcher,
    SliceState,
    background,
    call,
    instances,
    kv_of,
    leader_node_id,
    put_blueprint,
    running_cluster,
)
from node_support import FAULTY
from test_crash_loop_rollout import FAULTY_ID

from aether_kv import KVClient
from aether_node import SliceSpec, UpdateSpec, UpdateStrategy
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.long]  # (`nox -s long`)

MIN_READY_S = 8.0  # the window: calls made within it, even on a busy machine, are well inside it
HEALTHY = {"mode": "ok", "tag": "stable"}
# Up long enough for the leader's window (so the step gets its share), then a crash and a restart.
CRASHING = {"mode": "crash_after_start", "crash_delay": MIN_READY_S + 6, "tag": "candidate"}
# Two instances: the first step's 50 % is one candidate; its window is long, so no verdict ends it.
CANARY = UpdateSpec(
    strategy=UpdateStrategy.CANARY, steps=(50, 100), step_window_s=3600, min_ready_s=MIN_READY_S
)
CALLS = 40  # at 50 %, every second call is the candidate's


def spec(config: dict[str, object]) -> SliceSpec:
    return SliceSpec(artifact=FAULTY, instances=2, config=config, update=CANARY)


async def tags(http: httpx.AsyncClient, ingress: str, calls: int) -> list[str]:
    """The config tag of the instance that answered each of `calls` calls (of entry `imported`)."""
    found = []
    for _ in range(calls):
        answer = await call(http, ingress, FAULTY_ID, "imported", None)
        assert answer.status_code == 200, answer.text
        found.append(answer.json()["instance_config"]["tag"])
    return found


async def candidate_endpoint(kv: KVClient, stable: set[int]) -> tuple[str, int]:
    """The key of the candidate's endpoint record (the one ACTIVE instance whose number is not one of
    the `stable` config's) and the revision of its current publication, once it is published."""

    async def probe() -> tuple[str, int] | None:
        for i in await instances(kv, FAULTY_ID):
            if i.state is SliceState.ACTIVE and i.instance not in stable:
                key = f"endpoints/{i.coordinates}/{i.instance}"
                found = await kv.get(key)
                if found is not None:
                    return key, found.mod_revision
        return None

    return await wait_until(probe, timeout=SETTLE, interval=0.1, what="the candidate's endpoint")


async def republished(kv: KVClient, key: str, after: int) -> None:
    """Until `key` is put again after revision `after` (a restart's new record), through a KV watch."""
    watch = kv.watch(key, after + 1)
    try:
        with trio.fail_after(SETTLE):
            async for events in watch:
                if any(e.kind == "put" and e.kv.key == key for e in events):
                    return
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await watch.aclose()


async def test_a_restarted_canary_candidate_gets_no_calls_within_its_window_on_a_node_not_leading(
    sample_index: Path, tmp_path: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        await put_blueprint(kv, "ready", spec(HEALTHY))
        healthy = await wait_until(
            lambda: instances(kv, FAULTY_ID),
            until=lambda f: len(f) == 2 and all(i.state is SliceState.ACTIVE for i in f),
            timeout=SETTLE,
            interval=0.2,
            what="2 ACTIVE instances of the healthy config",
        )
        stable = {i.instance for i in healthy}
        leader = await leader_node_id(cluster, kv)
        ingress = next(n.ingress for n in cluster.nodes if n.node_id != leader)
        rollout = RolloutWatcher(kv, FAULTY_ID)
        async with background(rollout), httpx.AsyncClient(timeout=30) as http:
            await put_blueprint(kv, "ready", spec(CRASHING))
            observing = await wait_until(
                lambda: rollout.latest,
                until=lambda r: r is not None and r.phase.value in ("OBSERVING", "ABORTED"),
                timeout=SETTLE,
                interval=0.1,
                what="the canary observing its first step",
            )
            assert observing is not None and (observing.phase.value, observing.share) == ("OBSERVING", 50)
            # Once it has stood its window, the node that is not the leader sends the candidate its share
            # (before its crash, or after a restart: whichever window it is in then).
            await wait_until(
                lambda: tags(http, ingress, 4),
                until=lambda found: "candidate" in found,
                timeout=SETTLE,
                interval=0.2,
                what=f"a call through {ingress} reaching the candidate",
            )
            # The candidate crashes and its node restarts it: a new endpoint record, a new window.
            key, current = await candidate_endpoint(kv, stable)
            await republished(kv, key, current)
            found = await tags(http, ingress, CALLS)
            assert rollout.latest is not None and rollout.latest.phase.value == "OBSERVING"
        assert found == ["stable"] * CALLS, f"the restarted candidate got calls within its window: {found}"
