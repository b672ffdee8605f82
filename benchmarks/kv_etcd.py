"""aether-kv next to etcd, in one run, with the same client shape (the `etcd` part of kv_bench.py).

    uv run python benchmarks/kv_bench.py --only etcd            # 3 rounds, 30 s idle CPU, 3 kills each
    uv run python benchmarks/kv_bench.py --only etcd --quick    # 1 round, 10 s idle CPU, 1 kill each

Each peer is three server processes on 127.0.0.1 with fsync on: three `aether-kv serve` replicas, and
three etcd members (`/usr/bin/etcd`, or `$ETCD`; etcd's own defaults: 100 ms heartbeat, 1 s election)
spoken to over etcd's HTTP/JSON gateway (`/v3/kv/put`, `/v3/kv/range`, `/v3/watch`; see EtcdHttp). Without
an etcd binary the etcd side is skipped and the report says so. Per round and peer, alternating:

- throughput: 64 writer tasks putting back to back through one client to the leader's endpoint (etcd: one
  HTTP client with a keep-alive connection per request in flight; aether: one client, requests multiplexed);
  the CPU the three server processes used during it, per acknowledged write;
- sequential put and linearizable read latency through the leader's endpoint, each after a random
  0–10 ms pause, and the linearizable read through a follower's endpoint;
- watch: puts through the leader, a watcher on a follower; put sent → event received.

Then, per peer, the idle CPU of the three server processes read from /proc over `--idle-seconds`, and
`--kills` failovers: SIGKILL the leader while 4 writers (on the survivors' endpoints, 0.25 s per attempt)
keep trying; time from the kill to the first accepted write; the killed member is restarted.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import trio

LATENCY_JITTER = 0.01
FAILOVER_ATTEMPT = 0.25
Op = Callable[[str, bytes], Awaitable[Any]]

# measure → (how aether compares: "higher"/"lower" is better, target ratio aether/etcd)
TARGETS: dict[str, tuple[str, float]] = {
    "writes_per_s": ("higher", 1.0),
    "put_p50_ms": ("lower", 1.5),
    "lin_read_p50_ms": ("lower", 2.0),
    "lin_read_follower_p50_ms": ("lower", 2.0),
    "watch_p50_ms": ("lower", 1.5),
    "cpu_us_per_write": ("lower", 2.0),
    "idle_cpu_percent": ("lower", 2.0),
    "failover_s": ("lower", 1.0),
}


def etcd_binary() -> str | None:
    return (
        os.environ.get("ETCD")
        or shutil.which("etcd")
        or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    )


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def total_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def p50_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000.0 if seconds else float("nan")


# ====================================================================== the two peers


class AetherPeer:
    name = "aether"

    def __init__(self, root: Path, free_port: Callable[[], int]) -> None:
        from aether_kv._local import plan_local_cluster

        self.cluster = plan_local_cluster(root / "aether", 3)
        self.members = [r.replica_id for r in self.cluster.replicas]

    def start(self, member: str | None = None) -> None:
        for spec in self.cluster.replicas:
            if member in (None, spec.replica_id):
                self.cluster.start(spec.replica_id)

    def kill(self, member: str) -> None:
        self.cluster.kill(member, signal.SIGKILL)

    def stop(self) -> None:
        self.cluster.stop_all()

    def pids(self) -> list[int]:
        return [p.pid for p in self.cluster.processes.values()]

    def endpoint(self, member: str) -> str:
        return self.cluster.spec(member).client_address

    async def leader(self) -> str:
        """The member every live replica names as leader, once a write commits."""
        from aether_kv import KVError, open_client

        with trio.fail_after(60):
            while True:
                try:
                    seen = set()
                    for member in self.cluster.processes:
                        async with open_client(
                            [self.endpoint(member)], self.cluster.secret, request_timeout=1
                        ) as c:
                            await c.barrier()
                            seen.add((await c.status()).leader)
                    if len(seen) == 1 and None not in seen:
                        address = seen.pop()
                        return next(r.replica_id for r in self.cluster.replicas if r.raft_address == address)
                except KVError:
                    pass
                await trio.sleep(0.1)

    @asynccontextmanager
    async def client(self, member: str, *, attempt: float | None = None) -> AsyncIterator[dict[str, Op]]:
        from aether_kv import open_client

        timeouts = {"request_timeout": attempt, "connect_timeout": attempt} if attempt else {}
        async with open_client([self.endpoint(member)], self.cluster.secret, **timeouts) as c:
            if attempt is None:
                await c.barrier()  # connected before any clock starts

            async def put(key: str, value: bytes) -> Any:
                return await c.put(key, value)

            async def read(key: str, _value: bytes) -> Any:
                return await c.get(key, linearizable=True)

            yield {"put": put, "read": read, "watch": lambda prefix: _aether_watch(c, prefix)}


async def _aether_watch(client: Any, prefix: str) -> AsyncIterator[str]:
    async for events in client.watch(prefix):
        for event in events:
            yield event.kv.key


class EtcdPeer:
    name = "etcd"

    def __init__(self, root: Path, free_port: Callable[[], int], binary: str) -> None:
        self.root = root / "etcd"
        self.root.mkdir(parents=True, exist_ok=True)
        self.binary = binary
        self.members = ["e1", "e2", "e3"]
        self.client_ports = {m: free_port() for m in self.members}
        self.peer_ports = {m: free_port() for m in self.members}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ids: dict[str, str] = {}  # member name → etcd member id (decimal string, as JSON gives it)

    def start(self, member: str | None = None) -> None:
        initial = ",".join(f"{m}=http://127.0.0.1:{self.peer_ports[m]}" for m in self.members)
        for m in self.members:
            if member not in (None, m):
                continue
            client = f"http://127.0.0.1:{self.client_ports[m]}"
            peer = f"http://127.0.0.1:{self.peer_ports[m]}"
            command = [
                self.binary, "--name", m, "--data-dir", str(self.root / m),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", "aether-kv-bench", "--logger", "zap", "--log-level", "warn",
            ]  # fmt: skip
            with open(self.root / f"{m}.log", "ab") as log:
                self.processes[m] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def kill(self, member: str) -> None:
        process = self.processes.pop(member)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes.values()]

    def endpoint(self, member: str) -> str:
        return f"http://127.0.0.1:{self.client_ports[member]}"

    async def leader(self) -> str:
        with trio.fail_after(60):
            while True:
                try:
                    seen = set()
                    for m in list(self.processes):
                        reply = await EtcdHttp(self.endpoint(m), 1.0).post("/v3/maintenance/status", {})
                        self.ids[m] = str(reply["header"]["member_id"])
                        seen.add(str(reply.get("leader", "0")))
                    await _etcd_put(
                        EtcdHttp(self.endpoint(next(iter(self.processes))), 1.0), "bench/ready", b"1"
                    )
                    if len(seen) == 1 and "0" not in seen:
                        leader_id = seen.pop()
                        found = [m for m, i in self.ids.items() if i == leader_id and m in self.processes]
                        if found:
                            return found[0]
                except (OSError, KeyError, ValueError, http.client.HTTPException):
                    pass
                await trio.sleep(0.1)

    @asynccontextmanager
    async def client(self, member: str, *, attempt: float | None = None) -> AsyncIterator[dict[str, Op]]:
        api = EtcdHttp(self.endpoint(member), attempt or 5.0)

        async def put(key: str, value: bytes) -> Any:
            return await _etcd_put(api, key, value)

        async def read(key: str, _value: bytes) -> Any:
            return await api.post("/v3/kv/range", {"key": _b64(key.encode())})

        try:
            yield {"put": put, "read": read, "watch": api.watch}
        finally:
            api.close()


class EtcdHttp:
    """etcd's JSON gateway over plain keep-alive HTTP/1.1 connections (http.client), one per request in
    flight, each request on a worker thread. (httpx on trio managed ~50 puts/s with 64 concurrent requests
    here, against ~1,300 for threads with http.client: it measured the client, not etcd.)"""

    LIMITER = trio.CapacityLimiter(256)

    def __init__(self, base: str, timeout: float) -> None:
        self.host, port = base.removeprefix("http://").split(":")
        self.port, self.timeout = int(port), timeout
        self.idle: list[http.client.HTTPConnection] = []

    def _request(self, path: str, body: dict[str, Any]) -> Any:
        conn = (
            self.idle.pop()
            if self.idle
            else http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        )
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            reply = conn.getresponse()
            data = reply.read()
        except BaseException:
            conn.close()
            raise
        self.idle.append(conn)
        if reply.status != 200:
            raise http.client.HTTPException(f"{path}: HTTP {reply.status}: {data[:200]!r}")
        return json.loads(data)

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        return await trio.to_thread.run_sync(
            self._request, path, body, limiter=self.LIMITER, abandon_on_cancel=True
        )

    async def watch(self, prefix: str) -> AsyncIterator[str]:
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        body = {"create_request": {"key": _b64(prefix.encode()), "range_end": _b64(end.encode())}}
        send, receive = trio.open_memory_channel[str](10_000)
        token = trio.lowlevel.current_trio_token()
        conn = http.client.HTTPConnection(self.host, self.port)
        self.idle.append(conn)  # closed with the others

        def stream() -> None:
            conn.request("POST", "/v3/watch", json.dumps(body), {"Content-Type": "application/json"})
            reply = conn.getresponse()
            for line in reply:
                for event in json.loads(line).get("result", {}).get("events", []):
                    key = base64.b64decode(event["kv"]["key"]).decode()
                    trio.from_thread.run_sync(send.send_nowait, key, trio_token=token)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio.to_thread.run_sync, stream, abandon_on_cancel=True))
            async for key in receive:
                yield key

    def close(self) -> None:
        for conn in self.idle:
            with suppress(OSError):
                conn.sock and conn.sock.shutdown(socket.SHUT_RDWR)
            conn.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _etcd_put(api: EtcdHttp, key: str, value: bytes) -> Any:
    return await api.post("/v3/kv/put", {"key": _b64(key.encode()), "value": _b64(value)})


# ====================================================================== measurements


async def throughput(peer: Any, leader: str, writers: int, duration: float, value: bytes) -> dict[str, float]:
    counts = [0] * writers
    errors = [0]
    async with peer.client(leader) as ops:
        put = ops["put"]
        pids = peer.pids()
        cpu_before, started = total_cpu(pids), time.perf_counter()
        deadline = started + duration

        async def writer(index: int) -> None:
            i = 0
            while time.perf_counter() < deadline:
                i += 1
                try:
                    await put(f"tp/{index}/{i % 256}", value)
                    counts[index] += 1
                except Exception:
                    errors[0] += 1
                    await trio.sleep(0.001)

        async with trio.open_nursery() as nursery:
            for index in range(writers):
                nursery.start_soon(writer, index)
        elapsed = time.perf_counter() - started
        cpu = total_cpu(pids) - cpu_before
    ops_done = sum(counts)
    return {
        "writes_per_s": ops_done / elapsed,
        "cpu_us_per_write": cpu / max(ops_done, 1) * 1e6,
        "errors": errors[0],
    }


async def sequential(op: Op, count: int, value: bytes, prefix: str) -> float:
    jitter = random.Random(7)
    times: list[float] = []
    for i in range(count):
        await trio.sleep(jitter.uniform(0, LATENCY_JITTER))
        started = time.perf_counter()
        await op(f"{prefix}/{i % 64}", value)
        times.append(time.perf_counter() - started)
    return p50_ms(times)


async def watch_p50(peer: Any, leader: str, follower: str, count: int, value: bytes) -> float:
    prefix = "watchbench/"
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    ready = trio.Event()
    async with (
        peer.client(leader) as writer,
        peer.client(follower) as watcher,
        trio.open_nursery() as nursery,
    ):

        async def receive() -> None:
            async for key in watcher["watch"](prefix):
                got.setdefault(key, time.perf_counter())
                if key == prefix + "ready":
                    ready.set()

        nursery.start_soon(receive)
        with trio.fail_after(10):
            while not ready.is_set():
                await writer["put"](prefix + "ready", b"1")
                with trio.move_on_after(0.2):
                    await ready.wait()
        for i in range(count):
            key = f"{prefix}{i}"
            sent[key] = time.perf_counter()
            await writer["put"](key, value)
            await trio.sleep(0.01)
        with trio.move_on_after(5):
            while not set(sent) <= set(got):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    return p50_ms([got[k] - sent[k] for k in sent if k in got])


async def failover(peer: Any, value: bytes) -> float:
    """SIGKILL the leader while 4 writers on the survivors' endpoints keep trying; seconds to the first
    write accepted after the kill. The killed member is restarted and the cluster waited for."""
    leader = await peer.leader()
    survivors = [m for m in peer.members if m != leader]
    killed_at: list[float] = []
    first_ok: list[float] = []

    async def writer(index: int, ops: dict[str, Op]) -> None:
        i = 0
        while not first_ok:
            i += 1
            started = time.perf_counter()
            with trio.move_on_after(FAILOVER_ATTEMPT):
                try:
                    await ops["put"](f"failover/{index}/{i % 16}", value)
                except Exception:
                    await trio.sleep(0.005)
                    continue
                if killed_at and started >= killed_at[0] and not first_ok:
                    first_ok.append(time.perf_counter())

    async with (
        peer.client(survivors[0], attempt=FAILOVER_ATTEMPT) as a,
        peer.client(survivors[1], attempt=FAILOVER_ATTEMPT) as b,
        trio.open_nursery() as nursery,
    ):
        for index in range(4):
            nursery.start_soon(writer, index, (a, b)[index % 2])
        await trio.sleep(1.0)
        killed_at.append(time.perf_counter())
        await trio.to_thread.run_sync(peer.kill, leader)
        with trio.fail_after(30):
            while not first_ok:
                await trio.sleep(0.005)
        nursery.cancel_scope.cancel()
    peer.start(leader)
    await peer.leader()
    await trio.sleep(2.0)
    return first_ok[0] - killed_at[0]


async def idle_cpu(peer: Any, seconds: float) -> float:
    """% of one core the three server processes use together while nobody talks to them."""
    await trio.sleep(2.0)  # let the last requests' work finish
    pids = peer.pids()
    before, started = total_cpu(pids), time.perf_counter()
    await trio.sleep(seconds)
    return 100.0 * (total_cpu(pids) - before) / (time.perf_counter() - started)


async def one_round(peer: Any, opts: Any, value: bytes, log: Callable[[str], None]) -> dict[str, float]:
    leader = await peer.leader()
    follower = next(m for m in peer.members if m != leader)
    out = await throughput(peer, leader, opts.writers, opts.duration, value)
    async with peer.client(leader) as ops, peer.client(follower) as far:
        out["put_p50_ms"] = await sequential(ops["put"], opts.latency_count, value, "seq")
        out["lin_read_p50_ms"] = await sequential(ops["read"], opts.latency_count, value, "seq")
        out["lin_read_follower_p50_ms"] = await sequential(far["read"], opts.latency_count, value, "seq")
    out["watch_p50_ms"] = await watch_p50(peer, leader, follower, opts.watch_count, value)
    out["loadavg_1m"] = os.getloadavg()[0]
    log(f"etcd comparison: {peer.name}: " + ", ".join(f"{k} {v:.1f}" for k, v in out.items()))
    return out


async def run_comparison(
    root: Path, opts: Any, free_port: Callable[[], int], log: Callable[[str], None]
) -> dict:
    value = (b"aether-kv-bench-" * (opts.value_size // 16 + 1))[: opts.value_size]
    binary = etcd_binary()
    peers: list[Any] = [AetherPeer(root, free_port)]
    results: dict[str, Any] = {"etcd_binary": binary, "rounds": opts.etcd_rounds}
    if binary is None:
        log("etcd comparison: no etcd binary (set $ETCD or install etcd-server): etcd is SKIPPED")
    else:
        peers.append(EtcdPeer(root, free_port, binary))
        version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        results["etcd_version"] = version
    try:
        for peer in peers:
            peer.start()
            await peer.leader()
            results[peer.name] = {"rounds": [], "failover_s": []}
        for round_no in range(opts.etcd_rounds):
            for peer in peers:
                log(f"etcd comparison: round {round_no + 1}/{opts.etcd_rounds}, {peer.name}")
                results[peer.name]["rounds"].append(await one_round(peer, opts, value, log))
        for peer in peers:
            log(f"etcd comparison: {peer.name}: idle CPU over {opts.idle_seconds:g} s")
            results[peer.name]["idle_cpu_percent"] = await idle_cpu(peer, opts.idle_seconds)
            for kill in range(opts.kills):
                try:
                    seconds = await failover(peer, value)
                except Exception as error:  # one failed kill must not lose the rest of the run
                    log(f"etcd comparison: {peer.name}: failover {kill + 1} FAILED: {error!r}")
                    results[peer.name].setdefault("failover_errors", []).append(repr(error))
                    continue
                log(f"etcd comparison: {peer.name}: failover {kill + 1}: first write after {seconds:.3f} s")
                results[peer.name]["failover_s"].append(seconds)
    finally:
        with trio.CancelScope(shield=True):
            for peer in peers:
                await trio.to_thread.run_sync(peer.stop)
    return results


def medians(side: dict[str, Any]) -> dict[str, float]:
    out = {k: statistics.median(r[k] for r in side["rounds"]) for k in side["rounds"][0]}
    out["idle_cpu_percent"] = side["idle_cpu_percent"]
    out["failover_s"] = statistics.median(side["failover_s"]) if side["failover_s"] else float("nan")
    return out


def report(results: dict[str, Any]) -> list[str]:
    lines = ["", "== aether-kv next to etcd (same run, same client shape, fsync on both) =="]
    if "aether" not in results:
        return [*lines, "(did not run)"]
    if "etcd" not in results:
        lines.append("etcd: SKIPPED (no etcd binary found: set $ETCD or install etcd-server)")
    else:
        lines.append(f"etcd: {results.get('etcd_version', '?')} ({results['etcd_binary']})")
    ours = medians(results["aether"])
    theirs = medians(results["etcd"]) if "etcd" in results else {}
    lines.append(f"medians of {results['rounds']} round(s); failover: median of the kills; each round in []")
    lines.append(f"{'measure':28} {'aether':>10} {'etcd':>10} {'ratio':>7} target  verdict  aether rounds")
    for key, (better, target) in TARGETS.items():
        mine, other = ours.get(key, float("nan")), theirs.get(key, float("nan"))
        rounds = (
            results["aether"]["failover_s"]
            if key == "failover_s"
            else [r.get(key) for r in results["aether"]["rounds"]]
        )
        ratio = mine / other if other == other and other else float("nan")
        if key == "failover_s":
            ok, shown_target = mine <= target, f"<= {target:g} s"
        elif better == "higher":
            ok, shown_target = ratio >= target, f">= {target:g}x"
        else:
            ok, shown_target = ratio <= target, f"<= {target:g}x"
        verdict = "n/a" if other != other and key != "failover_s" else ("meets" if ok else "MISSES")
        each = ", ".join(f"{v:.2f}" for v in rounds if v is not None)
        lines.append(
            f"{key:28} {mine:10.2f} {other:10.2f} {ratio:7.2f} {shown_target:7} {verdict:8} [{each}]"
        )
    loads = [
        r["loadavg_1m"] for side in ("aether", "etcd") if side in results for r in results[side]["rounds"]
    ]
    lines.append(f"load average (1 min) at the end of each round: {', '.join(f'{x:.2f}' for x in loads)}")
    return lines
