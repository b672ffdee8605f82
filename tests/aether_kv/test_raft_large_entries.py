"""An entry larger than a batch goes to followers in chunks (`_pysyncobj_patches`, item 9): one whose
pickled form needs one chunk more than its command (upstream's leader then marks two chunks "finish")
commits, and so does every write after it. Real replicas with real sockets, in this process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
    probe = 1000  # long enough that the value's length is pickled as in the big one below
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
