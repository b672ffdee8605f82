"""TLS on vs off, in the same run (issue 17: each figure with TLS >= 0.9x of plain text).

Two local clusters of 2 real `aether-node` processes each (both nodes KV replicas), running at once on
127.0.0.1: one in plain text (`--dev-mode`), one with TLS from its cluster CA (mutual TLS on the peer
and KV ports, HTTPS on the management API, and HTTPS on the ingress with a certificate of a separate
"operator" CA). Each runs `org.aether:echo` x1. Each round measures:

- node-to-node call latency, both clusters in the same window: `--calls` sequential calls to each, one
  plain and one TLS in turn (the order swapped every pair), so both see the same load; through the
  ingress of the node *without* the instance (ingress -> peer link -> the other node -> slice) and
  through the node *with* it (no peer hop); the p50 of each and their difference, the peer hop. The
  client is a lean one (h11 on one keep-alive connection, TLS on the socket as the nodes do it,
  `aether_kv.TLSSocketStream`), so that the latency is the cluster's rather than the client's own
  Python TLS; the same calls by httpx (TLS in Python around memory BIOs, as the earlier runs measured)
  follow, interleaved the same way;
- ingress req/s: `--connections` concurrent keep-alive httpx clients per cluster calling the node with
  the instance (HTTPS on the TLS cluster), every connection made (its handshake done) before the clock
  starts, the new connections made while measuring counted (0 expected); the clusters take turns in
  slices of 0.5 s (the order swapped every pair), `--seconds` each in all. These clients' own TLS runs
  in this process on the same cores and takes more CPU per request than the server's: their req/s is
  the client's figure as much as the server's. The server's CPU per request, printed beside it, is what
  TLS costs the node;

and then, the two clusters taking turns in the same way (KV writers in turns of 0.5 s, wrk in turns of
2 s: the load of the machine falls on both alike):

- KV writes/s: `--writers` concurrent `put`s for `--seconds` through `aether_kv.open_client` to the Raft
  leader's replica (found first: a write through a follower takes one more hop, which would differ
  between the clusters by chance), over mutual TLS with a client certificate of the cluster CA on the
  TLS cluster;
- ingress req/s by wrk (if `wrk` is installed; Debian package `wrk`): `--wrk-connections` keep-alive
  connections, 1 thread, the same calls. The Python clients above cannot keep the fast ingress busy (and
  their own TLS costs more than the server's); wrk's C client can.

`--ingress-server fast` runs both clusters with the fast ingress (a uvloop worker process; HTTPS in that
worker) instead of the default trio one (hypercorn in the node); `--only ingress` measures the ingress
figures only.

CPU per operation, as on a busy machine it says more than the rates: `server CPU` is the cluster's
processes (nodes, KV replicas, slice processes; read from /proc) less what the idle cluster used in the
second before; `client CPU` is this process's (and wrk's): the clients' side, TLS included. It prints
each round's figures and load average, then the medians over the rounds, their TLS / plain ratios, and
the median of the rounds' own ratios.

    uv run python benchmarks/tls_bench.py [--rounds 5] [--seconds 3] [--calls 1000] [--writers 16]
        [--connections 16] [--wrk-connections 32] [--ingress-server trio|fast] [--only ingress]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import re
import shutil
import ssl
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import h11
import httpx
import trio

from aether_kv import ReloadingTLS, TLSSocketStream, cluster_ca, issue, open_client
from aether_node.client import ApiClient, ApiError, ClusterUnreachableError, NoAnswerError
from aether_node.dev import LocalNodeCluster, build_sample_index, plan_cluster

REPO = Path(__file__).resolve().parents[1]
ADMIN = "admin-key-for-the-tls-benchmark-0123"
BLUEPRINT = 'name = "bench"\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 1\n'
ECHO = "org.aether:echo"
CALL_BODY = b'{"n": 1}'
SLICE = 0.5  # s: the Python clients' turns on each cluster
KV_TURN = 0.5  # s: the KV writers' turns on each cluster
WRK_TURN = 2.0  # s: wrk's turns on each cluster (whole seconds, wrk's unit; it connects anew each turn)
WRK = shutil.which("wrk")
WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '{"n": 1}'
wrk.headers["Content-Type"] = "application/json"
"""


class Setup:
    """One running cluster and how to talk to it."""

    def __init__(self, name: str, cluster: LocalNodeCluster, ingress_ca: Path | None) -> None:
        self.name = name
        self.cluster = cluster
        self.tls = cluster.tls
        self.kv_tls: ReloadingTLS | None = cluster.tls_client()
        self.verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ingress_ca)) if ingress_ca else False
        )
        scheme = "https" if self.tls else "http"
        ca_cert = cluster_ca(cluster.secret).pem.decode() if self.tls else None  # as the nodes make it
        self.api = ApiClient(
            [f"{scheme}://{n.management}" for n in cluster.nodes], api_key=ADMIN, ca_cert=ca_cert, timeout=30
        )
        self.local_ingress = self.remote_ingress = ""

    def ingress_url(self, address: str) -> str:
        return f"{'https' if self.tls else 'http'}://{address}/invoke/{ECHO}/echo"


def start(
    root: Path, index: Path, *, tls: bool, ingress_server: str, started: list[LocalNodeCluster]
) -> Setup:
    """Start one cluster (added to `started` first, so it is stopped whatever happens) and apply echo."""
    cluster = plan_cluster(root / ("tls" if tls else "plain"), 2, str(index))
    started.append(cluster)
    cluster.node_args = ("--ingress-server", ingress_server)
    ingress_ca = None
    if tls:
        cluster.dev_mode, cluster.tls = False, True
        operator = cluster_ca("the operator's own CA, for the ingress bench")
        now = datetime.datetime.now(datetime.UTC)
        pem = issue(
            operator, name="ingress", hosts=("127.0.0.1",), now=now, lifetime=datetime.timedelta(days=1)
        )
        (root / "ingress.pem").write_bytes(pem)
        ingress_ca = root / "ingress-ca.pem"
        ingress_ca.write_bytes(operator.pem)
        cluster.node_args += (
            "--ingress-cert",
            str(root / "ingress.pem"),
            "--ingress-key",
            str(root / "ingress.pem"),
        )
    os.environ["AETHER_API_KEYS"] = f"admin:{ADMIN}"  # the nodes inherit it (the plain one is in dev mode)
    cluster.start_all()
    setup = Setup("tls" if tls else "plain", cluster, ingress_ca)
    deadline = time.monotonic() + 120
    while True:  # (wait_until_ready asks the ingress over HTTP: this one may speak HTTPS)
        try:
            if len(setup.api.cluster_status().nodes) == len(cluster.nodes):
                break
        except (ClusterUnreachableError, NoAnswerError, ApiError) as error:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{setup.name}: not ready after 120 s: {error}") from None
        time.sleep(0.5)
    setup.api.apply_blueprint(BLUEPRINT)
    deadline = time.monotonic() + 180
    while True:
        status = setup.api.slice_status(ECHO)
        active = [i for i in status.instances if i.state == "ACTIVE"]
        if active:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{setup.name}: echo not active after 180 s: {status}")
        time.sleep(0.5)
    host = active[0].node_id
    for node in cluster.nodes:
        if node.node_id == host:
            setup.local_ingress = node.ingress
        else:
            setup.remote_ingress = node.ingress
    return setup


async def leader_endpoint(setup: Setup) -> str:
    """The client address of the replica that leads Raft now."""
    for endpoint in setup.cluster.kv_endpoints:
        async with open_client([endpoint], setup.cluster.secret, tls=setup.kv_tls) as kv:
            if (await kv.status()).is_leader:
                return endpoint
    raise RuntimeError(f"{setup.name}: no replica leads")


def _descendants(roots: list[int]) -> list[int]:
    """`roots` and every process below them (the nodes' replicas, slice templates and instances)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = set(roots), list(roots)
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                frontier.append(pid)
    return sorted(found)


class ServerCPU:
    """The CPU time one cluster's processes (its nodes and what they started: KV replicas, slice
    templates and instances) use over a measure, less what they use idle (heartbeats, leases, watches)."""

    def __init__(self, setup: Setup) -> None:
        self.pids = _descendants([p.pid for p in setup.cluster.processes.values()])
        self.idle_rate = self.began = self.before = 0.0

    def total(self) -> float:
        """CPU seconds used so far, to the ns: each thread's time on a CPU from its schedstat (the
        clock ticks of /proc/PID/stat, 10 ms, made the idle rate of a one-second sample, and so the
        figures per call, move by ~100 µs)."""
        total = 0
        for pid in self.pids:
            try:
                tasks = list(Path(f"/proc/{pid}/task").iterdir())
            except OSError:
                continue
            for task in tasks:
                try:
                    total += int((task / "schedstat").read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    continue
        return total / 1e9

    def start(self) -> None:
        self.began, self.before = time.perf_counter(), self.total()

    def used(self) -> float:
        """CPU seconds since `start`, the idle rate taken off."""
        return self.total() - self.before - self.idle_rate * (time.perf_counter() - self.began)


async def server_meters(setups: list[Setup]) -> list[ServerCPU]:
    """A started meter per cluster, each cluster's idle rate measured first (over the same second)."""
    meters = [ServerCPU(setup) for setup in setups]
    for meter in meters:
        meter.start()
    await trio.sleep(1.0)
    for meter in meters:
        meter.idle_rate = meter.used() / (time.perf_counter() - meter.began)
        meter.start()
    return meters


def client_cpu() -> float:
    """CPU time used so far by this process (the clients) and its children reaped (wrk)."""
    return sum(os.times()[:4])


class LeanCaller:
    """Calls on one keep-alive HTTP/1.1 connection to an ingress: h11 on a trio stream, with TLS on the
    socket (`TLSSocketStream`: OpenSSL's record layer, as the nodes run theirs) on the TLS cluster. Its
    own CPU per call is a fraction of httpx's, so the latency is the cluster's."""

    def __init__(self, setup: Setup, address: str) -> None:
        self.setup, self.address = setup, address
        self.stream: trio.abc.Stream | None = None
        self.http = h11.Connection(h11.CLIENT)
        self.headers = [
            ("host", address),
            ("content-type", "application/json"),
            ("content-length", str(len(CALL_BODY))),
        ]

    async def call(self) -> float:
        """One call; its time in seconds. A connection the server ends after an answer (hypercorn does
        after 1,000 requests) is made again after the clock stops."""
        if self.stream is None:
            host, _, port = self.address.rpartition(":")
            self.stream = await trio.open_tcp_stream(host, int(port))
            if isinstance(self.setup.verify, ssl.SSLContext):
                self.stream = await TLSSocketStream.wrap(self.stream, self.setup.verify, server_hostname=host)
            self.http = h11.Connection(h11.CLIENT)
        began = time.perf_counter()
        request = h11.Request(method="POST", target=f"/invoke/{ECHO}/echo", headers=self.headers)
        sending = self.http.send(request) + self.http.send(h11.Data(data=CALL_BODY))  # type: ignore[operator]
        await self.stream.send_all(sending + (self.http.send(h11.EndOfMessage()) or b""))
        status = 0
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                self.http.receive_data(await self.stream.receive_some())
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise RuntimeError(f"{self.setup.name}: {self.address} closed the connection mid-call")
        elapsed = time.perf_counter() - began
        if status != 200:
            raise RuntimeError(f"{self.setup.name}: {self.address} answered {status}")
        if self.http.our_state is h11.DONE and self.http.their_state is h11.DONE:
            self.http.start_next_cycle()
        else:
            await self.aclose()
        return elapsed

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
            self.stream = None


class HttpxCaller:
    """The same calls by httpx (TLS in Python, around memory BIOs), as the earlier runs made them."""

    def __init__(self, setup: Setup, address: str) -> None:
        self.url = setup.ingress_url(address)
        self.http = httpx.AsyncClient(verify=setup.verify, timeout=30)

    async def call(self) -> float:
        began = time.perf_counter()
        (await self.http.post(self.url, json={"n": 1})).raise_for_status()
        return time.perf_counter() - began

    async def aclose(self) -> None:
        await self.http.aclose()


async def interleaved_calls(
    setups: list[Setup], callers: dict[str, LeanCaller | HttpxCaller], calls: int
) -> dict[str, dict[str, float]]:
    """`calls` sequential calls per cluster, one to each cluster in turn (the order swapped every pair,
    so that neither gets the other's wake-ups or the machine's moods more often): per cluster, the p50 in
    ms, and the server's and the client's CPU µs per call."""
    for _ in range(20):  # the connections made, the peer links warm
        for caller in callers.values():
            await caller.call()
    names = [setup.name for setup in setups]
    times: dict[str, list[float]] = {name: [] for name in names}
    client = dict.fromkeys(names, 0.0)
    meters = await server_meters(setups)
    for number in range(calls):
        for name in names if number % 2 == 0 else names[::-1]:
            before = time.process_time()
            times[name].append(await callers[name].call())
            client[name] += time.process_time() - before
    return {
        setup.name: {
            "p50 ms": statistics.median(times[setup.name]) * 1000,
            "server CPU us": meter.used() / calls * 1e6,
            "client CPU us": client[setup.name] / calls * 1e6,
        }
        for setup, meter in zip(setups, meters, strict=True)
    }


async def latencies(setups: list[Setup], calls: int) -> dict[str, dict[str, float]]:
    """The call figures of one round, per cluster: through the remote and the local ingress, by the lean
    client and by httpx, each with both clusters interleaved."""
    figures: dict[str, dict[str, float]] = {setup.name: {} for setup in setups}
    for client, make in (("", LeanCaller), (" httpx", HttpxCaller)):
        for where in ("remote", "local"):
            callers: dict[str, LeanCaller | HttpxCaller] = {
                s.name: make(s, s.remote_ingress if where == "remote" else s.local_ingress) for s in setups
            }
            try:
                measured = await interleaved_calls(setups, callers, calls)
            finally:
                for caller in callers.values():
                    await caller.aclose()
            for name, found in measured.items():
                figures[name] |= {f"{where} call{client} {figure}": value for figure, value in found.items()}
        for found in figures.values():
            found[f"peer hop{client} ms"] = (
                found[f"remote call{client} p50 ms"] - found[f"local call{client} p50 ms"]
            )
    return figures


async def kv_writes(setup: Setup, seconds: float, writers: int) -> tuple[float, int, dict[str, float]]:
    count = 0
    leader = await leader_endpoint(setup)
    async with open_client([leader], setup.cluster.secret, tls=setup.kv_tls) as kv:
        await kv.put("bench/warm", b"x")
        deadline = trio.current_time() + seconds

        async def writer(number: int) -> None:
            nonlocal count
            while trio.current_time() < deadline:
                await kv.put(f"bench/{number}", b"x" * 100)
                count += 1

        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            for number in range(writers):
                nursery.start_soon(writer, number)
        return count / (trio.current_time() - began), count, {}


class PythonClients:
    """`connections` keep-alive httpx clients on the ingress of the node with the instance, their
    connections made (and their handshakes done) by `warm`; each request counts the new connections it
    had to make (none, once warm)."""

    def __init__(self, setup: Setup, connections: int) -> None:
        self.url = setup.ingress_url(setup.local_ingress)
        self.connections = connections
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.http = httpx.AsyncClient(verify=setup.verify, timeout=30, limits=limits)
        self.made = 0

    async def _trace(self, event: str, info: Any) -> None:
        if event == "connection.connect_tcp.complete":
            self.made += 1

    async def warm(self) -> None:
        async def one() -> None:
            (await self.http.post(self.url, json={"n": 0})).raise_for_status()

        async with trio.open_nursery() as nursery:
            for _ in range(self.connections):
                nursery.start_soon(one)
        self.made = 0

    async def burst(self, seconds: float) -> int:
        """Requests answered by all the clients at once for `seconds`."""
        count = 0
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                answer = await self.http.post(self.url, json={"n": 1}, extensions={"trace": self._trace})
                answer.raise_for_status()
                count += 1

        async with trio.open_nursery() as nursery:
            for _ in range(self.connections):
                nursery.start_soon(client)
        return count


async def ingress_rates(setups: list[Setup], seconds: float, connections: int) -> dict[str, dict[str, float]]:
    """The Python clients' req/s on each cluster, the clusters taking turns in slices of SLICE s (the
    order swapped every pair, so both see the same load), `seconds` each in all; with the server's and
    the clients' CPU µs per request."""
    names = [setup.name for setup in setups]
    clients = {setup.name: PythonClients(setup, connections) for setup in setups}
    count, busy, client = dict.fromkeys(names, 0), dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    try:
        for python in clients.values():
            await python.warm()
        meters = await server_meters(setups)
        for number in range(max(1, round(seconds / SLICE))):
            for name in names if number % 2 == 0 else names[::-1]:
                began, before = time.perf_counter(), time.process_time()
                count[name] += await clients[name].burst(SLICE)
                busy[name] += time.perf_counter() - began
                client[name] += time.process_time() - before
    finally:
        for python in clients.values():
            await python.http.aclose()
    return {
        setup.name: {
            "ingress req/s": count[setup.name] / busy[setup.name],
            "ingress req/s server CPU us": meter.used() / count[setup.name] * 1e6,
            "ingress req/s client CPU us": client[setup.name] / count[setup.name] * 1e6,
            "ingress new connections": clients[setup.name].made,
        }
        for setup, meter in zip(setups, meters, strict=True)
    }


async def wrk_rate(
    setup: Setup, seconds: float, connections: int, script: Path
) -> tuple[float, int, dict[str, float]]:
    """Requests/s of wrk (1 thread, `connections` keep-alive connections) on the node with the instance."""
    assert WRK is not None
    url = setup.ingress_url(setup.local_ingress)
    command = [WRK, "-t", "1", "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "5s"]
    done = await trio.run_process([*command, "-s", str(script), url], capture_stdout=True, check=False)
    out = done.stdout.decode()
    total = re.search(r"(\d+) requests in", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if done.returncode or total is None or rate is None or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"{setup.name}: wrk failed ({done.returncode}):\n{out}")
    return float(rate[1]), int(total[1]), {}


Work = Callable[[Setup, float], Awaitable[tuple[float, int, dict[str, float]]]]


async def in_turns(
    setups: list[Setup], name: str, work: Work, seconds: float, turn: float
) -> dict[str, dict[str, float]]:
    """`work` (on one cluster for a given time: its rate, its operations, figures of its own) on each
    cluster in turns of `turn` s (the order swapped every pair, so both see the same load), `seconds`
    each in all: the rate over the turns, with the server's and the client's CPU µs per operation."""
    names = [setup.name for setup in setups]
    operations, busy, client = dict.fromkeys(names, 0), dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    meters = await server_meters(setups)
    by_name = {setup.name: setup for setup in setups}
    for number in range(max(1, round(seconds / turn))):
        for each in names if number % 2 == 0 else names[::-1]:
            before = client_cpu()
            rate, done, _ = await work(by_name[each], turn)
            operations[each] += done
            busy[each] += done / rate if rate else turn
            client[each] += client_cpu() - before
    return {
        setup.name: {
            name: operations[setup.name] / busy[setup.name],
            f"{name} server CPU us": meter.used() / max(operations[setup.name], 1) * 1e6,
            f"{name} client CPU us": client[setup.name] / max(operations[setup.name], 1) * 1e6,
        }
        for setup, meter in zip(setups, meters, strict=True)
    }


def measure(setups: list[Setup], opts: argparse.Namespace) -> dict[str, dict[str, float]]:
    """KV writes and wrk's rate, on the two clusters in turns (KV_TURN and WRK_TURN s)."""

    async def run() -> dict[str, dict[str, float]]:
        figures: dict[str, dict[str, float]] = {setup.name: {} for setup in setups}
        if opts.only != "ingress":
            writes = functools.partial(kv_writes, writers=opts.writers)
            for name, found in (await in_turns(setups, "kv writes/s", writes, opts.seconds, KV_TURN)).items():
                figures[name] |= found
        if WRK is not None:
            wrk = functools.partial(wrk_rate, connections=opts.wrk_connections, script=opts.wrk_script)
            found_all = await in_turns(setups, "wrk ingress req/s", wrk, opts.seconds, WRK_TURN)
            for name, found in found_all.items():
                figures[name] |= found
        return figures

    return trio.run(run)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="per figure and round")
    parser.add_argument("--calls", type=int, default=1000, help="per cluster, client and ingress, per round")
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-connections", type=int, default=32)
    parser.add_argument("--ingress-server", choices=("trio", "fast"), default="trio")
    parser.add_argument("--only", choices=("all", "ingress"), default="all")
    opts = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="aether-tls-bench-"))
    index = root / "index"
    opts.wrk_script = root / "post.lua"
    opts.wrk_script.write_text(WRK_SCRIPT)
    build_sample_index(REPO / "sample-slices", index)
    started: list[LocalNodeCluster] = []
    try:
        setups = [
            start(root, index, tls=tls, ingress_server=opts.ingress_server, started=started)
            for tls in (False, True)
        ]
        results: dict[str, list[dict[str, float]]] = {s.name: [] for s in setups}
        when = datetime.datetime.now(datetime.UTC)
        print(
            f"{when:%Y-%m-%d %H:%M} UTC, {opts.rounds} rounds of {opts.seconds:g} s per figure,"
            f" --ingress-server {opts.ingress_server}{'' if WRK else ' (no wrk installed: no wrk figures)'};"
            f" load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        for number in range(opts.rounds):
            round_figures: dict[str, dict[str, float]] = {setup.name: {} for setup in setups}
            if opts.only != "ingress":
                calls = trio.run(latencies, setups, opts.calls)
                for name, found in calls.items():
                    round_figures[name] |= found
                ratio = calls["tls"]["remote call p50 ms"] / calls["plain"]["remote call p50 ms"]
                print(f"round {number + 1} calls: remote call p50 tls/plain {ratio:.2f}x", flush=True)
            rates = trio.run(ingress_rates, setups, opts.seconds, opts.connections)
            alone = measure(setups, opts)
            for setup in setups:
                round_figures[setup.name] |= rates[setup.name] | alone[setup.name]
            for setup in setups:
                results[setup.name].append(round_figures[setup.name])
                shown = ", ".join(f"{k} {v:,.1f}" for k, v in round_figures[setup.name].items())
                print(
                    f"round {number + 1} {setup.name:5}: {shown}; load {os.getloadavg()[0]:.2f}", flush=True
                )
        print(f"\n{'figure (median)':36} {'plain':>10} {'tls':>10} {'tls/plain':>10} {'of rounds':>10}")
        for figure in results["plain"][0]:
            plain = statistics.median(r[figure] for r in results["plain"])
            secured = statistics.median(r[figure] for r in results["tls"])
            pairs = [(t[figure], p[figure]) for t, p in zip(results["tls"], results["plain"], strict=True)]
            ratio = f"{secured / plain:9.2f}x" if plain else "         -"
            # the median of each round's own ratio: the pair measured in the same window
            rounds = f"{statistics.median(t / p for t, p in pairs):9.2f}x" if all(p for _, p in pairs) else ""
            print(f"{figure:36} {plain:10,.2f} {secured:10,.2f} {ratio} {rounds}")
        print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        for cluster in started:
            cluster.stop_all()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
