"""`aether slice invoke` and the API client on a real cluster, when a call is slow: the node's own timeout
answer (504) reaches the user, and a call that may have run is never run twice (the faulty slice's
non-idempotent `record` entry counts its executions in a file)."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
from pathlib import Path

import pytest
from cli_support import cli_cluster, expect, wait_until

from aether_node.client import ApiClient, NoAnswerError

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.long]


BLUEPRINT = """name = "slow"

[[slices]]
artifact = "org.aether:faulty:1.0.0"
instances = 3
config = {{ mode = "slow_work", work_delay = 6, executions_file = "{path}" }}
"""


def executions(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_slow_call_runs_once_and_the_user_reads_what_happened(tmp_path: Path, sample_index: Path) -> None:
    ran = tmp_path / "executions.txt"
    with cli_cluster(tmp_path, sample_index, nodes=3) as cluster:
        (cluster.cwd / "slow.toml").write_text(BLUEPRINT.format(path=ran))
        expect(cluster.aether("blueprint", "apply", "slow.toml", "--wait", "--timeout", "120"))

        # 1. the call outlives the timeout the node was given: the node's 504 reaches the user, once
        run = expect(cluster.aether("slice", "invoke", "org.aether:faulty", "record", "--timeout", "1"), 1)
        # (the slice host says how long the call had left when it reached the instance: about 1 s)
        assert re.search(r"faulty:1\.0\.0#\d: record did not answer within [\d.]+ s", run.stderr), str(run)
        assert "cannot reach the cluster" not in run.stderr, str(run)
        assert len(executions(ran)) == 1, executions(ran)

        # 2. the node that took the call stops answering while the call runs: not resent, and the
        # error says so (the client waits the call's timeout and a margin: 8 + 5 s)
        first = cluster.local.nodes[0]
        urls = [f"http://{n.management}" for n in cluster.local.nodes]
        client = ApiClient(urls)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            call = pool.submit(client.invoke, "org.aether:faulty", "record", {"n": 2}, timeout=8)
            wait_until(lambda: len(executions(ran)) == 2, timeout=30, what="the second call to run")
            pid = cluster.local.processes[first.node_id].pid
            os.kill(pid, signal.SIGSTOP)
            try:
                with pytest.raises(NoAnswerError) as caught:
                    call.result(timeout=120)
            finally:
                os.kill(pid, signal.SIGCONT)
        message = str(caught.value)
        assert message.startswith(f"http://{first.management} did not answer within 13 s;"), message
        assert "the call of org.aether:faulty/record may have run there" in message, message
        assert message.endswith("not resent because org.aether:faulty/record is not idempotent"), message
        assert len(executions(ran)) == 2, executions(ran)
