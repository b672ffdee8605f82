"""aether-kv benchmark: three replicas on 127.0.0.1, compared with raw pysyncobj on the same settings.

    uv run python benchmarks/kv_bench.py            # full run (~5 minutes on 2 cores)
    uv run python benchmarks/kv_bench.py --quick    # shorter runs, same phases (~2 minutes)
    uv run python benchmarks/kv_bench.py --soak 30  # only: 30 s of full load per path, count leader changes

What it measures (figures and notes: benchmarks/README.md):

1. Write throughput (64 concurrent writers for a fixed time) and single-writer latency (sequential puts):
   a. in-process API (`open_store`) on the leader — three worker processes of this script; also the
      single-write latency from a follower in-process;
   b. the client protocol — three `aether-kv serve` processes (LocalCluster), load from this process
      through `open_client` (one client, and four clients);
   c. raw pysyncobj `ReplDict` with the same SyncObjConf (no fsync: our store does strictly more work),
      driven by 64 threads with sync=True and by 64 callback chains.
   Leader changes are counted as Raft term changes between the start and the end of each full-load run.
2. Watch delivery latency to a watcher connected to a follower, writes through the leader.
3. Leader failover: SIGKILL the leader while writers keep trying; time to the first accepted write,
   with each survivor's view of the election; then restart it and note whether that moved the term.
4. (`etcd` part, benchmarks/kv_etcd.py) aether-kv next to a 3-member etcd in the same run, with the same
   client shape: throughput and CPU per write, put / linearizable read / watch latency, idle CPU,
   failover; medians of several rounds and the ratios to etcd. Skipped, and said so, without etcd.

Diagnostics printed alongside: the same in-process store with durable=False (isolates the journal fsync),
CPU used by each process during the load runs, which replicas compacted their log (wrote a full dump)
during a run, and whether the three replicas hold identical data afterwards. Experiment knob:
KV_BENCH_SWITCH_INTERVAL=<seconds> sets the worker processes' GIL switch interval.

Worker processes talk to this process with JSON lines: commands on their stdin, replies on stdout
(prefixed with `@@bench `); they exit when their stdin closes, so nothing outlives the benchmark.
Everything lives in one temporary directory that is removed at the end (unless --keep); a watchdog
kills everything this run started if it overruns --time-limit.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import platform
import queue
import random
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

PROTO = "@@bench "
KEYS_PER_WRITER = 256
READY_TIMEOUT = 60.0
LATENCY_JITTER = 0.01
"""Sequential puts start after a random 0–10 ms pause: back to back, each put would start at the same
phase of pysyncobj's 10 ms tick / append-entries cadence and the figure would depend on that phase
(we saw p50 lock at either ~15 or ~23 ms from run to run). With the pause, puts arrive at random
phases, like independent writes do."""
_CLUSTERS: list[Any] = []  # LocalClusters of this run, for the watchdog

TARGETS = {
    "inproc_vs_raw": 0.8,  # in-process throughput ≥ 0.8 × raw pysyncobj
    "leader_p50_ms": 15.0,
    "follower_p50_ms": 30.0,
    "leader_changes": 0,
    "watch_p99_ms": 50.0,
    "failover_s": 1.0,
}


# ====================================================================== small helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * p / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize_ms(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"n": 0}
    ms = [s * 1000.0 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "mean_ms": statistics.fmean(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) from /proc; 0.0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by some processes over an interval, as % of one core (200 % = both cores of a 2-core box)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.self_start = time.process_time()
        self.wall = time.perf_counter()

    def stop(self, *, include_self: bool = False) -> dict[str, float]:
        wall = time.perf_counter() - self.wall
        out = {name: 100.0 * (cpu_seconds(pid) - self.start[name]) / wall for name, pid in self.pids.items()}
        if include_self:
            out["bench process"] = 100.0 * (time.process_time() - self.self_start) / wall
        out["total"] = sum(out.values())
        return out


def dump_mtimes(paths: dict[str, Path]) -> dict[str, float | None]:
    """mtime of each replica's pysyncobj full-dump file (rewritten by every log compaction)."""
    out: dict[str, float | None] = {}
    for name, path in paths.items():
        try:
            out[name] = path.stat().st_mtime
        except OSError:
            out[name] = None
    return out


def compacted(before: dict[str, float | None], paths: dict[str, Path]) -> list[str]:
    """Replicas whose log compaction (a new full dump) happened since `before`."""
    after = dump_mtimes(paths)
    return sorted(name for name in paths if after[name] is not None and after[name] != before[name])


def digest_items(items: list[tuple[Any, ...]]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(repr(item).encode())
    return h.hexdigest()[:16]


def emit(message: dict[str, Any]) -> None:
    """Worker → coordinator: one protocol line on stdout."""
    sys.stdout.write(PROTO + json.dumps(message) + "\n")
    sys.stdout.flush()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bench_value(size: int) -> bytes:
    return (b"aether-kv-bench-" * (size // 16 + 1))[:size]


# ====================================================================== worker: aether in-process


async def aether_throughput(
    put: Callable[[str, bytes], Awaitable[Any]], *, duration: float, writers: int, value: bytes, prefix: str
) -> dict[str, Any]:
    """`writers` trio tasks putting back to back for `duration` s; ops acknowledged, errors, latency."""
    import trio

    from aether_kv import KVError

    counts = [0] * writers
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    deadline = time.perf_counter() + duration

    async def writer(index: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            key = f"{prefix}/{index:03d}/{i % KEYS_PER_WRITER}"
            i += 1
            started = time.perf_counter()
            try:
                await put(key, value)
            except KVError as error:
                errors[type(error).__name__] += 1
                await trio.sleep(0.001)
            else:
                counts[index] += 1
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for index in range(writers):
            nursery.start_soon(writer, index)
    elapsed = time.perf_counter() - started
    ops = sum(counts)
    return {
        "ops": ops,
        "elapsed_s": elapsed,
        "ops_per_s": ops / elapsed,
        "errors": dict(errors),
        "per_op": summarize_ms(latencies),
    }


async def aether_latency(
    put: Callable[[str, bytes], Awaitable[Any]], *, count: int, value: bytes, prefix: str
) -> dict[str, Any]:
    """`count` sequential puts, each after a random pause (see LATENCY_JITTER); latency of each
    acknowledged one."""
    import trio

    from aether_kv import KVError

    latencies: list[float] = []
    errors: Counter[str] = Counter()
    jitter = random.Random(7)
    for i in range(count):
        await trio.sleep(jitter.uniform(0, LATENCY_JITTER))
        started = time.perf_counter()
        try:
            await put(f"{prefix}/{i % KEYS_PER_WRITER}", value)
        except KVError as error:
            errors[type(error).__name__] += 1
        else:
            latencies.append(time.perf_counter() - started)
    return {**summarize_ms(latencies), "errors": dict(errors)}


def aether_status_dict(status: Any) -> dict[str, Any]:
    return {
        "self": status.self_address,
        "leader": status.leader,
        "is_leader": status.is_leader,
        "term": status.term,
        "has_quorum": status.has_quorum,
        "commit_index": status.commit_index,
        "last_applied": status.last_applied,
    }


async def aether_worker(args: argparse.Namespace) -> None:
    import trio

    from aether_kv import RaftConfig, open_store, wait_for_leader

    config = RaftConfig(
        raft_address=args.raft,
        peers=tuple(args.peers.split(",")),
        data_dir=Path(args.data_dir),
        secret=Path(args.secret_file).read_text().strip(),
        durable=args.mode != "aether-nosync",  # diagnostic variant: the same store without journal fsync
    )
    value = bench_value(args.value_size)
    async with open_store(config) as store:
        await wait_for_leader(store, timeout=READY_TIMEOUT)
        emit({"event": "ready", **aether_status_dict(store.status_now())})
        while True:
            line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line:
                break
            command = json.loads(line)
            kind = command["cmd"]
            if kind == "exit":
                break
            if kind == "status":
                emit({"event": "status", **aether_status_dict(store.status_now())})
            elif kind == "throughput":
                before = store.status_now()
                result = await aether_throughput(
                    store.put,
                    duration=command["duration"],
                    writers=command["writers"],
                    value=value,
                    prefix=f"bench/{args.index}",
                )
                after = store.status_now()
                result.update(
                    term_before=before.term,
                    term_after=after.term,
                    leader_before=before.leader,
                    leader_after=after.leader,
                    was_leader=before.is_leader,
                )
                emit({"event": "throughput", **result})
            elif kind == "latency":
                status = store.status_now()
                result = await aether_latency(
                    store.put, count=command["count"], value=value, prefix=f"lat/{args.index}"
                )
                emit({"event": "latency", "is_leader": status.is_leader, **result})
            elif kind == "digest":
                await store.barrier()
                kvs = (await store.range("")).kvs
                items = [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in kvs]
                emit({"event": "digest", "digest": digest_items(items), "revision": store.revision})
            else:
                emit({"event": "error", "message": f"unknown command {kind!r}"})


# ====================================================================== worker: raw pysyncobj


RAW_PERIOD = 0.005
"""Unpatched pysyncobj ticks and sends on a fixed period: raw runs keep the 5 ms aether-kv used before its
replication became event-driven (aether-kv's 100 ms idle heartbeat would be raw's latency)."""


def raw_conf(data_dir: Path, secret: str) -> Any:
    """The SyncObjConf aether-kv's replica uses (see aether_kv/_raft.py), minus its fsync, transport and
    patches, with the fixed 5 ms period (RAW_PERIOD)."""
    from pysyncobj import SyncObjConf

    from aether_kv import RaftConfig

    same = RaftConfig(raft_address="", peers=(), data_dir=data_dir, secret=secret)  # its defaults
    return SyncObjConf(
        password=secret,
        appendEntriesPeriod=RAW_PERIOD,
        raftMinTimeout=same.election_min,
        raftMaxTimeout=same.election_max,
        connectionTimeout=same.connection_timeout,
        leaderFallbackTimeout=same.leader_fallback_timeout,
        journalFile=str(data_dir / "raft.journal"),
        fullDumpFile=str(data_dir / "raft.dump"),
        dynamicMembershipChange=True,
        useFork=False,
        commandsWaitLeader=True,
        autoTickPeriod=RAW_PERIOD,
        logCompactionMinEntries=100_000,
        logCompactionMinTime=600,
    )


def raw_status(obj: Any) -> dict[str, Any]:
    for _ in range(20):
        try:
            raw = obj.getStatus()
            break
        except RuntimeError:  # a dict changed size on the tick thread; read again
            time.sleep(0.001)
    else:
        raise RuntimeError("could not read pysyncobj status")
    leader = raw.get("leader")
    return {
        "self": raw["self"].address,
        "leader": leader.address if leader is not None else None,
        "is_leader": raw["state"] == 2,
        "term": raw["raft_term"],
        "has_quorum": bool(raw["has_quorum"]),
        "commit_index": raw["commit_idx"],
        "last_applied": raw["last_applied"],
    }


def raw_throughput_threads(d: Any, *, duration: float, writers: int, value: bytes, prefix: str) -> dict:
    """`writers` threads doing `d.set(k, v, sync=True)` back to back."""
    from pysyncobj import SyncObjException

    counts = [0] * writers
    errors: list[Counter[str]] = [Counter() for _ in range(writers)]
    latencies: list[list[float]] = [[] for _ in range(writers)]
    deadline = time.perf_counter() + duration

    def writer(index: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            key = f"{prefix}/{index:03d}/{i % KEYS_PER_WRITER}"
            i += 1
            started = time.perf_counter()
            try:
                d.set(key, value, sync=True, timeout=5.0)
            except SyncObjException as error:
                errors[index][f"SyncObjException({error.errorCode})"] += 1
                time.sleep(0.001)
            else:
                counts[index] += 1
                latencies[index].append(time.perf_counter() - started)

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(writers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + 30)
    elapsed = time.perf_counter() - started
    ops = sum(counts)
    return {
        "ops": ops,
        "elapsed_s": elapsed,
        "ops_per_s": ops / elapsed,
        "errors": dict(sum(errors, Counter())),
        "per_op": summarize_ms([x for chunk in latencies for x in chunk]),
    }


def raw_throughput_callbacks(d: Any, *, duration: float, writers: int, value: bytes, prefix: str) -> dict:
    """`writers` chains of `d.set(k, v, callback=...)`: each completion (on the tick thread) submits the
    writer's next set. No client threads, so this is pysyncobj's best case for 64 in flight."""
    from pysyncobj import FAIL_REASON

    lock = threading.Lock()
    counts = [0] * writers
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    finished = threading.Event()
    running = [writers]
    deadline = time.perf_counter() + duration

    def submit(index: int, i: int) -> None:
        started = time.perf_counter()

        def done(_result: Any, reason: int) -> None:
            now = time.perf_counter()
            with lock:
                if reason == FAIL_REASON.SUCCESS:
                    counts[index] += 1
                    latencies.append(now - started)
                else:
                    errors[f"FAIL_REASON({reason})"] += 1
                if now >= deadline:
                    running[0] -= 1
                    if running[0] == 0:
                        finished.set()
                    return
            submit(index, i + 1)

        d.set(f"{prefix}/{index:03d}/{i % KEYS_PER_WRITER}", value, callback=done)

    started = time.perf_counter()
    for index in range(writers):
        submit(index, 0)
    complete = finished.wait(duration + 30)
    elapsed = time.perf_counter() - started
    ops = sum(counts)
    return {
        "ops": ops,
        "elapsed_s": elapsed,
        "ops_per_s": ops / elapsed,
        "errors": dict(errors),
        "lost_callbacks": 0 if complete else running[0],
        "per_op": summarize_ms(latencies),
    }


def raw_latency(d: Any, *, count: int, value: bytes, prefix: str) -> dict[str, Any]:
    from pysyncobj import SyncObjException

    latencies: list[float] = []
    errors: Counter[str] = Counter()
    jitter = random.Random(7)
    for i in range(count):
        time.sleep(jitter.uniform(0, LATENCY_JITTER))
        started = time.perf_counter()
        try:
            d.set(f"{prefix}/{i % KEYS_PER_WRITER}", value, sync=True, timeout=5.0)
        except SyncObjException as error:
            errors[f"SyncObjException({error.errorCode})"] += 1
        else:
            latencies.append(time.perf_counter() - started)
    return {**summarize_ms(latencies), "errors": dict(errors)}


def raw_worker(args: argparse.Namespace) -> None:
    from pysyncobj import SyncObj
    from pysyncobj.batteries import ReplDict

    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = Path(args.secret_file).read_text().strip()
    d = ReplDict()
    peers = [p for p in args.peers.split(",") if p != args.raft]
    obj = SyncObj(args.raft, peers, raw_conf(data_dir, secret), consumers=[d])
    value = bench_value(args.value_size)
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        status = raw_status(obj)
        if status["leader"] is not None and status["has_quorum"]:
            break
        if time.monotonic() > deadline:
            emit({"event": "error", "message": "no leader with quorum"})
            return
        time.sleep(0.05)
    emit({"event": "ready", **status})
    for line in sys.stdin:
        command = json.loads(line)
        kind = command["cmd"]
        if kind == "exit":
            break
        if kind == "status":
            emit({"event": "status", **raw_status(obj)})
        elif kind == "throughput":
            before = raw_status(obj)
            term_before = obj._getTerm()
            run = raw_throughput_callbacks if command.get("style") == "callbacks" else raw_throughput_threads
            result = run(
                d,
                duration=command["duration"],
                writers=command["writers"],
                value=value,
                prefix=f"bench/{args.index}",
            )
            after = raw_status(obj)
            result.update(
                term_before=term_before,
                term_after=obj._getTerm(),
                leader_before=before["leader"],
                leader_after=after["leader"],
                was_leader=before["is_leader"],
            )
            emit({"event": "throughput", **result})
        elif kind == "latency":
            status = raw_status(obj)
            result = raw_latency(d, count=command["count"], value=value, prefix=f"lat/{args.index}")
            emit({"event": "latency", "is_leader": status["is_leader"], **result})
        elif kind == "digest":
            items = sorted(d.items())
            emit(
                {
                    "event": "digest",
                    "digest": digest_items(items),
                    "revision": raw_status(obj)["last_applied"],
                }
            )
        else:
            emit({"event": "error", "message": f"unknown command {kind!r}"})
    obj.destroy()


# ====================================================================== coordinator: worker groups


class WorkerError(RuntimeError):
    pass


class WorkerGroup:
    """Three worker processes of this script (`_replica --mode aether|aether-nosync|raw`): one Raft group."""

    def __init__(self, mode: str, root: Path, *, value_size: int, registry: list[subprocess.Popen]) -> None:
        self.mode = mode
        self.root = root / f"{mode}-group"
        self.root.mkdir(parents=True)
        secret_file = self.root / "secret"
        secret_file.write_text(secrets.token_urlsafe(32) + "\n")
        os.chmod(secret_file, 0o600)
        self.addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
        self.processes: list[subprocess.Popen[str]] = []
        self.queues: list[queue.Queue[dict[str, Any] | None]] = []
        self.logs = [self.root / f"worker{i}.log" for i in range(3)]
        for i, address in enumerate(self.addresses):
            command = [
                sys.executable,
                os.path.abspath(__file__),
                "_replica",
                "--mode",
                mode,
                "--index",
                str(i),
                "--raft",
                address,
                "--peers",
                ",".join(self.addresses),
                "--data-dir",
                str(self.root / f"r{i}"),
                "--secret-file",
                str(secret_file),
                "--value-size",
                str(value_size),
            ]
            with open(self.logs[i], "wb") as stderr:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                    bufsize=1,
                )
            registry.append(process)
            self.processes.append(process)
            lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
            self.queues.append(lines)
            threading.Thread(target=self._read, args=(process, lines), daemon=True).start()

    @staticmethod
    def _read(process: subprocess.Popen[str], lines: queue.Queue[dict[str, Any] | None]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(PROTO):
                lines.put(json.loads(line[len(PROTO) :]))
        lines.put(None)

    def _tail(self, i: int) -> str:
        try:
            return self.logs[i].read_text()[-3000:]
        except OSError:
            return ""

    def receive(self, i: int, timeout: float) -> dict[str, Any]:
        try:
            message = self.queues[i].get(timeout=timeout)
        except queue.Empty:
            raise WorkerError(
                f"{self.mode} worker {i}: no answer within {timeout:g} s\n{self._tail(i)}"
            ) from None
        if message is None:
            raise WorkerError(f"{self.mode} worker {i} exited\n{self._tail(i)}")
        if message.get("event") == "error":
            raise WorkerError(f"{self.mode} worker {i}: {message['message']}\n{self._tail(i)}")
        return message

    def send(self, i: int, command: dict[str, Any]) -> None:
        stdin = self.processes[i].stdin
        assert stdin is not None
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()

    def request(self, i: int, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.send(i, command)
        return self.receive(i, timeout)

    def dump_paths(self, leader: int) -> dict[str, Path]:
        return {
            ("leader" if i == leader else f"follower {i}"): self.root / f"r{i}" / "raft.dump"
            for i in range(3)
        }

    def digests(self) -> dict[str, Any]:
        """Do the three replicas hold the same data? (retried while the last entries are applied)"""
        for _ in range(20):
            answers = [self.request(i, {"cmd": "digest"}, 30) for i in range(3)]
            if len({(a["digest"], a["revision"]) for a in answers}) == 1:
                return {"agree": True, "revision": answers[0]["revision"], "digest": answers[0]["digest"]}
            time.sleep(0.5)
        return {"agree": False, "answers": [(a["digest"], a["revision"]) for a in answers]}

    def pids(self, leader: int) -> dict[str, int]:
        return {
            ("leader" if i == leader else f"follower {i}"): process.pid
            for i, process in enumerate(self.processes)
        }

    def wait_ready(self) -> None:
        for i in range(3):
            self.receive(i, READY_TIMEOUT)

    def roles(self) -> tuple[int, int, list[dict[str, Any]]]:
        """(leader index, a follower index, statuses) once all three agree on one leader."""
        deadline = time.monotonic() + 30
        while True:
            statuses = [self.request(i, {"cmd": "status"}, 10) for i in range(3)]
            leaders = [i for i, s in enumerate(statuses) if s["is_leader"]]
            agreed = {s["leader"] for s in statuses}
            if len(leaders) == 1 and agreed == {self.addresses[leaders[0]]}:
                follower = next(i for i in range(3) if i != leaders[0])
                return leaders[0], follower, statuses
            if time.monotonic() > deadline:
                raise WorkerError(f"{self.mode}: replicas do not agree on a leader: {statuses}")
            time.sleep(0.2)

    def close(self) -> None:
        for i, process in enumerate(self.processes):
            if process.poll() is None:
                with contextlib.suppress(OSError, ValueError):
                    self.send(i, {"cmd": "exit"})
                    assert process.stdin is not None
                    process.stdin.close()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_group(mode: str, root: Path, opts: argparse.Namespace, registry: list[subprocess.Popen]) -> dict:
    """In-process (aether) or raw pysyncobj group: throughput and latency on the leader, latency on a
    follower; or, with --soak, one long full-load run."""
    log(f"{mode}: starting 3 worker replicas")
    group = WorkerGroup(mode, root, value_size=opts.value_size, registry=registry)
    results: dict[str, Any] = {}
    try:
        group.wait_ready()
        leader, follower, statuses = group.roles()
        results["leader"] = group.addresses[leader]
        results["start_term"] = statuses[leader]["term"]
        log(f"{mode}: leader is worker {leader} ({group.addresses[leader]}), term {statuses[leader]['term']}")
        styles = ["threads", "callbacks"] if mode == "raw" else ["trio"]
        budget = opts.duration + 60
        if opts.soak:
            style = styles[-1] if mode == "raw" else styles[0]
            log(f"{mode}: soak, {opts.writers} writers for {opts.soak:g} s ({style})")
            meter = CpuMeter(group.pids(leader))
            dumps = dump_mtimes(group.dump_paths(leader))
            results["soak"] = group.request(
                leader,
                {"cmd": "throughput", "duration": opts.soak, "writers": opts.writers, "style": style},
                opts.soak + 60,
            )
            results["soak"]["cpu_percent"] = meter.stop()
            results["soak"]["compactions"] = compacted(dumps, group.dump_paths(leader))
            results["consistency"] = group.digests()
            return results
        for style in styles:
            warm = {"cmd": "throughput", "duration": opts.warmup, "writers": opts.writers, "style": style}
            group.request(leader, warm, budget)
            log(f"{mode}: throughput, {opts.writers} writers for {opts.duration:g} s ({style})")
            command = {
                "cmd": "throughput",
                "duration": opts.duration,
                "writers": opts.writers,
                "style": style,
            }
            meter = CpuMeter(group.pids(leader))
            dumps = dump_mtimes(group.dump_paths(leader))
            results[f"throughput_{style}"] = group.request(leader, command, budget)
            results[f"throughput_{style}"]["cpu_percent"] = meter.stop()
            results[f"throughput_{style}"]["compactions"] = compacted(dumps, group.dump_paths(leader))
        log(f"{mode}: latency, {opts.latency_count} sequential puts on the leader")
        results["latency_leader"] = group.request(
            leader, {"cmd": "latency", "count": opts.latency_count}, 120
        )
        log(f"{mode}: latency, {opts.latency_count} sequential puts on a follower")
        results["latency_follower"] = group.request(
            follower, {"cmd": "latency", "count": opts.latency_count}, 120
        )
        _, _, statuses = group.roles()
        results["end_term"] = max(s["term"] for s in statuses)
        results["consistency"] = group.digests()
        return results
    finally:
        group.close()
        for i in range(3):
            results.setdefault("worker_logs", {})[i] = group._tail(i)[-600:]


# ====================================================================== coordinator: client protocol


async def client_status(endpoint: str, secret: str, timeout: float = 1.0) -> Any:
    import trio

    from aether_kv import open_client

    with trio.fail_after(timeout + 0.5):
        async with open_client(
            [endpoint], secret, request_timeout=timeout, connect_timeout=timeout
        ) as client:
            return await client.status()


async def cluster_statuses(cluster: Any) -> dict[str, Any]:
    """replica id → Status (or the error text) from each replica's own endpoint."""
    import trio

    out: dict[str, Any] = {}
    for spec in cluster.replicas:
        try:
            out[spec.replica_id] = await client_status(spec.client_address, cluster.secret)
        except (Exception, trio.TooSlowError) as error:
            out[spec.replica_id] = f"{type(error).__name__}: {error}"
    return out


async def wait_healthy(cluster: Any, timeout: float = 60.0) -> tuple[Any, str]:
    """All replicas answer, agree on one leader with quorum and are caught up (applied ≥ leader's commit
    index at the first look). Returns (leader spec, term)."""
    import trio

    from aether_kv._local import wait_until_ready

    await wait_until_ready(cluster, timeout=timeout)
    with trio.fail_after(timeout):
        while True:
            statuses = await cluster_statuses(cluster)
            good = [s for s in statuses.values() if not isinstance(s, str)]
            leaders = {s.leader for s in good}
            if len(good) == len(cluster.replicas) and len(leaders) == 1 and None not in leaders:
                leader_address = leaders.pop()
                leader_status = next(s for s in good if s.self_address == leader_address)
                if all(s.has_quorum and s.last_applied >= leader_status.commit_index - 1 for s in good):
                    spec = next(r for r in cluster.replicas if r.raft_address == leader_address)
                    return spec, leader_status.term
            await trio.sleep(0.1)


async def client_throughput(
    cluster: Any,
    leader: Any,
    opts: argparse.Namespace,
    *,
    clients: int,
    duration: float,
    value: bytes,
    tag: str,
) -> dict[str, Any]:
    """`opts.writers` tasks spread over `clients` clients, endpoints listed leader first."""
    import trio

    from aether_kv import open_client

    endpoints = [leader.client_address] + [e for e in cluster.endpoints if e != leader.client_address]
    before = await client_status(leader.client_address, cluster.secret)
    per_client = opts.writers // clients
    results: list[dict[str, Any]] = [{} for _ in range(clients)]
    reconnect_endpoints: list[str | None] = []

    async def one(index: int) -> None:
        async with open_client(endpoints, cluster.secret) as client:
            await client.barrier()  # connect before the clock starts
            first = client._connection
            results[index] = await aether_throughput(
                client.put, duration=duration, writers=per_client, value=value, prefix=f"{tag}/{index}"
            )
            reconnect_endpoints.append(None if client._connection is first else client.endpoint)

    meter = CpuMeter(
        {
            ("leader" if replica_id == leader.replica_id else f"follower {replica_id}"): process.pid
            for replica_id, process in cluster.processes.items()
        }
    )
    paths = {
        ("leader" if r.replica_id == leader.replica_id else f"follower {r.replica_id}"): r.data_dir
        / "raft.dump"
        for r in cluster.replicas
    }
    dumps = dump_mtimes(paths)
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for index in range(clients):
            nursery.start_soon(one, index)
    elapsed = time.perf_counter() - started
    cpu = meter.stop(include_self=True)
    after = await client_status(leader.client_address, cluster.secret)
    ops = sum(r["ops"] for r in results)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    return {
        "clients": clients,
        "writers": per_client * clients,
        "ops": ops,
        "elapsed_s": elapsed,
        "ops_per_s": ops / max(r["elapsed_s"] for r in results),
        "errors": dict(errors),
        "clients_reconnected": sum(1 for e in reconnect_endpoints if e is not None),
        "per_op_p50_ms": statistics.fmean(r["per_op"].get("p50_ms", math.nan) for r in results),
        "per_op_p99_ms": max(r["per_op"].get("p99_ms", math.nan) for r in results),
        "term_before": before.term,
        "term_after": after.term,
        "leader_before": before.leader,
        "leader_after": after.leader,
        "cpu_percent": cpu,
        "compactions": compacted(dumps, paths),
    }


async def cluster_digests(cluster: Any) -> dict[str, Any]:
    """Each replica's data through its own endpoint (barrier first), compared."""
    import trio

    from aether_kv import open_client

    answers: list[tuple[str, int]] = []
    for _ in range(20):
        answers = []
        for spec in cluster.replicas:
            async with open_client([spec.client_address], cluster.secret, request_timeout=10) as client:
                await client.barrier()
                result = await client.range("")
                items = [
                    (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in result.kvs
                ]
                answers.append((digest_items(items), result.revision))
        if len(set(answers)) == 1:
            return {"agree": True, "revision": answers[0][1], "digest": answers[0][0]}
        await trio.sleep(0.5)
    return {"agree": False, "answers": answers}


async def client_latency(cluster: Any, endpoint: str, count: int, value: bytes, tag: str) -> dict[str, Any]:
    from aether_kv import open_client

    async with open_client([endpoint], cluster.secret) as client:
        await client.barrier()
        return await aether_latency(client.put, count=count, value=value, prefix=tag)


async def watch_latency(cluster: Any, leader: Any, follower: Any, count: int, interval: float) -> dict:
    """Writer on the leader's endpoint only; watchers on a follower's endpoint only (and, for reference,
    on the leader's). Values carry time.time() at send; the put's acknowledgement time is kept by
    revision. Delivery latency = watcher receive time − put acknowledgement time (also − send time)."""
    import trio

    from aether_kv import open_client

    acks: dict[int, tuple[float, float]] = {}  # revision → (sent, acknowledged)
    received: dict[str, dict[int, float]] = {"follower": {}, "leader": {}}
    ready: dict[str, trio.Event] = {"follower": trio.Event(), "leader": trio.Event()}
    reconnects: dict[str, int] = {}
    prefix = "watchbench/"

    async def watcher(name: str, endpoint: str, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with open_client([endpoint], cluster.secret) as client:
            watch = client.watch(prefix)
            task_status.started()
            try:
                async for events in watch:
                    now = time.time()
                    for event in events:
                        if event.kv.key == prefix + "ready":
                            ready[name].set()
                        else:
                            received[name][event.revision] = now
            finally:
                reconnects[name] = watch.reconnects

    async with open_client([leader.client_address], cluster.secret) as writer, trio.open_nursery() as nursery:
        await nursery.start(watcher, "follower", follower.client_address)
        await nursery.start(watcher, "leader", leader.client_address)
        with trio.fail_after(10):
            while not all(event.is_set() for event in ready.values()):
                await writer.put(prefix + "ready", b"1")
                with trio.move_on_after(0.5):
                    for event in ready.values():
                        await event.wait()
        for i in range(count):
            sent = time.time()
            result = await writer.put(f"{prefix}{i % 64}", json.dumps({"sent": sent}).encode())
            acks[result.revision] = (sent, time.time())
            await trio.sleep(interval)
        with trio.move_on_after(5):
            while any(not set(acks) <= set(r) for r in received.values()):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()

    out: dict[str, Any] = {"puts": count, "interval_s": interval}
    for name, got in received.items():
        from_ack = [got[rev] - ack for rev, (_, ack) in acks.items() if rev in got]
        from_send = [got[rev] - sent for rev, (sent, _) in acks.items() if rev in got]
        out[name] = {
            "delivered": len(from_ack),
            "missing": len(acks) - len(from_ack),
            "before_ack": sum(1 for x in from_ack if x < 0),
            "reconnects": reconnects.get(name, 0),
            "from_ack": summarize_ms(from_ack),
            "from_send": summarize_ms(from_send),
        }
    return out


async def monitor_replica(spec: Any, secret: str, timeline: list[tuple[float, str, Any]], stop: Any) -> None:
    """Poll one replica's own status every ~10 ms over a persistent connection; log every change of
    (term, is_leader, leader) — or of reachability — with its time.time()."""
    import trio

    from aether_kv import KVError, open_client

    last: Any = None
    async with open_client([spec.client_address], secret, request_timeout=0.2, connect_timeout=0.2) as client:
        while not stop.is_set():
            try:
                with trio.fail_after(0.3):
                    status = await client.status()
                current: Any = (status.term, status.is_leader, status.leader)
            except (KVError, trio.TooSlowError):
                current = "unreachable"
            if current != last:
                timeline.append((time.time(), spec.replica_id, current))
                last = current
            await trio.sleep(0.01)


async def peer_links(cluster: Any, specs: list[Any]) -> dict[str, str]:
    """Each replica's own view of its Raft connections (pysyncobj's isNodeConnected), e.g.
    {"kv2": "kv1 up, kv3 down"}."""
    names = {r.raft_address: r.replica_id for r in cluster.replicas}
    out = {}
    for spec in specs:
        try:
            status = await client_status(spec.client_address, cluster.secret, timeout=0.5)
        except Exception as error:
            out[spec.replica_id] = f"status failed: {error}"
            continue
        out[spec.replica_id] = ", ".join(
            f"{names.get(m.raft_address, m.raft_address)} {'up' if m.connected else 'down'}"
            for m in status.members
            if m.raft_address != status.self_address
        )
    return out


def describe_timeline(
    timeline: list[tuple[float, str, Any]], zero: float, names: dict[str, str]
) -> list[str]:
    out = []
    for at, replica_id, state in timeline:
        if state == "unreachable":
            text = "unreachable"
        else:
            term, is_leader, leader = state
            text = f"term {term}, " + ("LEADER" if is_leader else f"leader={names.get(leader, leader)}")
        out.append(f"{(at - zero) * 1000:+7.0f} ms {replica_id}: {text}")
    return out


_STARTED_AT: dict[int, float] = {}  # id(cluster) → when one of its replicas last (re)started


def cluster_started_at(cluster: Any) -> float:
    return _STARTED_AT.get(id(cluster), 0.0)


async def failover_once(cluster: Any, run: int, opts: argparse.Namespace) -> dict[str, Any]:
    """SIGKILL the leader while writers keep trying; time to the first write accepted after the kill.
    Then restart it and record whether the rejoin disturbed the leader."""
    import trio

    from aether_kv import KVError, open_client

    # Steady state: pysyncobj drops a Raft connection on which nothing was *read* for connectionTimeout
    # (30 s) — it notices when it next sends on it. Follower-to-follower links carry no traffic, so in a
    # cluster that has run for 30 s the first vote request between the survivors is lost. Kill only once
    # every link is at least that old, as in a cluster that has been up for a while.
    wait = opts.failover_settle - (time.time() - cluster_started_at(cluster))
    if wait > 0:
        log(
            f"failover {run}: waiting {wait:.0f} s so that all Raft links are"
            f" ≥ {opts.failover_settle:g} s old"
        )
        await trio.sleep(wait)
    leader, term = await wait_healthy(cluster)
    names = {r.raft_address: r.replica_id for r in cluster.replicas}
    survivors = [r for r in cluster.replicas if r.replica_id != leader.replica_id]
    endpoints = [leader.client_address] + [r.client_address for r in survivors]
    kill_at: list[float] = []
    first_ok: list[float] = []
    timeline: list[tuple[float, str, Any]] = []
    attempts = Counter[str]()
    value = bench_value(opts.value_size)
    attempt_timeout = opts.failover_attempt_timeout

    def new_leader() -> tuple[float, str, int] | None:
        for at, replica_id, state in timeline:
            if kill_at and at >= kill_at[0] and state != "unreachable" and state[1]:
                return at, replica_id, state[0]
        return None

    async def writer(index: int) -> None:
        i = 0
        while not first_ok:
            started = time.time()
            i += 1
            try:
                with trio.fail_after(attempt_timeout):
                    await client.put(f"failover/{run}/{index}/{i % 64}", value)
            except (KVError, trio.TooSlowError) as error:
                attempts[type(error).__name__] += 1
                await trio.sleep(0.005)
                continue
            attempts["ok"] += 1
            if kill_at and started >= kill_at[0] and not first_ok:
                first_ok.append(time.time())

    stop = trio.Event()
    async with open_client(
        endpoints, cluster.secret, request_timeout=attempt_timeout, connect_timeout=attempt_timeout
    ) as client:
        await client.barrier()
        async with trio.open_nursery() as nursery:
            for spec in survivors:
                nursery.start_soon(monitor_replica, spec, cluster.secret, timeline, stop)
            async with trio.open_nursery() as writers:
                for index in range(opts.failover_writers):
                    writers.start_soon(writer, index)
                await trio.sleep(1.0)  # writers are in steady state
                links = await peer_links(cluster, survivors)
                kill_at.append(time.time())
                await trio.to_thread.run_sync(cluster.kill, leader.replica_id, signal.SIGKILL)
                with trio.fail_after(30):
                    while not (first_ok and new_leader()):
                        await trio.sleep(0.005)
                writers.cancel_scope.cancel()
            await trio.sleep(0.05)
            stop.set()

    elected = new_leader()
    assert elected is not None
    election_lines = describe_timeline([t for t in timeline if t[0] >= kill_at[0] - 0.05], kill_at[0], names)
    terms_tried = sorted({s[0] for _, _, s in timeline if s != "unreachable" and s[0] > term})
    result: dict[str, Any] = {
        "run": run,
        "killed": leader.replica_id,
        "term_before": term,
        "new_leader": elected[1],
        "new_term": elected[2],
        "elections": len(terms_tried),
        "kill_to_new_leader_s": elected[0] - kill_at[0],
        "kill_to_first_write_s": first_ok[0] - kill_at[0],
        "attempts": dict(attempts),
        "links_before_kill": links,
        "timeline": election_lines,
    }
    log(
        f"failover {run}: killed {leader.replica_id}; {elected[1]} leads (term {elected[2]}, "
        f"{len(terms_tried)} election(s)) after {result['kill_to_new_leader_s'] * 1000:.0f} ms;"
        f" first write accepted after {result['kill_to_first_write_s'] * 1000:.0f} ms"
    )

    # Restart the killed replica; watch all three until healthy and settled.
    restart_timeline: list[tuple[float, str, Any]] = []
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        for spec in cluster.replicas:
            nursery.start_soon(monitor_replica, spec, cluster.secret, restart_timeline, stop)
        await trio.sleep(0.1)
        restarted_at = time.time()
        cluster.start(leader.replica_id)
        _STARTED_AT[id(cluster)] = restarted_at
        settled_leader, _ = await wait_healthy(cluster)
        await trio.sleep(2.0)  # let the restarted replica settle before the next run
        stop.set()
    final = [s for _, _, s in restart_timeline if s != "unreachable"]
    final_term = max(s[0] for s in final)
    result["restart"] = {
        "term_before": elected[2],
        "term_after": final_term,
        "leader_before": elected[1],
        "leader_after": settled_leader.replica_id,
        "term_changes": final_term - elected[2],
        "restarted_address_below_leader": leader.raft_address
        < next(r.raft_address for r in cluster.replicas if r.replica_id == elected[1]),
        "timeline": describe_timeline(restart_timeline, restarted_at, names),
    }
    if final_term != elected[2]:
        log(
            f"failover {run}: restarting {leader.replica_id} moved the term {elected[2]} → {final_term}"
            f" (leader {elected[1]} → {settled_leader.replica_id})"
        )
    return result


async def run_client_protocol(root: Path, opts: argparse.Namespace) -> dict[str, Any]:
    import trio

    from aether_kv._local import plan_local_cluster

    cluster = plan_local_cluster(root / "client-cluster", 3)
    _CLUSTERS.append(cluster)
    results: dict[str, Any] = {}
    value = bench_value(opts.value_size)
    try:
        log("client protocol: starting 3 `aether-kv serve` replicas")
        for spec in cluster.replicas:
            cluster.start(spec.replica_id)
        _STARTED_AT[id(cluster)] = time.time()
        leader, term = await wait_healthy(cluster)
        follower = next(r for r in cluster.replicas if r is not leader)
        results["leader"] = leader.replica_id
        results["start_term"] = term
        log(f"client protocol: leader is {leader.replica_id} ({leader.raft_address}), term {term}")
        if opts.soak:
            log(f"client protocol: soak, {opts.writers} writers on one client for {opts.soak:g} s")
            results["soak"] = await client_throughput(
                cluster, leader, opts, clients=1, duration=opts.soak, value=value, tag="soak"
            )
            results["consistency"] = await cluster_digests(cluster)
            return results
        for clients in opts.client_counts:
            await client_throughput(
                cluster, leader, opts, clients=clients, duration=opts.warmup, value=value, tag="warm"
            )
            log(
                f"client protocol: throughput, {opts.writers} writers on {clients} client(s),"
                f" {opts.duration:g} s"
            )
            results[f"throughput_{clients}c"] = await client_throughput(
                cluster, leader, opts, clients=clients, duration=opts.duration, value=value, tag=f"c{clients}"
            )
        log(f"client protocol: latency, {opts.latency_count} sequential puts via the leader's endpoint")
        results["latency_leader"] = await client_latency(
            cluster, leader.client_address, opts.latency_count, value, "clat-leader"
        )
        log(f"client protocol: latency, {opts.latency_count} sequential puts via a follower's endpoint")
        results["latency_follower"] = await client_latency(
            cluster, follower.client_address, opts.latency_count, value, "clat-follower"
        )
        log(f"watch: {opts.watch_count} puts via the leader, watcher on follower {follower.replica_id}")
        results["watch"] = await watch_latency(
            cluster, leader, follower, opts.watch_count, opts.watch_interval
        )
        results["consistency"] = await cluster_digests(cluster)
        statuses = await cluster_statuses(cluster)
        results["end_term"] = max(s.term for s in statuses.values() if not isinstance(s, str))
        results["failover"] = []
        for run in range(1, opts.failover_runs + 1):
            results["failover"].append(await failover_once(cluster, run, opts))
        return results
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(cluster.stop_all)
        results["replica_logs"] = {
            spec.replica_id: _read_tail(cluster.directory / f"{spec.replica_id}.log")
            for spec in cluster.replicas
        }


def _read_tail(path: Path, size: int = 600) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


# ====================================================================== report


def fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")


def term_changes(run: dict[str, Any]) -> int:
    return int(run["term_after"] - run["term_before"])


def cpu_text(run: dict[str, Any]) -> str:
    cpu = run.get("cpu_percent")
    if not cpu:
        return ""
    parts = [f"{name} {value:.0f}%" for name, value in cpu.items() if name != "total"]
    text = f"CPU (% of one core): {', '.join(parts)}; total {cpu['total']:.0f}% of 200%"
    if run.get("compactions"):
        text += f"; log compaction (full dump) during the run on: {', '.join(run['compactions'])}"
    return text


def consistency_lines(results: dict[str, Any]) -> list[str]:
    out = []
    for name in ("raw", "aether", "aether-nosync", "client"):
        check = (results.get(name) or {}).get("consistency")
        if not check:
            continue
        if check["agree"]:
            out.append(
                f"  {name:14s} all 3 replicas hold the same data at revision/index {check['revision']}"
            )
        else:
            out.append(f"  {name:14s} REPLICAS DIFFER: {check['answers']}")
    return out


def report(results: dict[str, Any], opts: argparse.Namespace) -> str:
    lines: list[str] = []
    add = lines.append
    meta = results["meta"]
    add("")
    add("=" * 100)
    add(f"aether-kv benchmark — {meta['date']} — {meta['machine']}")
    add(f"command: {meta['command']}")
    before, after = meta.get("loadavg_before"), meta.get("loadavg_after")
    if before and after:
        add(
            f"load average (1/5/15 min) before: {' '.join(f'{x:.2f}' for x in before)}, after:"
            f" {' '.join(f'{x:.2f}' for x in after)} (anything above ~0 is other work sharing the 2 cores)"
        )
    add(
        f"3 replicas on 127.0.0.1; {opts.writers} concurrent writers for {opts.duration:g} s (after a"
        f" {opts.warmup:g} s warm-up); {opts.latency_count} sequential puts for latency; values"
        f" {opts.value_size} B"
    )
    add("=" * 100)
    aether, raw, client = results.get("aether"), results.get("raw"), results.get("client")
    nosync = results.get("aether-nosync")

    if opts.soak:
        add(f"SOAK: {opts.soak:g} s of full load ({opts.writers} writers) per path")
        for name, part in (
            ("aether in-process (leader)", aether),
            ("raw pysyncobj", raw),
            ("client protocol (1 client)", client),
        ):
            if not part or "soak" not in part:
                continue
            run = part["soak"]
            add(
                f"  {name:30s} {fmt(run['ops_per_s'], ' writes/s', 0):>18s}  term {run['term_before']}"
                f"→{run['term_after']}  leader changes: {term_changes(run)}"
                f" [{verdict(term_changes(run) == 0)}]  errors: {run['errors'] or 'none'}"
            )
            add(f"  {'':30s} {cpu_text(run)}")
        add("REPLICA CONSISTENCY after the soak (digest of all keys, values, revisions per replica):")
        lines.extend(consistency_lines(results))
        return "\n".join(lines)

    if opts.parts == ["etcd"]:
        lines.extend(etcd_report(results))
        return "\n".join(lines)
    add("1. WRITE THROUGHPUT (64 concurrent writers) and LEADER CHANGES during the run")
    rows: list[tuple[str, dict[str, Any] | None]] = []
    if raw:
        rows += [
            ("raw pysyncobj, 64 threads sync=True", raw.get("throughput_threads")),
            ("raw pysyncobj, 64 callback chains", raw.get("throughput_callbacks")),
        ]
    if aether:
        rows.append(("aether in-process (leader, trio)", aether.get("throughput_trio")))
    if nosync:
        rows.append(("  diagnostic: same, durable=False", nosync.get("throughput_trio")))
    if client:
        for clients in opts.client_counts:
            rows.append((f"client protocol, {clients} client(s)", client.get(f"throughput_{clients}c")))
    for name, run in rows:
        if not run:
            continue
        p50 = run.get("per_op", {}).get("p50_ms", run.get("per_op_p50_ms"))
        p99 = run.get("per_op", {}).get("p99_ms", run.get("per_op_p99_ms"))
        add(
            f"  {name:40s} {fmt(run['ops_per_s'], ' writes/s', 0):>16s}   per-op p50 {fmt(p50, ' ms')}"
            f" p99 {fmt(p99, ' ms')}   leader changes {term_changes(run)}"
            f" [{verdict(term_changes(run) == 0)}]   errors {run['errors'] or 'none'}"
        )
        add(f"  {'':40s} {cpu_text(run)}")
    raw_threads = (raw or {}).get("throughput_threads", {}).get("ops_per_s")
    raw_callbacks = (raw or {}).get("throughput_callbacks", {}).get("ops_per_s")
    raw_best = max(x for x in (raw_threads, raw_callbacks) if x) if (raw_threads or raw_callbacks) else None
    ratios: dict[str, Any] = {}
    if raw_best:
        inproc = (aether or {}).get("throughput_trio", {}).get("ops_per_s")
        client_best = max(
            ((client or {}).get(f"throughput_{c}c", {}).get("ops_per_s") or 0 for c in opts.client_counts),
            default=0,
        )
        add("  ratios (raw baseline has no fsync; aether fsyncs its journal — it does strictly more work):")
        for label, numerator in (
            ("aether in-process", inproc),
            ("client protocol (best)", client_best or None),
        ):
            if not numerator:
                continue
            vs_threads = numerator / raw_threads if raw_threads else None
            vs_callbacks = numerator / raw_callbacks if raw_callbacks else None
            vs_best = numerator / raw_best
            ratios[label] = {"vs_threads": vs_threads, "vs_callbacks": vs_callbacks, "vs_best": vs_best}
            target = ""
            if label == "aether in-process":
                target = (
                    f"   target ≥ {TARGETS['inproc_vs_raw']}× raw:"
                    f" {verdict(vs_threads is not None and vs_threads >= TARGETS['inproc_vs_raw'])}"
                    " vs threads,"
                    f" {verdict(vs_best >= TARGETS['inproc_vs_raw'])} vs best raw"
                )
            add(
                f"    {label:28s} / raw threads {fmt(vs_threads, '×', 2)}   / raw callbacks"
                f" {fmt(vs_callbacks, '×', 2)}{target}"
            )
    results["ratios"] = ratios

    add("")
    add(
        f"   SINGLE-WRITER LATENCY ({opts.latency_count} sequential puts, each after a random"
        f" 0–{LATENCY_JITTER * 1000:g} ms pause)"
    )
    lat_rows: list[tuple[str, dict[str, Any] | None, float | None]] = []
    if aether:
        lat_rows += [
            ("aether in-process, leader", aether.get("latency_leader"), TARGETS["leader_p50_ms"]),
            ("aether in-process, follower", aether.get("latency_follower"), TARGETS["follower_p50_ms"]),
        ]
    if nosync:
        lat_rows += [
            ("  diagnostic: durable=False, leader", nosync.get("latency_leader"), None),
            ("  diagnostic: durable=False, follower", nosync.get("latency_follower"), None),
        ]
    if raw:
        lat_rows += [
            ("raw pysyncobj, leader", raw.get("latency_leader"), None),
            ("raw pysyncobj, follower", raw.get("latency_follower"), None),
        ]
    if client:
        lat_rows += [
            ("client protocol via leader endpoint", client.get("latency_leader"), None),
            ("client protocol via follower endpoint", client.get("latency_follower"), None),
        ]
    for name, lat, target in lat_rows:
        if not lat:
            continue
        target_text = f"   target p50 ≤ {target:g} ms: {verdict(lat['p50_ms'] <= target)}" if target else ""
        add(
            f"  {name:40s} p50 {fmt(lat.get('p50_ms'), ' ms'):>8s}  p99 {fmt(lat.get('p99_ms'), ' ms'):>8s}"
            f"  max {fmt(lat.get('max_ms'), ' ms'):>8s}  errors {lat['errors'] or 'none'}{target_text}"
        )

    if client and "watch" in client:
        watch = client["watch"]
        add("")
        add(
            f"2. WATCH DELIVERY LATENCY ({watch['puts']} puts via the leader's endpoint, one every"
            f" ≥{watch['interval_s'] * 1000:g} ms); measured from the put's acknowledgement to the client"
        )
        for name in ("follower", "leader"):
            w = watch[name]
            ok = (
                w["from_ack"].get("p99_ms", math.inf) <= TARGETS["watch_p99_ms"]
                if name == "follower"
                else None
            )
            add(
                f"  watcher on {name:8s} from ack: p50 {fmt(w['from_ack'].get('p50_ms'), ' ms')}"
                f" p99 {fmt(w['from_ack'].get('p99_ms'), ' ms')}  | from send: p50"
                f" {fmt(w['from_send'].get('p50_ms'), ' ms')} p99 {fmt(w['from_send'].get('p99_ms'), ' ms')}"
                f"  | delivered {w['delivered']}, missing {w['missing']}, before ack {w['before_ack']},"
                f" watch reconnects {w['reconnects']}"
                + (f"   target p99 ≤ {TARGETS['watch_p99_ms']:g} ms: {verdict(ok)}" if ok is not None else "")
            )

    if client and client.get("failover"):
        runs = client["failover"]
        add("")
        add(
            f"3. LEADER FAILOVER (SIGKILL the leader; {opts.failover_writers} writers, attempts time out"
            f" after {opts.failover_attempt_timeout * 1000:g} ms; each kill ≥ {opts.failover_settle:g} s"
            " after the cluster's last (re)start)"
        )
        for run in runs:
            add(
                f"  run {run['run']}: killed {run['killed']} (term {run['term_before']}) →"
                f" {run['new_leader']} leads (term {run['new_term']}, {run['elections']} election(s)) after"
                f" {fmt(run['kill_to_new_leader_s'] * 1000, ' ms', 0)}; first accepted write after"
                f" {fmt(run['kill_to_first_write_s'] * 1000, ' ms', 0)}"
            )
            if run["elections"] > 1 or run["kill_to_first_write_s"] > TARGETS["failover_s"]:
                links = "; ".join(f"{k}: {v}" for k, v in run["links_before_kill"].items())
                add(f"      Raft links just before the kill, as each survivor saw them: {links}")
                add("      survivors' view (time since SIGKILL):")
                lines.extend(f"        {line}" for line in run["timeline"])
            restart = run["restart"]
            add(
                f"      restart of {run['killed']}: term {restart['term_before']} → {restart['term_after']},"
                f" leader {restart['leader_before']} → {restart['leader_after']}"
                + (
                    f"  (restarted replica's raft address sorts below the leader's:"
                    f" {restart['restarted_address_below_leader']})"
                    if restart["term_changes"]
                    else ""
                )
            )
            if restart["term_changes"]:
                add("      all replicas' view (time since restart):")
                lines.extend(f"        {line}" for line in restart["timeline"])
        median_write = statistics.median(r["kill_to_first_write_s"] for r in runs)
        median_leader = statistics.median(r["kill_to_new_leader_s"] for r in runs)
        results["failover_median_s"] = median_write
        add(
            f"  median: new leader after {fmt(median_leader * 1000, ' ms', 0)}, first accepted write after"
            f" {fmt(median_write * 1000, ' ms', 0)}   target ≤ {TARGETS['failover_s']:g} s:"
            f" {verdict(median_write <= TARGETS['failover_s'])}"
        )
        add(
            "  (election timeout is random in 0.5–1.5 s: the first survivor to time out is the min of two"
            " draws, ~0.83 s on average)"
        )
    checks = consistency_lines(results)
    if checks:
        add("")
        add("REPLICA CONSISTENCY after the load runs (digest of all keys, values, revisions per replica):")
        lines.extend(checks)
    lines.extend(etcd_report(results))
    return "\n".join(lines)


def etcd_report(results: dict[str, Any]) -> list[str]:
    if "etcd" not in results:
        return []
    import kv_etcd

    return kv_etcd.report(results["etcd"])


# ====================================================================== main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs (2 s load, 200 puts)")
    parser.add_argument(
        "--soak",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="only run SECONDS of full load on each path and report leader changes",
    )
    parser.add_argument(
        "--only",
        choices=["aether", "aether-nosync", "raw", "client", "etcd"],
        action="append",
        help="run only these parts (repeatable)",
    )
    parser.add_argument("--duration", type=float, help="seconds of full load per run (default 5, quick 2)")
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--latency-count", type=int, help="sequential puts (default 500, quick 200)")
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write all results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--time-limit", type=float, help="hard limit for the whole run, seconds")
    parser.add_argument(
        "--failover-settle",
        type=float,
        help="before each SIGKILL, wait until the cluster's last (re)start is this many seconds old"
        " (default 35: past pysyncobj's 30 s connectionTimeout, the steady state; 0: kill at once)",
    )
    parser.add_argument("--etcd-rounds", type=int, help="rounds of the etcd comparison (default 3, quick 1)")
    parser.add_argument("--idle-seconds", type=float, help="idle CPU window per peer (default 30, quick 10)")
    parser.add_argument("--kills", type=int, help="leader kills per peer in the etcd comparison (default 3)")
    opts = parser.parse_args(argv)
    opts.etcd_rounds = opts.etcd_rounds or (1 if opts.quick else 3)
    opts.idle_seconds = opts.idle_seconds or (10.0 if opts.quick else 30.0)
    opts.kills = opts.kills if opts.kills is not None else (1 if opts.quick else 3)
    opts.duration = opts.duration or (2.0 if opts.quick else 5.0)
    opts.warmup = 0.5 if opts.quick else 1.0
    opts.latency_count = opts.latency_count or (200 if opts.quick else 500)
    opts.client_counts = [1] if opts.quick else [1, 4]
    opts.watch_count = 100 if opts.quick else 200
    opts.watch_interval = 0.01
    opts.failover_runs = 1 if opts.quick else 3
    opts.failover_writers = 4
    opts.failover_attempt_timeout = 0.25
    opts.failover_settle = opts.failover_settle if opts.failover_settle is not None else 40.0
    opts.parts = opts.only or (
        ["raw", "aether", "client"] if opts.soak else ["raw", "aether", "aether-nosync", "client", "etcd"]
    )
    if opts.time_limit is None:
        opts.time_limit = (300 if opts.quick else 900) + 4 * opts.soak + 3 * opts.failover_settle
    return opts


def worker_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="kv_bench.py _replica")
    parser.add_argument("--mode", choices=["aether", "aether-nosync", "raw"], required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--raft", required=True)
    parser.add_argument("--peers", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--value-size", type=int, default=100)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides when workers stop
    if os.environ.get("KV_BENCH_SWITCH_INTERVAL"):  # experiment knob: the GIL switch interval, seconds
        sys.setswitchinterval(float(os.environ["KV_BENCH_SWITCH_INTERVAL"]))
    if args.mode.startswith("aether"):
        import trio

        trio.run(aether_worker, args)
    else:
        raw_worker(args)


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    registry: list[subprocess.Popen] = []
    root = Path(tempfile.mkdtemp(prefix="aether-kv-bench-"))

    def watchdog() -> None:
        log(f"time limit of {opts.time_limit:g} s reached: killing every process this run started")
        for process in registry:
            with contextlib.suppress(OSError):
                process.kill()
        for cluster in _CLUSTERS:
            for process in list(cluster.processes.values()):
                with contextlib.suppress(OSError):
                    process.kill()
        if not opts.keep:
            shutil.rmtree(root, ignore_errors=True)
        os._exit(3)

    timer = threading.Timer(opts.time_limit, watchdog)
    timer.daemon = True
    timer.start()

    def on_sigterm(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    results: dict[str, Any] = {
        "meta": {
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()},"
            f" Python {platform.python_version()}",
            "command": "uv run python benchmarks/kv_bench.py " + " ".join(argv),
            "tmp": str(root),
            "loadavg_before": os.getloadavg(),
        }
    }
    started = time.monotonic()
    failed: list[str] = []
    try:
        for part in ("raw", "aether", "aether-nosync", "client", "etcd"):
            if part not in opts.parts:
                continue
            try:
                if part == "client":
                    import trio

                    results[part] = trio.run(run_client_protocol, root, opts)
                elif part == "etcd":
                    import kv_etcd
                    import trio

                    results[part] = trio.run(kv_etcd.run_comparison, root, opts, free_port, log)
                else:
                    results[part] = run_group(part, root, opts, registry)
            except Exception as error:  # report what failed, go on with the other parts
                log(f"{part}: FAILED: {type(error).__name__}: {error}")
                results[part] = {"error": f"{type(error).__name__}: {error}"}
                failed.append(part)
    finally:
        timer.cancel()
        for process in registry:
            if process.poll() is None:
                process.kill()
                process.wait()
        if not opts.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"kept {root}")
    results["meta"]["wall_s"] = time.monotonic() - started
    results["meta"]["loadavg_after"] = os.getloadavg()
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    usable = {k: v for k, v in results.items() if not (isinstance(v, dict) and "error" in v)}
    print(report(usable, opts), flush=True)
    if failed:
        print(f"\nFAILED parts (see the log above): {', '.join(failed)}", flush=True)
    log(f"done in {results['meta']['wall_s']:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_replica":
        worker_main(sys.argv[2:])
    else:
        sys.exit(main(sys.argv[1:]))
