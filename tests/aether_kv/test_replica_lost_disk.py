"""A replica that lost its disk (a machine rebuilt, a disk replaced) and starts again with the same
address (`_pysyncobj_patches`, item 16). Real replicas of one group, in this process.

The schedule: an entry E is committed by the leader and replica C while replica B is down; C loses its
data directory; the leader dies; B and C start again. B lacks E, C holds nothing. Upstream, C voted for
B (any log is at least as up to date as an empty one), B led, and E, acknowledged to its writer, was gone.
Now C withholds its vote from a candidate whose log holds a leader's entry until it has caught up: B and
C elect no one, the old leader comes back, E is there on every replica, and C votes again."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from raft_support import leader_of, propose, raft_group

from aether_kv._raft import RaftReplica
from aether_kv._records import Put
from support import wait_until_sync

NO_LEADER_FOR = 4.0  # s: more than two of the longest election timeouts (1.5 s) and a pre-vote round


def _value(replica: RaftReplica, key: str) -> bytes | None:
    found = replica.read(lambda state: state.get(key))
    return found.kv.value if found is not None and found.kv is not None else None


def test_a_replica_that_lost_its_disk_does_not_elect_a_leader_without_what_it_acknowledged(
    tmp_path: Path,
) -> None:
    replicas = raft_group(tmp_path, 3)
    started: list[RaftReplica] = []
    try:
        leader = leader_of(replicas)
        b, c = (r for r in replicas if r is not leader)
        for i in range(5):
            propose(leader, Put(key=f"k/{i}", value=b"v"))
        wait_until_sync(lambda: _value(b, "k/4") == b"v", timeout=30, what="B to hold k/4")
        b.close()
        propose(leader, Put(key="E", value=b"acknowledged"))  # committed by the leader and C
        wait_until_sync(lambda: _value(c, "E") == b"acknowledged", timeout=30, what="C to apply E")
        c.close()
        shutil.rmtree(c.config.data_dir)  # C's disk is gone
        leader.close()

        b_again, c_again = RaftReplica(b.config), RaftReplica(c.config)
        started += [b_again, c_again]
        assert c_again._obj.catching_up and not b_again._obj.catching_up
        until = time.monotonic() + NO_LEADER_FOR
        while time.monotonic() < until:  # a safety property: checked over a bounded window
            assert not (b_again.is_leader or c_again.is_leader), "B led without E (C voted for it)"
            time.sleep(0.05)

        leader_again = RaftReplica(leader.config)  # a replica that holds E comes back
        started.append(leader_again)
        elected = leader_of(started)
        for replica in started:
            wait_until_sync(
                lambda r=replica: _value(r, "E"),
                until=lambda value: value == b"acknowledged",
                timeout=30,
                what="E on every replica",
            )
        wait_until_sync(lambda: not c_again._obj.catching_up, timeout=30, what="C to catch up")

        elected.close()  # C votes again: the other two elect a leader, E still there
        rest = [r for r in started if r is not elected]
        successor = leader_of(rest)
        propose(successor, Put(key="after", value=b"v"))  # (a new leader applies what it holds first)
        assert _value(successor, "E") == b"acknowledged"
    finally:
        for replica in [*replicas, *started]:
            replica.close()


def test_a_new_group_of_empty_replicas_elects_a_leader(tmp_path: Path) -> None:
    """Every replica starts empty in a new cluster: the candidates' logs hold no leader's entry yet, so
    votes are given, a leader is elected, and the others catch up."""
    replicas = raft_group(tmp_path, 3)
    try:
        assert all(r._obj.catching_up for r in replicas)
        leader = leader_of(replicas)
        propose(leader, Put(key="k", value=b"v"))
        wait_until_sync(
            lambda: not any(r._obj.catching_up for r in replicas), timeout=30, what="every replica caught up"
        )
    finally:
        for replica in replicas:
            replica.close()
