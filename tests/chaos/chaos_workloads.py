"""Workloads the nemesis suite runs while it injects faults; each records what it saw for `chaos_checks`.

- `KVRegisters`: clients doing put / linearizable get / compare-and-swap on a few keys through the
  aether_kv client, every call recorded with invoke and return times (unknown outcomes as unknown);
- `AckWriter`: unique keys put one by one; the acknowledged ones must all be there at the end;
- `Invokers`: callers of the counter slice's `record` (not idempotent) and `record_idempotent` entries,
  each call with a fresh request id, through the nodes' ingresses (httpx, no retry) and through the
  management API client (`ApiClient.invoke`, which fails over across nodes); some calls are slow;
- `BlueprintChurn`: apply, scale, upgrade, a failing upgrade and delete of a blueprint through the
  management API client, in a loop;
- `FloorSampler`: the ACTIVE instances of each slice with a floor, and which nodes are registered.

Workloads run until cancelled and never raise for an error of the cluster: they record it.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import random
import time
from collections.abc import Callable
from typing import Any

import attrs
import httpx
import trio
from chaos_checks import CallRecord, FloorSample

from aether_kv import (
    Compare,
    CompareTarget,
    ConnectionLostError,
    KVError,
    OutcomeUnknownError,
    Put,
    UnavailableError,
    open_client,
)
from aether_node import InstanceKey, SliceRecord, SliceState, decode_record
from aether_node.client import ApiClient, ApiError, ClusterUnreachableError, NoAnswerError
from linearizability import Operation
from support import TimedOut, wait_until

UNKNOWN = (OutcomeUnknownError, ConnectionLostError)
# What a management API call can raise: its own errors, and what leaks from urllib/http.client (a
# truncated answer raises http.client.IncompleteRead, a garbled one ValueError). A workload records it.
# What the management API client raises: an answer (ApiError), then the outcomes that are not one.
API_ERRORS = (
    ApiError,
    ClusterUnreachableError,
    NoAnswerError,
    OSError,
    http.client.HTTPException,
    ValueError,
)
COUNTER = "org.aether:counter"
ECHO = "org.aether:echo"
# Pacing of the blueprint churn (not waits for a condition): after a refused change, the next step comes
# this much later (the cluster is mid-fault: a retry at once would only count the same failure again);
# while a step converges, its status is read this often (each read is a management API call, and a
# step's convergence time is recorded to this resolution).
CHURN_PAUSE_AFTER_ERROR = 1.0
CHURN_STATUS_EVERY = 0.5


class Clock:
    """Seconds since the run started (the same origin for every record of a run)."""

    def __init__(self) -> None:
        self.origin = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.origin


# ---------------------------------------------------------------- KV


@attrs.define
class KVRegisters:
    endpoints: list[str]
    secret: str
    clock: Clock
    seed: int
    clients: int = 4
    keys: tuple[str, ...] = ("x", "y", "z")
    history: list[Operation] = attrs.field(factory=list)
    unavailable: int = 0  # "certainly not applied" answers (not in the history)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for number in range(self.clients):
                nursery.start_soon(self._client, number)
            task_status.started()

    async def _client(self, number: int) -> None:
        rng = random.Random(self.seed * 100 + number)
        shift = number % len(self.endpoints)
        endpoints = self.endpoints[shift:] + self.endpoints[:shift]
        sequence = 0
        while True:
            try:
                async with open_client(endpoints, self.secret, request_timeout=2.0) as client:
                    while True:
                        sequence += 1
                        await self._one(client, number, sequence, rng)
                        await trio.sleep(0.01)
            except KVError:  # could not even connect: try again
                await trio.sleep(0.2)

    async def _one(self, client: Any, number: int, sequence: int, rng: random.Random) -> None:
        key = f"chaos/lin/{rng.choice(self.keys)}"
        kind = rng.choice(("put", "get", "get", "cas"))
        value = f"{number}-{sequence}"
        expected: str | None = None
        invoked = self.clock()
        writing = False  # a write request is (maybe) on its way: from here on it may take effect
        try:
            if kind == "put":
                writing = True
                await client.put(key, value.encode())
                result: object = None
            elif kind == "get":
                kv = await client.get(key, linearizable=True)
                result = kv.value.decode() if kv else None
            else:
                current = await client.get(key)
                expected = current.value.decode() if current else None
                invoked = self.clock()
                writing = True
                compare = (
                    Compare(key=key, target=CompareTarget.EXISTS, operand=False)
                    if expected is None
                    else Compare(key=key, target=CompareTarget.VALUE, operand=expected.encode())
                )
                result = (await client.txn([compare], [Put(key=key, value=value.encode())])).succeeded
        except UNKNOWN:
            if kind != "get":
                self.history.append(self._op(number, kind, key, value, expected, invoked, None, None, True))
            return
        except UnavailableError:
            self.unavailable += 1  # documented as certainly not applied: no effect to record
            return
        except KVError:
            if kind != "get":  # any other error of a write: we cannot know, so unknown
                self.history.append(self._op(number, kind, key, value, expected, invoked, None, None, True))
            return
        except BaseException:
            # Cancelled (the run is ending) with a write in flight: the server may still apply it, and
            # another client may already have read it. Dropping it made a correct history look stale.
            if writing:
                self.history.append(self._op(number, kind, key, value, expected, invoked, None, None, True))
            raise
        self.history.append(
            self._op(number, kind, key, value, expected, invoked, self.clock(), result, False)
        )

    @staticmethod
    def _op(client, kind, key, value, expected, invoked, returned, result, unknown) -> Operation:  # type: ignore[no-untyped-def]
        return Operation(
            client=client,
            kind=kind,
            key=key,
            value=value if kind != "get" else None,
            expected=expected,
            invoked=invoked,
            returned=returned,
            result=result,
            unknown=unknown,
        )

    @property
    def operations(self) -> int:
        return len(self.history) + self.unavailable

    @property
    def failed(self) -> int:
        return sum(1 for op in self.history if op.unknown) + self.unavailable


@attrs.define
class AckWriter:
    endpoints: list[str]
    secret: str
    clock: Clock
    cycle: int = 0  # > 0: keys are reused modulo `cycle` (a soak must not grow the store for ever)
    acknowledged: dict[str, float] = attrs.field(factory=dict)
    attempts: int = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        number = 0
        while True:
            try:
                async with open_client(self.endpoints, self.secret, request_timeout=2.0) as client:
                    while True:
                        number += 1
                        key = f"chaos/ack/{number % self.cycle if self.cycle else number:07d}"
                        self.attempts += 1
                        with contextlib.suppress(KVError):
                            await client.put(key, b"1")
                            self.acknowledged[key] = self.clock()
                        await trio.sleep(0.02)
            except KVError:
                await trio.sleep(0.2)

    async def present(self) -> set[str]:
        async with open_client(self.endpoints, self.secret, request_timeout=10.0) as client:
            listing = await client.range("chaos/ack/", linearizable=True)
        return {item.key for item in listing.kvs}


# ---------------------------------------------------------------- invocations


@attrs.define
class Invokers:
    ingresses: list[str]
    management_urls: list[str]
    clock: Clock
    seed: int
    ingress_callers: int = 3
    slow_every: int = 10  # every Nth API call sleeps `slow_seconds` in the slice
    slow_seconds: float = 12.0  # longer than ApiClient's default 10 s timeout
    api_timeout: float = 10.0
    is_down: Callable[[str], bool] = lambda ingress: False  # is that ingress's node down on purpose?
    calls: list[CallRecord] = attrs.field(factory=list)
    failed_outside_down: int = 0  # failures of calls not sent to a node the nemesis took down

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with httpx.AsyncClient(timeout=30.0) as http, trio.open_nursery() as nursery:
            for number in range(self.ingress_callers):
                nursery.start_soon(self._ingress_caller, http, number, number == 0)
            nursery.start_soon(self._api_caller)
            task_status.started()

    async def _ingress_caller(self, http: httpx.AsyncClient, number: int, idempotent: bool) -> None:
        sequence = 0
        entry = "record_idempotent" if idempotent else "record"
        while True:
            sequence += 1
            ingress = self.ingresses[(number + sequence) % len(self.ingresses)]
            request_id = f"i{number}-{sequence}"
            at = self.clock()
            down = self.is_down(ingress)
            try:
                response = await http.post(
                    f"http://{ingress}/invoke/{COUNTER}/{entry}",
                    content=json.dumps({"id": request_id}).encode(),
                    headers={"content-type": "application/json"},
                )
            except httpx.HTTPError as error:
                outcome, detail = "unknown", f"{type(error).__name__}: {error}"
            else:
                outcome = "ok" if response.status_code == 200 else "failed"
                detail = f"{response.status_code} {response.text[:200]}"
            if outcome != "ok" and not (down or self.is_down(ingress)):
                self.failed_outside_down += 1
            self.calls.append(
                CallRecord(
                    request_id=request_id,
                    idempotent=idempotent,
                    caller=f"ingress:{ingress}",
                    at=at,
                    outcome=outcome,
                    detail=detail,
                )
            )
            await trio.sleep(0.05 if outcome == "ok" else 0.3)

    async def _api_caller(self) -> None:
        rng = random.Random(self.seed)
        urls = self.management_urls[:]
        sequence = 0
        while True:
            sequence += 1
            rng.shuffle(urls)
            request_id = f"a-{sequence}"
            sleep = self.slow_seconds if self.slow_every and sequence % self.slow_every == 0 else 0.0
            at = self.clock()

            def call(
                urls: tuple[str, ...] = tuple(urls), request_id: str = request_id, sleep: float = sleep
            ) -> str:
                client = ApiClient(urls, timeout=self.api_timeout)
                client.invoke(COUNTER, "record", {"id": request_id, "sleep": sleep})
                return ""

            try:
                await trio.to_thread.run_sync(call, abandon_on_cancel=True)
            except ApiError as error:
                outcome, detail = "failed", f"{error.status} {error.kind}: {error.message[:200]}"
            except API_ERRORS[1:] as error:
                outcome, detail = "unknown", f"{type(error).__name__}: {str(error)[:300]}"
            else:
                outcome, detail = "ok", ""
            if outcome != "ok":
                self.failed_outside_down += 1
            self.calls.append(
                CallRecord(
                    request_id=request_id,
                    idempotent=False,
                    caller="api",
                    at=at,
                    outcome=outcome,
                    detail=f"sleep={sleep:g} {detail}",
                )
            )
            await trio.sleep(0.2)

    @property
    def failed(self) -> int:
        return sum(1 for c in self.calls if c.outcome != "ok")


# ---------------------------------------------------------------- blueprints


def ledger_blueprint(journal: str, *, instances: int = 3, min_available: int = 2) -> str:
    return (
        'name = "chaos-ledger"\n\n[[slices]]\nartifact = "org.aether:counter:1.0.0"\n'
        f"instances = {instances}\nmin_available = {min_available}\n\n"
        f"[slices.config]\njournal = {json.dumps(journal)}\n"
    )


def churn_blueprint(version: str, instances: int, min_available: int = 2) -> str:
    return (
        f'name = "chaos-churn"\n\n[[slices]]\nartifact = "org.aether:echo:{version}"\n'
        f"instances = {instances}\nmin_available = {min_available}\n"
    )


CHURN_STEPS: tuple[tuple[str, str | None, int], ...] = (
    # (step, version or None for delete, instances)
    ("apply", "1.0.0", 2),
    ("scale", "1.0.0", 3),
    ("upgrade", "1.1.0", 3),
    ("failing-upgrade", "9.9.9", 3),  # not on the index: its install fails; 1.1.0 must keep serving
    ("roll-back", "1.1.0", 3),
    ("scale-down", "1.1.0", 2),
    ("delete", None, 0),
)


@attrs.define
class BlueprintChurn:
    management_urls: list[str]
    clock: Clock
    step_timeout: float = 45.0
    operations: int = 0
    failed: list[str] = attrs.field(factory=list)
    # (start, end or None) of the windows where the floor applies to echo (2 ACTIVE of some version)
    floor_windows: list[list[float | None]] = attrs.field(factory=list)
    log: list[str] = attrs.field(factory=list)

    def floor_applies(self, at: float) -> bool:
        return any(
            start is not None and start <= at and (end is None or at <= end)
            for start, end in self.floor_windows
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            for step, version, instances in CHURN_STEPS:
                await self._step(step, version, instances)

    async def _api(self, fn: Callable[[ApiClient], Any]) -> Any:
        def work() -> Any:
            return fn(ApiClient(self.management_urls, timeout=10.0))

        return await trio.to_thread.run_sync(work, abandon_on_cancel=True)

    async def _until_gone(self) -> None:
        """After a delete: until no node runs an instance of the churn's slice any more (or the step's
        time is up, recorded as a failure), so the next apply starts from nothing."""

        async def instances_left() -> bool | None:  # None: the API did not answer
            with contextlib.suppress(*API_ERRORS):
                slices = await self._api(lambda api: api.list_slices())
                return any(s.artifact.startswith(ECHO + ":") for s in slices)
            return None

        try:
            await wait_until(
                instances_left,
                until=lambda left: left is False,
                timeout=self.step_timeout,
                interval=0.2,
                what="no instance of the churn's slice",
            )
        except TimedOut:  # a failed step, counted in the report; the churn goes on
            self.failed.append(f"t={self.clock():.1f}s delete: instances left after {self.step_timeout:g}s")

    async def _status(self) -> tuple[bool, str]:
        """(converged, the churn blueprint's status in a line) as the management API answers now."""
        try:
            status = await self._api(lambda api: api.blueprint_status("chaos-churn"))
        except API_ERRORS as error:
            return False, f"{type(error).__name__}: {error}"
        return status.converged, "; ".join(
            f"{s.artifact} {s.active}/{s.desired} {s.problem}" for s in status.slices
        )

    async def _step(self, step: str, version: str | None, instances: int) -> None:
        self.operations += 1
        at = self.clock()
        try:
            if version is None:
                if self.floor_windows and self.floor_windows[-1][1] is None:
                    self.floor_windows[-1][1] = at
                await self._api(lambda api: api.delete_blueprint("chaos-churn"))
            else:
                await self._api(lambda api: api.apply_blueprint(churn_blueprint(version, instances)))
        except API_ERRORS as error:
            self.failed.append(f"t={at:.1f}s {step}: {type(error).__name__}: {error}")
            await trio.sleep(CHURN_PAUSE_AFTER_ERROR)
            return
        if version is None:
            self.log.append(f"t={at:.1f}s {step}")
            await self._until_gone()
            return
        if version == "9.9.9":
            # a version no index has never converges: the step notes the problem its status reports (the
            # failed install), or what the status says when none was reported within 30 s
            try:
                seen = await wait_until(
                    self._status,
                    until=lambda seen: "9.9.9" in seen[1] and "install" in seen[1],
                    timeout=30,
                    interval=CHURN_STATUS_EVERY,
                    what="chaos-churn 9.9.9's failed install in its status",
                )
                self.log.append(f"t={at:.1f}s {step} {version}: {seen[1]}")
            except TimedOut as error:
                self.log.append(f"t={at:.1f}s {step} {version}: no problem reported ({error})")
            return
        try:
            await wait_until(
                self._status,
                until=lambda seen: seen[0],
                timeout=self.step_timeout,
                interval=CHURN_STATUS_EVERY,
                what=f"chaos-churn {version} x{instances} to converge",
            )
        except TimedOut as error:  # a failed step, counted in the report; the churn goes on
            self.failed.append(f"t={at:.1f}s {step} {version} x{instances}: not converged ({error})")
            return
        if not self.floor_windows or self.floor_windows[-1][1] is not None:
            self.floor_windows.append([self.clock(), None])
        self.log.append(f"t={at:.1f}s {step} {version} x{instances}: converged in {self.clock() - at:.1f}s")


# ---------------------------------------------------------------- the floor


@attrs.define
class FloorSampler:
    endpoints: list[str]
    secret: str
    clock: Clock
    node_ids: list[str]
    floors: dict[str, Callable[[float], int]]  # group:artifact → floor at a time (0: none)
    samples: list[FloorSample] = attrs.field(factory=list)
    interval: float = 0.5
    # each node's registration as last seen (its key's create revision): another one means a lapse
    registrations: dict[str, int] = attrs.field(factory=dict)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                async with open_client(self.endpoints, self.secret, request_timeout=2.0) as client:
                    while True:
                        await self._sample(client)
                        await trio.sleep(self.interval)
            except KVError:
                await trio.sleep(self.interval)

    async def _sample(self, client: Any) -> None:
        at = self.clock()
        registered = {
            item.key.rsplit("/", 1)[-1]: item.create_revision for item in (await client.range("nodes/")).kvs
        }
        listing = await client.range("slices/", linearizable=True)
        per_slice: dict[str, list[str]] = collections.defaultdict(list)
        active: collections.Counter[str] = collections.Counter()
        for item in listing.kvs:
            key = InstanceKey.parse(item.key)
            if key is None:
                continue
            record = decode_record(item.key, item.value, SliceRecord)
            artifact = key.coordinates.artifact_id
            per_slice[artifact].append(f"{key.coordinates}#{key.instance}@{key.node_id}:{record.state.name}")
            if record.state is SliceState.ACTIVE:
                active[artifact] += 1
        lost = tuple(
            n
            for n in self.node_ids
            if n not in registered or self.registrations.get(n, registered[n]) != registered[n]
        )
        self.registrations = registered
        for artifact, floor_at in self.floors.items():
            wanted = floor_at(at)
            if wanted:
                self.samples.append(
                    FloorSample(
                        at=at,
                        slice=artifact,
                        floor=wanted,
                        active=active[artifact],
                        records=", ".join(per_slice[artifact]) or "(none)",
                        lost_nodes=lost,
                    )
                )
