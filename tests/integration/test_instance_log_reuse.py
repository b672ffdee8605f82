"""A new instance whose log file on its node already holds an earlier instance's lines (same number):
`slice logs` showed them as its own (found by an adversarial operator, when the leader still gave a
removed instance's number again). The leader no longer does (`cluster/instance-numbers/`), but a log file
may be older than the store's records (a cluster started afresh or restored on the node's data
directory), so the node marks in the log where a new instance starts; a restart of the same instance
(its process again) is no new instance and is not marked. A real node, a client of a KV replica run
beside it; the test writes the command states, a number used again included, as a leader would."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_support import (
    FAULTY,
    NodeProcess,
    activate,
    client_node,
    collect_events,
    host_of,
    invoke,
    slice_key,
    wait_for_deleted,
    write_command,
)

from aether_kv import Event, KVClient
from aether_node import SliceState
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MARK = f"[aether: a new instance {FAULTY}#0 starts here, "


@pytest.fixture
def node(sample_index: Path, tmp_path: Path) -> Iterator[NodeProcess]:
    with client_node(tmp_path, sample_index) as started:
        yield started


async def _worked(node: NodeProcess, tag: str) -> None:
    answer = await invoke(node.ingress, "org.aether:faulty", "work", tag)
    assert answer.status_code == 200, answer.text
    await wait_until(
        lambda: f'faulty: work "{tag}"' in node.slice_log(FAULTY, 0), timeout=10, what=f"{tag} in the log"
    )


async def test_a_new_instance_of_a_number_used_before_is_marked_in_its_log(
    node: NodeProcess, kv: KVClient
) -> None:
    key = slice_key(node.node_id, FAULTY, 0)
    await activate(kv, node, FAULTY, 0)
    await _worked(node, "first")
    assert MARK not in node.slice_log(FAULTY, 0)  # a first instance's log starts with its own lines

    await write_command(kv, key, SliceState.UNLOAD)
    await wait_for_deleted(kv, key, timeout=30)
    await activate(kv, node, FAULTY, 0)  # the same number again: another instance
    await _worked(node, "second")
    log = node.slice_log(FAULTY, 0)
    assert log.count(MARK) == 1, log
    before, _, after = log.partition(MARK)
    assert 'faulty: work "first"' in before and 'faulty: work "second"' in after, log
    assert "the lines above are an earlier one's]" in after.splitlines()[0], log

    # its process killed: the node restarts the same instance, which is not marked again
    first = host_of(node.data_dir, FAULTY, 0)
    assert first is not None
    before = (await kv.get_with_revision(key)).revision
    os.kill(first.pid, signal.SIGKILL)

    def active_again(events: list[Event]) -> bool:
        return any(b'"state":"ACTIVE"' in e.kv.value for e in events)

    await collect_events(kv, key, before + 1, until=active_again, timeout=30)
    await _worked(node, "third")
    assert node.slice_log(FAULTY, 0).count(MARK) == 1, node.slice_log(FAULTY, 0)
