"""Links between replicas come back soon: pysyncobj lets only the replica with the greater address dial,
and retries an unreachable peer only after `connectionRetryTime` (5 s upstream). A replica started before
its peer listened, or whose peer came back from a restart or a partition, stayed unlinked that long:
`aether cluster status` said "not connected" right after `dev up`, and an election in that window
lacked the link. `RaftConfig.connection_retry` sets it, 1 s by default."""

from __future__ import annotations

from pathlib import Path

import attrs

from aether_kv import RaftConfig
from aether_kv._ports import free_port
from aether_kv._raft import RaftReplica


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
