"""Helpers for the `aether` CLI tests (`test_cli_*.py`, `test_management_*.py`) and
`benchmarks/cli_bench.py`.

- `run_aether`: the real console script in a subprocess, from a given working directory (so no
  `.aether-dev/cluster.json` is picked up by accident), with a clean environment: no AETHER_* variables
  unless given, the config directory (XDG_CONFIG_HOME) under that working directory (so neither the
  operator's contexts are used nor changed), a wide terminal (COLUMNS) so rich tables are not truncated,
  unbuffered output; `input` is its stdin (else /dev/null);
- `cli_cluster`: a local cluster of real `aether-node` processes (optionally with API keys instead of
  dev mode); afterwards every process of the cluster is ended (SIGKILL, by pid), whatever happened;
- `LineReader`: the lines of a long-running command (`cluster events --follow`), read with a deadline;
- `StubApi`: a tiny management API on 127.0.0.1 that records the requests it gets and answers canned
  JSON, for what must be seen on the wire;
- `closed_port`: a local port nothing listens on;
- `processes_of`: the processes whose command line or working directory is under a directory (/proc).

Every wait has a deadline and fails saying what it saw last.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from aether_node.dev import LocalNodeCluster, plan_cluster, wait_until_ready
from support import REPO as REPO  # re-exported for the tests
from support import SAMPLE_SLICES as SAMPLE_SLICES
from support import kill_processes_under, processes_under, wait_until_sync

wait_until = wait_until_sync  # the CLI tests wait outside trio
kill_processes_of = kill_processes_under  # SIGKILL every process of a directory, until none is left
# A cluster's ports are chosen free (bound to port 0, then released) before its nodes bind them: another
# test worker may take one in between, so a start that fails on a taken port is tried again.
PORT_ATTEMPTS = 3

EXAMPLE = REPO / "examples" / "blueprint.toml"
ECHO = "org.aether:echo:1.0.0"
GREETER = "org.aether:greeter:1.0.0"
COUNTER = "org.aether:counter:1.0.0"

# Variables of the operator's shell that must not leak into a test's CLI run.
_AETHER_VARIABLES = ("AETHER_CLUSTER", "AETHER_API_KEY", "AETHER_API_KEYS", "AETHER_CONTEXT")
CONFIG_DIR = ".config"  # XDG_CONFIG_HOME of a CLI run, under its working directory


# ---------------------------------------------------------------- the wheel index


# ---------------------------------------------------------------- running the CLI


def console_script(name: str, entry: str) -> list[str]:
    """A console script of this environment (the uv venv's bin/), or else `entry` (module:function)."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return [str(beside)]
    found = shutil.which(name)
    if found:
        return [found]
    module, function = entry.split(":")
    return [sys.executable, "-c", f"from {module} import {function}; {function}()"]


def aether_command() -> list[str]:
    return console_script("aether", "aether_cli._app:main")


def cli_env(extra: Mapping[str, str] | None = None, *, cwd: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _AETHER_VARIABLES}
    env.update({"COLUMNS": "200", "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"})
    if cwd is not None:
        env["XDG_CONFIG_HOME"] = str(Path(cwd).resolve() / CONFIG_DIR)
    env.update(extra or {})
    return env


@attrs.frozen
class CliRun:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except ValueError:
            pytest.fail(f"stdout is not JSON:\n{self}")

    def json_lines(self) -> list[Any]:
        try:
            return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]
        except ValueError:
            pytest.fail(f"stdout is not JSON lines:\n{self}")

    def __str__(self) -> str:
        return (
            f"$ aether {' '.join(self.args)}\n-> exit {self.returncode}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


def run_aether(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    input: str | None = None,
) -> CliRun:
    result = subprocess.run(
        [*aether_command(), *args],
        cwd=cwd,
        env=cli_env(env, cwd=cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        check=False,
    )
    return CliRun(tuple(args), result.returncode, result.stdout, result.stderr)


# A status command that answered, whether what it shows is well (0) or not (4: unhealthy, not
# converged): for a test that reads the answer and does not ask about health.
ANSWERED = (0, 4)


def expect(run: CliRun, code: int | tuple[int, ...] = 0) -> CliRun:
    """`run`, after checking its exit code, or that it is one of `code` (the whole run in the failure
    message)."""
    codes = code if isinstance(code, tuple) else (code,)
    assert run.returncode in codes, f"expected exit {code}:\n{run}"
    if run.returncode == 0:
        assert "Traceback" not in run.stderr, str(run)
    return run


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- a local cluster


@attrs.define
class CliCluster:
    """A running local cluster and the directory the CLI runs from."""

    local: LocalNodeCluster
    cwd: Path

    @property
    def urls(self) -> str:
        scheme = "https" if self.local.tls else "http"
        return ",".join(f"{scheme}://{n.management}" for n in self.local.nodes)

    @property
    def node_ids(self) -> list[str]:
        return [n.node_id for n in self.local.nodes]

    def aether(
        self,
        *args: str,
        api_key: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        **kw: Any,
    ) -> CliRun:
        """`aether ARGS` against this cluster (AETHER_CLUSTER; AETHER_API_KEY when `api_key`), from
        `cwd` (default: the cluster's working directory)."""
        extra = {"AETHER_CLUSTER": self.urls, **(env or {})}
        if api_key is not None:
            extra["AETHER_API_KEY"] = api_key
        return run_aether(*args, cwd=cwd or self.cwd, env=extra, **kw)

    def logs(self, lines: int = 25) -> str:
        return "\n".join(
            f"--- {n.node_id}\n{self.local.log_tail(n.node_id, lines)}" for n in self.local.nodes
        )


@contextlib.contextmanager
def _environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """os.environ changed for the block (node processes inherit it when they start)."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def cli_cluster(
    directory: Path,
    index: Path,
    *,
    nodes: int = 3,
    dev_mode: bool = True,
    node_env: Mapping[str, str | None] | None = None,
    timeout: float = 60.0,
    tls: bool = False,
    node_args: tuple[str, ...] = (),
) -> Iterator[CliCluster]:
    """`nodes` started and registered nodes; the CLI runs from `directory/cwd`. With `dev_mode=False` the
    nodes need API keys: pass AETHER_API_KEYS in `node_env` (the environment they start with). With
    `tls`, the nodes speak TLS from the cluster CA (else plain text, `--no-tls` without dev mode);
    `node_args`: more `aether-node run` flags."""
    cwd = directory / "cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    # The nodes' Unix sockets go under TMPDIR (short: socket paths are capped at 108 bytes); a SIGKILL
    # leaves them behind, so they get a directory of their own that goes away with the cluster.
    tmp_dir = Path(tempfile.mkdtemp(prefix="aether-cli-"))
    local: LocalNodeCluster | None = None
    try:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            name = "cluster" if attempt == 1 else f"cluster-{attempt}"
            local = plan_cluster(directory / name, nodes, str(index))
            local.dev_mode = dev_mode
            local.tls = tls
            local.node_args = node_args
            with _environment({"TMPDIR": str(tmp_dir), **(node_env or {})}):
                local.start_all()
            try:
                trio.run(functools.partial(wait_until_ready, local, timeout=timeout))
                break
            except (RuntimeError, trio.TooSlowError) as error:
                tails = "\n".join(f"--- {n.node_id}\n{local.log_tail(n.node_id)}" for n in local.nodes)
                if "Address already in use" in tails and attempt < PORT_ATTEMPTS:
                    end_cluster(local)  # a port chosen free was taken meanwhile (another test worker)
                    continue
                pytest.fail(f"the cluster was not ready: {error}\n{tails}")
        assert local is not None
        yield CliCluster(local, cwd)
    finally:
        if local is not None:
            end_cluster(local)
        shutil.rmtree(tmp_dir, ignore_errors=True)


def end_cluster(local: LocalNodeCluster) -> None:
    """SIGKILL every node (each leads its own session: its group too), then whatever still runs from the
    cluster's directory (KV replicas, slice hosts)."""
    for process in local.processes.values():
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.kill()
    for process in local.processes.values():
        process.wait()
    local.processes.clear()
    kill_processes_of(local.directory)


def processes_of(directory: Path) -> list[tuple[int, str]]:
    """(pid, command line) of every live process (not this one) whose working directory or an argument
    is `directory` or under it."""
    return [(p.pid, " ".join(p.cmdline)) for p in processes_under(directory)]


# ---------------------------------------------------------------- long-running commands


class LineReader:
    """Reads a process's stdout lines in a thread; `wait_for` returns the first line that matches."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._next = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, predicate: Callable[[str], bool], *, timeout: float, what: str) -> str:
        """The first line (from the ones not yet looked at) for which `predicate` holds."""
        deadline = time.monotonic() + timeout
        while True:
            while self._next < len(self.lines):
                line = self.lines[self._next]
                self._next += 1
                if predicate(line):
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if item is None:
                pytest.fail(
                    f"the command ended (exit {self.process.wait()}) before {what}; it printed:\n"
                    + "\n".join(self.lines)
                )
            self.lines.append(item)
        pytest.fail(f"timed out after {timeout:g} s waiting for {what}; lines:\n" + "\n".join(self.lines))


def _as_in_a_terminal() -> None:
    """In the child before it runs: Ctrl-C (SIGINT) does what it does to a command in a terminal. A test
    run started in the background by a script (`cmd &`, nohup) ignores SIGINT, every process it starts
    inherits that, and a command that ignores SIGINT cannot show how it ends on Ctrl-C (a CI run of the
    `--follow` tests hung so)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def background_aether(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> Iterator[LineReader]:
    """`aether ARGS` running in the background for the block; terminated afterwards (SIGTERM, then
    SIGKILL), by its pid."""
    process = subprocess.Popen(
        [*aether_command(), *args],
        cwd=cwd,
        env=cli_env(env, cwd=cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=_as_in_a_terminal,
    )
    try:
        yield LineReader(process)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()


# ---------------------------------------------------------------- a stub management API


@attrs.define
class StubApi:
    """A management API stand-in on 127.0.0.1: `routes` maps (method, path) → (status, JSON body); every
    request's method and raw path (as sent, query included) is recorded in `requests`."""

    routes: dict[tuple[str, str], tuple[int, Any]]
    requests: list[tuple[str, str]] = attrs.field(factory=list)
    url: str = ""

    def answer(self, method: str, raw_path: str) -> tuple[int, Any]:
        self.requests.append((method, raw_path))
        path = raw_path.split("?", 1)[0]
        if (method, path) in self.routes:
            return self.routes[(method, path)]
        return 404, {"error": {"kind": "not_found", "message": f"stub: nothing at {method} {path}"}}


@contextlib.contextmanager
def stub_api(routes: dict[tuple[str, str], tuple[int, Any]]) -> Iterator[StubApi]:
    stub = StubApi(routes)

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            status, body = stub.answer(self.command, self.path)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
