"""Links between replicas come back soon: pysyncobj lets only the replica with the greater address dial,
and retries an unreachable peer only after `connectionRetryTime` (5 s upstream). A replica started before
its peer listened, or whose peer came back from a restart or a partition, stayed unlinked that long:
`aether cluster status` said "not connected" right after `dev up`, and an election in that window
lacked the link. `RaftConfig.connection_retry` sets it, 1 s by default."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import attrs
from pysyncobj.tcp_connection import CONNECTION_STATE
from raft_support import leader_of, running_group

from aether_kv import RaftConfig
from aether_kv._keepalive import UNACKNOWLEDGED
from aether_kv._ports import free_port
from aether_kv._raft import RaftReplica
from support import wait_until_sync


def test_a_peer_is_dialled_again_before_an_election_could_need_it() -> None:
    defaults = {field.name: field.default for field in attrs.fields(RaftConfig)}
    # within the longest election timeout of the peer coming back (5 s upstream: three timeouts and more)
    assert defaults["connection_retry"] <= defaults["election_max"], defaults


def test_the_replica_runs_with_the_configured_retry(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = RaftConfig(
        raft_address=address,
        peers=(address,),
        data_dir=tmp_path,
        secret="a-test-secret-of-16+",
        connection_retry=0.25,
    )
    replica = RaftReplica(config)
    try:
        assert replica._obj._SyncObj__conf.connectionRetryTime == 0.25  # type: ignore[attr-defined]
    finally:
        replica.close()


def _dials_waiting(port: int) -> set[int]:
    """The local ports of this machine's TCP connections to `port` still waiting for an answer to their
    SYN (SYN_SENT, from /proc/net/tcp)."""
    waiting = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if state == "02" and int(remote.split(":")[1], 16) == port:
            waiting.add(int(local.split(":")[1], 16))
    return waiting


def test_a_dial_left_unanswered_is_made_again_after_its_deadline(tmp_path: Path) -> None:
    """A peer whose host does not answer (a partition; here a listener whose accept queue is full, so its
    kernel drops the SYNs): the dial is dropped after `CONNECT_DEADLINE` and made again, so the link comes
    back within seconds of the network. Before, the one dial waited on the kernel's SYN backoff for two
    minutes, its retries up to a minute apart."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        peer_port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]  # (the accept queue full: later SYNs are dropped)
        for filler in fillers:
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", peer_port))
        own = f"127.0.0.2:{free_port('127.0.0.2')}"  # the greater address: this replica dials
        config = RaftConfig(
            raft_address=own,
            peers=(own, f"127.0.0.1:{peer_port}"),
            data_dir=tmp_path,
            secret="a-test-secret-of-16+",
        )
        replica = RaftReplica(config)
        seen: set[int] = set()
        at_once: list[int] = []
        try:

            def dialled_twice() -> bool:
                waiting = _dials_waiting(peer_port) - {f.getsockname()[1] for f in fillers}
                at_once.append(len(waiting))
                seen.update(waiting)
                return len(seen) >= 2

            wait_until_sync(dialled_twice, timeout=20, interval=0.1, what="a second dial of the silent peer")
            assert max(at_once) == 1, at_once  # the first dial was dropped, not left beside the next
        finally:
            replica.close()
            for filler in fillers:
                filler.close()


def test_a_link_s_unacknowledged_data_is_bounded_on_both_ends(tmp_path: Path) -> None:
    """Every Raft link, dialled or accepted, has the kernel drop it once its data has gone unacknowledged
    for `UNACKNOWLEDGED` (TCP_USER_TIMEOUT); it is then dialled again. Without it, a link cut by a
    partition resumed at TCP's next retransmission, up to two minutes after the last."""
    with running_group(tmp_path, size=2) as replicas:
        leader_of(replicas)

        def link_sockets() -> list[socket.socket]:
            found = []
            for replica in replicas:
                transport = replica._obj._SyncObj__transport  # type: ignore[attr-defined]
                for conn in [*transport._connections.values(), *transport._unknownConnections]:
                    sock = conn._TcpConnection__socket
                    if sock is not None and conn.state == CONNECTION_STATE.CONNECTED:
                        found.append(sock)
            return found

        sockets = wait_until_sync(
            link_sockets, until=lambda found: len(found) == 2, timeout=10, what="the link, on both ends"
        )
        limits = {s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) for s in sockets}
        assert limits == {UNACKNOWLEDGED * 1000}, limits
