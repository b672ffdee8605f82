"""A node whose instance logs are on a full disk (`{data-dir}/logs` on a filled 1 MiB tmpfs), with a real
node and a slice that prints on every call: the node stays up (same process; before, the first line
raised ENOSPC out of the drain into the node's nursery and the node restarted over and over), the call
is answered, the cluster's status names the node's trouble ("node node-1: 1 instance's output cannot be
written under …"), and once there is room again and the slice prints, the trouble is gone and the log
says how much was lost."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
from cluster_support import SliceSpec, exactly_active, kv_of, put_blueprint, running_cluster, wait_for
from disk_support import fill, small_filesystem

from aether_node.client import ApiClient
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAULTY = "org.aether:faulty:1.0.0"  # its `work` entry point prints a line
SETTLE = 90.0  # first installs included, on a busy machine


async def test_a_full_log_disk_is_named_in_the_status_and_ends_nothing(
    sample_index: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "cluster"
    with small_filesystem(directory / "node-1" / "logs", mib=1) as logs:
        async with running_cluster(directory, sample_index, 1) as cluster, kv_of(cluster) as kv:
            node = cluster.plan("node-1")
            pid = cluster.processes["node-1"].pid
            await put_blueprint(kv, "f", SliceSpec(artifact=FAULTY, instances=1))
            await wait_for(kv, exactly_active(1, FAULTY), timeout=SETTLE, what="faulty ACTIVE")
            api = ApiClient([f"http://{node.management}"])
            filler = fill(logs)

            async with httpx.AsyncClient(timeout=30) as http:

                async def work(n: int) -> None:
                    answer = await http.post(
                        f"http://{node.ingress}/invoke/org.aether:faulty/work", json={"n": n}
                    )
                    assert answer.status_code == 200, answer.text

                await work(1)
                status = await wait_until(
                    lambda: trio.to_thread.run_sync(api.cluster_status),
                    until=lambda s: any(r.startswith("node node-1: ") for r in s.reasons),
                    timeout=30,
                    what="the node's trouble in the status",
                )
                (reason,) = [r for r in status.reasons if r.startswith("node node-1: ")]
                assert f"cannot be written under {logs}" in reason and "No space left" in reason, reason
                (info,) = [n for n in status.nodes if n.node_id == "node-1"]
                assert info.problems and cluster.processes["node-1"].pid == pid
                assert cluster.processes["node-1"].poll() is None  # (still running: never restarted)

                filler.unlink()  # room again
                await work(2)
                await wait_until(
                    lambda: trio.to_thread.run_sync(api.cluster_status),
                    until=lambda s: not any(r.startswith("node node-1: ") for r in s.reasons),
                    timeout=30,
                    what="the trouble over",
                )
            lines = "\n".join(path.read_text() for path in logs.glob("org-aether-faulty-*.log"))
            assert "bytes of output could not be written here]" in lines and 'faulty: work {"n": 2}' in lines
