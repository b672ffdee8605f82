"""A node's open files, with a real node started under limits as a login shell or a unit sets them. It
raises its soft limit to the hard one at start: at the usual soft limit of 1,024 a node ran out at ~500
instances, each load after that FAILED with a bare "[Errno 24] Too many open files". Past its hard
limit a load fails with a reason that names the limit and what to raise, and the node goes on serving
the instances it has. A flood of connections on its ingress takes no more than the ingress's share of
the limit: the management API still answers and an instance that dies is started again (before, the
flood held every descriptor: neither could accept or fork anything until it ended)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path

import httpx
import pytest
from node_support import ECHO, activate, client_node, host_of, invoke, kv_client, slice_key, write_command

from aether_kv import KVClient
from aether_node import SliceRecord, SliceState, decode_record
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOFT, HARD = 48, 160
INSTANCES = 80  # about two files each: more than the hard limit leaves beside the node's own


def open_files_limits(pid: int) -> tuple[int, int]:
    """(soft, hard) limits on open files of process `pid`, from /proc."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open-files limit in /proc/{pid}/limits")


async def echo_records(kv: KVClient, node_id: str) -> list[SliceRecord]:
    found = await kv.range(f"slices/{node_id}/{ECHO}/")
    return [decode_record(kv_.key, kv_.value, SliceRecord) for kv_ in found.kvs]


async def test_a_node_raises_its_soft_limit_and_names_the_hard_one_when_it_runs_out(
    sample_index: Path, tmp_path: Path
) -> None:
    with client_node(tmp_path, sample_index, open_files=(SOFT, HARD)) as node:
        assert open_files_limits(node.pid) == (HARD, HARD)
        async with kv_client(node) as kv:
            await activate(kv, node, ECHO, 0)
            for instance in range(1, INSTANCES):
                await write_command(kv, slice_key(node.node_id, ECHO, instance), SliceState.ACTIVATE, {})
            settled = (SliceState.ACTIVE, SliceState.FAILED)
            records = await wait_until(
                lambda: echo_records(kv, node.node_id),
                until=lambda rs: len(rs) == INSTANCES and all(r.state in settled for r in rs),
                timeout=120,
                what=f"{INSTANCES} echo instances ACTIVE or FAILED",
                describe=lambda rs: f"{sorted({r.state for r in rs})}\n{node.log_tail()}",
            )
            failed = [r for r in records if r.state == SliceState.FAILED]
            assert failed, "every load succeeded: the limit was not reached"
            limit = f"as many files open as its limit allows ({HARD}): raise its hard limit (LimitNOFILE="
            assert all(limit in r.reason for r in failed), [r.reason for r in failed]
            assert node.process is not None and node.process.poll() is None  # never ended
            answer = await invoke(node.ingress, "org.aether:echo", "echo", {"still": "here"})
            assert answer.status_code == 200, answer.text


def open_connections(port: int, most: int) -> list[socket.socket]:
    """Up to `most` idle connections to 127.0.0.1:`port`, until one is not taken within 2 s (the
    listener's backlog is full)."""
    opened: list[socket.socket] = []
    for _ in range(most):
        try:
            opened.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            break
    return opened


async def test_a_flood_of_connections_on_the_ingress_leaves_the_node_the_files_it_needs(
    sample_index: Path, tmp_path: Path
) -> None:
    limit = 256  # the ingress takes half (128), the management API 16, the peer port 32
    with client_node(
        tmp_path, sample_index, open_files=(limit, limit), with_management=True, extra_args=("--dev-mode",)
    ) as node:
        async with kv_client(node) as kv:
            await activate(kv, node, ECHO, 0)
            flood = open_connections(node.ingress_port, 2 * limit)
            try:
                assert len(flood) > limit // 2, len(flood)
                await wait_until(
                    lambda: "connections at once" in node.log(),
                    timeout=30,
                    what="the ingress full",
                    describe=lambda _: node.log_tail(),
                )
                async with httpx.AsyncClient(timeout=10) as http:
                    answer = await http.get(f"http://{node.management}/healthz")
                    assert answer.status_code == 200, answer.text
                before = host_of(node.data_dir, ECHO, 0)
                assert before is not None
                os.kill(before.pid, signal.SIGKILL)
                await wait_until(
                    lambda: host_of(node.data_dir, ECHO, 0),
                    until=lambda found: found is not None and found.pid != before.pid,
                    timeout=30,
                    what="the killed instance started again during the flood",
                    describe=lambda _: node.log_tail(),
                )
            finally:
                for connection in flood:
                    with contextlib.suppress(OSError):
                        connection.close()
            # (the new process is seen before its instance is routable again: until then a call is refused)
            answer = await wait_until(
                lambda: invoke(node.ingress, "org.aether:echo", "echo", {"after": "the flood"}),
                until=lambda answer: answer.status_code == 200,
                timeout=30,
                what="an echo call answered after the flood",
                describe=lambda answer: f"{answer.text}\n{node.log_tail()}",
            )
            assert answer.json() == {"after": "the flood"}, answer.text
        assert "Too many open files" not in node.log(), node.log_tail()
