"""The supervisor of a dev cluster: runs its nodes as children and restarts one that dies unasked.

`aether dev up` starts it detached (`python -m aether_cli._supervisor DIRECTORY --nodes N --index DIR`);
it starts every node of the cluster planned in DIRECTORY, records the pids in `cluster.json` and watches
them. A node that dies unasked (a crash, an OOM kill, a SIGKILL: any exit but a clean one, as systemd's
Restart=on-failure) is started again after a backoff (0.5 s, doubling to 30 s while it keeps dying; back
to 0.5 s once it has run for a minute), and `supervisor.log` in DIRECTORY says so — `aether dev status`
shows those lines. A node that stopped cleanly (`aether node stop`) stays stopped until SIGUSR1 (what
`aether dev up` sends to a running cluster with stopped nodes) starts it again. SIGTERM (what `aether
dev down` sends) stops the nodes gracefully (SIGTERM, then SIGKILL after 40 s) and ends the supervisor.

What systemd's `Restart=on-failure` does for a node in production (docs/DEPLOY.md, examples/systemd/); plain
standard library, no trio: it only waits on processes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aether_cli._common import plural
from aether_node.dev import LocalNodeCluster, plan_cluster

STATE_FILE = "cluster.json"
LOG_FILE = "supervisor.log"
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
STEADY = 60.0  # a node that ran this long before dying starts again with the first backoff
STOP_GRACE = 40.0


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def next_backoff(previous: float | None, ran_for: float) -> float:
    """Seconds to wait before restarting a node that died after running `ran_for` seconds. Pure."""
    if previous is None or ran_for >= STEADY:
        return FIRST_BACKOFF
    return min(previous * 2, MAX_BACKOFF)


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


class Supervisor:
    def __init__(self, cluster: LocalNodeCluster, directory: Path) -> None:
        self.cluster = cluster
        self.directory = directory
        self.started_at: dict[str, float] = {}
        self.backoff: dict[str, float | None] = {n.node_id: None for n in cluster.nodes}
        self.restart_at: dict[str, float] = {}
        self.restarts: dict[str, int] = {n.node_id: 0 for n in cluster.nodes}
        self.stopping = False
        self.ended: set[str] = set()  # stopped cleanly by someone else: not restarted
        self.start_ended = False  # asked (SIGUSR1) to start the nodes that stopped cleanly again

    def start(self, node_id: str) -> None:
        node = self.cluster.plan(node_id)
        Path(node.data_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(node.data_dir) / "node.log", "ab") as node_log:
            self.cluster.processes[node_id] = subprocess.Popen(
                self.cluster.command(node),
                stdout=node_log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.started_at[node_id] = time.monotonic()
        self.save()

    def save(self) -> None:
        """The current pids into cluster.json (written whole, then renamed: readers never see half)."""
        state_file = self.directory / STATE_FILE
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            return  # `dev down` removed it: nothing to record any more
        state["supervisor"] = os.getpid()
        state["pids"] = {node_id: p.pid for node_id, p in self.cluster.processes.items()}
        temporary = state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2) + "\n")
        temporary.replace(state_file)

    def run(self) -> None:
        for node in self.cluster.nodes:
            self.start(node.node_id)
        log(f"started {plural(len(self.cluster.nodes), 'node')}")
        while not self.stopping:
            now = time.monotonic()
            for node_id, process in list(self.cluster.processes.items()):
                code = process.poll()
                if code is None or node_id in self.restart_at or node_id in self.ended:
                    continue
                ran_for = now - self.started_at[node_id]
                if code == 0:  # it was stopped on purpose (SIGTERM): like Restart=on-failure, leave it
                    self.ended.add(node_id)
                    log(f"{node_id} stopped cleanly (exit code 0) after {ran_for:.1f} s; not restarting it")
                    continue
                backoff = next_backoff(self.backoff[node_id], ran_for)
                self.backoff[node_id] = backoff
                self.restart_at[node_id] = now + backoff
                log(
                    f"{node_id} died unasked ({describe_exit(code)}) after {ran_for:.1f} s;"
                    f" restarting it in {backoff:g} s"
                )
            if self.start_ended:
                self.start_ended = False
                for node_id in sorted(self.ended):
                    self.ended.discard(node_id)
                    self.backoff[node_id] = None
                    self.start(node_id)
                    log(f"{node_id} started again, as asked (pid {self.cluster.processes[node_id].pid})")
            for node_id, when in list(self.restart_at.items()):
                if when <= now:
                    del self.restart_at[node_id]
                    self.restarts[node_id] += 1
                    self.start(node_id)
                    log(
                        f"{node_id} restarted (pid {self.cluster.processes[node_id].pid},"
                        f" restart {self.restarts[node_id]})"
                    )
            time.sleep(0.1)
        self.stop()

    def stop(self) -> None:
        running = {n: p for n, p in self.cluster.processes.items() if p.poll() is None}
        log(f"stopping {plural(len(running), 'node')}")
        for process in running.values():
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for node_id, process in running.items():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{node_id} did not stop in time; killing it")
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
        log("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(prog="aether-dev-supervisor")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--index", required=True)
    args = parser.parse_args()
    cluster = plan_cluster(args.directory, args.nodes, args.index)
    supervisor = Supervisor(cluster, cluster.directory)

    def stop(signum: int, frame: object) -> None:
        supervisor.stopping = True

    def start_ended(signum: int, frame: object) -> None:
        supervisor.start_ended = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGUSR1, start_ended)
    try:
        supervisor.run()
    except BaseException as error:  # even then: no node outlives its supervisor
        log(f"supervisor failed: {error!r}; stopping the nodes")
        supervisor.stop()
        raise
    sys.exit(0)


if __name__ == "__main__":
    main()
