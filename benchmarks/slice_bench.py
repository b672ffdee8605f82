"""Slice runtime benchmark: one `aether-node` on 127.0.0.1, the sample slice org.aether:echo:1.0.0.

    uv run python benchmarks/slice_bench.py            # full run (~4-8 minutes on 2 cores)
    uv run python benchmarks/slice_bench.py --quick    # shorter wrk runs, fewer rounds (~1.5 minutes)
    uv run --with py-spy python benchmarks/slice_bench.py --profile   # also: where the time goes
    uv run python benchmarks/slice_bench.py --only ingress,memory      # some phases (load, ingress, memory)
    uv run python benchmarks/slice_bench.py --only ingress --ingress-server trio   # the node's trio ingress
    uv run --with 'ray[serve]' python benchmarks/slice_bench.py --only ingress --ray-serve   # + Ray Serve

What it measures (figures and notes: benchmarks/README.md, "Slice runtime"):

1. LOAD→ACTIVE wall time of 20 instances on one node, package already installed: 20 ACTIVATE records
   written in one KV transaction, timed until the node has written ACTIVE for all 20 (seen through a KV
   watch, as a leader would see it); then UNLOAD for all 20, timed until the node has deleted the records.
   First an install round (1 instance: uv installs the package, the per-version template starts), then
   the node is restarted (package installed, no template) for the "cold template" round, then 5 warm
   rounds (--quick: 3) whose median is the figure. A node that runs a cluster leader removes slice
   records that no blueprint asks for, so each transaction also writes a blueprint `blueprints/slicebench`
   asking for exactly the instances the records make (the leader then has nothing to do); and the same
   rounds are repeated through the leader: only the blueprint is written, the leader writes the records.
2. Ingress throughput and latency: `POST /invoke/org.aether:echo/echo` with a small JSON body, with 1 and
   with 2 ACTIVE instances, against a bare hypercorn+trio server running a raw ASGI callable that parses
   the body and answers it as JSON (same hypercorn settings as the node's ingress), against the same
   callable on bare uvicorn + uvloop + httptools, optionally against Ray Serve (--ray-serve: one deployment
   that answers the body as JSON), and — as a breakdown — the node's own ingress app
   (`aether_node.routing.ingress_app`) answering the payload itself, without invoker or slice. The node
   runs the ingress server --ingress-server names (default fast; trio: hypercorn in the node). wrk, 32
   connections, 1 thread (--wrk-threads), 10 s a run (--quick 3 s), the servers alternating
   --ingress-rounds times (default 3, --quick 2), median of each, with the load average; the ratios
   aether ÷ uvicorn and aether ÷ bare hypercorn; also 1 connection (unloaded latency). CPU of every
   process over each run (% of one core and CPU µs per request), and what processes outside the benchmark
   used meanwhile
   ("others": on a shared machine, each wrk run first waits, bounded, for them to calm down: --quiet-wait).
3. Resident memory with 20 idle ACTIVE instances: RSS, PSS and USS (from /proc/PID/smaps_rollup) of each
   instance, of the template they were forked from, of the node process and of its KV replica process.

Everything runs from one temporary directory (removed at the end unless --keep); every process this
script starts asks the kernel to kill it if the script dies, is stopped at the end, and a watchdog ends
the run after --time-limit seconds. Needs `wrk` (Debian package `wrk`).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import http.client
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from aether_kv import Delete, KVClient, Put, open_client
from aether_node import SliceRecord, SliceState, decode_record, encode_record
from aether_node.dev import build_sample_index

try:  # nodes with a cluster leader (blueprints); older trees have none
    from aether_node import Blueprint, SliceSpec
except ImportError:  # pragma: no cover
    Blueprint = SliceSpec = None  # type: ignore[assignment,misc]

REPO = Path(__file__).resolve().parents[1]
ECHO = "org.aether:echo:1.0.0"
ECHO_ARTIFACT = "org.aether:echo"
NODE_ID = "bench"
INSTANCES = 20
PAYLOAD = '{"message":"hello, aether","n":42,"items":[1,2,3],"ok":true}'
WRK_CONNECTIONS = 32
PHASES = {"load", "ingress", "memory"}
STEP_TIMEOUT = 120.0  # any single wait (install, activation of 20, unload of 20, node start/stop)

TARGETS = {
    "load_s": 1.0,  # 20 instances LOAD→ACTIVE, warm package
    "ratio": 0.7,  # aether req/s ≥ 0.7 × bare
    "added_p50_ms": 1.0,  # aether p50 − bare p50
    "uvicorn_ratio": 0.8,  # aether req/s ≥ 0.8 × bare uvicorn+uvloop+httptools
    "rps": 5000.0,  # aether req/s, 32 connections, on an idle machine of 2 cores
    "added_p50_1conn_ms": 0.3,  # aether p50 − uvicorn p50, 1 connection
    "instance_mib": 30.0,  # per idle instance
}
_STARTED: list[subprocess.Popen[bytes]] = []  # every process we started, for cleanup and the watchdog


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ====================================================================== processes


def _die_with_parent() -> None:
    """In a child, before exec: SIGKILL when this script dies (the parent-death signal survives exec)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_process(args: list[str], log_path: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a child from the main thread (the parent-death signal follows the forking thread)."""
    assert threading.current_thread() is threading.main_thread()
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, **kwargs
        )
    _STARTED.append(process)
    return process


def stop_process(process: subprocess.Popen[bytes], grace: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def process_table() -> dict[int, tuple[int, list[str]]]:
    """pid → (ppid, argv) of every live (non-zombie) process."""
    table: dict[int, tuple[int, list[str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if fields[0] in ("Z", "X"):
                continue
            argv = [a for a in (entry / "cmdline").read_bytes().decode(errors="replace").split("\0") if a]
        except OSError:
            continue
        table[int(entry.name)] = (int(fields[1]), argv)
    return table


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_busy() -> tuple[float, float, float]:
    """(busy, irq, total) jiffies of all CPUs, from /proc/stat; irq: hard and soft interrupts (loopback
    TCP is mostly softirq work, charged to no process)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, values[5] + values[6], sum(values)


class CpuMeter:
    """CPU of named process groups over an interval: seconds, and % of one core (2 cores = 200 %); also
    children reaped meanwhile (wrk), interrupts (mostly the loopback traffic of the run itself), the whole
    machine, and what the rest of the machine used ("others": processes that are not part of this
    benchmark, e.g. other work on a shared box)."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.start = {name: sum(cpu_seconds(p) for p in group) for name, group in pids.items()}
        self.children = self._children_cpu()
        self.own = time.process_time()
        self.system = system_busy()
        self.wall = time.perf_counter()

    @staticmethod
    def _children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.wall
        seconds = {
            name: sum(cpu_seconds(p) for p in group) - self.start[name] for name, group in self.pids.items()
        }
        seconds["wrk"] = self._children_cpu() - self.children
        seconds["benchmark script"] = time.process_time() - self.own
        busy, irq, total = system_busy()
        share = (os.cpu_count() or 1) * wall / max(total - self.system[2], 1)  # jiffies → CPU seconds
        machine = (busy - self.system[0]) * share
        seconds["interrupts"] = (irq - self.system[1]) * share
        seconds["others"] = max(machine - sum(seconds.values()), 0.0)
        percent = {name: 100.0 * value / wall for name, value in seconds.items()}
        percent["machine"] = 100.0 * machine / wall
        return {"seconds": seconds, "percent": percent, "wall": wall}


def memory(pid: int) -> dict[str, float]:
    """RSS, PSS and USS (private clean + dirty) in MiB, from /proc/PID/smaps_rollup."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, value = line.partition(":")
        fields[name.strip()] = int(value.split()[0])
    return {
        "rss": fields["Rss"] / 1024,
        "pss": fields["Pss"] / 1024,
        "uss": (fields["Private_Clean"] + fields["Private_Dirty"]) / 1024,
    }


# ====================================================================== the node


class Node:
    """One `aether-node run` process with its own single-replica KV store."""

    def __init__(self, root: Path, index: Path, ingress_server: str = "") -> None:
        self.root = root
        self.index = index
        self.ingress_server = ingress_server  # "" for a node that has no --ingress-server flag
        self.data_dir = root / "data"
        self.secret = secrets.token_hex(16)
        self.secret_file = root / "secret"
        self.secret_file.write_text(self.secret + "\n")
        self.ingress_port, self.raft_port, self.client_port, peer_port = free_ports(4)
        help_text = self._run_help()
        self.peer_port = peer_port if re.search(r"(?<![\w-])--peer\b", help_text) else 0
        # plain text, as this benchmark's own KV client speaks (nodes with TLS on by default need it said)
        self.no_tls = re.search(r"(?<![\w-])--no-tls\b", help_text) is not None
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @staticmethod
    def _run_help() -> str:
        """`aether-node run --help` of the node under test: newer nodes need `--peer host:port` (where
        other nodes call this one), and have TLS on unless `--no-tls`; older ones have neither flag."""
        command = [str(Path(sys.executable).parent / "aether-node"), "run", "--help"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        return result.stdout

    @property
    def ingress(self) -> str:
        return f"127.0.0.1:{self.ingress_port}"

    @property
    def kv_endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.root / f"node-{self.starts}.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> float:
        """Start the node; returns the seconds until it printed that it is ready."""
        self.starts += 1
        command = [str(Path(sys.executable).parent / "aether-node"), "run", "--node-id", NODE_ID]
        command += ["--data-dir", str(self.data_dir), "--index", str(self.index), "--ingress", self.ingress]
        command += ["--kv-raft", f"127.0.0.1:{self.raft_port}", "--kv-client", self.kv_endpoint]
        command += ["--secret-file", str(self.secret_file)]
        if self.peer_port:
            command += ["--peer", f"127.0.0.1:{self.peer_port}"]
        if self.ingress_server:
            command += ["--ingress-server", self.ingress_server]
        if self.no_tls:
            command += ["--no-tls"]
        began = time.perf_counter()
        self.process = start_process(command, self.log_path, cwd=self.root)
        ready = f"aether-node {NODE_ID} ready"
        with trio.fail_after(STEP_TIMEOUT):
            while ready not in self.log_path.read_text(errors="replace"):
                if self.process.poll() is not None:
                    raise BenchError(f"aether-node exited with {self.process.returncode}: {self.log_tail()}")
                await trio.sleep(0.02)
        return time.perf_counter() - began

    def leads(self, timeout: float = 10.0) -> bool:
        """Whether this node runs a cluster leader (it logs that it leads), waiting a little for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "leads the cluster" in self.log_path.read_text(errors="replace"):
                return True
            time.sleep(0.1)
        return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (graceful: stops instances, revokes the lease, stops the replica), then make sure."""
        if self.process is not None:
            stop_process(self.process, 30.0)
        self.kill_leftovers()

    def kill_leftovers(self) -> None:
        """Any process still running from the data dir (slice hosts, the KV replica): SIGKILL by pid."""
        marker = str(self.data_dir)
        for _ in range(50):
            left = [pid for pid, (_, argv) in process_table().items() if any(marker in a for a in argv)]
            left += [pid for pid in self._slice_pids_by_cwd() if pid not in left and pid != os.getpid()]
            if not left:
                return
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def _slice_pids_by_cwd(self) -> list[int]:
        found = []
        for pid, (_, argv) in process_table().items():
            if "aether_slice.host" not in argv:
                continue
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/cwd").startswith(str(self.data_dir)):
                    found.append(pid)
        return found

    def tree(self) -> dict[str, Any]:
        """The node's processes: kv replica, templates, instances (children of the template)."""
        table = process_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        kv = [p for p in children.get(self.pid, []) if "aether_kv" in table[p][1] and "serve" in table[p][1]]
        templates = [p for p in children.get(self.pid, []) if "aether_slice.host" in table[p][1]]
        instances = sorted(c for t in templates for c in children.get(t, []))
        ingress = [
            p for p in children.get(self.pid, []) if any(a.endswith("._ingress_worker") for a in table[p][1])
        ]
        return {"kv": kv, "templates": templates, "instances": instances, "ingress": ingress}


# ====================================================================== phase 1: LOAD→ACTIVE


PREFIX = f"slices/{NODE_ID}/{ECHO}/"
BLUEPRINT_KEY = "blueprints/slicebench"


def instance_key(instance: int) -> str:
    return f"{PREFIX}{instance}"


def blueprint_ops(instances: int) -> list[Any]:
    """Keep a cluster leader (nodes that run one reconcile slices/ against blueprints/, and remove
    instances no blueprint asks for) in agreement with the records this benchmark writes: a blueprint
    asking for exactly the instances that exist, written in the same transaction. Nothing on nodes
    without a leader (or without blueprints)."""
    if Blueprint is None:
        return []
    if instances == 0:
        return [Delete(key=BLUEPRINT_KEY)]
    blueprint = Blueprint(
        name="slicebench", slices=(SliceSpec(artifact=ECHO, instances=instances),), timestamp=time.time()
    )
    return [Put(key=BLUEPRINT_KEY, value=encode_record(blueprint))]


async def converge(
    kv: KVClient,
    ops: list[Any],
    label: str,
    *,
    count: int,
    done: Callable[[SliceRecord | None], bool],
    keys: set[str] | None = None,
    deletion_is_error: bool = False,
) -> dict[str, Any]:
    """Commit `ops` in one transaction; watch the echo instances of this node until `count` keys (of
    `keys`, if given: others are then an error) satisfy `done(record)`, or None once deleted. Returns wall
    times in seconds from just before the transaction: `total_s` (the last key), `first_s`, and `keys`."""
    revision = (await kv.range(PREFIX)).revision
    watch = kv.watch(PREFIX, revision + 1)
    finished: dict[str, float] = {}
    began = time.perf_counter()
    try:
        await kv.txn(success=ops)
        with trio.fail_after(STEP_TIMEOUT):
            async for batch in watch:
                now = time.perf_counter() - began
                for event in batch:
                    key = event.kv.key
                    if keys is not None and key not in keys:
                        raise BenchError(
                            f"{label}: {key} appeared: something else writes this node's slice records"
                            " (a cluster leader placing instances?); see the node log"
                        )
                    record = (
                        None if event.kind == "delete" else decode_record(key, event.kv.value, SliceRecord)
                    )
                    if record is not None and record.state is SliceState.FAILED:
                        raise BenchError(f"{label}: {key}: FAILED: {record.reason}")
                    if record is None and deletion_is_error:
                        raise BenchError(
                            f"{label}: {key} was deleted meanwhile: something else manages this node's"
                            " slice records (a cluster leader reconciling them against blueprints?);"
                            " see the node log"
                        )
                    if done(record):
                        finished.setdefault(key, now)
                if len(finished) >= count:
                    break
    except trio.TooSlowError:
        raise BenchError(f"{label}: only {len(finished)} of {count} done after {STEP_TIMEOUT:g} s") from None
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await watch.aclose()
    times = sorted(finished.values())
    return {"total_s": times[-1], "first_s": times[0], "keys": sorted(finished)}


def is_active(record: SliceRecord | None) -> bool:
    return record is not None and record.state is SliceState.ACTIVE


def is_gone(record: SliceRecord | None) -> bool:
    return record is None


async def activate(kv: KVClient, instances: list[int], total: int) -> dict[str, Any]:
    """ACTIVATE records for `instances` (so `total` instances are wanted afterwards); until all ACTIVE."""
    record = encode_record(SliceRecord(state=SliceState.ACTIVATE, timestamp=time.time()))
    keys = {instance_key(i) for i in instances}
    ops = [Put(key=key, value=record) for key in sorted(keys)] + blueprint_ops(total)
    return await converge(
        kv, ops, "ACTIVATE", count=len(keys), done=is_active, keys=keys, deletion_is_error=True
    )


async def unload(kv: KVClient, instances: list[int], total: int = 0) -> dict[str, Any]:
    """UNLOAD records for `instances` (`total` remain wanted); until the node has deleted them all."""
    record = encode_record(SliceRecord(state=SliceState.UNLOAD, timestamp=time.time()))
    keys = {instance_key(i) for i in instances}
    ops = [Put(key=key, value=record) for key in sorted(keys)] + blueprint_ops(total)
    return await converge(kv, ops, "UNLOAD", count=len(keys), done=is_gone, keys=keys)


async def leader_round(kv: KVClient) -> dict[str, Any]:
    """Through the cluster leader: a blueprint of 20 instances (the leader writes the ACTIVATE records),
    until 20 are ACTIVE; then the blueprint deleted (the leader writes UNLOAD), until all are deleted."""
    placed = await converge(kv, blueprint_ops(INSTANCES), "blueprint", count=INSTANCES, done=is_active)
    removed = await converge(
        kv, blueprint_ops(0), "blueprint removed", count=INSTANCES, done=is_gone, keys=set(placed["keys"])
    )
    return {"activate": placed, "unload": removed}


def describe_round(name: str, activated: dict[str, Any], unloaded: dict[str, Any]) -> str:
    return (
        f"  {name}: {INSTANCES} ACTIVE in {activated['total_s']:.3f} s (first after"
        f" {activated['first_s']:.3f} s); all deleted {unloaded['total_s']:.3f} s after UNLOAD"
    )


async def phase_load(node: Node, opts: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    everyone = list(range(1, INSTANCES + 1))
    async with open_client([node.kv_endpoint], node.secret, request_timeout=30.0) as kv:
        log("install round: 1 instance (uv installs the package into a venv, the template starts)")
        first = await activate(kv, [1], 1)
        out["install_1_s"] = first["total_s"]
        await unload(kv, [1])
        log(f"  install + first instance ACTIVE in {first['total_s']:.2f} s")
    log("restarting the node: package installed, no template process")
    node.stop()
    out["node_restart_s"] = await node.start()
    out["node_idle_memory"] = node_memory(node)
    async with open_client([node.kv_endpoint], node.secret, request_timeout=30.0) as kv:
        cold = await activate(kv, everyone, INSTANCES)
        cold_unload = await unload(kv, everyone)
        out["cold"] = {"activate": cold, "unload": cold_unload}
        log(describe_round("cold template", cold, cold_unload))
        rounds = []
        for number in range(1, opts.rounds + 1):
            activated = await activate(kv, everyone, INSTANCES)
            unloaded = await unload(kv, everyone)
            rounds.append({"activate": activated, "unload": unloaded})
            log(describe_round(f"round {number}", activated, unloaded))
        out["rounds"] = rounds
        out["median_activate_s"] = statistics.median(r["activate"]["total_s"] for r in rounds)
        out["median_unload_s"] = statistics.median(r["unload"]["total_s"] for r in rounds)
        if Blueprint is not None and node.leads():
            log("through the cluster leader: blueprint of 20 instances, then the blueprint deleted")
            leader_rounds = []
            for number in range(1, opts.rounds + 1):
                result = await leader_round(kv)
                leader_rounds.append(result)
                log(describe_round(f"leader round {number}", result["activate"], result["unload"]))
            out["leader_rounds"] = leader_rounds
            out["leader_median_activate_s"] = statistics.median(
                r["activate"]["total_s"] for r in leader_rounds
            )
            out["leader_median_unload_s"] = statistics.median(r["unload"]["total_s"] for r in leader_rounds)
    return out


# ====================================================================== phase 2: ingress


BARE_SERVER = r'''
"""A bare hypercorn + trio server: a raw ASGI callable that answers the JSON body it gets."""
import json
import sys

import trio
from hypercorn.config import Config
from hypercorn.trio import serve


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    # the same work as the node's ingress around the call: parse the JSON, serialise it as starlette does
    out = json.dumps(
        json.loads(body), ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": out})


config = Config()
config.bind = [sys.argv[1]]
config.accesslog = None
config.graceful_timeout = 1.0
config.keep_alive_timeout = 75.0
trio.run(serve, app, config)
'''

UVICORN_SERVER = r'''
"""A bare uvicorn + uvloop + httptools server: the same raw ASGI callable as the bare hypercorn one."""
import sys

import uvicorn

from bare_server_app import app

host, _, port = sys.argv[1].rpartition(":")
uvicorn.run(
    app, host=host, port=int(port), loop="uvloop", http="httptools", lifespan="off", access_log=False,
    log_level="warning", timeout_keep_alive=75,
)
'''

RAY_SERVE_SERVER = r'''
"""Ray Serve (optional peer, `--ray-serve`; needs `ray[serve]`): one deployment that answers the JSON body
it gets, as the bare servers do, behind Ray Serve's HTTP proxy. Ray's temporary files (and so its
processes' command lines) live under argv[2]."""
import json
import signal
import sys
import time

import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response


@serve.deployment(num_replicas=1, max_ongoing_requests=64)
class Echo:
    async def __call__(self, request: Request) -> Response:
        out = json.dumps(
            json.loads(await request.body()), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode()
        return Response(out, media_type="application/json")


def stop(*_):
    serve.shutdown()
    ray.shutdown()
    sys.exit(0)


host, _, port = sys.argv[1].rpartition(":")
ray.init(num_cpus=2, include_dashboard=False, _temp_dir=sys.argv[2])
serve.start(http_options={"host": host, "port": int(port)})
serve.run(Echo.bind(), route_prefix="/")
signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(3600)
'''

INGRESS_ONLY = r'''
"""The node's own ingress app (aether_node.routing on hypercorn, the same settings) with an invoke
that answers the payload itself: the node's HTTP layer without the invoker and the slice round trip."""
import functools
import sys

import trio

from aether_node.routing import MAX_BODY, ingress_app, serve_http


async def invoke(artifact, entry, payload, *args, **options):
    return payload


trio.run(functools.partial(serve_http, max_body=MAX_BODY), ingress_app(invoke), sys.argv[1])
'''

WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '@@wrk {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d,' ..
    '"mean_us":%%.1f,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def echo_once(address: str, entry: str = "echo") -> tuple[int, bytes]:
    host, _, port = address.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(
            "POST", f"/invoke/{ECHO_ARTIFACT}/{entry}", PAYLOAD, {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


async def check_echo(address: str, timeout: float = 10.0) -> None:
    """One echo answers correctly (waits a little: a node may learn of new endpoints through a watch)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = await trio.to_thread.run_sync(echo_once, address)
        if status == 200 and json.loads(body) == json.loads(PAYLOAD):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{address}: unexpected answer {status} {body[:300]!r}")
        await trio.sleep(0.05)


async def wait_serving(address: str, instances: set[int], timeout: float = 10.0) -> None:
    """Until the ingress has routed `info` calls to every one of `instances`."""
    seen: set[int] = set()
    with trio.move_on_after(timeout):
        while not instances <= seen:
            status, body = await trio.to_thread.run_sync(echo_once, address, "info")
            if status == 200:
                seen.add(int(json.loads(body)["instance"]))
            else:
                await trio.sleep(0.05)
        return
    raise BenchError(f"the ingress routed to instances {sorted(seen)}, not all of {sorted(instances)}")


def run_wrk(
    wrk: str,
    address: str,
    lua: Path,
    seconds: float,
    connections: int,
    threads: int,
    pids: dict[str, list[int]],
) -> dict[str, Any]:
    command = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--latency"]
    command += ["--timeout", "5s", "-s", str(lua), f"http://{address}/invoke/{ECHO_ARTIFACT}/echo"]
    meter = CpuMeter(pids)
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, preexec_fn=_die_with_parent
    )
    cpu = meter.stop()
    if result.returncode != 0:
        raise BenchError(f"wrk failed ({result.returncode}): {result.stderr.strip()}")
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("@@wrk ")), None)
    if line is None:
        raise BenchError(f"no summary from wrk:\n{result.stdout}")
    data = json.loads(line[len("@@wrk ") :])
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "p50_ms": data["p50_us"] / 1000,
        "p90_ms": data["p90_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "max_ms": data["max_us"] / 1000,
        "requests": data["requests"],
        "errors": errors,
        "cpu": cpu["percent"],
        "cpu_us_per_request": {
            name: 1e6 * value / max(data["requests"], 1)
            for name, value in cpu["seconds"].items()
            if name != "others"
        },
        "text": result.stdout.split("@@wrk")[0],
    }


def describe_run(name: str, run: dict[str, Any]) -> str:
    cpu = ", ".join(
        f"{k} {v:.0f}%"
        + (
            f" ({run['cpu_us_per_request'][k]:.0f} µs/req)"
            if run["cpu_us_per_request"].get(k, 0) >= 10
            else ""
        )
        for k, v in run["cpu"].items()
        if v >= 0.5 or k == "machine"
    )
    errors = f", {run['errors']} ERRORS" if run["errors"] else ""
    return (
        f"  {name:<16} {run['rps']:8.0f} req/s  p50 {run['p50_ms']:7.2f} ms  p99 {run['p99_ms']:7.2f} ms"
        f"{errors}   CPU: {cpu}"
    )


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "loadavg")
    out: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["errors"] = sum(r["errors"] for r in runs)
    names = {name for r in runs for name in r["cpu"]}
    out["cpu"] = {n: statistics.median(r["cpu"].get(n, 0.0) for r in runs) for n in sorted(names)}
    out["cpu_us_per_request"] = {
        n: statistics.median(r["cpu_us_per_request"].get(n, 0.0) for r in runs)
        for n in sorted(names)
        if n in runs[0]["cpu_us_per_request"]
    }
    out["runs"] = [{k: v for k, v in r.items() if k != "text"} for r in runs]
    return out


async def start_server(
    root: Path, name: str, source: str, *args: str, timeout: float = 30.0
) -> tuple[subprocess.Popen[bytes], str]:
    """A helper HTTP server (a script of this benchmark) in its own process; until it answers an echo."""
    script = root / f"{name}.py"
    script.write_text(source)
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    process = start_process([sys.executable, str(script), address, *args], root / f"{name}.log")
    with trio.move_on_after(timeout) as waited:
        while not port_open(port):
            if process.poll() is not None:
                raise BenchError(f"{name} exited: {(root / f'{name}.log').read_text()[-2000:]}")
            await trio.sleep(0.05)
    if waited.cancelled_caught:
        stop_process(process, 20.0)
        raise BenchError(
            f"{name} did not listen within {timeout:g} s: {(root / f'{name}.log').read_text()[-2000:]}"
        )
    await check_echo(address)
    return process, address


def kill_marked(marker: str) -> None:
    """SIGKILL every process whose command line names `marker` (what Ray leaves running, if anything)."""
    for pid, (_, argv) in process_table().items():
        if pid != os.getpid() and any(marker in a for a in argv):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def loadavg() -> float:
    return os.getloadavg()[0]


def others_cpu(pids: list[int], seconds: float = 1.0) -> float:
    """CPU used over `seconds` by processes other than `pids` and this script, in % of one core."""
    before = sum(cpu_seconds(p) for p in pids) + time.process_time()
    busy, _, total = system_busy()
    time.sleep(seconds)
    used = sum(cpu_seconds(p) for p in pids) + time.process_time() - before
    busy2, _, total2 = system_busy()
    machine = (busy2 - busy) / max(total2 - total, 1) * (os.cpu_count() or 1) * seconds
    return 100.0 * max(machine - used, 0.0) / seconds


async def phase_ingress(node: Node, root: Path, opts: argparse.Namespace) -> dict[str, Any]:
    wrk = shutil.which("wrk") or "/usr/bin/wrk"
    if not Path(wrk).exists():
        raise BenchError("wrk is not installed (Debian package `wrk`: apt-get install -y wrk)")
    lua = root / "post.lua"
    lua.write_text(WRK_SCRIPT % PAYLOAD)
    out: dict[str, Any] = {"threads": opts.wrk_threads, "seconds": opts.seconds, "quiet_waits_s": []}
    helpers: list[subprocess.Popen[bytes]] = []
    try:
        bare, bare_address = await start_server(root, "bare_server", BARE_SERVER)
        helpers.append(bare)
        (root / "bare_server_app.py").write_text(BARE_SERVER.split("\n\nconfig = Config()")[0])
        uvicorn, uvicorn_address = await start_server(root, "uvicorn_server", UVICORN_SERVER)
        helpers.append(uvicorn)
        peers = [("uvicorn", uvicorn_address)]
        ray_dir = root / "ray"
        if opts.ray_serve:
            log("starting Ray Serve (--ray-serve)")
            try:
                ray, ray_address = await start_server(
                    root, "ray_serve", RAY_SERVE_SERVER, str(ray_dir), timeout=STEP_TIMEOUT
                )
            except BenchError as error:  # an optional peer: the run goes on without it
                log(f"Ray Serve did not start (skipping it): {error}")
                kill_marked(str(ray_dir))
                opts.ray_serve = False
            else:
                helpers.append(ray)
                peers.append(("ray serve", ray_address))
        try:
            ingress_only, ingress_only_address = await start_server(root, "ingress_only", INGRESS_ONLY)
            helpers.append(ingress_only)
        except BenchError as error:  # the node's internals changed: this part is only a breakdown
            log(f"the ingress-app-only server did not start (skipping that breakdown): {error}")
            ingress_only, ingress_only_address = None, ""

        def pids() -> dict[str, list[int]]:
            tree = node.tree()
            groups = {
                "node": [node.pid],
                "slice instance(s)": tree["instances"],
                "kv replica": tree["kv"],
                "ingress worker": tree["ingress"],
                "bare server": [bare.pid],
                "uvicorn server": [uvicorn.pid],
            }
            if opts.ray_serve:  # the driver and Ray's own processes (proxy, replica, raylet, GCS)
                groups["ray serve"] = [
                    pid for pid, (_, argv) in process_table().items() if any(str(ray_dir) in a for a in argv)
                ] + [ray.pid]
            if ingress_only is not None:
                groups["ingress app only"] = [ingress_only.pid]
            return groups

        async def wait_quiet() -> None:
            """On a shared machine: wait (bounded) until other work calms down."""
            budget = opts.quiet_budget - sum(out["quiet_waits_s"])
            if min(opts.quiet_wait, budget) > 0:
                began = time.monotonic()
                mine = [p for group in pids().values() for p in group]
                while time.monotonic() - began < min(opts.quiet_wait, budget):
                    if await trio.to_thread.run_sync(others_cpu, mine) <= opts.quiet_threshold:
                        break
                out["quiet_waits_s"].append(round(time.monotonic() - began, 1))

        async def wrk_run(
            address: str, seconds: float, connections: int, *, quiet: bool = True
        ) -> dict[str, Any]:
            if quiet:
                await wait_quiet()
            watched = pids()
            run = await trio.to_thread.run_sync(
                run_wrk, wrk, address, lua, seconds, connections, opts.wrk_threads, watched
            )
            run["loadavg"] = loadavg()
            return run

        async def alternate(
            targets: list[tuple[str, str]], connections: int, seconds: float
        ) -> dict[str, Any]:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in targets}
            for _ in range(opts.ingress_rounds):
                for name, address in targets:
                    runs[name].append(await wrk_run(address, seconds, connections))
                    log(describe_run(name, runs[name][-1]))
            return {name: median_run(group) for name, group in runs.items()}

        async with open_client([node.kv_endpoint], node.secret, request_timeout=30.0) as kv:
            await activate(kv, [1], 1)
            await check_echo(node.ingress)
            await wait_serving(node.ingress, {1})
            targets = [("bare", bare_address), *peers, ("aether", node.ingress)]
            if ingress_only is not None:
                targets.insert(1, ("ingress app only", ingress_only_address))
            log("warm-up: 1 s of wrk on each server")
            for _, address in targets:
                await wrk_run(address, 1, WRK_CONNECTIONS)
            log(f"{WRK_CONNECTIONS} connections, {opts.wrk_threads} wrk thread(s), {opts.seconds:g} s a run")
            log("1 echo instance")
            out["one"] = await alternate(targets, WRK_CONNECTIONS, opts.seconds)
            log("1 connection (unloaded latency), 1 echo instance")
            out["unloaded"] = await alternate(targets, 1, opts.unloaded_seconds)
            await activate(kv, [2], 2)
            await wait_serving(node.ingress, {1, 2})
            log("2 echo instances")
            out["two"] = await alternate(
                [("bare", bare_address), *peers, ("aether", node.ingress)],
                WRK_CONNECTIONS,
                opts.seconds,
            )
            if opts.profile:
                await wait_quiet()
                out["profile"] = await profile(node, root, opts, wrk_run)
            await unload(kv, [1, 2])
    finally:
        for helper in helpers:
            stop_process(helper, 20.0)
        if opts.ray_serve:
            kill_marked(str(root / "ray"))
    return out


# ---------------------------------------------------------------------- optional: py-spy


def find_py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def bucket(frame: str) -> str:
    """A leaf frame 'function (path/file.py:line)' → the package it runs in."""
    match = re.search(r"\((.*?):?\d*\)$", frame)
    path = match.group(1) if match else frame
    for name in (
        "hypercorn",
        "h11",
        "starlette",
        "anyio",
        "trio",
        "aether_node",
        "aether_kv",
        "aether_slice",
        "json",
        "asyncio",
        "selectors",
        "socket",
        "ssl",
        "logging",
        "email",
        "urllib",
        "typing",
        "attrs",
        "cattrs",
    ):
        if f"/{name}/" in f"/{path}" or f"/{name}.py" in f"/{path}" or path.startswith(f"{name}/"):
            return name
    return "other: " + path.rsplit("/", 1)[-1]


def summarize_profile(raw: Path, top: int = 12) -> dict[str, Any]:
    """py-spy --format raw (collapsed stacks) → samples by leaf package and the top leaf functions."""
    by_bucket: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        leaf = stack.split(";")[-1]
        total += samples
        by_bucket[bucket(leaf)] += samples
        by_leaf[re.sub(r":\d+\)$", ")", leaf)] += samples
    share = lambda n: round(100.0 * n / max(total, 1), 1)  # noqa: E731
    return {
        "samples": total,
        "by_package_pct": {k: share(v) for k, v in by_bucket.most_common()},
        "top_functions_pct": {k: share(v) for k, v in by_leaf.most_common(top)},
    }


async def profile(node: Node, root: Path, opts: argparse.Namespace, wrk_run: Any) -> dict[str, Any]:
    """py-spy on the node, its ingress worker (if any) and each slice instance while wrk loads aether (2
    instances)."""
    py_spy = find_py_spy()
    if py_spy is None:
        log("--profile: py-spy not found (run with `uv run --with py-spy ...`); skipped")
        return {"skipped": "py-spy not found"}
    seconds = max(opts.seconds, 5.0)
    tree = node.tree()
    targets = {"node": node.pid}
    if tree["ingress"]:
        targets["ingress worker"] = tree["ingress"][0]
    targets.update({f"slice instance {n}": pid for n, pid in enumerate(tree["instances"], 1)})
    spies = {}
    for name, pid in targets.items():
        raw = root / f"profile-{name.replace(' ', '-')}.txt"
        command = [py_spy, "record", "--pid", str(pid), "--duration", f"{seconds + 2:g}", "--rate", "250"]
        command += ["--format", "raw", "--output", str(raw), "--nonblocking"]
        spies[name] = (start_process(command, root / f"py-spy-{name.replace(' ', '-')}.log"), raw)
    await trio.sleep(1.0)
    log(f"profiling: {seconds:g} s of wrk on aether (2 instances) under py-spy")
    run = await wrk_run(node.ingress, seconds, WRK_CONNECTIONS, quiet=False)  # py-spy is already running
    log(describe_run("aether+py-spy", run))
    out: dict[str, Any] = {"wrk": {k: v for k, v in run.items() if k != "text"}}
    for name, (process, raw) in spies.items():
        with trio.fail_after(60):
            while process.poll() is None:
                await trio.sleep(0.2)
        if not raw.exists():
            out[name] = {"error": (root / f"py-spy-{name.replace(' ', '-')}.log").read_text()[-2000:]}
            continue
        out[name] = summarize_profile(raw)
        log(f"  {name}: {out[name]['samples']} samples; by package: {out[name]['by_package_pct']}")
        for function, pct in out[name]["top_functions_pct"].items():
            log(f"      {pct:5.1f}%  {function}")
    return out


# ====================================================================== phase 3: memory


def node_memory(node: Node) -> dict[str, Any]:
    tree = node.tree()
    return {
        "node": memory(node.pid),
        "kv replica": memory(tree["kv"][0]) if tree["kv"] else None,
    }


async def phase_memory(node: Node, opts: argparse.Namespace) -> dict[str, Any]:
    everyone = list(range(1, INSTANCES + 1))
    async with open_client([node.kv_endpoint], node.secret, request_timeout=30.0) as kv:
        await activate(kv, everyone, INSTANCES)
        await trio.sleep(opts.settle)  # idle
        tree = node.tree()
        if len(tree["instances"]) != INSTANCES or len(tree["templates"]) != 1:
            raise BenchError(f"expected 1 template and {INSTANCES} instances, found {tree}")
        # read them all within a short time so that PSS shares are consistent
        instances = [memory(pid) for pid in tree["instances"]]
        template = memory(tree["templates"][0])
        node_side = node_memory(node)
        await unload(kv, everyone)
    per = {k: statistics.median(m[k] for m in instances) for k in ("rss", "pss", "uss")}
    total_pss = sum(m["pss"] for m in instances) + template["pss"]
    out = {
        "instance_median": per,
        "instance_max": {k: max(m[k] for m in instances) for k in ("rss", "pss", "uss")},
        "template": template,
        "instances_plus_template_pss": total_pss,
        "per_instance_with_template_share_pss": total_pss / INSTANCES,
        **node_side,
    }
    log(
        f"  per idle instance (median of {INSTANCES}): RSS {per['rss']:.1f} MiB, PSS {per['pss']:.1f} MiB,"
        f" USS {per['uss']:.1f} MiB; template PSS {template['pss']:.1f} MiB;"
        f" (Σ PSS instances + template)/{INSTANCES} = {total_pss / INSTANCES:.1f} MiB"
    )
    for name in ("node", "kv replica"):
        m = out[name]
        log(f"  {name}: RSS {m['rss']:.1f} MiB, PSS {m['pss']:.1f} MiB, USS {m['uss']:.1f} MiB")
    return out


# ====================================================================== report


def all_runs(ingress: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        run for key in ("one", "unloaded", "two") for part in ingress[key].values() for run in part["runs"]
    ]


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "",
        "## Slice runtime benchmark",
        "",
        f"command: `{meta['command']}`",
        f"date: {meta['date']}; machine: {meta['machine']}; source: {meta['source']}",
        "",
    ]
    load, ingress, mem = results.get("load"), results.get("ingress"), results.get("memory")
    lines += ["| measure | figure | target | |", "| --- | --- | --- | --- |"]
    if load:
        rounds = ", ".join(f"{r['activate']['total_s']:.3f}" for r in load["rounds"])
        value = load["median_activate_s"]
        lines.append(
            f"| {INSTANCES} × echo LOAD→ACTIVE, warm (median of {len(load['rounds'])}: {rounds} s)"
            f" | {value:.3f} s | ≤ {TARGETS['load_s']:g} s | {verdict(value <= TARGETS['load_s'])} |"
        )
        lines.append(
            f"| {INSTANCES} × echo LOAD→ACTIVE, cold template (package installed)"
            f" | {load['cold']['activate']['total_s']:.3f} s | — | |"
        )
        lines.append(
            f"| {INSTANCES} × UNLOAD→deleted, warm (median) | {load['median_unload_s']:.3f} s | — | |"
        )
        lines.append(f"| install + 1st instance ACTIVE (cold package) | {load['install_1_s']:.2f} s | — | |")
        if "leader_rounds" in load:
            rounds = ", ".join(f"{r['activate']['total_s']:.3f}" for r in load["leader_rounds"])
            lines.append(
                f"| {INSTANCES} × echo via the cluster leader: blueprint written → all ACTIVE (median of"
                f" {len(load['leader_rounds'])}: {rounds} s)"
                f" | {load['leader_median_activate_s']:.3f} s | — | |"
            )
            lines.append(
                f"| {INSTANCES} × echo via the cluster leader: blueprint deleted → all deleted (median)"
                f" | {load['leader_median_unload_s']:.3f} s | — | |"
            )
    if ingress:
        for key, label in (("one", "1 instance"), ("two", "2 instances")):
            part = ingress[key]
            bare, aether = part["bare"], part["aether"]
            ratio = aether["rps"] / bare["rps"]
            added = aether["p50_ms"] - bare["p50_ms"]
            lines.append(
                f"| ingress req/s, {label}, {WRK_CONNECTIONS} conns (bare: {bare['rps']:.0f})"
                f" | {aether['rps']:.0f} = {ratio:.2f}× bare | ≥ {TARGETS['ratio']:g}× |"
                f" {verdict(ratio >= TARGETS['ratio'])} |"
            )
            node_us = aether["cpu_us_per_request"].get("node", 0.0)
            bare_us = bare["cpu_us_per_request"].get("bare server", 0.0)
            slice_us = aether["cpu_us_per_request"].get("slice instance(s)", 0.0)
            if node_us > 0 and bare_us > 0:
                lines.append(
                    f"| CPU-bound ratio, {label}: bare server µs/req ÷ node µs/req ({bare_us:.0f} ÷"
                    f" {node_us:.0f}; the slice's {slice_us:.0f}"
                    f" µs/req run on the other core) | {bare_us / node_us:.2f}× | ≥ {TARGETS['ratio']:g}× |"
                    f" {verdict(bare_us / node_us >= TARGETS['ratio'])} |"
                )
            lines.append(
                f"| p50 / p99, {label}, {WRK_CONNECTIONS} conns (bare: {bare['p50_ms']:.2f} /"
                f" {bare['p99_ms']:.2f} ms) | {aether['p50_ms']:.2f} / {aether['p99_ms']:.2f} ms;"
                f" added p50 {added:+.2f} ms | ≤ {TARGETS['added_p50_ms']:g} ms |"
                f" {verdict(added <= TARGETS['added_p50_ms'])} |"
            )
        for key, label in (("one", "1 instance"), ("two", "2 instances")):
            part = ingress[key]
            if "uvicorn" not in part:
                continue
            uvicorn, bare, aether = part["uvicorn"], part["bare"], part["aether"]
            ratio = aether["rps"] / uvicorn["rps"]
            lines.append(
                f"| aether ÷ uvicorn+uvloop+httptools, {label}, {WRK_CONNECTIONS} conns (uvicorn:"
                f" {uvicorn['rps']:.0f}, bare hypercorn: {bare['rps']:.0f} req/s; aether ÷ bare hypercorn"
                f" {aether['rps'] / bare['rps']:.2f}×; load average {aether['loadavg']:.1f})"
                f" | {ratio:.2f}× | ≥ {TARGETS['uvicorn_ratio']:g}× |"
                f" {verdict(ratio >= TARGETS['uvicorn_ratio'])} |"
            )
            lines.append(
                f"| aether req/s, {label}, {WRK_CONNECTIONS} conns (target for an idle machine; this one's"
                f" load average was {aether['loadavg']:.1f})"
                f" | {aether['rps']:.0f} | ≥ {TARGETS['rps']:g} |"
                f" {verdict(aether['rps'] >= TARGETS['rps'])} |"
            )
            if "ray serve" in part:
                ray = part["ray serve"]
                lines.append(
                    f"| Ray Serve (optional peer), {label}, {WRK_CONNECTIONS} conns: req/s, p50"
                    f" | {ray['rps']:.0f} (aether: {aether['rps'] / ray['rps']:.2f}× that),"
                    f" {ray['p50_ms']:.2f} ms | — | |"
                )
        part = ingress["unloaded"]
        if "uvicorn" in part:
            uvicorn, aether = part["uvicorn"], part["aether"]
            added = aether["p50_ms"] - uvicorn["p50_ms"]
            lines.append(
                f"| 1 connection: added p50 over uvicorn ({uvicorn['p50_ms']:.2f} ms) | {added:+.2f} ms"
                f" | ≤ {TARGETS['added_p50_1conn_ms']:g} ms |"
                f" {verdict(added <= TARGETS['added_p50_1conn_ms'])} |"
            )
        bare, aether = part["bare"], part["aether"]
        added = aether["p50_ms"] - bare["p50_ms"]
        lines.append(
            f"| 1 connection: req/s, p50 / p99 (bare: {bare['rps']:.0f}, {bare['p50_ms']:.2f} /"
            f" {bare['p99_ms']:.2f} ms) | {aether['rps']:.0f}, {aether['p50_ms']:.2f} /"
            f" {aether['p99_ms']:.2f} ms; added p50 {added:+.2f} ms | ≤ {TARGETS['added_p50_ms']:g} ms |"
            f" {verdict(added <= TARGETS['added_p50_ms'])} |"
        )
        if "ingress app only" in ingress["one"]:
            bare, only = ingress["one"]["bare"], ingress["one"]["ingress app only"]
            lines.append(
                f"| breakdown: the node's ingress app alone (no invoker, no slice),"
                f" {WRK_CONNECTIONS} conns | {only['rps']:.0f} req/s = {only['rps'] / bare['rps']:.2f}× bare;"
                f" p50 {only['p50_ms']:.2f} ms | — | |"
            )
        lines.append(
            f"| processes outside this benchmark during the wrk runs (median, % of one core)"
            f" | {statistics.median(r['cpu']['others'] for r in all_runs(ingress)):.0f}% | 0 | |"
        )
    if mem:
        per = mem["instance_median"]
        share = mem["per_instance_with_template_share_pss"]
        lines.append(
            f"| per idle instance, {INSTANCES} running: PSS (RSS {per['rss']:.1f}, USS {per['uss']:.1f})"
            f" | {per['pss']:.1f} MiB | ≤ {TARGETS['instance_mib']:g} MiB |"
            f" {verdict(per['pss'] <= TARGETS['instance_mib'])} |"
        )
        lines.append(
            f"| (Σ PSS of {INSTANCES} instances + template) / {INSTANCES} | {share:.1f} MiB |"
            f" ≤ {TARGETS['instance_mib']:g} MiB | {verdict(share <= TARGETS['instance_mib'])} |"
        )
        t = mem["template"]
        lines.append(
            f"| template process: RSS / PSS / USS"
            f" | {t['rss']:.1f} / {t['pss']:.1f} / {t['uss']:.1f} MiB | — | |"
        )
        for name in ("node", "kv replica"):
            m = mem[name]
            lines.append(
                f"| {name} process, {INSTANCES} instances: RSS / PSS / USS"
                f" | {m['rss']:.1f} / {m['pss']:.1f} / {m['uss']:.1f} MiB | — | |"
            )
        if load and load.get("node_idle_memory"):
            m = load["node_idle_memory"]["node"]
            lines.append(
                f"| node process, no instance: RSS / PSS / USS | {m['rss']:.1f} / {m['pss']:.1f} /"
                f" {m['uss']:.1f} MiB | — | |"
            )
    if ingress:
        lines += [
            "",
            f"CPU during the wrk runs (median): % of one core (the machine has"
            f" {os.cpu_count()} cores, so 100 % = one core) and CPU µs per request. 'others' is what"
            " processes outside this benchmark used meanwhile.",
            "",
        ]
        servers = {
            "bare": "bare server",
            "uvicorn": "uvicorn server",
            "ray serve": "ray serve",
            "ingress app only": "ingress app only",
        }
        for key, label in (("one", "1 instance"), ("two", "2 instances"), ("unloaded", "1 connection")):
            for side, part in ingress[key].items():
                cpu, per = part["cpu"], part["cpu_us_per_request"]
                idle_servers = {name for other, name in servers.items() if other != side}
                if side != "aether":
                    idle_servers |= {"node", "slice instance(s)", "ingress worker"}
                shown = ", ".join(
                    f"{k} {v:.0f}%" + (f" = {per[k]:.0f} µs/req" if per.get(k, 0) >= 10 else "")
                    for k, v in cpu.items()
                    if v >= 0.5 and k != "machine" and k not in idle_servers
                )
                lines.append(f"- {label}, {side}: {shown}; whole machine {cpu['machine']:.0f}%")
    lines.append("")
    return "\n".join(lines)


# ====================================================================== main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 s wrk runs, 3 load rounds")
    parser.add_argument(
        "--only", default=",".join(sorted(PHASES)), help="some phases only, e.g. --only ingress,memory"
    )
    parser.add_argument("--wrk-threads", type=int, default=1, choices=(1, 2))
    parser.add_argument(
        "--ingress-server",
        default="fast",
        choices=("trio", "fast", "none"),
        help="the node's ingress server (none: pass no flag, for trees that have none)",
    )
    parser.add_argument(
        "--ray-serve",
        action="store_true",
        help="also run Ray Serve as a peer (needs ray[serve]: uv run --with 'ray[serve]' ...)",
    )
    parser.add_argument(
        "--ingress-rounds", type=int, default=0, help="rounds of wrk runs per server (default 3, quick 2)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run py-spy on the node, its ingress worker and the slices",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="before each wrk run, wait up to this many seconds until processes outside the benchmark"
        " use at most --quiet-threshold %% of one core (a shared machine); 0: do not wait",
    )
    parser.add_argument("--quiet-threshold", type=float, default=15.0)
    parser.add_argument(
        "--quiet-budget", type=float, default=240.0, help="at most this many seconds of such waits in all"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--label", default="", help="what was measured, if not this git checkout")
    parser.add_argument("--time-limit", type=float, default=1200.0, help="watchdog, seconds")
    opts = parser.parse_args(argv)
    opts.only = {part.strip() for part in opts.only.split(",") if part.strip()}
    if not opts.only or opts.only - PHASES:
        parser.error(f"--only: a comma-separated list of {', '.join(sorted(PHASES))}")
    opts.rounds = 3 if opts.quick else 5
    opts.ingress_rounds = opts.ingress_rounds or (2 if opts.quick else 3)
    opts.seconds = 3.0 if opts.quick else 10.0
    opts.unloaded_seconds = 2.0 if opts.quick else 5.0
    opts.settle = 1.0 if opts.quick else 3.0
    return opts


def kill_everything(node: Node | None) -> None:
    for process in _STARTED:
        if process.poll() is None:
            with contextlib.suppress(OSError):
                process.kill()
    if node is not None:
        node.kill_leftovers()


async def run(root: Path, opts: argparse.Namespace, results: dict[str, Any], box: list[Node]) -> None:
    log("building the echo wheel index")
    source = root / "slices"
    shutil.copytree(
        REPO / "sample-slices" / "echo",
        source / "echo",
        ignore=shutil.ignore_patterns("__pycache__", "build", "dist", ".venv", "*.egg-info"),
    )
    index = root / "index"
    await trio.to_thread.run_sync(build_sample_index, source, index)
    node = Node(root, index, "" if opts.ingress_server == "none" else opts.ingress_server)
    box.append(node)
    log(f"starting the node (ingress {node.ingress}, kv {node.kv_endpoint})")
    results["meta"]["node_start_s"] = await node.start()
    try:
        with trio.fail_after(opts.time_limit):
            if "load" in opts.only:
                log("phase 1: LOAD→ACTIVE of 20 instances")
                results["load"] = await phase_load(node, opts)
            if "ingress" in opts.only:
                log("phase 2: ingress")
                results["ingress"] = await phase_ingress(node, root, opts)
            if "memory" in opts.only:
                log("phase 3: memory with 20 idle instances")
                results["memory"] = await phase_memory(node, opts)
    except trio.TooSlowError:
        raise BenchError(f"the run took longer than --time-limit {opts.time_limit:g} s") from None


def source_state() -> str:
    """The commit measured, and whether packages/ had uncommitted changes."""

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30, check=False
        )
        return result.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = [line for line in git("status", "--porcelain", "--", "packages").splitlines() if line]
    return f"commit {commit}" + (f" + {len(changed)} uncommitted files in packages/" if changed else "")


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="slicebench-"))
    box: list[Node] = []

    def watchdog() -> None:
        log(f"time limit of {opts.time_limit:g} s reached: killing every process this run started")
        kill_everything(box[0] if box else None)
        if not opts.keep:
            shutil.rmtree(root, ignore_errors=True)
        os._exit(3)

    timer = threading.Timer(opts.time_limit + 60, watchdog)
    timer.daemon = True
    timer.start()
    signal.signal(signal.SIGTERM, _interrupt)
    results: dict[str, Any] = {
        "meta": {
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()},"
            f" Python {platform.python_version()}",
            "command": " ".join(["uv run python benchmarks/slice_bench.py", *argv]).strip(),
            "tmp": str(root),
            "source": opts.label or source_state(),
        }
    }
    started = time.monotonic()
    code = 0
    try:
        trio.run(run, root, opts, results, box)
    except BenchError as error:
        log(f"FAILED: {type(error).__name__}: {error}")
        if box:
            log(f"node log tail:\n{box[0].log_tail()}")
        code = 1
    finally:
        timer.cancel()
        if box:
            box[0].stop()
        kill_everything(box[0] if box else None)
        if opts.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    results["meta"]["wall_s"] = time.monotonic() - started
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(report(results), flush=True)
    log(f"done in {results['meta']['wall_s']:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
