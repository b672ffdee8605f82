"""Helpers for the cluster tests (`test_cluster_*.py`) and `benchmarks/cluster_bench.py`: a local cluster
of real `aether-node` processes (`aether_node.dev`), blueprints written to the KV, views of the
`slices/` and `endpoints/` records, and callers that keep invoking slices through the nodes' ingresses.

- `running_cluster` (async) / `started_cluster` (sync, for module fixtures) start N nodes and end every
  process of the cluster afterwards (also on failure): the node processes, then whatever still runs from
  the cluster's directory (KV replicas, slice hosts); `start_node` starts a node added later;
- `put_blueprint` / `delete_blueprint`: blueprint records, as the CLI would write them;
- `instances` reads `slices/` (linearizable); `wait_for` polls it until a condition holds and fails with
  the records it saw last (`poll` returns instead of failing); `Watcher` follows every change through a
  KV watch (e.g. "ACTIVE never dropped below N", "no instance number was used twice");
- `Callers`: concurrent callers of one entry point over a list of ingresses, counting every failure;
- `wait_for_reconcile_passes`: until the leader has run N more reconcile passes (its metrics), for a
  check that nothing happens meanwhile.

Every wait has a deadline and fails with what it saw last.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

import support
from aether_kv import KVClient, KVError, open_client
from aether_node import Balancing as Balancing  # re-exported for the tests
from aether_node import (
    Blueprint,
    EndpointRecord,
    InstanceKey,
    RolloutRecord,
    SliceRecord,
    SliceSpec,
    SliceState,
    UpdateSpec,
    decode_record,
    encode_record,
    rollout_key,
)
from aether_node import Resources as Resources
from aether_node import Strategy as Strategy
from aether_node.dev import LocalNodeCluster, plan_cluster, wait_until_ready
from support import REPO as REPO  # re-exported for the tests
from support import build_index as build_index  # re-exported for the benchmarks
from support import wait_until

ECHO_ID = "org.aether:echo"
ECHO = "org.aether:echo:1.0.0"
ECHO_11 = "org.aether:echo:1.1.0"
GREETER_ID = "org.aether:greeter"
GREETER = "org.aether:greeter:1.0.0"
# A version of echo whose install fails: its wheel needs a distribution (MISSING) the index does not have
# (the `broken_index` fixture of conftest.py), for the rollout tests.
BROKEN = "org.aether:echo:9.9.9"
MISSING = "aether-no-such-dependency"
SETTLE = 90.0  # deadline for instances to become ACTIVE (first installs included, on a busy machine)


# ---------------------------------------------------------------- processes


def processes_under(directory: Path) -> list[int]:
    """Pids of the processes that run from `directory` (`support.processes_under`)."""
    return [p.pid for p in support.processes_under(directory)]


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def end_cluster(cluster: LocalNodeCluster) -> None:
    """SIGKILL every node, then everything still running from the cluster's directory (replicas die with
    their node, slice hosts with their socket, but not necessarily at once)."""
    for process in cluster.processes.values():
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the node leads its own session
            process.kill()
    for process in cluster.processes.values():
        process.wait()
    cluster.processes.clear()
    support.kill_processes_under(cluster.directory)


_TMP_DIRS: dict[Path, Path] = {}  # cluster directory → TMPDIR of its nodes


def start_node(cluster: LocalNodeCluster, node_id: str) -> None:
    """`cluster.start(node_id)` with TMPDIR pointed at a directory of the cluster's (see
    `running_cluster`): the node's Unix socket directory, which a SIGKILL leaves behind, then goes away
    with the cluster."""
    tmp_dir = _TMP_DIRS[cluster.directory]
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp_dir)
    try:
        cluster.start(node_id)
    finally:
        if saved is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = saved


def _begin(
    directory: Path, index: Path | str, nodes: int, node_args: tuple[str, ...] = ()
) -> LocalNodeCluster:
    cluster = plan_cluster(directory, nodes, str(index))
    cluster.node_args = node_args
    # Short: socket paths are capped at 108 bytes.
    _TMP_DIRS[cluster.directory] = Path(tempfile.mkdtemp(prefix="aether-ct-"))
    for node in cluster.nodes:
        start_node(cluster, node.node_id)
    return cluster


async def _ready(cluster: LocalNodeCluster, timeout: float) -> None:
    try:
        await wait_until_ready(cluster, timeout=timeout)
    except (TimeoutError, trio.TooSlowError):
        pytest.fail(f"the cluster was not ready after {timeout:g} s:\n{logs(cluster)}")


PORT_TAKEN = "Address already in use"
START_ATTEMPTS = 3


async def _started(
    directory: Path, index: Path | str, nodes: int, node_args: tuple[str, ...], timeout: float
) -> LocalNodeCluster:
    """`_begin`, then `_ready`. The ports are picked free, then bound by the nodes: another process (a
    test beside this one) may take one in between, and the node that cannot bind it exits; then the
    cluster starts again from nothing on new ports (up to START_ATTEMPTS times)."""
    for attempt in range(1, START_ATTEMPTS + 1):
        cluster = _begin(directory, index, nodes, node_args)
        try:
            await _ready(cluster, timeout)
            return cluster
        except RuntimeError as error:
            _end(cluster)
            if PORT_TAKEN not in str(error) or attempt == START_ATTEMPTS:
                raise
            shutil.rmtree(directory, ignore_errors=True)
    raise AssertionError("unreachable")


def _end(cluster: LocalNodeCluster) -> None:
    try:
        end_cluster(cluster)
    finally:
        tmp_dir = _TMP_DIRS.pop(cluster.directory, None)
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_cluster(
    directory: Path,
    index: Path | str,
    nodes: int = 3,
    *,
    timeout: float = 60.0,
    node_args: tuple[str, ...] = (),
) -> AsyncIterator[LocalNodeCluster]:
    """N started and registered nodes (node-1..node-N; the first 3 run the KV replicas), each with
    `node_args` as more `aether-node run` flags. Afterwards every process of the cluster is ended,
    whatever happened. Start nodes added later with `start_node`."""
    cluster = await _started(directory, index, nodes, node_args, timeout)
    try:
        yield cluster
    finally:
        _end(cluster)


@contextlib.contextmanager
def started_cluster(
    directory: Path,
    index: Path | str,
    nodes: int = 3,
    *,
    timeout: float = 60.0,
    node_args: tuple[str, ...] = (),
) -> Iterator[LocalNodeCluster]:
    """`running_cluster` for synchronous (e.g. module-scoped) fixtures: not from inside a trio run."""
    cluster = trio.run(_started, directory, index, nodes, node_args, timeout)
    try:
        yield cluster
    finally:
        _end(cluster)


def logs(cluster: LocalNodeCluster, lines: int = 25) -> str:
    return "\n".join(f"--- {n.node_id}\n{cluster.log_tail(n.node_id, lines)}" for n in cluster.nodes)


@contextlib.asynccontextmanager
async def kv_of(cluster: LocalNodeCluster, request_timeout: float = 10.0) -> AsyncIterator[KVClient]:
    async with open_client(cluster.kv_endpoints, cluster.secret, request_timeout=request_timeout) as kv:
        yield kv


async def leader_node_id(cluster: LocalNodeCluster, kv: KVClient, *, timeout: float = 10.0) -> str:
    """The node whose KV replica is the Raft leader (it runs the ClusterDeploymentManager)."""
    raft_to_node = {n.raft: n.node_id for n in cluster.nodes if n.raft}

    async def leader() -> str | KVError | None:
        try:
            return (await kv.status()).leader
        except KVError as error:
            return error

    found = await wait_until(
        leader,
        until=lambda seen: seen in raft_to_node,
        timeout=timeout,
        what=f"a Raft leader among {raft_to_node}",
    )
    assert isinstance(found, str)
    return raft_to_node[found]


async def reconcile_passes(cluster: LocalNodeCluster, node_id: str) -> float:
    """How many reconcile passes the node's cluster manager has run (`aether_reconcile_runs_total` on its
    management API's /metrics)."""
    async with httpx.AsyncClient(timeout=5.0) as http:
        answer = await http.get(f"http://{cluster.plan(node_id).management}/metrics")
    answer.raise_for_status()
    for line in answer.text.splitlines():
        if line.startswith("aether_reconcile_runs_total "):
            return float(line.split()[1])
    return 0.0


async def wait_for_reconcile_passes(
    cluster: LocalNodeCluster, kv: KVClient, passes: int, *, timeout: float = 30.0
) -> None:
    """Until the leader has run `passes` more reconcile passes than now: a check that nothing happens
    ("nothing else is placed") counts the leader's work, not seconds."""
    leader = await leader_node_id(cluster, kv)
    before = await reconcile_passes(cluster, leader)
    await wait_until(
        lambda: reconcile_passes(cluster, leader),
        until=lambda now: now >= before + passes,
        timeout=timeout,
        interval=0.1,
        what=f"{leader} to run {passes} reconcile passes",
        describe=lambda now: f"{now - before:g} passes",
    )


# ---------------------------------------------------------------- blueprints


async def put_blueprint(kv: KVClient, name: str, *specs: SliceSpec) -> int:
    """Write `blueprints/{name}`; returns the revision."""
    record = Blueprint(name=name, slices=tuple(specs), timestamp=time.time())
    return (await kv.put(f"blueprints/{name}", encode_record(record))).revision


async def delete_blueprint(kv: KVClient, name: str) -> None:
    await kv.delete(f"blueprints/{name}")


# ---------------------------------------------------------------- records


@attrs.frozen(order=True)
class Instance:
    """One `slices/{node}/{coordinates}/{instance}` record."""

    coordinates: str
    instance: int
    node_id: str
    state: SliceState = attrs.field(order=False)
    reason: str = attrs.field(order=False, default="")

    def __str__(self) -> str:
        reason = f" ({self.reason})" if self.reason else ""
        return f"{self.coordinates}#{self.instance}@{self.node_id}:{self.state}{reason}"


async def instances(kv: KVClient, artifact_id: str | None = None) -> list[Instance]:
    """Every slice record (of `artifact_id` = group:artifact, if given), sorted; linearizable."""
    listing = await kv.range("slices/", linearizable=True)
    found = []
    for item in listing.kvs:
        key = InstanceKey.parse(item.key)
        assert key is not None, f"a slices/ key that is not an instance key: {item.key}"
        if artifact_id is not None and key.coordinates.artifact_id != artifact_id:
            continue
        record = decode_record(item.key, item.value, SliceRecord)
        found.append(Instance(str(key.coordinates), key.instance, key.node_id, record.state, record.reason))
    return sorted(found)


def active(found: Sequence[Instance], coordinates: str | None = None) -> list[Instance]:
    return [
        i
        for i in found
        if i.state is SliceState.ACTIVE and (coordinates is None or i.coordinates == coordinates)
    ]


def per_node(found: Sequence[Instance]) -> dict[str, int]:
    return dict(sorted(collections.Counter(i.node_id for i in found).items()))


def show(found: Sequence[Instance]) -> str:
    return "[" + ", ".join(str(i) for i in found) + "]"


async def poll(
    kv: KVClient,
    condition: Callable[[list[Instance]], bool],
    *,
    timeout: float,
    artifact_id: str | None = None,
    interval: float = 0.05,
) -> tuple[bool, list[Instance], str]:
    """Poll the slice records until `condition(records)` holds or `timeout` s passed: (held, the records
    seen last, the last KV error if any)."""
    probe = _RecordsProbe(kv, artifact_id)
    try:
        await wait_until(
            probe,
            until=lambda found: found is not None and condition(found),
            timeout=timeout,
            interval=interval,
            what="the records",
        )
    except pytest.fail.Exception:  # the caller judges a timeout
        return False, probe.last, probe.error
    return True, probe.last, probe.error


@attrs.define
class _RecordsProbe:
    """The slice records (None on a KV error: mid-failover, try again), keeping the last of each."""

    kv: KVClient
    artifact_id: str | None
    last: list[Instance] = attrs.field(factory=list)
    error: str = ""

    async def __call__(self) -> list[Instance] | None:
        try:
            self.last = await instances(self.kv, self.artifact_id)
        except KVError as e:
            self.error = e.message
            return None
        return self.last


async def wait_for(
    kv: KVClient,
    condition: Callable[[list[Instance]], bool],
    *,
    timeout: float,
    what: str,
    artifact_id: str | None = None,
    interval: float = 0.05,
    cluster: LocalNodeCluster | None = None,
) -> list[Instance]:
    """Poll the slice records until `condition(records)` holds; fail after `timeout` s with the records
    seen last (and the nodes' log tails, given the cluster)."""
    held, last, error = await poll(kv, condition, timeout=timeout, artifact_id=artifact_id, interval=interval)
    if held:
        return last
    detail = f"\nlast KV error: {error}" if error else ""
    tails = f"\n{logs(cluster)}" if cluster is not None else ""
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}; last seen: {show(last)}{detail}{tails}")


def exactly_active(count: int, coordinates: str) -> Callable[[list[Instance]], bool]:
    """`count` ACTIVE instances of `coordinates` and no other record of that artifact."""

    def check(found: list[Instance]) -> bool:
        return len(found) == count and all(
            i.state is SliceState.ACTIVE and i.coordinates == coordinates for i in found
        )

    return check


async def endpoints(kv: KVClient, coordinates: str) -> dict[str, EndpointRecord]:
    listing = await kv.range(f"endpoints/{coordinates}/", linearizable=True)
    return {item.key: decode_record(item.key, item.value, EndpointRecord) for item in listing.kvs}


async def all_endpoints(kv: KVClient, artifact_id: str) -> dict[str, EndpointRecord]:
    listing = await kv.range(f"endpoints/{artifact_id}:", linearizable=True)
    return {item.key: decode_record(item.key, item.value, EndpointRecord) for item in listing.kvs}


class Watcher:
    """Every change of one artifact's slice records, from a listing on: the full history through a KV
    watch (nothing between two samples is missed). After each revision it evaluates the records; it
    remembers the lowest ACTIVE count (and the records at that revision) and every key ever seen.

    Start it with `nursery.start(watcher.run)` (or `background`); `lowest` is meaningful once started."""

    def __init__(self, kv: KVClient, artifact_id: str) -> None:
        self.kv = kv
        self.artifact_id = artifact_id
        self.records: dict[str, Instance] = {}
        self.lowest: tuple[int, int, list[Instance]] | None = None  # (count, revision, records)
        self.history: list[tuple[int, list[Instance]]] = []  # (revision, records after it)
        self.keys_seen: set[tuple[str, int, str]] = set()  # (coordinates, instance, node)

    def _apply(self, key: str, value: bytes | None) -> None:
        parsed = InstanceKey.parse(key)
        if parsed is None or parsed.coordinates.artifact_id != self.artifact_id:
            return
        if value is None:
            self.records.pop(key, None)
            return
        record = decode_record(key, value, SliceRecord)
        self.records[key] = Instance(
            str(parsed.coordinates), parsed.instance, parsed.node_id, record.state, record.reason
        )
        self.keys_seen.add((str(parsed.coordinates), parsed.instance, parsed.node_id))

    def _evaluate(self, revision: int) -> None:
        found = sorted(self.records.values())
        self.history.append((revision, found))
        count = len(active(found))
        if self.lowest is None or count < self.lowest[0]:
            self.lowest = (count, revision, found)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listing = await self.kv.range("slices/", linearizable=True)
        for item in listing.kvs:
            self._apply(item.key, item.value)
        self._evaluate(listing.revision)
        task_status.started()
        watch = self.kv.watch("slices/", listing.revision + 1)
        try:
            async for events in watch:
                by_revision: dict[int, list[Any]] = collections.defaultdict(list)
                for event in events:
                    by_revision[event.revision].append(event)
                for revision in sorted(by_revision):
                    for event in by_revision[revision]:
                        self._apply(event.kv.key, event.kv.value if event.kind == "put" else None)
                    self._evaluate(revision)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await watch.aclose()

    def describe_lowest(self) -> str:
        if self.lowest is None:
            return "nothing seen"
        count, revision, found = self.lowest
        return f"{count} ACTIVE at revision {revision}: {show(found)}"

    def most_placed(self) -> tuple[int, int, list[Instance]]:
        """The most records at once that were not being removed (UNLOAD/UNLOADING) or FAILED: (count,
        revision, records) — the surge of a rollout or a move."""
        leaving = {SliceState.UNLOAD, SliceState.UNLOADING, SliceState.FAILED}
        best = (0, 0, [])
        for revision, found in self.history:
            count = sum(1 for i in found if i.state not in leaving)
            if count > best[0]:
                best = (count, revision, found)
        return best

    def instance_numbers_reused(self) -> dict[int, list[str]]:
        """Instance numbers that were ever used by more than one record (node or version)."""
        users: dict[int, list[str]] = collections.defaultdict(list)
        for coordinates, instance, node_id in sorted(self.keys_seen):
            users[instance].append(f"{coordinates}@{node_id}")
        return {n: u for n, u in users.items() if len(u) > 1}


class RolloutWatcher:
    """Every revision of one artifact's rollout record (`cluster/rollouts/{artifact_id}`), from a read on,
    through a KV watch: `history` holds (revision, record; None: none or deleted), nothing between two
    samples missed. Start it with `nursery.start(watcher.run)` (or `background`)."""

    def __init__(self, kv: KVClient, artifact_id: str) -> None:
        self.kv = kv
        self.key = rollout_key(artifact_id)
        self.history: list[tuple[int, RolloutRecord | None]] = []

    def _apply(self, revision: int, value: bytes | None) -> None:
        self.history.append(
            (revision, None if value is None else decode_record(self.key, value, RolloutRecord))
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listing = await self.kv.range(self.key, linearizable=True)
        found = [item for item in listing.kvs if item.key == self.key]
        self._apply(listing.revision, found[0].value if found else None)
        task_status.started()
        watch = self.kv.watch(self.key, listing.revision + 1)
        try:
            async for events in watch:
                for event in events:
                    if event.kv.key == self.key:
                        self._apply(event.revision, event.kv.value if event.kind == "put" else None)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await watch.aclose()

    @property
    def latest(self) -> RolloutRecord | None:
        return self.history[-1][1] if self.history else None


# ---------------------------------------------------------------- calling slices


async def call(
    http: httpx.AsyncClient, ingress: str, artifact_id: str, entry: str, payload: Any = None, **query: Any
) -> httpx.Response:
    return await http.post(
        f"http://{ingress}/invoke/{artifact_id}/{entry}",
        content=json.dumps(payload).encode(),
        headers={"content-type": "application/json"},
        params=query,
    )


@attrs.define
class CallResult:
    at: float  # monotonic, when the call started
    ingress: str
    ok: bool
    status: int
    detail: str
    latency: float


class Callers:
    """`concurrency` callers of `artifact_id/entry`, spread over `ingresses` (each call on the next one),
    until stopped. A call fails when the answer is not 200 with the payload echoed (for echo) or when the
    HTTP request itself fails. Results are kept in order."""

    def __init__(
        self,
        ingresses: Sequence[str],
        artifact_id: str = ECHO_ID,
        entry: str = "echo",
        *,
        concurrency: int = 4,
        query: dict[str, Any] | None = None,
        check: Callable[[Any, Any], bool] = lambda sent, got: got == sent,
        http_timeout: float = 30.0,
    ) -> None:
        self.ingresses = list(ingresses)
        self.artifact_id = artifact_id
        self.entry = entry
        self.concurrency = concurrency
        self.query = query or {}
        self.check = check
        self.http_timeout = http_timeout
        self.results: list[CallResult] = []
        self._turn = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        limits = httpx.Limits(max_connections=self.concurrency * len(self.ingresses) + 4)
        async with (
            httpx.AsyncClient(timeout=self.http_timeout, limits=limits) as http,
            trio.open_nursery() as nursery,
        ):
            for worker in range(self.concurrency):
                nursery.start_soon(self._caller, http, worker)
            task_status.started()

    async def _caller(self, http: httpx.AsyncClient, worker: int) -> None:
        sequence = 0
        while True:
            ingress = self.ingresses[self._turn % len(self.ingresses)]
            self._turn += 1
            sequence += 1
            payload = {"worker": worker, "n": sequence}
            started = time.monotonic()
            try:
                response = await call(http, ingress, self.artifact_id, self.entry, payload, **self.query)
            except httpx.HTTPError as error:
                ok, status, detail = False, 0, f"{type(error).__name__}: {error}"
            else:
                status = response.status_code
                try:
                    body = response.json()
                except ValueError:
                    body = response.text
                ok = status == 200 and self.check(payload, body)
                detail = "" if ok else json.dumps(body)[:300]
            self.results.append(CallResult(started, ingress, ok, status, detail, time.monotonic() - started))
            await trio.sleep(0)

    async def made(self, calls: int, *, timeout: float = 30.0) -> None:
        """Wait until `calls` more calls have completed (load phases are counted in calls, not seconds)."""
        target = len(self.results) + calls
        await wait_until(
            lambda: len(self.results),
            until=lambda count: count >= target,
            timeout=timeout,
            interval=0.01,
            what=f"{calls} more calls",
            describe=lambda count: f"{count - target + calls} made; {self.summary()}",
        )

    @property
    def failures(self) -> list[CallResult]:
        return [r for r in self.results if not r.ok]

    def failures_after(self, moment: float) -> list[CallResult]:
        return [r for r in self.failures if r.at >= moment]

    def summary(self) -> str:
        failed = self.failures
        kinds = collections.Counter(f"{r.status} {r.detail[:160]}" for r in failed)
        lines = [f"{len(self.results)} calls, {len(failed)} failed"]
        lines += [f"  {n} x {kind}" for kind, n in kinds.most_common(8)]
        return "\n".join(lines)


@contextlib.asynccontextmanager
async def background(*runners: Any) -> AsyncIterator[None]:
    """Run each `runner.run` in the background for the duration of the block."""
    async with trio.open_nursery() as nursery:
        for runner in runners:
            await nursery.start(runner.run)
        yield
        nursery.cancel_scope.cancel()


async def rollout_phase(kv: KVClient, phase: str, *, timeout: float = SETTLE) -> RolloutRecord:
    """Wait until the rollout of echo is in `phase`; its record then."""
    key = rollout_key(ECHO_ID)

    async def record() -> RolloutRecord | None:
        found = await kv.get(key)
        return None if found is None else decode_record(key, found.value, RolloutRecord)

    seen = await wait_until(
        record,
        until=lambda seen: seen is not None and seen.phase == phase,
        timeout=timeout,
        what=f"the rollout {phase}",
    )
    assert seen is not None
    return seen


async def canary_waiting_for_an_operator(kv: KVClient, update: UpdateSpec) -> RolloutRecord:
    """Blueprint `web`: echo 1.0.0 x2 ACTIVE under `update` (a canary), then 1.1.0 applied; returns the
    rollout once it observes. Nobody calls, so there is nothing to judge its step from: after its window
    it waits for an operator (promote or abort)."""
    await put_blueprint(kv, "web", SliceSpec(artifact=ECHO, instances=2, update=update))
    await wait_for(kv, exactly_active(2, ECHO), timeout=SETTLE, what="2 ACTIVE 1.0.0", artifact_id=ECHO_ID)
    await put_blueprint(kv, "web", SliceSpec(artifact=ECHO_11, instances=2, update=update))
    return await rollout_phase(kv, "OBSERVING")
