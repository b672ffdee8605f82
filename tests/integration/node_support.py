"""Helpers for integration tests that run real `aether-node` processes on 127.0.0.1.

- `build_wheel`: a small distribution of the test's own (the sample slices' index: the `sample_index`
  fixture of conftest.py);
- `NodeProcess`: one node process with free ports, a secret file and a data dir (start, restart, signal,
  kill); `started_node` runs one with its own KV replica (so it is its cluster's leader), `client_node`
  one that is only a client of a KV replica run beside it (`KVReplicaProcess`), for tests that write the
  command states themselves; either ends every process it started, even when the test fails;
- `kv_client`, `write_command`, `wait_for_state`, `wait_for_deleted`, `collect_events`: slice records in
  the KV; `apply_blueprint`, `wait_for_active_instance`: the same through the cluster leader;
- `invoke`, `invoke_raw`: the app ingress over HTTP (httpx);
- `slice_hosts`, `host_of`, `template_of`, `kv_replicas`: the processes of a data dir, found through /proc.

Every wait has a deadline and fails with what it saw last; nothing sleeps in the hope that something
happened meanwhile.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import inspect
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import uv

from aether_kv import Event, FramedStream, KVClient, client_handshake, free_port, open_client
from aether_node import Coordinates, SliceRecord, SliceState, decode_record, encode_record
from support import ProcInfo, kill_processes_under, live_processes, wait_until, wait_until_sync

ECHO = "org.aether:echo:1.0.0"
COUNTER = "org.aether:counter:1.0.0"
FAULTY = "org.aether:faulty:1.0.0"
PINNED = "org.aether:pinned:1.0.0"
NODE_START_TIMEOUT = 30.0


# ---------------------------------------------------------------- the wheel index


def build_wheel(
    project: Path,
    out: Path,
    *,
    name: str,
    version: str,
    dependencies: tuple[str, ...] = (),
    entry_point: str | None = None,
    source: str = '"""A distribution built by a test."""\n',
) -> Path:
    """A minimal distribution `name` at `version` (module `name` with '.'/'-' → '_', holding `source`),
    built with `uv build --wheel` into `out`. With `entry_point` ("group:artifact") it declares that entry
    point in group aether.slices (naming the module: with the default source it would not load); without,
    none."""
    module = name.replace(".", "_").replace("-", "_")
    (project / "src" / module).mkdir(parents=True, exist_ok=True)
    (project / "src" / module / "__init__.py").write_text(source)
    table = f'[project.entry-points."aether.slices"]\n"{entry_point}" = "{module}"\n' if entry_point else ""
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "{version}"\nrequires-python = ">=3.11"\n'
        f"dependencies = {json.dumps(list(dependencies))}\n\n{table}\n"
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        f'[tool.hatch.build.targets.wheel]\npackages = ["src/{module}"]\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    result = subprocess.run(
        [uv.find_uv_bin(), "build", "--wheel", "--out-dir", str(out), str(project)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, f"uv build failed:\n{result.stdout}\n{result.stderr}"
    wheels = [w for w in out.glob("*.whl") if w.name.startswith(f"{module}-{version}-")]
    assert len(wheels) == 1, f"expected one wheel of {name} {version} in {out}: {wheels}"
    return wheels[0]


# ---------------------------------------------------------------- ports and processes


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that were free on 127.0.0.1 a moment ago (`aether_kv.free_port`)."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _under(path: str, directory: Path) -> bool:
    return path == str(directory) or path.startswith(f"{directory}/")


def slice_hosts(data_dir: Path) -> list[ProcInfo]:
    """Live `python -m aether_slice.host` processes running from virtualenvs under `data_dir`."""
    data_dir = data_dir.resolve()
    return [
        p
        for p in live_processes()
        if "aether_slice.host" in p.cmdline
        and (_under(p.cwd, data_dir) or (p.cmdline and _under(p.cmdline[0], data_dir)))
    ]


def host_of(data_dir: Path, coordinates: str, instance: int) -> ProcInfo | None:
    """The live slice host of one instance: a child of a template of its version (`templates_of`)
    whose process name is `{artifact}#{instance}` (cut to 15 bytes, as Linux keeps it)."""
    parsed = Coordinates.parse(coordinates)
    hosts = slice_hosts(data_dir)
    templates = {p.pid for p in _templates(hosts, parsed)}
    name = f"{parsed.artifact}#{instance}".encode()[:15].decode(errors="ignore")
    found = [p for p in hosts if p.ppid in templates and p.name == name]
    assert len(found) <= 1, f"more than one live host for {coordinates}#{instance}: {found}"
    return found[0] if found else None


def template_of(data_dir: Path, coordinates: str) -> ProcInfo | None:
    """The live fork server ("template") of one slice version, if the node runs slices that way: a
    slice host process whose stderr is `{distribution}-{version}-template.log`."""
    found = _templates(slice_hosts(data_dir), Coordinates.parse(coordinates))
    assert len(found) <= 1, f"more than one live template for {coordinates}: {found}"
    return found[0] if found else None


def _templates(hosts: list[ProcInfo], parsed: Coordinates) -> list[ProcInfo]:
    log_name = f"{parsed.distribution}-{parsed.version}-template.log"
    return [p for p in hosts if Path(p.stderr).name == log_name]


def kv_replicas(data_dir: Path) -> list[ProcInfo]:
    """Live `aether_kv serve` processes whose data dir is under `data_dir`."""
    data_dir = data_dir.resolve()
    found = []
    for p in live_processes():
        if "aether_kv" not in p.cmdline or "serve" not in p.cmdline or "--data-dir" not in p.cmdline:
            continue
        index = p.cmdline.index("--data-dir")
        if index + 1 < len(p.cmdline) and _under(p.cmdline[index + 1], data_dir):
            found.append(p)
    return found


def die_with_parent() -> None:
    """For `preexec_fn`: the kernel SIGKILLs the child when the test process dies (Linux), so nothing
    a test started outlives a killed test run."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def kill_pid(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


# ---------------------------------------------------------------- one node process


@functools.cache
def _cli_options() -> frozenset[str]:
    """The keyword options of `aether-node run` in the code under test."""
    from aether_node.node import run

    return frozenset(inspect.signature(run).parameters)


@attrs.define
class NodeProcess:
    """One `aether-node run` process. `start()` may be called again after it ended (same ports, same
    data dir: a restart)."""

    root: Path
    node_id: str = "n1"
    index: str = ""
    config_text: str | None = None  # TOML for --config, e.g. "[timeouts]\nactivate = 2\n"
    extra_args: tuple[str, ...] = ()
    ingress_host: str = "127.0.0.1"  # the host of --ingress (its port: `ingress_port`); "0.0.0.0": every one
    ingress_port: int = 0
    raft_port: int = 0
    client_port: int = 0
    peer_port: int = 0
    # a management API on `management` (127.0.0.1:management_port), with --management
    with_management: bool = False
    management_port: int = 0
    secret: str = attrs.field(factory=lambda: secrets.token_hex(16))
    # Client addresses of an outside KV cluster: then the node runs no replica of its own (and so is
    # never the cluster's leader: nothing but the test writes command states for it).
    kv_endpoints: tuple[str, ...] = ()
    # (soft, hard) limits on open files the node starts with, as a login shell or a unit would set them
    open_files: tuple[int, int] | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    tmp_dir: Path | None = None

    def __attrs_post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.ingress_port and self.raft_port and self.client_port and self.peer_port):
            self._choose_ports()
        self.secret_file.write_text(self.secret + "\n")

    def _choose_ports(self) -> None:
        """Ports free a moment ago, distinct from each other (one call: two calls could pick one twice)."""
        ports = free_ports(5)
        self.ingress_port, self.raft_port, self.client_port, self.peer_port, self.management_port = ports

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def secret_file(self) -> Path:
        return self.root / "secret"

    @property
    def log_path(self) -> Path:
        return self.root / f"node-{self.starts}.log"

    @property
    def ingress(self) -> str:
        return f"127.0.0.1:{self.ingress_port}"

    @property
    def management(self) -> str:
        assert self.with_management, "the node was started without a management API (with_management)"
        return f"127.0.0.1:{self.management_port}"

    @property
    def own_replica(self) -> bool:
        return not self.kv_endpoints

    @property
    def kv_endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}" if self.own_replica else self.kv_endpoints[0]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        script = Path(sys.executable).parent / "aether-node"
        command = [str(script), "run", "--node-id", self.node_id, "--data-dir", str(self.data_dir)]
        command += ["--index", self.index, "--ingress", f"{self.ingress_host}:{self.ingress_port}"]
        if self.own_replica:
            command += ["--kv-raft", f"127.0.0.1:{self.raft_port}", "--kv-client", self.kv_endpoint]
        for endpoint in self.kv_endpoints:
            command += ["--kv-endpoint", endpoint]
        command += ["--secret-file", str(self.secret_file)]
        if self.with_management:
            command += ["--management", self.management]
        if "peer" in _cli_options():  # node-to-node calls, in nodes that have them
            command += ["--peer", f"127.0.0.1:{self.peer_port}"]
        tls_chosen = {"--tls", "--no-tls", "--dev-mode"} & set(self.extra_args)
        if "tls" in _cli_options() and not tls_chosen:  # plain text, as these tests' KV clients speak
            command += ["--no-tls"]
        if self.config_text is not None:
            config = self.root / "node.toml"
            config.write_text(self.config_text)
            command += ["--config", str(config)]
        return command + list(self.extra_args)

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready."""
        assert self.process is None or self.process.poll() is not None, "the node is still running"
        self.starts += 1
        # The node keeps a Unix socket in a temporary directory, which a SIGKILL leaves behind: give it
        # a directory of its own (short: socket paths are capped at 108 bytes) that `cleanup` removes.
        if self.tmp_dir is None:
            self.tmp_dir = Path(tempfile.mkdtemp(prefix="aether-test-"))
        env = {**os.environ, "TMPDIR": str(self.tmp_dir)}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=env,
                preexec_fn=self._preexec,
            )

    def _preexec(self) -> None:
        die_with_parent()
        if self.open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, self.open_files)

    def start(self, timeout: float = NODE_START_TIMEOUT) -> NodeProcess:
        """Start the node and wait until it says it is ready (its ingress is then listening). A first
        start that finds a port taken (they were free a moment ago: another test's process may have
        taken one since) starts afresh on new ports, at most twice (the node checks
        its ports before it registers: a failed start leaves nothing in the KV)."""
        first = self.starts == 0
        self.spawn()
        ready = f"aether-node {self.node_id} ready"
        port_races = 0

        def is_ready() -> bool:
            nonlocal port_races
            log = self.log()
            if ready in log:
                return True
            if (code := self.returncode()) is not None:
                if first and port_races < 2 and "Address already in use" in log:
                    port_races += 1
                    shutil.rmtree(self.data_dir, ignore_errors=True)
                    self._choose_ports()
                    self.spawn()
                    return False
                pytest.fail(f"aether-node exited with {code} at start:\n{self.log_tail()}")
            return False

        wait_until_sync(
            is_ready,
            timeout=timeout,
            interval=0.05,
            what=ready,
            describe=lambda _: f"its log:\n{self.log_tail()}",
        )
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def slice_log(self, coordinates: str, instance: int) -> str:
        parsed = Coordinates.parse(coordinates)
        path = self.data_dir / "logs" / f"{parsed.distribution}-{parsed.version}-{instance}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.process is not None
        kill_pid(self.process.pid, sig)

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    async def wait_exit(self, timeout: float) -> int:
        """The exit code, once the process has exited; fails if it still runs after `timeout` s."""

        return await wait_until(
            self.returncode,
            until=lambda found: found is not None,
            timeout=timeout,
            what=f"{self.node_id} to exit",
            describe=lambda _: f"still running; its log:\n{self.log_tail()}",
        )

    def kill(self) -> None:
        """SIGKILL the node and reap it (its children die with it; see `cleanup` for stragglers)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def cleanup(self) -> None:
        """End the node and every process of its data dir, whatever state they are in."""
        self.kill()
        kill_processes_under(self.data_dir)
        if self.tmp_dir is not None:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)


@attrs.define
class KVReplicaProcess:
    """A single-replica `aether-kv serve` cluster run by the test, for nodes without a replica of
    their own."""

    root: Path
    secret: str = attrs.field(factory=lambda: secrets.token_hex(16))
    raft_port: int = 0
    client_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def __attrs_post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.raft_port, self.client_port = free_ports(2)
        (self.root / "secret").write_text(self.secret + "\n")

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.root / "kv.log"

    def start(self, timeout: float = 30.0) -> KVReplicaProcess:
        command = [sys.executable, "-m", "aether_kv", "serve", "--id", "kv1"]
        command += ["--data-dir", str(self.root / "data"), "--raft", f"127.0.0.1:{self.raft_port}"]
        command += ["--client", self.endpoint, "--secret-file", str(self.root / "secret")]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, preexec_fn=die_with_parent
            )
        process = self.process

        def is_ready() -> bool:
            log = self.log_path.read_text(errors="replace")
            if "ready" not in log and process.poll() is not None:
                pytest.fail(f"aether-kv serve exited with {process.returncode} at start:\n{log}")
            return "ready" in log

        wait_until_sync(
            is_ready,
            timeout=timeout,
            interval=0.05,
            what="aether-kv serve ready",
            describe=lambda _: f"its log:\n{self.log_path.read_text(errors='replace')}",
        )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()


@contextlib.contextmanager
def client_node(root: Path, index: str | Path, **kwargs: Any) -> Iterator[NodeProcess]:
    """A started node that is only a client of a KV replica run beside it (so no cluster leader
    reconciles its slice records: the test writes the command states), both ended afterwards."""
    replica = KVReplicaProcess(root / "kv")
    try:
        replica.start()
        with started_node(
            root / "node", index, secret=replica.secret, kv_endpoints=(replica.endpoint,), **kwargs
        ) as node:
            yield node
    finally:
        replica.stop()


@contextlib.contextmanager
def two_nodes(root: Path, index: str | Path, **kwargs: Any) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    """Two started nodes n1 and n2 (`kwargs`: more of `NodeProcess` for both), clients of one KV replica
    run beside them (no leader: the test writes the command states), all ended afterwards."""
    replica = KVReplicaProcess(root / "kv")
    try:
        replica.start()
        shared = {"secret": replica.secret, "kv_endpoints": (replica.endpoint,), **kwargs}
        with (
            started_node(root / "n1", index, node_id="n1", **shared) as n1,
            started_node(root / "n2", index, node_id="n2", **shared) as n2,
        ):
            yield n1, n2
    finally:
        replica.stop()


@contextlib.contextmanager
def node_cleanup(node: NodeProcess) -> Iterator[NodeProcess]:
    """Yield `node`; afterwards end it and everything of its data dir (also on failure)."""
    try:
        yield node
    finally:
        node.cleanup()


@contextlib.contextmanager
def started_node(root: Path, index: str | Path, **kwargs: Any) -> Iterator[NodeProcess]:
    """A started node (see `NodeProcess`), ended with everything of its data dir afterwards."""
    node = NodeProcess(root, index=str(index), **kwargs)
    with node_cleanup(node):
        node.start()
        yield node


def ingress_workers(node: NodeProcess) -> list[int]:
    """The node's ingress worker processes (`--ingress-server fast`: its children running
    `_ingress_worker`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if ppid == node.pid and b"_ingress_worker" in command:
            found.append(int(entry.name))
    return found


# ---------------------------------------------------------------- the KV


@contextlib.asynccontextmanager
async def kv_client(node: NodeProcess) -> AsyncIterator[KVClient]:
    async with open_client([node.kv_endpoint], node.secret, request_timeout=10.0) as client:
        yield client


def slice_key(node_id: str, coordinates: str, instance: int) -> str:
    return f"slices/{node_id}/{coordinates}/{instance}"


async def write_command(
    kv: KVClient, key: str, state: SliceState, config: dict[str, Any] | None = None
) -> None:
    """Write a command state (as the leader would), keeping the record's config unless one is given."""
    if config is None:
        current = await read_record(kv, key)
        config = dict(current.config) if current is not None else {}
    await kv.put(key, encode_record(SliceRecord(state=state, config=config, timestamp=time.time())))


async def read_record(kv: KVClient, key: str) -> SliceRecord | None:
    found = await kv.get(key)
    return None if found is None else decode_record(key, found.value, SliceRecord)


async def wait_for_state(
    kv: KVClient,
    key: str,
    state: SliceState | str,
    timeout: float,
    *,
    unexpected: tuple[SliceState, ...] = (SliceState.FAILED,),
    since: int = 0,
) -> SliceRecord:
    """Poll `key` until its record is in `state` (written after revision `since`); fail at the deadline,
    or at once on an `unexpected` state, with the last record seen."""
    wanted = SliceState(state)

    async def record() -> SliceRecord | None:
        found = await kv.get(key)
        if found is None or found.mod_revision <= since:
            return None
        seen = decode_record(key, found.value, SliceRecord)
        if seen.state in unexpected and wanted not in unexpected:
            pytest.fail(f"{key}: reached {seen.state} while waiting for {wanted}: {seen.reason!r}")
        return seen

    found = await wait_until(
        record,
        until=lambda seen: seen is not None and seen.state is wanted,
        timeout=timeout,
        what=f"{key} {wanted}",
    )
    assert found is not None
    return found


async def wait_for_deleted(kv: KVClient, key: str, timeout: float) -> None:
    await wait_until(
        lambda: read_record(kv, key), until=lambda seen: seen is None, timeout=timeout, what=f"{key} deleted"
    )


async def activate(
    kv: KVClient, node: NodeProcess, coordinates: str, instance: int, config: dict[str, Any] | None = None
) -> SliceRecord:
    """ACTIVATE one instance and wait until it is ACTIVE (installing it if needed)."""
    key = slice_key(node.node_id, coordinates, instance)
    await write_command(kv, key, SliceState.ACTIVATE, config or {})
    return await wait_for_state(kv, key, SliceState.ACTIVE, timeout=60)


async def apply_blueprint(kv: KVClient, name: str, slices: list[dict[str, Any]]) -> None:
    """Write `blueprints/{name}` as an operator would; each slice: {"artifact", "instances", "config"?}.
    (For nodes with their own replica: their cluster leader removes instances no blueprint asks for.)"""
    from aether_node import Blueprint, SliceSpec

    specs = tuple(SliceSpec(**spec) for spec in slices)
    blueprint = Blueprint(name=name, slices=specs, timestamp=time.time())
    await kv.put(f"blueprints/{name}", encode_record(blueprint))


async def active_instances(kv: KVClient, node_id: str, coordinates: str, *, since: int = 0) -> list[int]:
    """Instance numbers of `coordinates` on `node_id` whose record says ACTIVE, written after `since`."""
    listing = await kv.range(f"slices/{node_id}/{coordinates}/")
    found = []
    for item in listing.kvs:
        record = decode_record(item.key, item.value, SliceRecord)
        if record.state is SliceState.ACTIVE and item.mod_revision > since:
            found.append(int(item.key.rpartition("/")[2]))
    return sorted(found)


async def wait_for_active_instance(
    kv: KVClient, node_id: str, coordinates: str, timeout: float, *, since: int = 0
) -> int:
    """The instance number of an ACTIVE instance of `coordinates` on `node_id` (ACTIVE written after
    revision `since`); fails at the deadline with the node's slice records."""

    async def records() -> dict[str, str]:  # the node's, which the failure shows
        listing = await kv.range(f"slices/{node_id}/")
        return {item.key: item.value.decode(errors="replace") for item in listing.kvs}

    async def found() -> list[int] | dict[str, str]:
        return await active_instances(kv, node_id, coordinates, since=since) or await records()

    first = await wait_until(
        found,
        until=lambda seen: isinstance(seen, list),
        timeout=timeout,
        what=f"an ACTIVE instance of {coordinates} on {node_id}",
        describe=lambda seen: f"records: {seen}",
    )
    assert isinstance(first, list)
    return first[0]


async def endpoint_keys(kv: KVClient, coordinates: str) -> list[str]:
    return [item.key for item in (await kv.range(f"endpoints/{coordinates}/")).kvs]


async def collect_events(
    kv: KVClient,
    prefix: str,
    start_revision: int,
    *,
    until: Callable[[list[Event]], bool],
    timeout: float,
) -> list[Event]:
    """Events under `prefix` from `start_revision` on (from the KV's history), until `until(events)`
    holds; fails at the deadline with what it saw."""
    events: list[Event] = []
    watch = kv.watch(prefix, start_revision)
    try:
        with trio.move_on_after(timeout):
            async for batch in watch:
                events.extend(batch)
                if until(events):
                    return events
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await watch.aclose()
    seen = [(e.kind, e.kv.key, e.revision) for e in events]
    pytest.fail(f"watching {prefix!r} from {start_revision}: condition not met in {timeout:g} s; saw {seen}")


def describe_events(events: list[Event]) -> list[tuple[str, str]]:
    return [(str(e.kind), e.kv.key) for e in events]


# ---------------------------------------------------------------- after a test


async def unload_everything(client: KVClient, node_id: str) -> None:
    """Unload every slice record of `node_id` and wait until they are gone (the `kv` fixture's cleanup:
    the next test finds the node empty)."""
    listing = await client.range(f"slices/{node_id}/")
    for item in listing.kvs:
        await write_command(client, item.key, SliceState.UNLOAD)
    for item in listing.kvs:
        await wait_for_deleted(client, item.key, timeout=30)


# ---------------------------------------------------------------- the ingress


async def invoke(ingress: str, artifact: str, entry: str, payload: Any = None) -> httpx.Response:
    """POST a JSON payload to `/invoke/{artifact}/{entry}` (artifact: group:artifact)."""
    return await invoke_raw(ingress, artifact, entry, json.dumps(payload).encode())


async def invoke_raw(ingress: str, artifact: str, entry: str, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30.0) as client:
        return await client.post(
            f"http://{ingress}/invoke/{artifact}/{entry}",
            content=body,
            headers={"content-type": "application/json"},
        )


def copy_index(index: Path, out: Path) -> Path:
    shutil.copytree(index, out)
    return out


def executions(path: Path, request_id: str) -> list[str]:
    """The instances (as numbers) that ran the `record` call with payload {"id": request_id}."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        instance, _, payload = line.partition(" ")
        if json.loads(payload).get("id") == request_id:
            found.append(instance)
    return found


@contextlib.contextmanager
def paused(node: NodeProcess) -> Iterator[None]:
    """The node process stopped (SIGSTOP): only its ingress worker and its instances run."""
    node.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        node.signal(signal.SIGCONT)


@contextlib.asynccontextmanager
async def peer_connection(node: NodeProcess) -> AsyncIterator[tuple[trio.SocketStream, FramedStream]]:
    """An authenticated node-to-node connection to `node`'s peer port (as another node opens it)."""
    stream = await trio.open_tcp_stream("127.0.0.1", node.peer_port)
    framed = FramedStream(stream)
    try:
        with trio.fail_after(10):
            await client_handshake(framed, node.secret, f"127.0.0.1:{node.peer_port}")
        yield stream, framed
    finally:
        with contextlib.suppress(OSError):
            stream.socket.close()


async def peer_request(framed: FramedStream, request: dict[str, Any]) -> dict[str, Any]:
    await framed.send(request)
    with trio.fail_after(30):
        reply = await framed.receive()
    assert reply is not None, "the peer closed the connection instead of answering"
    return reply
