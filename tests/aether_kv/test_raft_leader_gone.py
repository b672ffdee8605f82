"""A follower whose link to its leader closes dials the leader's port (`_pysyncobj_patches`, item 10):
refused, the leader's process is gone and an election follows at once; answered, nothing changes. Real
replicas with real sockets in this process, and the probe itself on real sockets (a SIGKILL of a
replica process and a paused leader: tests/integration/test_kv_raft_faults.py)."""

from __future__ import annotations

import logging
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.monotonic import monotonic
from pysyncobj.poller import createPoller
from raft_support import leader_of, propose, running_group

from aether_kv._ports import free_port
from aether_kv._raft import RaftReplica
from aether_kv._raft_port import PROBE_DEADLINE, PROBE_HOLD, _Probe
from aether_kv._records import Put
from support import wait_until_sync

GONE = "is gone (its link closed and its Raft port refused a connection)"
ANSWERED = "its Raft port: answered"


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[RaftReplica]]:
    with running_group(tmp_path) as built:
        yield built


@pytest.fixture
def raft_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="aether_kv.raft")
    return caplog


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in list(caplog.records)]


def test_a_follower_whose_leader_closed_starts_an_election_without_waiting_for_its_timer(
    replicas: list[RaftReplica], raft_log: pytest.LogCaptureFixture
) -> None:
    """The closed leader's port refuses: a follower learns the leader is gone before any election, and
    the other follower grants its pre-vote (upstream and before item 10, both waited for an election
    timeout of silence: the first thing logged was the election)."""
    leader = leader_of(replicas)
    # A new cluster's replicas start "catching up" (item 16) until they hold the leader's first commit: a
    # leader gone before that is waited for, by rule (it alone is known to hold the log). Once every
    # replica holds it, the leader is gone after it (without this wait, it was gone first once in CI).
    wait_until_sync(
        lambda: not any(r._obj.catching_up for r in replicas),
        timeout=30,
        what="every replica to hold the leader's log",
    )
    survivors = [r for r in replicas if r is not leader]
    raft_log.clear()
    leader.close()  # its sockets close at once, its listening one too: as when its process dies
    replicas.remove(leader)
    new_leader = leader_of(survivors)
    messages = _messages(raft_log)
    gone = [i for i, m in enumerate(messages) if GONE in m and leader.config.raft_address in m]
    elections = [i for i, m in enumerate(messages) if "now a candidate" in m]
    assert gone, messages
    assert elections, messages
    assert gone[0] < elections[0], messages
    propose(new_leader, Put(key="after", value=b"x"))


def _reset_links(replica: RaftReplica) -> int:
    """Shut down every Raft connection of `replica` (both ends see it close); the process lives on."""
    count = 0
    for conn in list(replica._obj._SyncObj__transport._connections.values()):
        sock = conn._TcpConnection__socket
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
                count += 1
            except OSError:
                pass
    return count


@pytest.fixture
def relinking_replicas(tmp_path: Path) -> Iterator[list[RaftReplica]]:
    """Links dialled again at once and long election timeouts: an election here can only come from a
    follower that took its live leader for gone (upstream waits up to `connection_retry` before dialling
    a peer again, and a heartbeat missed meanwhile could run a short election timer out)."""
    with running_group(tmp_path, connection_retry=0.05, election_min=3.0, election_max=4.0) as built:
        yield built


def test_a_dropped_link_to_a_live_leader_starts_no_election(
    relinking_replicas: list[RaftReplica], raft_log: pytest.LogCaptureFixture
) -> None:
    """Every link of the leader drops (a reset, as the chaos suite's nemesis does) but its process lives:
    both followers' dials are answered, so neither says yes to a pre-vote sooner than before: the term
    stays."""
    replicas = relinking_replicas
    leader = leader_of(replicas)
    propose(leader, Put(key="before", value=b"x"))
    term = leader.status().term
    raft_log.clear()
    assert _reset_links(leader) == 2
    wait_until_sync(
        lambda: sum(ANSWERED in m for m in _messages(raft_log)) >= 2,
        timeout=30,
        what="both followers to dial the leader's port and be answered",
    )
    wait_until_sync(
        lambda: all(m.connected for m in leader.status().members),
        timeout=30,
        what="the leader's links to be back",
    )
    propose(leader, Put(key="after", value=b"x"))
    messages = _messages(raft_log)
    assert [r.status().term for r in replicas] == [term] * 3, messages
    assert not any(GONE in m for m in messages), messages
    assert leader.is_leader


def _dial(port: int) -> tuple[_Probe, Any, list[str]]:
    """A probe of 127.0.0.1:`port` on a poller of its own (driven by `_outcome_of`)."""
    poller = createPoller("auto")
    sock = socket.socket()
    sock.setblocking(False)
    sock.connect_ex(("127.0.0.1", port))
    outcomes: list[str] = []
    return _Probe(sock, poller, outcomes.append), poller, outcomes


def _outcome_of(probe: _Probe, poller: Any, outcomes: list[str], between: Any = None) -> str:
    def step() -> list[str]:
        poller.poll(0.02)
        if between is not None and probe.accepted:
            between()
        probe.expire(monotonic())
        return outcomes

    return wait_until_sync(step, timeout=10, interval=0, what="the probe's outcome")[0]


def test_a_probe_tells_a_closed_port_from_a_listening_one() -> None:
    closed = free_port()
    assert _outcome_of(*_dial(closed)) == "refused"
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert _outcome_of(*_dial(listener.getsockname()[1])) == "answered"


def test_a_probe_accepted_by_a_listener_that_then_closes_counts_as_refused() -> None:
    """A SIGKILLed replica's links can close before its listening socket: a dial in between is accepted
    (into the backlog), then reset when the listener closes. Counted as answered, the follower the dead
    leader had dialled waited for its election timeout."""
    listener = socket.create_server(("127.0.0.1", 0))
    probe, poller, outcomes = _dial(listener.getsockname()[1])
    assert _outcome_of(probe, poller, outcomes, between=listener.close) == "refused"


def test_a_probe_past_its_deadline_reads_what_already_came_back() -> None:
    """A tick that runs late expires the probe before its poll reports what is waiting on the socket: a
    reset waiting after an accept, or a refusal, is still the verdict (counted as answered or unanswered,
    the follower whose tick was late waited for its election timeout)."""
    listener = socket.create_server(("127.0.0.1", 0))
    probe, poller, outcomes = _dial(listener.getsockname()[1])
    wait_until_sync(lambda: poller.poll(0.02) or probe.accepted, timeout=10, what="the accept")
    listener.close()
    wait_until_sync(
        lambda: select.select([probe.sock], [], [], 0.02)[0], timeout=10, what="the reset to arrive"
    )
    probe.expire(monotonic() + PROBE_HOLD + 1)
    assert outcomes == ["refused"]

    probe, poller, outcomes = _dial(free_port())
    wait_until_sync(
        lambda: select.select([], [probe.sock], [], 0.02)[1], timeout=10, what="the refusal to arrive"
    )
    probe.expire(monotonic() + PROBE_DEADLINE + 1)
    assert outcomes == ["refused"]
