"""An entry larger than a batch goes to followers in chunks (`_pysyncobj_patches`, item 9): one whose
pickled form needs one chunk more than its command (upstream's leader then marks two chunks "finish")
commits, and so does every write after it. Real replicas with real sockets, in this process."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import pysyncobj.pickle
import pytest
from raft_support import leader_of, propose, running_group

from aether_kv._raft import RaftReplica
from aether_kv._records import Put
from support import wait_until_sync

BATCH = 2**16  # pysyncobj's appendEntriesBatchSizeBytes (its default, which the replica keeps)


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[RaftReplica]]:
    with running_group(tmp_path) as built:
        yield built


def _last_command_size(replica: RaftReplica) -> int:
    return len(replica._obj._SyncObj__raftLog[-1][0])


def test_an_entry_one_chunk_longer_than_its_command_commits(replicas: list[RaftReplica]) -> None:
    leader = leader_of(replicas)
    probe = 3 * BATCH - 200  # pickled as the big one below is (the same opcodes and frames)
    propose(leader, Put(key="big", value=b"p" * probe))
    overhead = _last_command_size(leader) - probe
    size = 3 * BATCH - overhead  # the command is exactly 3 chunks; its pickled entry a few bytes more
    propose(leader, Put(key="big", value=b"b" * size))
    assert _last_command_size(leader) == 3 * BATCH
    propose(leader, Put(key="after", value=b"a"))
    for replica in replicas:

        def applied(replica: RaftReplica = replica) -> bool:
            kv = replica.read(lambda state: state.get("after").kv)
            return kv is not None

        wait_until_sync(applied, timeout=30, what=f"{replica.config.raft_address} to apply the writes")
        big = replica.read(lambda state: state.get("big").kv)
        assert big is not None and big.value == b"b" * size


def test_a_binary_value_is_pickled_as_bytes_and_an_old_replicas_pickles_still_load(
    replicas: list[RaftReplica],
) -> None:
    """Item 11: an entry of a 1 MiB random value is pickled in about its own size (protocol 2, upstream's,
    wrote it as latin-1 text, ~1.5x, and marked a third of its chunks "finish"); it commits and every
    replica holds it. What an old replica pickled with protocol 2 loads the same."""
    value = os.urandom(2**20)
    command = Put(key="random", value=value)
    assert len(pysyncobj.pickle.dumps(command)) < len(value) + 1024
    assert pysyncobj.pickle.loads(pickle.dumps(command, protocol=2)) == command
    leader = leader_of(replicas)
    propose(leader, command)
    propose(leader, Put(key="after", value=b"a"))
    for replica in replicas:

        def applied(replica: RaftReplica = replica) -> bool:
            return replica.read(lambda state: state.get("after").kv) is not None

        wait_until_sync(applied, timeout=30, what=f"{replica.config.raft_address} to apply the writes")
        held = replica.read(lambda state: state.get("random").kv)
        assert held is not None and held.value == value
