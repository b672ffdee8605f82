"""Event-driven replication (`_pysyncobj_patches`, item 4): a proposal or a read wakes the tick thread and
goes out at once instead of waiting for the heartbeat period, and an idle replica sleeps long. Real
replicas with real sockets and journals, in this process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from raft_support import leader_of, running_group

from aether_kv import RaftConfig
from aether_kv._pysyncobj_patches import IDLE_WAIT
from aether_kv._raft import RaftReplica
from aether_kv._records import Put

HEARTBEAT = 1.0  # long: anything that waited for the period would take a second per step


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[RaftReplica]]:
    with running_group(
        tmp_path, append_entries_period=HEARTBEAT, election_min=3.5, election_max=4.0
    ) as built:
        yield built


@pytest.fixture
def default_replicas(tmp_path: Path) -> Iterator[list[RaftReplica]]:
    with running_group(tmp_path) as built:
        yield built


def _wait(start, what: str, within: float):  # type: ignore[no-untyped-def]
    done = threading.Event()
    outcome: list[object] = []

    def callback(result: object, error: object) -> None:
        outcome.append((result, error))
        done.set()

    start(callback)
    assert done.wait(within), f"{what} did not complete within {within:g} s"
    result, error = outcome[0]  # type: ignore[misc]
    assert error is None, error
    return result


def test_writes_and_reads_do_not_wait_for_the_heartbeat(replicas: list[RaftReplica]) -> None:
    """Each step needs a round trip to a follower; with a 1 s heartbeat, a replica that only sent on its
    timer would need at least a second for each. Here every one completes within the period."""
    leader = leader_of(replicas)
    _wait(lambda cb: leader.propose(Put(key="warm", value=b"x"), cb), "the first write", 10)
    follower = next(r for r in replicas if r is not leader)
    for i in range(5):
        put = Put(key="k", value=str(i).encode())
        _wait(lambda cb, put=put: leader.propose(put, cb), f"write {i} on the leader", HEARTBEAT)
        _wait(lambda cb, put=put: follower.propose(put, cb), f"write {i} via a follower", HEARTBEAT)
        _wait(leader.confirm_read, f"read {i} on the leader", HEARTBEAT)
        _wait(follower.confirm_read, f"read {i} on a follower", HEARTBEAT)
        kv = follower.read(lambda state: state.get("k").kv)
        assert kv is not None and kv.value == str(i).encode()


IDLE_WINDOW = 1.0  # seconds over which an idle replica's wake-ups are counted (a rate, not a wait)


def test_an_idle_replica_sleeps_between_its_deadlines(default_replicas: list[RaftReplica]) -> None:
    """Upstream ticked every `autoTickPeriod` (it was 5 ms: 200 wake-ups a second). Idle now, a replica
    wakes for its own deadlines (the leader's heartbeat, a follower's election timeout, at most
    IDLE_WAIT apart) and for the messages it receives (a heartbeat or an answer per peer)."""
    leader_of(default_replicas)
    counts = [0] * len(default_replicas)
    for index, replica in enumerate(default_replicas):
        replica._obj.addOnTickCallback(lambda index=index: counts.__setitem__(index, counts[index] + 1))
    time.sleep(IDLE_WINDOW)  # the stimulus: idle time, whose wake-ups are counted
    period = RaftConfig(raft_address="", peers=(), data_dir=Path(), secret="").append_entries_period
    ceiling = IDLE_WINDOW * (1.0 / IDLE_WAIT + 3 / period) + 5
    assert max(counts) <= ceiling < 100, counts


def test_the_leader_sends_a_new_commit_index_before_it_applies_the_entry(replicas: list[RaftReplica]) -> None:
    """Item 8: followers learn that an entry committed (and a watcher on a follower sees it) from the
    append-entries the leader sends as soon as its commit index moves, before it applies the entry and
    answers its own client (upstream's order made that message wait for the leader's apply and reply)."""
    leader = leader_of(replicas)
    _wait(lambda cb: leader.propose(Put(key="warm", value=b"x"), cb), "the first write", 10)
    obj = leader._obj
    transport = obj._SyncObj__transport
    sent: list[tuple[int, int]] = []  # (commit index carried, last applied on the leader then)
    original_send = transport.send

    def send(node: object, message: object) -> bool:
        if isinstance(message, dict) and message.get("type") == "append_entries":
            sent.append((message["commit_index"], obj._SyncObj__raftLastApplied))
        return original_send(node, message)

    transport.send = send
    try:
        entry = obj._SyncObj__raftLastApplied + 1
        _wait(lambda cb: leader.propose(Put(key="k", value=b"v"), cb), "the write", 10)
    finally:
        transport.send = original_send
    assert obj._SyncObj__raftLastApplied >= entry
    assert any(commit >= entry > applied for commit, applied in sent), sent


def test_proposals_queued_while_the_leader_applies_go_out_in_the_next_tick(
    replicas: list[RaftReplica],
) -> None:
    """Item 8 sends append-entries before the apply; a proposal queued during the apply (a client that
    writes again as soon as it is answered) goes in the next tick's message, which runs at once, not in
    a second message of the same tick (one message per tick under load, as before item 8)."""
    leader = leader_of(replicas)
    _wait(lambda cb: leader.propose(Put(key="warm", value=b"x"), cb), "the first write", 10)
    obj = leader._obj
    transport = obj._SyncObj__transport
    follower_node = next(iter(obj._SyncObj__otherNodes))
    in_tick = [0]
    per_tick: list[int] = []  # append-entries sent to one follower, per tick
    original_send = transport.send

    def send(node: object, message: object) -> bool:
        if node == follower_node and isinstance(message, dict) and message.get("type") == "append_entries":
            in_tick[0] += 1
        return original_send(node, message)

    def tick_ended() -> None:
        per_tick.append(in_tick[0])
        in_tick[0] = 0

    second = threading.Event()

    def first_applied(callback):  # type: ignore[no-untyped-def]
        def done(result: object, error: object) -> None:  # on the tick thread, in the leader's apply
            leader.propose(Put(key="second", value=b"y"), lambda result, error: second.set())
            callback(result, error)

        return done

    transport.send = send
    obj.addOnTickCallback(tick_ended)
    try:
        _wait(lambda cb: leader.propose(Put(key="first", value=b"x"), first_applied(cb)), "the write", 10)
        assert second.wait(HEARTBEAT), "the write queued during the apply waited for the heartbeat"
    finally:
        obj.removeOnTickCallback(tick_ended)
        transport.send = original_send
    assert per_tick and max(per_tick) == 1, per_tick
