"""A replica whose owner is silent stands aside (`_pysyncobj_patches`, item 14): as leader it hands over
and steps down, and it neither holds elections nor leads until its owner is back, while the others elect
a leader among themselves (two of three too). Real replicas with real sockets in this process; the
owner's word is `stand_aside`. The parent's heartbeat that gives it in `aether-kv serve`
(`_serve.ParentHeartbeat`, `follow_parent`) is tested on a fake clock and a real pipe. (With real
processes, a node stopped while its replica leads: tests/integration/test_cluster_leader_paused.py.)"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from raft_support import SECRET, leader_of, propose

from aether_kv import RaftConfig
from aether_kv._ports import free_port
from aether_kv._raft import RaftReplica
from aether_kv._records import Put
from aether_kv._serve import ParentHeartbeat, follow_parent
from support import wait_until_sync


class Owners:
    """Each replica's owner: silent or not (set from the test thread, read on the tick threads), and
    every change of leadership each replica reported, in order."""

    def __init__(self, size: int) -> None:
        self.silent = [False] * size
        self.roles: list[list[bool]] = [[] for _ in range(size)]
        self.lock = threading.Lock()

    def stand_aside(self, i: int) -> str | None:
        return "its owner is silent (test)" if self.silent[i] else None

    def on_leadership(self, i: int, is_leader: bool) -> None:
        with self.lock:
            self.roles[i].append(is_leader)

    def led_again(self, i: int, mark: int) -> bool:
        """Whether replica `i` led again after it first stopped leading at or after `mark` (the leading
        it was told of just before `mark` may still arrive after it)."""
        with self.lock:
            seen = self.roles[i][mark:]
        return False in seen and True in seen[seen.index(False) :]


class Group:
    """Three replicas on free ports, each with its owner; `start(i)` starts replica `i` (again, on its
    data directory: one closed earlier comes back with the log it had)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.addresses = tuple(f"127.0.0.1:{free_port()}" for _ in range(3))
        self.owners = Owners(3)
        self.started: list[RaftReplica] = []

    def start(self, i: int) -> RaftReplica:
        owners = self.owners
        replica = RaftReplica(
            RaftConfig(
                raft_address=self.addresses[i],
                peers=self.addresses,
                data_dir=self.tmp_path / f"r{i}",
                secret=SECRET,
            ),
            on_leadership=lambda is_leader: owners.on_leadership(i, is_leader),
            stand_aside=lambda: owners.stand_aside(i),
        )
        self.started.append(replica)
        return replica

    def close(self) -> None:
        for replica in self.started:
            replica.close()


@pytest.fixture
def group(tmp_path: Path) -> Iterator[tuple[list[RaftReplica], Owners]]:
    built = Group(tmp_path)
    try:
        yield [built.start(i) for i in range(3)], built.owners
    finally:
        built.close()


def _other_leader(replicas: list[RaftReplica], than: RaftReplica) -> RaftReplica:
    def found() -> RaftReplica | None:
        leaders = [r for r in replicas if r.is_leader and r is not than]
        return leaders[0] if leaders else None

    leader = wait_until_sync(found, timeout=30, interval=0.05, what="a leader other than the silent one")
    assert leader is not None
    return leader


def test_a_leader_whose_owner_is_silent_hands_over_and_stays_aside_until_its_owner_is_back(
    group: tuple[list[RaftReplica], Owners],
) -> None:
    replicas, owners = group
    index = {id(r): i for i, r in enumerate(replicas)}  # the owners' numbering
    first = leader_of(replicas)
    propose(first, Put(key="before", value=b"x"))
    term = first.status().term
    silent = index[id(first)]
    mark = len(owners.roles[silent])
    owners.silent[silent] = True

    second = _other_leader(replicas, first)
    assert not first.is_leader
    assert second.status().term > term
    propose(second, Put(key="during", value=b"x"))
    propose(first, Put(key="forwarded", value=b"x"))  # it still follows and forwards

    # The leader goes too: two replicas are left, one of them silent. The other is elected with the
    # silent one's vote, and the silent one never leads.
    replicas.remove(second)  # (closed here, not by the fixture)
    second.close()
    third = _other_leader(replicas, first)
    propose(third, Put(key="two of three", value=b"x"))
    assert not owners.led_again(silent, mark), owners.roles[silent]

    # Its owner back, the other's owner silent: it leads again.
    owners.silent[silent] = False
    owners.silent[index[id(third)]] = True
    assert _other_leader(replicas, third) is first
    propose(first, Put(key="after", value=b"x"))


def test_a_silent_replica_that_alone_holds_entries_leads_until_another_has_them_then_hands_over(
    tmp_path: Path,
) -> None:
    """Two replicas left, the silent one holding an entry the other lacks: the other cannot be elected
    (Raft: its log is behind), and the silent one, standing aside, held no election: no leader until its
    owner was back. Now it leads, brings the other up to date and hands over to it."""
    built = Group(tmp_path)
    try:
        replicas = [built.start(i) for i in range(3)]
        index = {id(r): i for i, r in enumerate(replicas)}
        first = leader_of(replicas)
        built.owners.silent[index[id(first)]] = True
        second = _other_leader(replicas, first)
        (lagging,) = [r for r in replicas if r is not first and r is not second]
        # an entry committed without the third replica (the leader and the silent one hold it)
        replicas.remove(lagging)
        lagging.close()
        propose(second, Put(key="without the third", value=b"x"))
        # the leader goes, the third comes back: the silent one alone holds that entry
        replicas.remove(second)
        second.close()
        back = built.start(index[id(lagging)])
        replicas.append(back)
        assert _other_leader(replicas, first) is back
        assert not first.is_leader
        propose(back, Put(key="after", value=b"x"))
        assert back.read(lambda state: state.get("without the third").kv) is not None
    finally:
        built.close()


def test_a_lone_replica_leads_even_when_its_owner_is_silent(tmp_path: Path) -> None:
    """No other replica could lead: it does not stand aside."""
    address = f"127.0.0.1:{free_port()}"
    replica = RaftReplica(
        RaftConfig(raft_address=address, peers=(address,), data_dir=tmp_path / "r", secret=SECRET),
        stand_aside=lambda: "its owner is silent (test)",
    )
    try:
        leader = leader_of([replica])
        propose(leader, Put(key="k", value=b"v"))
        assert replica.is_leader
    finally:
        replica.close()


# ---------------------------------------------------------------- the parent's heartbeat


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_parent_s_heartbeat_is_silent_past_its_limit_and_again_fine_after_a_beat() -> None:
    clock = FakeClock()
    heartbeat = ParentHeartbeat(3.0, clock)
    assert heartbeat.why_silent() is None  # one silence to start beating
    clock.now += 3.0
    assert heartbeat.why_silent() is None
    clock.now += 0.5
    why = heartbeat.why_silent()
    assert why is not None and "3.5 s" in why
    heartbeat.beat()
    assert heartbeat.why_silent() is None
    heartbeat.close()
    assert heartbeat.why_silent() == "its parent closed the heartbeat pipe"


async def test_every_read_from_the_pipe_is_a_beat_and_its_end_closes_the_heartbeat() -> None:
    clock = FakeClock()
    heartbeat = ParentHeartbeat(1.0, clock)
    read_end, write_end = os.pipe()
    async with trio.open_nursery() as nursery:
        done = trio.Event()

        async def follow() -> None:
            await follow_parent(heartbeat, trio.lowlevel.FdStream(read_end))
            done.set()

        nursery.start_soon(follow)
        clock.now += 5.0
        assert heartbeat.why_silent() is not None
        os.write(write_end, b".")
        with trio.fail_after(10):
            while heartbeat.why_silent() is not None:
                await trio.sleep(0.01)
        os.close(write_end)
        with trio.fail_after(10):
            await done.wait()
    assert heartbeat.why_silent() == "its parent closed the heartbeat pipe"
