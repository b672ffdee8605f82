"""HTTPS on the node's hypercorn server: TLS on the socket (`serve_http` with an SSL context, on
`aether_kv.TLSSocketStream`) against hypercorn's own HTTPS (trio's `SSLStream`), each against plain
HTTP of the same server, in the same run (issue 17: the trio ingress with TLS >= 0.9x of plain).

Four server processes on 127.0.0.1, each the node's ingress app with an invoke that answers the payload
itself (no cluster, no slice: the HTTP layer alone):

- `plain` and `tls`: `aether_node.routing.serve_http` as the node runs it, without and with the
  operator's context;
- `bare` and `sslstream`: hypercorn's own `serve` on the same app without the node's two body wrappers,
  plain and with the same context (hypercorn's HTTPS: trio's `SSLListener`, the way the node served
  HTTPS before).

Each round runs wrk (1 thread, `--connections` keep-alive connections, POST of a small JSON body) for
`--seconds` against each server, in an order that rotates per round, and reads the server's CPU time
from /proc before and after (its CPU µs per request) and wrk's own from its rusage. It prints each
round and the load average, then the medians and the ratios TLS / plain of each server.

    uv run python benchmarks/https_bench.py [--rounds 7] [--seconds 3] [--connections 32]
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aether_kv import cluster_ca, issue

WRK = shutil.which("wrk")
WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '{"n": 1}'
wrk.headers["Content-Type"] = "application/json"
"""
MODES = ("plain", "tls", "bare", "sslstream")

SERVER = r"""
import functools, ssl, sys

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from aether_node.routing import MAX_BODY, ingress_app, serve_http


async def invoke(artifact, entry, payload, *args, **options):
    return payload


class SSLStreamConfig(Config):  # hypercorn's own HTTPS (trio's SSLListener) with this context
    ssl_enabled = True

    def create_ssl_context(self):
        return context


mode, address, pem = sys.argv[1:4]
app = ingress_app(invoke)
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # as the node's `ingress_ssl_context`
context.set_alpn_protocols(["http/1.1"])
context.load_cert_chain(pem)
if mode in ("plain", "tls"):
    tls = context if mode == "tls" else None
    trio.run(functools.partial(serve_http, max_body=MAX_BODY, ssl_context=tls), app, address)
else:
    config = SSLStreamConfig() if mode == "sslstream" else Config()
    config.bind, config.accesslog, config.keep_alive_timeout = [address], None, 75.0
    trio.run(serve, app, config)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited ({server.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the server on port {port} did not listen within 60 s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, seconds: float, connections: int, script: Path) -> tuple[float, int, float]:
    """(requests/s, requests, wrk's CPU seconds)."""
    assert WRK is not None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [
        WRK,
        "-t",
        "1",
        "-c",
        str(connections),
        "-d",
        f"{seconds:g}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
    ]
    done = subprocess.run([*command, url], capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total, rate = (
        re.search(r"(\d+) requests in", done.stdout),
        re.search(r"Requests/sec:\s+([\d.]+)", done.stdout),
    )
    if (
        done.returncode
        or total is None
        or rate is None
        or "Non-2xx" in done.stdout
        or "Socket errors" in done.stdout
    ):
        raise RuntimeError(f"{url}: wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(rate[1]), int(total[1]), used


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=32)
    opts = parser.parse_args()
    if WRK is None:
        sys.exit("wrk is not installed (Debian package `wrk`)")
    root = Path(tempfile.mkdtemp(prefix="https-bench-"))
    operator = cluster_ca("the operator's own CA, for the HTTPS bench")
    now = datetime.datetime.now(datetime.UTC)
    pem = root / "ingress.pem"
    pem.write_bytes(
        issue(operator, name="ingress", hosts=("127.0.0.1",), now=now, lifetime=datetime.timedelta(days=1))
    )
    script = root / "post.lua"
    script.write_text(WRK_SCRIPT)
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    started = datetime.datetime.now(datetime.UTC)
    print(
        f"{started:%Y-%m-%d %H:%M} UTC, {opts.rounds} rounds of {opts.seconds:g} s, "
        f"wrk -c {opts.connections}; load average {load()}",
        flush=True,
    )
    figures: dict[str, dict[str, list[float]]] = {m: {"rate": [], "cpu": [], "wrk": []} for m in MODES}
    try:
        for mode in MODES:
            port = free_port()
            server = subprocess.Popen([sys.executable, "-c", SERVER, mode, f"127.0.0.1:{port}", str(pem)])
            scheme = "https" if mode in ("tls", "sslstream") else "http"
            servers[mode] = server, f"{scheme}://127.0.0.1:{port}/invoke/org.aether:echo/echo"
            wait_listening(port, server)
        for _, url in servers.values():
            wrk(url, 1.0, opts.connections, script)  # warm-up
        for number in range(opts.rounds):
            order = MODES[number % len(MODES) :] + MODES[: number % len(MODES)]
            line = []
            for mode in order:
                server, url = servers[mode]
                before = cpu_seconds(server.pid)
                rate, requests, wrk_cpu = wrk(url, opts.seconds, opts.connections, script)
                used = cpu_seconds(server.pid) - before
                figures[mode]["rate"].append(rate)
                figures[mode]["cpu"].append(used / requests * 1e6)
                figures[mode]["wrk"].append(wrk_cpu / requests * 1e6)
                line.append(f"{mode} {rate:,.0f} req/s {used / requests * 1e6:,.0f} µs")
            print(f"round {number + 1}: " + "; ".join(line) + f"; load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        for server, _ in servers.values():
            server.terminate()
        for server, _ in servers.values():
            server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
    median = {m: {k: statistics.median(v) for k, v in f.items()} for m, f in figures.items()}
    print(f"\n{'server (median)':28}{'req/s':>10}{'server CPU µs/req':>20}{'wrk CPU µs/req':>17}")
    for mode in MODES:
        m = median[mode]
        print(f"{mode:28}{m['rate']:>10,.0f}{m['cpu']:>20,.1f}{m['wrk']:>17,.1f}")
    print()
    for tls, plain, what in (
        ("tls", "plain", "TLS on the socket"),
        ("sslstream", "bare", "hypercorn's SSLStream"),
    ):
        rate = median[tls]["rate"] / median[plain]["rate"]
        cpu = median[tls]["cpu"] / median[plain]["cpu"]
        print(f"{what:28}TLS / plain: req/s {rate:.2f}x, server CPU per request {cpu:.2f}x")
    print(f"load average at the end: {load()}")


if __name__ == "__main__":
    main()
