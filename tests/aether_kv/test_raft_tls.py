"""Mutual TLS on the Raft port (`aether_kv/_raft_port.py`): three real replicas in this process, each with
a certificate of the cluster CA, elect a leader and replicate over TLS (a value larger than a TLS write
chunk too); a client on the Raft port is answered only with a valid certificate of the CA, and nothing a
stranger sends is unpickled."""

from __future__ import annotations

import datetime
import os
import pickle
import ssl
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from raft_probe import raft_answer, raft_frame
from raft_support import leader_of, propose, running_group

from aether_kv import cluster_ca, issue, write_identity
from aether_kv._raft import RaftReplica
from aether_kv._raft_port import TLS_WRITE_CHUNK
from aether_kv._records import Put
from support import wait_until_sync

SECRET = "the raft tls test secret, 32 chars"
FOREIGN = "another cluster's secret, 32 chars"
A_DAY = datetime.timedelta(days=1)


def _identity(directory: Path, secret: str, *, hosts: tuple[str, ...], expired: bool = False) -> Path:
    ca = cluster_ca(secret)
    now = datetime.datetime.now(datetime.UTC) - (2 * A_DAY if expired else datetime.timedelta())
    write_identity(directory, ca, issue(ca, name=directory.name, hosts=hosts, now=now, lifetime=A_DAY))
    return directory


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[RaftReplica]]:
    tls = lambda i: _identity(tmp_path / f"tls-{i}", SECRET, hosts=("127.0.0.1",))  # noqa: E731
    with running_group(tmp_path, tls_dir=tls) as built:
        yield built


def test_replicas_elect_and_replicate_over_mutual_tls(replicas: list[RaftReplica]) -> None:
    leader = leader_of(replicas)
    big = os.urandom(3 * TLS_WRITE_CHUNK)  # several TLS writes, some of which would block
    propose(leader, Put(key="small", value=b"over tls"))
    propose(leader, Put(key="big", value=big))
    for replica in replicas:

        def applied(replica: RaftReplica = replica) -> bool:
            kv = replica.read(lambda state: state.get("big").kv)
            return kv is not None and kv.value == big

        wait_until_sync(applied, timeout=30, what=f"{replica.config.raft_address} to apply the big value")
        small = replica.read(lambda state: state.get("small").kv)
        assert small is not None and small.value == b"over tls"


# ---------------------------------------------------------------- clients on the Raft port


def _client(ca: Path, identity: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca / "ca.pem"))
    if identity is not None:
        context.load_cert_chain(str(identity / "cert.pem"))
    return context


class _Exploit:
    """If the Raft port ever unpickled this, it would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_the_raft_port_answers_only_a_client_with_a_certificate_of_the_cluster_ca(
    replicas: list[RaftReplica], tmp_path: Path
) -> None:
    leader_of(replicas)
    address = replicas[0].config.raft_address
    ca = replicas[0].config.tls_dir
    assert ca is not None
    identities = {
        "good": _identity(tmp_path / "good", SECRET, hosts=()),
        "other": _identity(tmp_path / "other", FOREIGN, hosts=()),
        "expired": _identity(tmp_path / "expired", SECRET, hosts=(), expired=True),
        "none": None,
    }
    status = raft_frame(["status"])
    answers = {name: raft_answer(address, _client(ca, i), status) for name, i in identities.items()}
    answers["plain"] = raft_answer(address, None, status)
    assert isinstance(answers.pop("good"), dict), answers  # the replica's status
    assert all(isinstance(answer, str) for answer in answers.values()), answers

    marker = tmp_path / "pwned"
    exploit = zlib.compress(pickle.dumps(_Exploit(marker)), 3)
    for frame in (struct.pack("i", len(exploit)) + exploit, exploit):
        assert isinstance(raft_answer(address, None, frame), str)
        assert isinstance(raft_answer(address, _client(ca, identities["other"]), frame), str)
    propose(leader_of(replicas), Put(key="still", value=b"serving"))  # the group is unharmed
    assert not marker.exists(), "the Raft port unpickled data from a stranger"


def test_a_replica_whose_peer_has_another_cas_certificate_does_not_link_to_it(tmp_path: Path) -> None:
    """Two replicas of a 3-replica group hold the cluster CA's certificates, the third another CA's: the
    two elect and commit; the third never learns a leader (no handshake of it completes)."""
    secrets = (SECRET, SECRET, FOREIGN)
    tls = lambda i: _identity(tmp_path / f"tls-{i}", secrets[i], hosts=("127.0.0.1",))  # noqa: E731
    with running_group(tmp_path, tls_dir=tls) as built:
        leader = leader_of(built[:2])
        propose(leader, Put(key="k", value=b"v"))
        assert built[2].status().leader is None
        assert built[2].read(lambda state: state.get("k").kv) is None


def test_a_restarted_replica_links_again_over_tls_and_catches_up(
    replicas: list[RaftReplica], tmp_path: Path
) -> None:
    """Both ends dial again after a replica goes away (the higher address dials): the restarted replica
    shakes hands anew with each peer and applies what was written while it was down."""
    leader = leader_of(replicas)
    follower = next(r for r in replicas if r is not leader)
    config = follower.config
    follower.close()
    propose(leader, Put(key="while-down", value=b"written"))
    restarted = RaftReplica(config)
    replicas[replicas.index(follower)] = restarted  # the fixture closes it

    def caught_up() -> bool:
        kv = restarted.read(lambda state: state.get("while-down").kv)
        return kv is not None and kv.value == b"written"

    wait_until_sync(caught_up, timeout=30, what="the restarted replica to apply the write made meanwhile")
    assert restarted.status().leader is not None
