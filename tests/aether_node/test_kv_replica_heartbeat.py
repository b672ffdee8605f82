"""The node's heartbeat to its KV replica (`runtime/_kv_replica.py`): the replica is told how long a
silence it allows (two leases, at least `MIN_SILENCE`), and the node writes to its stdin every
`BEAT_PERIOD` until the replica's end closes. What the replica does with it: tests/aether_kv/
test_raft_stand_aside.py; a node stopped while its replica leads: tests/integration/
test_cluster_leader_paused.py."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from aether_node import KVSettings, NodeConfig
from aether_node.runtime._kv_replica import MIN_SILENCE, _beat, parent_silence, replica_command


def _config(tmp_path: Path, ttl: float = 1.5) -> NodeConfig:
    return NodeConfig(
        node_id="node-a",
        data_dir=tmp_path,
        index=str(tmp_path),
        ingress="127.0.0.1:1",
        peer="127.0.0.1:1",
        kv=KVSettings(raft="127.0.0.1:2", client="127.0.0.1:3", endpoints=("127.0.0.1:3",)),
        lease_ttl=ttl,
    )


def test_the_replica_allows_two_leases_of_silence_and_never_less_than_the_minimum(tmp_path: Path) -> None:
    assert parent_silence(_config(tmp_path)) == 3.0
    assert parent_silence(_config(tmp_path, ttl=30.0)) == 60.0
    assert parent_silence(_config(tmp_path, ttl=0.2)) == MIN_SILENCE
    command = replica_command(_config(tmp_path))
    assert command[command.index("--parent-silence") + 1] == "3"
    assert "--exit-with-parent" in command


async def test_the_node_beats_until_the_replica_s_end_closes() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    async with trio.open_nursery() as nursery:
        done = trio.Event()

        async def beat() -> None:
            await _beat(trio.lowlevel.FdStream(write_end))
            done.set()

        nursery.start_soon(beat)
        beats = b""
        with trio.fail_after(10):
            while len(beats) < 3:  # the first at once, then one per BEAT_PERIOD
                await trio.lowlevel.wait_readable(read_end)
                beats += os.read(read_end, 100)
        assert set(beats) == {ord(".")}
        os.close(read_end)  # the replica exited
        with trio.fail_after(10):
            await done.wait()
