"""Event time stamps on a real KV cluster (replica processes on 127.0.0.1): the first stamp of a revision
stays, whoever asks later and whatever their clock says; without a quorum a query neither hangs nor fails,
the times it cannot stamp are left unknown."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from aether_kv import open_client, running_local_cluster
from aether_node.control._event_clock import EventClock, time_key

pytestmark = [pytest.mark.integration]


async def test_the_first_stamp_stays(tmp_path: Path) -> None:
    async with (
        running_local_cluster(tmp_path / "kv", 1) as cluster,
        open_client(cluster.endpoints, cluster.secret) as kv,
    ):
        first = EventClock(kv, clock=lambda: 100.0)
        later = EventClock(kv, clock=lambda: 200.0)
        assert await first.times([7, 1500, 8]) == {7: 100.0, 8: 100.0, 1500: 100.0}
        assert await later.times([8, 1500, 9]) == {8: 100.0, 9: 200.0, 1500: 100.0}

        # two observers of the same change at once: both answer with the one stamp that was kept
        answers: list[float] = []
        clocks = [EventClock(kv, clock=lambda t=t: t) for t in (300.0, 400.0, 500.0)]
        async with trio.open_nursery() as nursery:
            for clock in clocks:
                nursery.start_soon(lambda c=clock: _append(answers, c.stamp(42)))
        assert len(set(answers)) == 1 and answers[0] in (300.0, 400.0, 500.0), answers
        assert (await kv.get(time_key(42))) is not None


async def _append(answers: list[float], stamped: object) -> None:
    answers.append(await stamped)  # type: ignore[misc]


async def test_without_a_quorum_times_that_cannot_be_stamped_stay_unknown(tmp_path: Path) -> None:
    async with running_local_cluster(tmp_path / "kv", 3) as cluster:
        survivor = cluster.replicas[0]
        async with open_client([survivor.client_address], cluster.secret, request_timeout=1.0) as kv:
            clock = EventClock(kv, clock=lambda: 100.0)
            assert await clock.times([5]) == {5: 100.0}
            for replica in cluster.replicas[1:]:
                cluster.kill(replica.replica_id)
            with trio.fail_after(30):
                found = await clock.times([5, 6], patience=2.0)
            assert found == {5: 100.0}  # read from the survivor; 6 could not be written
