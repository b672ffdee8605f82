"""`aether dev`: a local cluster of real nodes on this machine (127.0.0.1), in the background.

`up` (one at a time per directory: `starting.lock`) builds the slice index (or takes the `--index`
given; `_slice_source` says which), starts a
supervisor detached (it outlives this command; see `_supervisor`): it runs the nodes and restarts one
that dies unasked, with backoff, saying so in `supervisor.log`. `up` waits until the nodes are ready;
their pids and addresses are in `cluster.json`; `up` again while it runs with nodes stopped (`aether node
stop`) has the supervisor start those again. `down` stops the supervisor, which stops the nodes with
SIGTERM (graceful: endpoints withdrawn, instances stopped), and makes sure nothing is left; `status`
reports, with the supervisor's recent restarts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._common import EXIT_BAD_INPUT, EXIT_FAILED, Common, fail, plural
from ._slice_source import SliceSource, SliceSourceError, choose, example_blueprint

STATE_FILE = "cluster.json"
START_LOCK = "starting.lock"  # held by the `dev up` starting a cluster in the directory
SUPERVISOR_LOG = "supervisor.log"


class _Running:
    """A node started by the supervisor, as `wait_until_ready` looks at it (poll, returncode)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if _alive(self.pid):
            return None
        self.returncode = -1
        return self.returncode


def _wait_for_pids(
    state: Path, supervisor: subprocess.Popen[bytes] | None, nodes: int, *, alive: bool = False
) -> dict[str, int]:
    """The node pids the supervisor records once it has started them all (with `alive`, once each of
    them runs: a supervisor already running starts nodes again)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if supervisor is not None and supervisor.poll() is not None:
            raise RuntimeError(f"the supervisor exited with {supervisor.returncode} (see {SUPERVISOR_LOG})")
        try:
            pids = json.loads(state.read_text()).get("pids", {})
        except (OSError, ValueError):
            pids = {}
        if len(pids) == nodes and (not alive or all(_alive(int(pid)) for pid in pids.values())):
            return {str(k): int(v) for k, v in pids.items()}
        time.sleep(0.05)
    raise RuntimeError("the supervisor did not start the nodes within 30 s")


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


def dev_up(
    *,
    nodes: int,
    directory: Path,
    source: Path | None,
    index: str | None,
    apply_file: Path | None,
    example: bool,
    common: Common,
) -> tuple[Common, str, Path | None]:
    """Build the index (or take `index`), start the nodes under a supervisor and wait until they are
    ready; return the options that reach the new cluster, its first ingress and the blueprint to apply
    (`--apply` or `--example`), for the command to apply and for `next_steps`: this module does not import
    the commands."""
    if nodes < 1:
        fail(2, f"--nodes must be at least 1, got {nodes}")
    try:
        slices = choose(source=source, index=index, cwd=Path.cwd())
    except SliceSourceError as error:
        fail(EXIT_BAD_INPUT, str(error))
    if example:
        if apply_file is not None:
            fail(EXIT_BAD_INPUT, "give --apply FILE or --example, not both")
        apply_file = example_blueprint(Path.cwd())
        if apply_file is None:
            fail(EXIT_BAD_INPUT, "--example: no example blueprint here and none bundled with aether-cli")
    directory.mkdir(parents=True, exist_ok=True)
    with _starting(directory):
        return _up(directory, nodes, slices, apply_file, common)


@contextlib.contextmanager
def _starting(directory: Path) -> Iterator[None]:
    """Hold `directory`'s start lock while a cluster starts there: a second `dev up` at the same time
    would start nodes on the same ports and data (both failed, leaving nothing running). Released by
    the system if this process dies."""
    with open(directory / START_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fail(EXIT_FAILED, f"another `aether dev up` is starting a cluster from {directory}/ now")
        yield


def _up(
    directory: Path, nodes: int, slices: SliceSource, apply_file: Path | None, common: Common
) -> tuple[Common, str, Path | None]:
    import trio

    from aether_node.dev import build_sample_index, plan_cluster, wait_until_ready

    index: str | None
    state = directory / STATE_FILE
    recorded = json.loads(state.read_text()) if state.exists() else {}
    supervisor = recorded.get("supervisor")
    if any(_alive(pid) for pid in [supervisor, *recorded.get("pids", {}).values()] if pid):
        if supervisor and not _alive(supervisor):
            fail(
                EXIT_FAILED,
                f"a dev cluster already runs from {directory}/, but its supervisor is gone (a node that"
                " stops is not restarted): stop it with `aether dev down`, then `aether dev up` starts it"
                " again on its data",
            )
        stopped = sorted(node for node, pid in recorded.get("pids", {}).items() if not _alive(pid))
        if not stopped:
            running = f"a dev cluster already runs from {directory}/"
            fail(EXIT_FAILED, f"{running} (stop it with `aether dev down`)")
        return _start_stopped(directory, recorded, stopped, apply_file, common)
    started = time.monotonic()
    if slices.index is not None:
        print(f"using the slice index {slices.index}", flush=True)
        index = slices.index
    else:
        print(f"building the slice index from {slices.source}/ ...", flush=True)
        built = directory / "index"
        try:
            build_sample_index(slices.source, built, progress=_progress)
        except RuntimeError as error:
            fail(EXIT_FAILED, str(error))
        index = str(built.resolve())
    cluster = plan_cluster(directory, nodes, index)
    print(f"starting {plural(nodes, 'node')} under a supervisor ...", flush=True)
    management = [f"http://{n.management}" for n in cluster.nodes]
    state.write_text(
        json.dumps(
            {
                "pids": {},
                "management": management,
                "ingress": [f"http://{n.ingress}" for n in cluster.nodes],
                "kv_endpoints": cluster.kv_endpoints,
            },
            indent=2,
        )
        + "\n"
    )
    with open(directory / SUPERVISOR_LOG, "ab") as log:
        command = [sys.executable, "-m", "aether_cli._supervisor", str(cluster.directory)]
        supervisor = subprocess.Popen(
            [*command, "--nodes", str(nodes), "--index", cluster.index],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        pids = _wait_for_pids(state, supervisor, nodes)
        cluster.processes.update({node_id: _Running(pid) for node_id, pid in pids.items()})
        trio.run(lambda: wait_until_ready(cluster, timeout=90))
    except (RuntimeError, trio.TooSlowError) as error:
        if supervisor.poll() is None:
            supervisor.terminate()  # it stops the nodes it started
            supervisor.wait(timeout=60)
        dev_down(directory, quiet=True)
        fail(EXIT_FAILED, f"the cluster did not become ready: {error}")
    elapsed = time.monotonic() - started
    print(f"\nAether dev cluster ready in {elapsed:.1f} s: {plural(nodes, 'node')}, data in {directory}/")
    for node in cluster.nodes:
        voter = " (Raft voter)" if node.raft else ""
        print(f"  {node.node_id}: ingress http://{node.ingress}  management http://{node.management}{voter}")
    from aether_node.contexts import register_dev

    print(f"  {register_dev(management, os.environ)}")
    print(f"\nDashboard: http://{cluster.nodes[0].management}/dashboard  (on every node: /dashboard)")
    cluster_options = Common(cluster=",".join(management), api_key=common.api_key, json=False)
    return cluster_options, cluster.nodes[0].ingress, apply_file


def _start_stopped(
    directory: Path, recorded: dict[str, Any], stopped: list[str], apply_file: Path | None, common: Common
) -> tuple[Common, str, Path | None]:
    """A dev cluster runs with nodes stopped (`aether node stop`, or dead and waiting for their restart):
    its supervisor starts those that stopped cleanly again (the others it restarts anyway); wait until
    every node is ready."""
    import trio

    from aether_node.dev import plan_cluster, wait_until_ready

    print(f"the dev cluster in {directory}/ runs; starting {', '.join(stopped)} again ...", flush=True)
    os.kill(recorded["supervisor"], signal.SIGUSR1)
    cluster = plan_cluster(directory, len(recorded["pids"]), index="")
    try:
        pids = _wait_for_pids(directory / STATE_FILE, None, len(cluster.nodes), alive=True)
        cluster.processes.update({node_id: _Running(pid) for node_id, pid in pids.items()})
        trio.run(lambda: wait_until_ready(cluster, timeout=90))
    except (RuntimeError, trio.TooSlowError) as error:
        fail(EXIT_FAILED, f"{', '.join(stopped)} did not become ready: {error} (see {SUPERVISOR_LOG})")
    print(f"every node of the dev cluster runs: {', '.join(n.node_id for n in cluster.nodes)}")
    management = ",".join(recorded["management"])
    options = Common(cluster=management, api_key=common.api_key, json=False)
    return options, cluster.nodes[0].ingress, apply_file


def next_steps(ingress: str, *, applied: bool, samples: bool = True) -> None:
    """What to try next; `samples`: the cluster runs the sample slices (no --source or --index given)."""
    print("\nNext:")
    if not applied:
        example = example_blueprint(Path.cwd()) if samples else None
        print(f"  aether blueprint apply {example or 'BLUEPRINT.toml'} --wait")
    print("  aether cluster status")
    if samples:
        print(f'  curl -s -X POST http://{ingress}/invoke/org.aether:echo/echo -d \'{{"hello": "aether"}}\'')
    else:
        print(f"  curl -s -X POST http://{ingress}/invoke/GROUP:ARTIFACT/ENTRY -d '{{...}}'")
    print("  aether cluster events --follow")
    print("  aether dev down")


def dev_down(directory: Path, *, quiet: bool = False) -> None:
    state = directory / STATE_FILE
    if not state.exists():
        if not quiet:
            print(f"no dev cluster recorded in {directory}/")
        return
    recorded = json.loads(state.read_text())
    supervisor = recorded.get("supervisor")
    running = {node: pid for node, pid in recorded["pids"].items() if _alive(pid)}
    stopped: set[str] = set()

    def progress() -> None:  # (on stderr, as it goes: a node's stop hooks may take their 15 s)
        for node, pid in sorted(running.items()):
            if node not in stopped and not _alive(pid):
                stopped.add(node)
                if not quiet:
                    print(f"  {node} stopped", file=sys.stderr, flush=True)

    if not quiet and running:
        print(
            f"stopping {plural(len(running), 'node')} (each stops its instances first, their stop hooks)",
            file=sys.stderr,
            flush=True,
        )
    if supervisor and _alive(supervisor):
        os.kill(supervisor, signal.SIGTERM)  # it stops the nodes, gracefully, and restarts none
        deadline = time.monotonic() + 50
        while _alive(supervisor) and time.monotonic() < deadline:
            progress()
            time.sleep(0.1)
        if _alive(supervisor):
            print("  the supervisor did not stop in time; killing it", file=sys.stderr)
            os.kill(supervisor, signal.SIGKILL)
        # the nodes it ran last (it may have restarted some since `running` was read)
        recorded = json.loads(state.read_text())
        running.update({node: pid for node, pid in recorded["pids"].items() if _alive(pid)})
    for pid in running.values():
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 40
    while any(_alive(pid) for pid in running.values()) and time.monotonic() < deadline:
        progress()
        time.sleep(0.1)
    progress()
    for node, pid in running.items():
        if _alive(pid):
            print(f"  {node} did not stop in time; killing it", file=sys.stderr)
            os.killpg(pid, signal.SIGKILL)
    state.unlink()
    if not quiet:
        print(f"stopped {plural(len(running), 'node')}; data kept in {directory}/")


def _tail(path: Path, lines: int = 200) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def dev_status(directory: Path, common: Common) -> Common:
    """Print which dev processes run (and recent restarts); return the options that reach the dev cluster,
    for `aether dev status` to show its cluster status next (this module does not import the commands)."""
    state = directory / STATE_FILE
    if not state.exists():
        fail(EXIT_FAILED, f"no dev cluster recorded in {directory}/ (start one with `aether dev up`)")
    info = json.loads(state.read_text())
    out = sys.stderr if common.json else sys.stdout  # with --json, stdout stays one JSON document
    supervisor = info.get("supervisor")
    if supervisor:
        print(
            f"  supervisor: pid {supervisor} {'running' if _alive(supervisor) else 'NOT RUNNING'}", file=out
        )
    for node, pid in info["pids"].items():
        print(f"  {node}: pid {pid} {'running' if _alive(pid) else 'NOT RUNNING'}", file=out)
    if supervisor and _alive(supervisor) and not all(_alive(pid) for pid in info["pids"].values()):
        print("  (`aether dev up` starts the nodes not running again)", file=out)
    log = directory / SUPERVISOR_LOG
    said = ("died unasked", "restarted", "stopped cleanly")
    restarts = [line for line in _tail(log) if any(words in line for words in said)]
    if restarts:
        print("recent restarts (supervisor.log):", file=out)
        for line in restarts[-6:]:
            print(f"  {line}", file=out)
    return Common(cluster=",".join(info["management"]), api_key=common.api_key, json=common.json)
