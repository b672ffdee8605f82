"""benchmarks/load_gen.py: its schedules (pure) and real runs, as a subprocess, against a real HTTP server
on 127.0.0.1 that answers like an ingress (200 with JSON, or 500 when told to fail)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "load_gen.py"
_spec = importlib.util.spec_from_file_location("load_gen", SCRIPT)
assert _spec is not None and _spec.loader is not None
load_gen = importlib.util.module_from_spec(_spec)
sys.modules["load_gen"] = load_gen  # attrs resolves the records' module by name
_spec.loader.exec_module(load_gen)


def starts_per_second(shape: object, duration: float) -> list[int]:
    counts = [0] * int(duration)
    for t in load_gen.schedule(shape, duration):
        counts[int(t)] += 1
    return counts


def test_a_constant_shape_sends_the_rate_every_second() -> None:
    assert starts_per_second(load_gen.Shape(kind="constant", rate=10), 3) == [10, 10, 10]
    assert starts_per_second(load_gen.Shape(kind="constant", rate=0), 2) == [0, 0]


def test_a_ramp_rises_from_its_first_to_its_last_rate() -> None:
    counts = starts_per_second(load_gen.Shape(kind="ramp", rate=0, to=40), 4)
    assert counts == sorted(counts) and counts[0] < 10 and counts[-1] > 30


def test_a_spike_runs_at_its_rate_for_its_length_only() -> None:
    shape = load_gen.Shape(kind="spike", rate=2, spike=20, at=2, length=2)
    assert starts_per_second(shape, 6) == [2, 2, 20, 20, 2, 2]


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (load_gen.percentile(values, 50), load_gen.percentile(values, 99)) == (50.0, 99.0)
    assert load_gen.percentile([], 50) is None


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost:1/", "http://[::1]:9", "http://127.9.9.9"]
)
def test_loopback_targets_are_accepted(url: str) -> None:
    assert load_gen.check_loopback(url) == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://10.0.0.1:8080", "10.0.0.1 is not a loopback address"),
        ("http://example.org", "example.org is not a loopback address"),
        ("ftp://127.0.0.1", "is not an http(s) URL"),
    ],
)
def test_other_targets_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_gen.check_loopback(url)


class _Ingress(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        status = 500 if "fail" in self.path else 200
        answer = json.dumps({"echo": json.loads(body)}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def ingress() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ingress)
    server.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def run_load_gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_constant_run_reports_each_second_and_a_summary(ingress: ThreadingHTTPServer) -> None:
    base = f"http://127.0.0.1:{ingress.server_port}"
    result = run_load_gen(
        base, "org.aether:busy", "burn", "--data", '{"ms": 1}', "--rate", "20", "--duration", "2", "--json"
    )
    assert result.returncode == 0, result.stderr
    *seconds, total = [json.loads(line) for line in result.stdout.splitlines()]

    assert [s["second"] for s in seconds] == [0, 1]
    assert all(s["sent"] == s["ok"] == 20 and s["errors"] == s["skipped"] == 0 for s in seconds)
    assert all(s["p50_ms"] is not None and s["p50_ms"] <= s["p99_ms"] for s in seconds)
    assert (total["summary"], total["sent"], total["ok"], total["achieved_per_s"]) == (True, 40, 40, 20.0)
    assert set(ingress.paths) == {"/invoke/org.aether:busy/burn"}  # type: ignore[attr-defined]


def test_failed_calls_count_as_errors_without_latencies(ingress: ThreadingHTTPServer) -> None:
    base = f"http://127.0.0.1:{ingress.server_port}"
    result = run_load_gen(base, "org.aether:busy", "fail", "--rate", "10", "--duration", "1", "--json")
    assert result.returncode == 0, result.stderr
    total = json.loads(result.stdout.splitlines()[-1])
    assert (total["sent"], total["ok"], total["errors"], total["p99_ms"]) == (10, 0, 10, None)


def test_an_unreachable_ingress_is_errors_not_a_crash() -> None:
    result = run_load_gen(
        "http://127.0.0.1:9", "org.aether:busy", "burn", "--rate", "5", "--duration", "1", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["errors"] == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "5", "--shape", "spike", "--spike", "50"], "--shape spike needs --at, --for"),
        (["--rate", "5", "--shape", "ramp"], "--shape ramp needs --to"),
        (["--rate", "-1"], "--rate must be in [0, 100000] calls per second, got -1"),
        (["--rate", "5", "--duration", "7200"], "--duration must be in (0, 3600] seconds, got 7200"),
        (["--rate", "5", "--data", "{nope"], "--data is not JSON"),
    ],
)
def test_bad_options_exit_2_saying_what(args: list[str], message: str) -> None:
    result = run_load_gen("http://127.0.0.1:9", "org.aether:busy", "burn", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_a_remote_target_is_refused_before_anything_is_sent() -> None:
    result = run_load_gen("http://192.168.1.1:8080", "org.aether:busy", "burn", "--rate", "5")
    assert result.returncode == 2
    assert "192.168.1.1 is not a loopback address: load_gen only targets this machine" in result.stderr
