"""`aether dev`: a local cluster of real nodes on this machine (127.0.0.1), in the background.

`up` builds the sample-slice index, starts the nodes detached (they outlive this command), waits until
they are ready, and records their pids and addresses in the directory; `down` stops them with SIGTERM
(graceful: endpoints withdrawn, instances stopped) and makes sure nothing is left; `status` reports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ._common import EXIT_FAILED, Common, fail

STATE_FILE = "cluster.json"


def _progress(message: str) -> None:
    print(f"  {message}", flush=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def dev_up(*, nodes: int, directory: Path, source: Path, apply_file: Path | None, common: Common) -> None:
    import trio

    from aether_node._local_cluster import plan_cluster, wait_until_ready
    from aether_node._sample_index import build_sample_index

    if nodes < 1:
        fail(2, f"--nodes must be at least 1, got {nodes}")
    state = directory / STATE_FILE
    if state.exists() and any(_alive(pid) for pid in json.loads(state.read_text())["pids"].values()):
        fail(EXIT_FAILED, f"a dev cluster already runs from {directory}/ (stop it with `aether dev down`)")
    if not source.is_dir():
        fail(2, f"--source {source} is not a directory of slice projects (run from the repository root?)")
    started = time.monotonic()
    print(f"building the slice index from {source}/ ...", flush=True)
    index = directory / "index"
    try:
        build_sample_index(source, index, progress=_progress)
    except RuntimeError as error:
        fail(EXIT_FAILED, str(error))
    cluster = plan_cluster(directory, nodes, str(index.resolve()))
    print(f"starting {nodes} nodes ...", flush=True)
    pids = {}
    for node in cluster.nodes:
        Path(node.data_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(node.data_dir) / "node.log", "ab") as log:
            process = subprocess.Popen(
                cluster.command(node),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        cluster.processes[node.node_id] = process
        pids[node.node_id] = process.pid
    management = [f"http://{n.management}" for n in cluster.nodes]
    state.write_text(
        json.dumps(
            {
                "pids": pids,
                "management": management,
                "ingress": [f"http://{n.ingress}" for n in cluster.nodes],
                "kv_endpoints": cluster.kv_endpoints,
            },
            indent=2,
        )
        + "\n"
    )
    try:
        trio.run(lambda: wait_until_ready(cluster, timeout=90))
    except (RuntimeError, trio.TooSlowError) as error:
        dev_down(directory, quiet=True)
        fail(EXIT_FAILED, f"the cluster did not become ready: {error}")
    elapsed = time.monotonic() - started
    print(f"\nAether dev cluster ready in {elapsed:.1f} s: {nodes} nodes, data in {directory}/")
    for node in cluster.nodes:
        voter = " (Raft voter)" if node.raft else ""
        print(f"  {node.node_id}: ingress http://{node.ingress}  management http://{node.management}{voter}")
    print(f"\nDashboard: http://{cluster.nodes[0].management}/dashboard  (on every node: /dashboard)")
    if apply_file is not None:
        from ._app import apply

        apply(
            apply_file,
            wait=True,
            common=Common(cluster=",".join(management), api_key=common.api_key, json=False),
        )
    ingress = cluster.nodes[0].ingress
    print("\nNext:")
    if apply_file is None:
        print("  aether blueprint apply examples/blueprint.toml --wait")
    print("  aether cluster status")
    print(f'  curl -s -X POST http://{ingress}/invoke/org.aether:echo/echo -d \'{{"hello": "aether"}}\'')
    print("  aether cluster events --follow")
    print("  aether dev down")


def dev_down(directory: Path, *, quiet: bool = False) -> None:
    state = directory / STATE_FILE
    if not state.exists():
        if not quiet:
            print(f"no dev cluster recorded in {directory}/")
        return
    pids = json.loads(state.read_text())["pids"]
    running = {node: pid for node, pid in pids.items() if _alive(pid)}
    for pid in running.values():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 40
    while any(_alive(pid) for pid in running.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for node, pid in running.items():
        if _alive(pid):
            print(f"  {node} did not stop in time; killing it", file=sys.stderr)
            os.killpg(pid, signal.SIGKILL)
    state.unlink()
    if not quiet:
        print(f"stopped {len(running)} node(s); data kept in {directory}/")


def dev_status(directory: Path, common: Common) -> None:
    state = directory / STATE_FILE
    if not state.exists():
        fail(EXIT_FAILED, f"no dev cluster recorded in {directory}/ (start one with `aether dev up`)")
    info = json.loads(state.read_text())
    for node, pid in info["pids"].items():  # to stderr with --json: stdout stays one JSON document
        print(
            f"  {node}: pid {pid} {'running' if _alive(pid) else 'NOT RUNNING'}",
            file=sys.stderr if common.json else sys.stdout,
        )
    from ._app import cluster_status

    cluster_status(
        common=Common(cluster=",".join(info["management"]), api_key=common.api_key, json=common.json)
    )
