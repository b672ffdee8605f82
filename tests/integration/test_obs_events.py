"""The typed cluster event log on a real cluster: a node that leaves gracefully, a slice that fails to
start, a node SIGKILLed, then the leader SIGKILLed — the events arrive live (the API client's
`follow_events` with a filter, as the MCP service uses it) and from the history, in revision order, with
their reasons; the filters of the API and of `aether cluster events` select what they say.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from cli_support import run_aether
from cluster_support import (
    ECHO,
    ECHO_ID,
    SliceSpec,
    Strategy,
    kv_of,
    leader_node_id,
    put_blueprint,
    running_cluster,
    wait_for,
)

from aether_node import NodeConfig
from aether_node.client import ApiClient, ClusterEvent
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.long]

FAULTY = "org.aether:faulty:1.0.0"
FAULTY_ID = "org.aether:faulty"
SETTLE = 90.0
FAILOVER = 30.0


class Followed:
    """`ApiClient.follow_events` in a worker thread, collecting every event it yields."""

    def __init__(self, urls: list[str], **filters: Any) -> None:
        self.client = ApiClient(urls)
        self.filters = filters
        self.events: list[ClusterEvent] = []

    def _run(self) -> None:
        for event in self.client.follow_events(1, **self.filters):
            self.events.append(event)

    async def run(self) -> None:
        try:
            await trio.to_thread.run_sync(self._run, abandon_on_cancel=True)
        except Exception:  # the cluster went away under it at the end of the test
            pass

    async def wait_for(self, what: str, predicate: Any, timeout: float) -> ClusterEvent:
        """The first event followed for which `predicate` holds; fails with every event followed."""
        found = await wait_until(
            lambda: next((event for event in list(self.events) if predicate(event)), None),
            timeout=timeout,
            what=f"an event for {what}",
            describe=lambda _: [f"#{e.revision} {e.kind} {e.message}" for e in self.events],
        )
        assert found is not None
        return found


def first(events: list[ClusterEvent], what: str, **fields: Any) -> ClusterEvent:
    for event in events:
        if all(getattr(event, k) == v for k, v in fields.items()):
            return event
    pytest.fail(f"no {what} ({fields}) among {[(e.revision, e.kind, e.subject) for e in events]}")


async def test_events_of_leaving_failing_killed_nodes_and_a_leader_change(
    tmp_path: Path, sample_index: Path
) -> None:
    async with running_cluster(tmp_path / "cluster", sample_index, 5) as cluster, kv_of(cluster) as kv:
        urls = [f"http://{n.management}" for n in cluster.nodes]
        api = ApiClient(urls)
        watched = {"node_left", "node_lost", "leader_elected", "instance_state"}
        # follow both Raft voters that do not lead: whichever does not lead at step 4 survives the test
        # (node-4 is killed, node-5 leaves; on a busy machine the leadership may move on its own)
        leader = await leader_node_id(cluster, kv)
        observers = {
            n.node_id: Followed([f"http://{n.management}"], kind=sorted(watched))
            for n in cluster.nodes
            if n.raft and n.node_id != leader
        }
        followed = next(iter(observers.values()))
        async with trio.open_nursery() as nursery:
            for observer in observers.values():
                nursery.start_soon(observer.run)

            # 1. node-5 shuts down gracefully (SIGTERM): it left, it was not lost
            cluster.kill("node-5", signal.SIGTERM)
            left = await followed.wait_for("node-5 left", lambda e: e.kind == "node_left", FAILOVER)
            assert (left.subject, left.node_id, left.reason) == ("node-5", "node-5", "it shut down")
            assert left.message == "node node-5 left: it shut down"

            # 2. a slice that fails to start, and echo on every node left (one each: the victim of step 3
            # holds one, so its instance records are removed after it is lost)
            await put_blueprint(
                kv,
                "demo",
                SliceSpec(artifact=ECHO, instances=4, strategy=Strategy.SPREAD, max_per_node=1),
                SliceSpec(artifact=FAULTY, instances=1, config={"mode": "fail_start"}),
            )
            failed = await followed.wait_for(
                "the faulty instance FAILED",
                lambda e: e.kind == "instance_state" and e.state == "FAILED" and e.artifact == FAULTY,
                SETTLE,
            )
            assert "faulty: start failed on purpose" in failed.reason, failed
            assert failed.reason.startswith("activate:"), failed
            assert failed.subject == f"{FAULTY}#{failed.instance}" and failed.node_id in cluster.processes
            victim = "node-4"  # not a Raft voter: never the leader
            await wait_for(
                kv,
                lambda found: {i.node_id for i in found if i.state == "ACTIVE"} == {*cluster.processes},
                timeout=SETTLE,
                what="an ACTIVE echo on each of the 4 nodes",
                artifact_id=ECHO_ID,
                cluster=cluster,
            )
            assert victim in cluster.processes

            # 3. a node that is not the leader is SIGKILLed: lost, by its lease
            killed_at = time.time()
            cluster.kill(victim)
            lost = await followed.wait_for(f"{victim} lost", lambda e: e.kind == "node_lost", FAILOVER)
            assert lost.node_id == victim
            ttl = attrs.fields(NodeConfig).lease_ttl.default  # the nodes run with the default lease
            expected = f"its lease expired: no keep-alive within {ttl:g} s (killed, hung or cut off)"
            assert lost.reason == expected

            # 4. the leader is SIGKILLed: lost, and another node takes over in a later term
            leader = await leader_node_id(cluster, kv)
            followed = next(f for node_id, f in observers.items() if node_id != leader)
            elections = await trio.to_thread.run_sync(lambda: api.events(50, kind="leader_elected"))
            before = first(elections[::-1], "the current leader's election", node_id=leader)
            cluster.kill(leader)
            survivors = [f"http://{n.management}" for n in cluster.nodes if n.node_id in cluster.processes]
            elected = await followed.wait_for(
                "a new leader", lambda e: e.kind == "leader_elected" and e.revision > lost.revision, FAILOVER
            )
            assert elected.node_id not in (leader, victim), elected
            assert f"took over from {leader}" in elected.reason, elected
            term = int(elected.reason.split()[1].rstrip(":"))
            assert term > int(before.reason.split()[1].rstrip(":")), (before, elected)
            leader_lost = await followed.wait_for(
                f"{leader} lost", lambda e: e.kind == "node_lost" and e.node_id == leader, FAILOVER
            )
            nursery.cancel_scope.cancel()

        # live: in revision order, nothing but what the filter asked for
        revisions = [e.revision for e in followed.events]
        assert revisions == sorted(revisions), revisions
        assert {e.kind for e in followed.events} <= watched
        assert left.revision < failed.revision < lost.revision < min(elected.revision, leader_lost.revision)

        # the same story from the history of a surviving node, with filters
        history = ApiClient(survivors)
        asked_at = time.time()
        first_reading = history.events(500)
        lost_events = history.events(100, kind="node_lost")
        assert {e.kind for e in lost_events} == {"node_lost"}
        ours = [(e.node_id, e.reason) for e in lost_events if e.node_id in (victim, leader)]
        assert ours == [(victim, lost.reason), (leader, leader_lost.reason)], lost_events
        faulty = history.events(500, slice=FAULTY_ID)
        assert faulty and all(e.artifact == FAULTY for e in faulty), faulty
        assert failed in faulty
        assert {e.kind for e in faulty} <= {"instance_state", "instance_removed", "rebalance_move"}
        about_victim = history.events(500, node=victim)
        kinds = [e.kind for e in about_victim]
        assert "node_joined" in kinds and "node_lost" in kinds, kinds
        assert all(victim in (e.node_id, e.from_node_id) for e in about_victim)
        # the victim's instance records were forgotten after it was lost
        removed = [e for e in about_victim if e.kind == "instance_removed"]
        assert removed and all(e.revision > lost.revision for e in removed), about_victim
        both = history.events(500, kind=["node_left", "leader_elected"])
        assert {e.kind for e in both} == {"node_left", "leader_elected"}

        # the CLI: the same filters; bad ones are bad input
        env = {"AETHER_CLUSTER": ",".join(survivors)}
        run = run_aether(
            "cluster", "events", "--kind", "node_lost", "--kind", "node_left", "--json", cwd=tmp_path, env=env
        )
        assert run.returncode == 0, run
        shown = [json.loads(line) for line in run.stdout.splitlines()]
        assert {e["kind"] for e in shown} == {"node_left", "node_lost"}, run
        ours = [(e["kind"], e["node_id"]) for e in shown if e["node_id"] in ("node-5", victim, leader)]
        assert ours == [("node_left", "node-5"), ("node_lost", victim), ("node_lost", leader)], run
        run = run_aether(
            "cluster", "events", "--slice", FAULTY_ID, "--node", failed.node_id, cwd=tmp_path, env=env
        )
        assert run.returncode == 0 and "faulty: start failed on purpose" in run.stdout, run
        run = run_aether("cluster", "events", "--kind", "node_exploded", cwd=tmp_path, env=env)
        assert run.returncode == 2, run
        assert "kind: unknown event kind 'node_exploded' (known: node_joined," in run.stderr, run
        run = run_aether("cluster", "events", "--slice", "not a slice", cwd=tmp_path, env=env)
        assert run.returncode == 2 and "slice:" in run.stderr, run

        # an event's time is when it happened, not when it is asked for: the same on every query, the
        # same live and from the history, in the order of the events
        later = {(e.revision, e.kind, e.subject): e.timestamp for e in history.events(500)}
        for event in first_reading:
            key = (event.revision, event.kind, event.subject)
            assert later.get(key, event.timestamp) == event.timestamp, (event, later.get(key))
        victim_lost = first(first_reading, "the victim's loss", kind="node_lost", node_id=victim)
        assert victim_lost.timestamp == lost.timestamp, (victim_lost, lost)
        assert killed_at < victim_lost.timestamp < asked_at, (killed_at, victim_lost, asked_at)
        assert first(first_reading, "node-5 left", kind="node_left").timestamp == left.timestamp
        removed_times = [e.timestamp for e in removed]
        assert all(victim_lost.timestamp <= t < asked_at for t in removed_times), (victim_lost, removed)
        node_times = [e.timestamp for e in first_reading if e.kind.startswith("node_")]
        assert node_times == sorted(node_times), [e for e in first_reading if e.kind.startswith("node_")]
