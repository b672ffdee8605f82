"""The peer hop alone, plain text against mutual TLS (issue 17: node-to-node calls with TLS <= 1.11x).

Two processes on 127.0.0.1 speak the node's real peer protocol: this one calls through `PeerClients`
(`routing/_peers.py`), a server process answers with `serve_peers` and an invoke that returns the
payload (no slice behind it), so a call is the peer hop and nothing else: frame, TLS, the secret's
connection made once, the reply. Three links, each with its own server process, in turns over the
rounds (the order rotates):

- `plain`: no TLS (as `--dev-mode`);
- `tls`: mutual TLS 1.3 from a cluster CA, as a node runs it (`accept_tls`/`connect_tls`: the records
  on the socket, `aether_kv/_tls_stream.py`);
- `sslstream`: the same TLS through trio's `SSLStream` (the record layer in Python around memory BIOs),
  what the links used before; patched in here for the comparison only.

Each round makes `--calls` sequential calls per link and reports the p50 and mean latency and the CPU
time per call of each end (this process's, and the server's own, asked through the protocol's `stats`
operation); the medians over the rounds and the ratios to plain follow, with the load average.

    uv run python benchmarks/peer_tls_bench.py [--rounds 7] [--calls 3000]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

import aether_kv
from aether_kv import ReloadingTLS, client_identity, free_port

SECRET = "the peer TLS benchmark's cluster secret"
MODES = ("plain", "tls", "sslstream")


def identity(directory: Path, name: str) -> ReloadingTLS:
    return client_identity(SECRET, directory, name=name, hosts=("127.0.0.1",))


class Links:
    """Which TLS the peer protocol's new connections get: `old` True, trio's SSLStream (as before
    `_tls_stream`); False, aether_kv's own. Installed into aether_kv before aether_node is imported, so
    the peer protocol takes these two functions for its TLS ends."""

    old = False
    accept_tls, connect_tls = aether_kv.accept_tls, aether_kv.connect_tls

    @classmethod
    async def accept(cls, stream: Any, tls: ReloadingTLS | None, *, timeout: float) -> Any:
        if not cls.old or tls is None:
            return await cls.accept_tls(stream, tls, timeout=timeout)
        wrapped = trio.SSLStream(stream, tls.server(), server_side=True)
        with trio.move_on_after(timeout):
            await wrapped.do_handshake()
            return wrapped
        return None

    @classmethod
    async def connect(cls, stream: Any, tls: ReloadingTLS | None, host: str) -> Any:
        if not cls.old or tls is None:
            return await cls.connect_tls(stream, tls, host)
        wrapped = trio.SSLStream(stream, tls.client(), server_hostname=host)
        await wrapped.do_handshake()
        return wrapped


aether_kv.accept_tls, aether_kv.connect_tls = Links.accept, Links.connect  # type: ignore[assignment]
from aether_node.routing import NotSentError, PeerClients, serve_peers  # noqa: E402


async def echo(coordinates: str, instance: int, entry: str, payload: Any, timeout: float) -> Any:
    return payload


def serve(mode: str, port: int, directory: Path) -> None:
    tls = None if mode == "plain" else identity(directory, "server")
    Links.old = mode == "sslstream"
    trio.run(
        functools.partial(
            serve_peers, SECRET, f"127.0.0.1:{port}", "server", echo, tls=tls, stats=time.process_time
        )
    )


async def calls(peers: PeerClients, address: str, count: int) -> dict[str, float]:
    payload = {"n": 1, "text": "a call's payload"}
    for _ in range(50):  # warm: the connection made, the handshakes past
        await peers.invoke(address, "org.aether:echo:1.0.0", 0, "echo", payload, 30)
    server_before = await peers.stats(address, 30)
    began, cpu_before = time.perf_counter(), time.process_time()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        await peers.invoke(address, "org.aether:echo:1.0.0", 0, "echo", payload, 30)
        times.append(time.perf_counter() - start)
    cpu, wall = time.process_time() - cpu_before, time.perf_counter() - began
    server_cpu = await peers.stats(address, 30) - server_before
    return {
        "p50 us": statistics.median(times) * 1e6,
        "mean us": wall / count * 1e6,
        "caller CPU us/call": cpu / count * 1e6,
        "server CPU us/call": server_cpu / count * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--serve", nargs=3, metavar=("MODE", "PORT", "DIR"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.serve:
        mode, port, directory = opts.serve
        serve(mode, int(port), Path(directory))
        return
    root = Path(tempfile.mkdtemp(prefix="aether-peer-tls-bench-"))
    ports = {mode: free_port() for mode in MODES}
    servers = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", mode, str(ports[mode]), str(root / mode)],
            stdin=subprocess.DEVNULL,
        )
        for mode in MODES
    ]
    client_tls = identity(root / "client", "client")
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            links = {}
            for mode in MODES:
                links[mode] = PeerClients(nursery, SECRET, tls=None if mode == "plain" else client_tls)
            for mode in MODES:  # each server up (its process starts in a second or so)
                with trio.fail_after(60):
                    while True:
                        Links.old = mode == "sslstream"  # (the link's one connection is made now)
                        try:
                            await links[mode].stats(f"127.0.0.1:{ports[mode]}", 5)
                            break
                        except NotSentError:
                            await trio.sleep(0.2)
                        finally:
                            Links.old = False
            for number in range(opts.rounds):
                order = MODES[number % len(MODES) :] + MODES[: number % len(MODES)]
                for mode in order:
                    figures = await calls(links[mode], f"127.0.0.1:{ports[mode]}", opts.calls)
                    results[mode].append(figures)
                    shown = ", ".join(f"{k} {v:,.1f}" for k, v in figures.items())
                    print(f"round {number + 1} {mode:9}: {shown}; load {os.getloadavg()[0]:.2f}", flush=True)
            nursery.cancel_scope.cancel()

    when = datetime.datetime.now(datetime.UTC)
    print(
        f"{when:%Y-%m-%d %H:%M} UTC, {opts.rounds} rounds of {opts.calls} calls per link;"
        f" load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    try:
        trio.run(run)
    finally:
        for server in servers:
            server.terminate()
            server.wait()
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"\n{'figure (median)':20}"
        + "".join(f"{mode:>11}" for mode in MODES)
        + "   tls/plain  sslstream/plain"
    )
    for figure in results["plain"][0]:
        medians = {mode: statistics.median(r[figure] for r in results[mode]) for mode in MODES}
        print(
            f"{figure:20}"
            + "".join(f"{medians[mode]:11,.1f}" for mode in MODES)
            + f"   {medians['tls'] / medians['plain']:8.2f}x  {medians['sslstream'] / medians['plain']:8.2f}x"
        )
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
