"""TLS on vs off, in the same run (issue 17: each figure with TLS >= 0.9x of plain text).

Two local clusters of 2 real `aether-node` processes each (both nodes KV replicas), running at once on
127.0.0.1: one in plain text (`--dev-mode`), one with TLS from its cluster CA (mutual TLS on the peer
and KV ports, HTTPS on the management API, and HTTPS on the ingress with a certificate of a separate
"operator" CA). Each runs `org.aether:echo` x1. Rounds alternate the order of the two clusters; each
round measures, on each cluster:

- KV writes/s: `--writers` concurrent `put`s for `--seconds` through `aether_kv.open_client` to the Raft
  leader's replica (found first: a write through a follower takes one more hop, which would differ
  between the clusters by chance), over mutual TLS with a client certificate of the cluster CA on the
  TLS cluster;
- node-to-node call latency: sequential calls through the ingress of the node *without* the instance
  (ingress -> peer link -> the other node -> slice) and through the node *with* it (no peer hop); the
  p50 of each and their difference, the peer hop;
- ingress req/s: `--connections` concurrent keep-alive clients calling the node with the instance (HTTPS
  on the TLS cluster);
- ingress req/s by wrk (if `wrk` is installed; Debian package `wrk`): `--wrk-connections` keep-alive
  connections, 1 thread, the same calls. The Python clients above cannot keep the fast ingress busy (and
  their own TLS costs more than the server's); wrk's C client can.

`--ingress-server fast` runs both clusters with the fast ingress (a uvloop worker process; HTTPS in that
worker) instead of the default trio one (hypercorn in the node); `--only ingress` measures the ingress
figures only.

It prints each round's figures and load average, then the medians and the TLS / plain ratios. On a busy
machine the CPU time per operation says more than the rates: the cluster's processes (read from /proc)
plus this process (the clients' side of TLS), less what the idle cluster used in the second before.

    uv run python benchmarks/tls_bench.py [--rounds 5] [--seconds 3] [--writers 16] [--connections 16]
        [--wrk-connections 32] [--ingress-server trio|fast] [--only ingress]
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from aether_kv import ReloadingTLS, cluster_ca, issue, open_client
from aether_node.client import ApiClient, ApiError, ClusterUnreachableError, NoAnswerError
from aether_node.dev import LocalNodeCluster, build_sample_index, plan_cluster

REPO = Path(__file__).resolve().parents[1]
ADMIN = "admin-key-for-the-tls-benchmark-0123"
BLUEPRINT = 'name = "bench"\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 1\n'
ECHO = "org.aether:echo"
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


def cpu_seconds(setup: Setup) -> float:
    """CPU time used so far by the cluster's processes, this one and its children reaped (wrk)."""
    total = sum(os.times()[:4])
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in _descendants([p.pid for p in setup.cluster.processes.values()]):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


async def kv_writes(setup: Setup, seconds: float, writers: int) -> tuple[float, int]:
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
        return count / (trio.current_time() - began), count


async def call_p50(setup: Setup, address: str, seconds: float) -> tuple[float, int]:
    """p50 in ms of sequential calls through the ingress at `address`, and how many were made."""
    url = setup.ingress_url(address)
    times = []
    async with httpx.AsyncClient(verify=setup.verify, timeout=30) as http:
        (await http.post(url, json={"n": 0})).raise_for_status()  # the connection, and the peer link, made
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            (await http.post(url, json={"n": 1})).raise_for_status()
            times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), len(times)


async def ingress_rate(setup: Setup, seconds: float, connections: int) -> tuple[float, int]:
    url = setup.ingress_url(setup.local_ingress)
    count = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(verify=setup.verify, timeout=30, limits=limits) as http:
        (await http.post(url, json={"n": 0})).raise_for_status()
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                (await http.post(url, json={"n": 1})).raise_for_status()
                count += 1

        began = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                nursery.start_soon(client)
        return count / (time.perf_counter() - began), count


async def wrk_rate(setup: Setup, seconds: float, connections: int, script: Path) -> tuple[float, int]:
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
    return float(rate[1]), int(total[1])


def measure(setup: Setup, opts: argparse.Namespace) -> dict[str, float]:
    async def timed(work: Any) -> tuple[float, float]:
        """(the figure, CPU µs per operation) of `work`, which returns (figure, operations). The CPU the
        idle cluster uses (heartbeats, leases, watches), measured for a second just before, is taken off."""
        idle_began, idle_before = time.perf_counter(), cpu_seconds(setup)
        await trio.sleep(1.0)
        idle_rate = (cpu_seconds(setup) - idle_before) / (time.perf_counter() - idle_began)
        began, before = time.perf_counter(), cpu_seconds(setup)
        figure, operations = await work
        used = cpu_seconds(setup) - before - idle_rate * (time.perf_counter() - began)
        return figure, used / max(operations, 1) * 1e6

    async def run() -> dict[str, float]:
        figures = {}
        if opts.only != "ingress":
            writes, writes_cpu = await timed(kv_writes(setup, opts.seconds, opts.writers))
            remote, remote_cpu = await timed(call_p50(setup, setup.remote_ingress, opts.seconds))
            local, local_cpu = await timed(call_p50(setup, setup.local_ingress, opts.seconds))
            figures |= {
                "kv writes/s": writes,
                "kv CPU us/write": writes_cpu,
                "remote call p50 ms": remote,
                "remote call CPU us": remote_cpu,
                "local call p50 ms": local,
                "local call CPU us": local_cpu,
                "peer hop ms": remote - local,
            }
        rate, rate_cpu = await timed(ingress_rate(setup, opts.seconds, opts.connections))
        figures |= {"ingress req/s": rate, "ingress CPU us/req": rate_cpu}
        if WRK is not None:
            wrk = await timed(wrk_rate(setup, opts.seconds, opts.wrk_connections, opts.wrk_script))
            figures |= {"wrk ingress req/s": wrk[0], "wrk ingress CPU us/req": wrk[1]}
        return figures

    return trio.run(run)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="per figure and round")
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
            order = setups if number % 2 == 0 else setups[::-1]
            for setup in order:
                figures = measure(setup, opts)
                results[setup.name].append(figures)
                shown = ", ".join(f"{k} {v:,.1f}" for k, v in figures.items())
                print(
                    f"round {number + 1} {setup.name:5}: {shown}; load {os.getloadavg()[0]:.2f}", flush=True
                )
        print(f"\n{'figure (median)':22} {'plain':>10} {'tls':>10} {'tls/plain':>10}")
        for figure in results["plain"][0]:
            plain = statistics.median(r[figure] for r in results["plain"])
            secured = statistics.median(r[figure] for r in results["tls"])
            ratio = secured / plain if plain else float("nan")
            print(f"{figure:22} {plain:10,.2f} {secured:10,.2f} {ratio:9.2f}x")
        print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        for cluster in started:
            cluster.stop_all()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
