"""Load generator for a node's ingress: calls `POST /invoke/{artifact}/{entry}` at a rate that follows a
shape, and prints, per second, the rate asked for, the rate achieved and latency percentiles.

Shapes (rates in calls per second; `--duration` seconds in all):

    constant --rate R                          R throughout
    ramp     --rate R0 --to R1                 from R0 to R1, linearly
    spike    --rate R --spike S --at T --for L R, and S from second T for L seconds

Open loop: calls start on schedule whether or not earlier ones have answered (a slow slice makes calls
pile up, as real clients would), up to `--max-in-flight`; a call that would exceed it is not sent and
counts as `skipped`. Latency is measured from the scheduled start, so waiting for a connection counts.
Only loopback targets (127.0.0.0/8, ::1, localhost): this is a test tool, not a stress tool for other
machines. Every run is bounded by `--duration` (at most an hour) and stops by itself.

    uv run python benchmarks/load_gen.py http://127.0.0.1:8080 org.aether:busy burn --data '{"ms": 20}' \\
        --shape spike --rate 5 --spike 60 --at 10 --for 20 --duration 60

With `--json` each second is also printed as one JSON object (and the summary as the last one), for
scripts and tests. Exit status: 0, or 2 for bad options.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx
import trio

MAX_DURATION = 3600.0
MAX_RATE = 100_000.0


@attrs.frozen(kw_only=True)
class Shape:
    kind: str  # constant, ramp, spike
    rate: float
    to: float = 0.0  # ramp: the last rate
    spike: float = 0.0  # spike: the rate during the spike
    at: float = 0.0  # spike: its start (s)
    length: float = 0.0  # spike: how long it lasts (s)


def rate_at(shape: Shape, t: float, duration: float) -> float:
    """The rate asked for at `t` seconds into a run of `duration` seconds. Pure."""
    if shape.kind == "ramp":
        return shape.rate + (shape.to - shape.rate) * min(1.0, max(0.0, t / duration))
    if shape.kind == "spike" and shape.at <= t < shape.at + shape.length:
        return shape.spike
    return shape.rate


def schedule(shape: Shape, duration: float, *, tick: float = 0.001) -> Iterator[float]:
    """Start times (s from the run's start) of the calls, in order: the rate is integrated tick by tick
    and a call is due each time the integral passes a whole call, so any shape (a ramp from 0, a spike)
    gets the number of calls its area says. Pure."""
    owed = 0.0
    for step in range(round(duration / tick)):
        t = step * tick
        owed += rate_at(shape, t, duration) * tick
        while owed >= 1 - 1e-9:  # a hair under 1: a hundred 0.01s make 0.9999999999999999
            owed -= 1
            yield t


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of sorted values; None if there are none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@attrs.define
class Second:
    """What happened to the calls scheduled in one second of the run."""

    index: int
    asked: float
    sent: int = 0
    ok: int = 0
    errors: int = 0
    skipped: int = 0
    latencies: list[float] = attrs.field(factory=list)

    def report(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "second": self.index,
            "asked_per_s": round(self.asked, 2),
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "skipped": self.skipped,
            "achieved_per_s": self.ok,
            **{f"p{q}_ms": _ms(percentile(ordered, q)) for q in (50, 90, 99)},
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def summary(seconds: Sequence[Second], duration: float) -> dict[str, Any]:
    latencies = sorted(latency for second in seconds for latency in second.latencies)
    ok = sum(second.ok for second in seconds)
    return {
        "summary": True,
        "sent": sum(second.sent for second in seconds),
        "ok": ok,
        "errors": sum(second.errors for second in seconds),
        "skipped": sum(second.skipped for second in seconds),
        "achieved_per_s": round(ok / duration, 2),
        **{f"p{q}_ms": _ms(percentile(latencies, q)) for q in (50, 90, 99)},
    }


def _line(report: dict[str, Any]) -> str:
    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    head = (
        "total" if report.get("summary") else f"{report['second']:>4}s asked {report['asked_per_s']:>7.1f}/s"
    )
    return (
        f"{head}  sent {report['sent']:>6}  ok {report['ok']:>6}  err {report['errors']:>4}  "
        f"skipped {report['skipped']:>4}  achieved {report['achieved_per_s']:>7.1f}/s  "
        f"p50 {show(report['p50_ms'])} p90 {show(report['p90_ms'])} p99 {show(report['p99_ms'])} ms"
    )


def check_loopback(url: str) -> str:
    """The base URL without a trailing slash, if its host is on this machine; else ValueError."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"{url!r} is not an http(s) URL of a node's ingress")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"{host} is not a loopback address: load_gen only targets this machine")
    return url.rstrip("/")


async def run(
    base: str,
    artifact: str,
    entry: str,
    payload: Any,
    shape: Shape,
    duration: float,
    *,
    max_in_flight: int = 256,
    timeout: float = 10.0,
    emit: Any = print,
) -> dict[str, Any]:
    """Send the calls of `schedule(shape, duration)`; `emit` each second's report as it closes (a second
    closes once its calls have answered or timed out) and return the summary."""
    url = f"{base}/invoke/{artifact}/{entry}"
    body = json.dumps(payload).encode()
    seconds = [Second(index, rate_at(shape, index, duration)) for index in range(math.ceil(duration))]
    in_flight = 0
    scheduled_until = 0.0  # the start time of the call the sender is at (s into the run)
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)

    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client, trio.open_nursery() as nursery:
        started = trio.current_time()

        async def call(second: Second, planned: float) -> None:
            nonlocal in_flight
            try:
                response = await client.post(url, content=body, headers={"content-type": "application/json"})
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            finally:
                in_flight -= 1
            if ok:
                second.latencies.append(trio.current_time() - planned)
                second.ok += 1
            else:
                second.errors += 1

        async def report() -> None:
            for second in seconds:
                await trio.sleep_until(started + second.index + 1)
                # the sender is past this second (it may run late), and its calls answered or timed out
                deadline = started + second.index + 1 + timeout + 1
                while (
                    scheduled_until < second.index + 1 or second.ok + second.errors < second.sent
                ) and trio.current_time() < deadline:
                    await trio.sleep(0.05)
                emit(second.report())

        nursery.start_soon(report)
        for t in schedule(shape, duration):
            scheduled_until = t
            planned = started + t
            await trio.sleep_until(planned)
            second = seconds[min(int(t), len(seconds) - 1)]
            if in_flight >= max_in_flight:
                second.skipped += 1
                continue
            in_flight += 1
            second.sent += 1
            nursery.start_soon(call, second, planned)
        scheduled_until = math.inf
    result = summary(seconds, duration)
    emit(result)
    return result


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="load_gen.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ingress", help="a node's ingress, e.g. http://127.0.0.1:8080 (loopback only)")
    parser.add_argument("artifact", help="group:artifact, e.g. org.aether:busy")
    parser.add_argument("entry", help="the entry point, e.g. burn")
    parser.add_argument("--data", default="null", help="the JSON payload of every call (default: null)")
    parser.add_argument("--shape", choices=("constant", "ramp", "spike"), default="constant")
    parser.add_argument("--rate", type=float, required=True, help="calls per second (ramp: the first rate)")
    parser.add_argument("--to", type=float, default=None, help="ramp: the last rate")
    parser.add_argument("--spike", type=float, default=None, help="spike: the rate during the spike")
    parser.add_argument("--at", type=float, default=None, help="spike: when it starts (s into the run)")
    parser.add_argument("--for", dest="length", type=float, default=None, help="spike: how long it lasts (s)")
    parser.add_argument("--duration", type=float, default=30.0, help=f"seconds, at most {MAX_DURATION:g}")
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=10.0, help="per call, seconds")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    args = parser.parse_args(argv)

    def bad(message: str) -> None:
        parser.error(message)

    try:
        args.ingress = check_loopback(args.ingress)
        args.payload = json.loads(args.data)
    except ValueError as error:
        bad(f"--data is not JSON: {error}" if isinstance(error, json.JSONDecodeError) else str(error))
    if not 0 < args.duration <= MAX_DURATION:
        bad(f"--duration must be in (0, {MAX_DURATION:g}] seconds, got {args.duration:g}")
    rates = [("--rate", args.rate), ("--to", args.to), ("--spike", args.spike)]
    for flag, rate in rates:
        if rate is not None and not 0 <= rate <= MAX_RATE:
            bad(f"{flag} must be in [0, {MAX_RATE:g}] calls per second, got {rate:g}")
    if args.max_in_flight < 1 or args.timeout <= 0:
        bad("--max-in-flight must be ≥ 1 and --timeout > 0")
    needed = {"ramp": ("to",), "spike": ("spike", "at", "length"), "constant": ()}[args.shape]
    missing = [name for name in needed if getattr(args, name) is None]
    if missing:
        flags = ", ".join("--for" if name == "length" else f"--{name}" for name in missing)
        bad(f"--shape {args.shape} needs {flags}")
    args.shape_record = Shape(
        kind=args.shape,
        rate=args.rate,
        to=args.to or 0.0,
        spike=args.spike or 0.0,
        at=args.at or 0.0,
        length=args.length or 0.0,
    )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def emit(report: dict[str, Any]) -> None:
        print(json.dumps(report) if args.json else _line(report), flush=True)

    began = time.monotonic()
    trio.run(
        lambda: run(
            args.ingress,
            args.artifact,
            args.entry,
            args.payload,
            args.shape_record,
            args.duration,
            max_in_flight=args.max_in_flight,
            timeout=args.timeout,
            emit=emit,
        )
    )
    if not args.json:
        print(f"ran {time.monotonic() - began:.1f} s against {args.ingress}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
