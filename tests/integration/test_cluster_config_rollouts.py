"""A change of a slice's `[slices.config]` rolls out to the running instances, on real `aether-node`
processes with the sample index (`org.aether:faulty`, whose config `mode = "fail_start"` makes its start
hook fail):

- rolling: each instance is replaced by one with the new config, the new one ACTIVE before an old one
  goes, never below the floor (`min_available`); the instances answer with the new config;
- a config the slice refuses to start with keeps the old instances serving at the floor, and the
  blueprint status says the change is stuck and why, as for a failed version upgrade; applying the old
  config again converges back, with the very instances that ran it;
- a blueprint that changes nothing — the same config with its keys in another order, an int written as
  a float — replaces nothing (no churn), also after the leader is killed and another one reads every
  record back from the KV;
- a node killed during a config rollout: its instances are replaced on the survivors with the new config;
- canary: a config change alone is held as a canary, and `aether slice abort` goes back to the old
  config.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from cluster_support import (
    SETTLE,
    SliceSpec,
    Watcher,
    background,
    call,
    kv_of,
    leader_node_id,
    put_blueprint,
    running_cluster,
    start_node,
    wait_for_reconcile_passes,
)
from node_support import FAULTY

from aether_kv import KVClient, KVError
from aether_node import (
    InstanceKey,
    RolloutRecord,
    SliceRecord,
    SliceState,
    UpdateSpec,
    UpdateStrategy,
    config_digest,
    decode_record,
    rollout_key,
)
from aether_node.client import ApiClient, BlueprintStatus
from aether_node.dev import LocalNodeCluster
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAULTY_ID = "org.aether:faulty"
A = {"mode": "ok", "tag": "a", "n": 1}
B_FAILS = {"mode": "fail_start", "tag": "b"}
C = {"mode": "ok", "tag": "c", "limits": {"burst": 2, "rate": 5}}
C_AGAIN = {"limits": {"rate": 5.0, "burst": 2.0}, "tag": "c", "mode": "ok"}  # the same, by value


@attrs.frozen
class Record:
    key: str
    node_id: str
    state: SliceState
    reason: str
    config: Mapping[str, Any]

    @property
    def tag(self) -> str:
        return str(self.config.get("tag"))


async def records(kv: KVClient) -> list[Record] | None:
    """faulty's records (None on a KV error: mid-failover, ask again)."""
    try:
        listing = await kv.range("slices/", linearizable=True)
    except KVError:
        return None
    found = []
    for item in listing.kvs:
        parsed = InstanceKey.parse(item.key)
        if parsed is None or parsed.coordinates.artifact_id != FAULTY_ID:
            continue
        record = decode_record(item.key, item.value, SliceRecord)
        found.append(Record(item.key, parsed.node_id, record.state, record.reason, record.config))
    return sorted(found, key=lambda r: r.key)


def exactly(count: int, config: Mapping[str, Any]):
    """`count` ACTIVE records of `config` (by value) and no other record."""
    wanted = config_digest(config)
    return lambda found: (
        found is not None
        and len(found) == count
        and all(r.state is SliceState.ACTIVE and config_digest(r.config) == wanted for r in found)
    )


async def until(kv: KVClient, condition, what: str, timeout: float = SETTLE) -> list[Record]:
    found = await wait_until(lambda: records(kv), until=condition, timeout=timeout, interval=0.1, what=what)
    assert found is not None
    return found


def spec(config: Mapping[str, Any], instances: int = 2, update: UpdateSpec | None = None) -> SliceSpec:
    return SliceSpec(
        artifact=FAULTY, instances=instances, min_available=2, config=dict(config), update=update
    )


def api(cluster: LocalNodeCluster) -> ApiClient:
    return ApiClient([f"http://{n.management}" for n in cluster.nodes])


async def status(cluster: LocalNodeCluster) -> BlueprintStatus:
    return await trio.to_thread.run_sync(api(cluster).blueprint_status, "configured")


async def answered_configs(cluster: LocalNodeCluster, calls: int = 12) -> set[str]:
    """The tags of the configs the instances answer `imported` with, over a few calls."""
    tags = set()
    async with httpx.AsyncClient(timeout=10.0) as http:
        for turn in range(calls):
            ingress = cluster.nodes[turn % len(cluster.nodes)].ingress
            answer = await call(http, ingress, FAULTY_ID, "imported")
            assert answer.status_code == 200, answer.text
            tags.add(str(answer.json()["instance_config"]["tag"]))
    return tags


def unloads_for_config(watcher: Watcher) -> list[str]:
    return [f"{i}" for _, found in watcher.history for i in found if "config changed" in i.reason]


async def test_a_config_change_rolls_out_and_a_refused_one_keeps_the_old_config_serving(
    sample_index: Path, tmp_path: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 3) as cluster, kv_of(cluster) as kv:
        await put_blueprint(kv, "configured", spec(A))
        first = await until(kv, exactly(2, A), "2 ACTIVE with config a")
        watcher = Watcher(kv, FAULTY_ID)
        async with background(watcher):
            # a config the slice refuses: the new instances fail, the old ones keep serving at the floor
            await put_blueprint(kv, "configured", spec(B_FAILS))
            stuck = await wait_until(
                lambda: status(cluster),
                until=lambda s: "config change of 1.0.0 is stuck" in s.slices[0].problem,
                timeout=SETTLE,
                interval=0.2,
                what="the stuck config change in the blueprint status",
            )
            problem = stuck.slices[0].problem
            assert "faulty: start failed on purpose" in problem, problem
            assert "1.0.0 (old config) keeps serving (2 ACTIVE)" in problem, problem
            assert not stuck.converged
            found = await records(kv)
            assert found is not None
            assert [r.key for r in found if r.state is SliceState.ACTIVE] == [r.key for r in first]
            assert await answered_configs(cluster) == {"a"}

            # the old config again, mid-rollout: back to the very instances that ran it
            await put_blueprint(kv, "configured", spec(A))
            back = await until(kv, exactly(2, A), "back to the 2 instances of config a")
            assert [r.key for r in back] == [r.key for r in first]

            # a good config: rolled out, the new instance ACTIVE before an old one goes
            await put_blueprint(kv, "configured", spec(C))
            rolled = await until(kv, exactly(2, C), "2 ACTIVE with config c")
            assert not {r.key for r in rolled} & {r.key for r in first}
            assert await answered_configs(cluster) == {"c"}
            done = await wait_until(
                lambda: status(cluster), until=lambda s: s.converged, timeout=30, what="converged"
            )
            assert done.slices[0].active == 2
        assert watcher.lowest is not None and watcher.lowest[0] >= 2, watcher.describe_lowest()
        assert any(
            i.state is SliceState.UNLOAD and i.reason == "replaced: config changed"
            for _, found in watcher.history
            for i in found
        ), "no instance was replaced saying why"

        # no churn: the same config in another form, then a new leader reading every record back
        watcher = Watcher(kv, FAULTY_ID)
        async with background(watcher):
            await put_blueprint(kv, "configured", spec(C_AGAIN))
            await wait_for_reconcile_passes(cluster, kv, 3)
            leader = await leader_node_id(cluster, kv)
            survivors = {r.key for r in rolled if r.node_id != leader}
            cluster.kill(leader, signal.SIGKILL)
            await wait_until(
                lambda: leader_node_id(cluster, kv, timeout=30),
                until=lambda new: new != leader,
                timeout=60,
                what="another leader",
            )
            await until(kv, exactly(2, C), "2 ACTIVE with config c again", timeout=SETTLE)
            start_node(cluster, leader)
            await wait_for_reconcile_passes(cluster, kv, 3, timeout=60)
            found = await records(kv)
            assert found is not None
            assert survivors <= {r.key for r in found}, (survivors, found)
        assert unloads_for_config(watcher) == []


@pytest.mark.long  # (in `nox -s long`: the default run keeps this module's other tests)
async def test_a_node_killed_during_a_config_rollout_and_a_canary_abort(
    sample_index: Path, tmp_path: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 4) as cluster, kv_of(cluster) as kv:
        await put_blueprint(kv, "configured", spec(A, instances=3))
        first = await until(kv, exactly(3, A), "3 ACTIVE with config a")
        leader = await leader_node_id(cluster, kv)
        victim = next(r.node_id for r in first if r.node_id != leader)
        await put_blueprint(kv, "configured", spec(C, instances=3))
        await until(
            kv,
            lambda found: found is not None and any(r.tag == "c" for r in found),
            "the config rollout under way",
        )
        cluster.kill(victim, signal.SIGKILL)
        done = await until(kv, exactly(3, C), "3 ACTIVE with config c on the survivors", timeout=2 * SETTLE)
        assert victim not in {r.node_id for r in done}

        # canary: a config change alone is held; an operator's abort goes back to the old config
        canary = UpdateSpec(strategy=UpdateStrategy.CANARY, steps=(50, 100), step_window_s=1.0)
        await put_blueprint(kv, "configured", spec(C, instances=3, update=canary))
        await put_blueprint(kv, "configured", spec(A, instances=3, update=canary))
        observing: RolloutRecord = await rollout_phase_of(kv, "OBSERVING")
        assert (observing.stable, observing.candidate) == ("1.0.0", "1.0.0")
        assert observing.stable_config is not None and config_digest(observing.stable_config) == (
            config_digest(C)
        )
        found = await records(kv)
        assert found is not None
        assert sorted(r.tag for r in found if r.state is SliceState.ACTIVE) == ["a", "a", "c", "c", "c"]
        info = await trio.to_thread.run_sync(lambda: api(cluster).rollout_command(FAULTY_ID, "abort"))
        assert (info.phase, info.config_changed) == ("ABORTED", True)
        await until(kv, exactly(3, C), "back to 3 ACTIVE with config c")


async def rollout_phase_of(kv: KVClient, phase: str) -> RolloutRecord:
    """`cluster_support.rollout_phase`, for faulty."""
    key = rollout_key(FAULTY_ID)

    async def record() -> RolloutRecord | None:
        found = await kv.get(key)
        return None if found is None else decode_record(key, found.value, RolloutRecord)

    seen = await wait_until(
        record, until=lambda s: s is not None and s.phase == phase, timeout=SETTLE, what=f"rollout {phase}"
    )
    assert seen is not None
    return seen
