"""Support for the I/O shell's in-process tests: slice processes simulated at the SliceStore seam, node
registrations and blueprints written as the node and the API write them, a registered node as the API
shows it (`node_info`), and a condition wait.

`FakeSliceStore` has SliceStore's methods (the seam the NodeDeploymentManager and the invoker already
take): load, activate, deactivate, unload, close_all, get, active, instances, timeouts. Its processes are
`FakeHost`s that a test can crash; a coordinate in `broken` fails to install, one in `failing_start` fails
its start hook, as a real slice would; after `close_all` no load succeeds (the real store's templates
are stopped then).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import trio

from aether_kv import KV, Member, Status
from aether_node.api._handlers import Handlers
from aether_node.client import NodeInfo
from aether_node.core._blueprint import Blueprint, SliceSpec
from aether_node.core._errors import InvocationError, ResolutionError, SliceHostError
from aether_node.core._kv_cache import KVCache
from aether_node.core._policies import StepTimeouts
from aether_node.core._records import Capacity, NodeRecord, SliceRecord, decode_record, encode_record
from aether_node.core._schema import BLUEPRINTS, SLICES, InstanceKey, node_key
from aether_node.routing._endpoints import EndpointRegistry
from aether_node.routing._invoker import ClusterInvoker
from aether_node.routing._peers import PeerClients
from aether_node.runtime._broadcast import Broadcast
from aether_node.runtime._lifecycle import Phase
from aether_node.runtime._slice_store import LocalInstance

MISSING = "a dependency is missing from the index"
_pids = itertools.count(10_000)


class FakeHost:
    """A slice host process: alive until `crash` (or unload); answers calls with what it was given."""

    def __init__(self, label: str) -> None:
        self.pid = next(_pids)
        self.log_path = Path(f"/nonexistent/{label}.log")
        self.exited = Broadcast()
        self.exit_reason = ""
        self.calls = 0

    def crash(self, reason: str = "killed by signal 9") -> None:
        self.exit_reason = reason
        self.exited.set()

    async def invoke(self, entry: str, payload: Any, timeout: float, depth: int = 0) -> Any:
        await trio.lowlevel.checkpoint()
        if self.exited.is_set():
            raise InvocationError("unavailable", f"the slice process {self.pid} died during the call")
        self.calls += 1
        return {"entry": entry, "payload": payload, "pid": self.pid}


class FakeSliceStore:
    def __init__(
        self,
        *,
        broken: set[str] | None = None,
        failing_start: set[str] | None = None,
        entry_points: dict[str, bool] | None = None,
        step_time: float = 0.0,
        stop_time: float = 0.0,
        one_cpu: bool = False,
        hung: set[str] | None = None,
    ) -> None:
        """`one_cpu`: loads under way together take turns, as on a machine whose CPU they all wait for
        (the k-th of loads begun together ends after k `step_time`s). `hung`: coordinates whose loads
        never end (an install or import that hangs)."""
        self.broken = broken if broken is not None else set()
        self.failing_start = failing_start if failing_start is not None else set()
        self.entry_points = entry_points if entry_points is not None else {"echo": True}
        self.step_time = step_time
        self.stop_time = stop_time  # how long `close_all` takes per instance (a stop hook)
        self.timeouts = StepTimeouts()
        self.instances: dict[InstanceKey, LocalInstance] = {}
        self.loads = 0
        self.started_with_load = 0
        self.started: set[InstanceKey] = set()  # whose start hook ran and stop hook did not
        self.unloaded_started: list[InstanceKey] = []  # unloaded after a start hook without a stop hook
        self.closed = False  # after `close_all`, as the real store's templates are stopped: no load
        self._cpu = trio.Lock() if one_cpu else None
        self.hung = hung if hung is not None else set()
        self.under_way = 0  # loads begun and not ended
        self.most_under_way = 0

    async def _step(self) -> None:
        if self.step_time > 0:
            await trio.sleep(self.step_time)
        else:
            await trio.lowlevel.checkpoint()

    def get(self, key: InstanceKey) -> LocalInstance | None:
        return self.instances.get(key)

    def active(self) -> Iterator[LocalInstance]:
        return (i for i in self.instances.values() if i.phase is Phase.ACTIVE and i.alive)

    async def load(
        self, key: InstanceKey, config: dict[str, Any], *, start: bool = False, first: bool = False
    ) -> LocalInstance:
        """As the real store's: with `start` the activation must follow (counted in `started_with_load`)."""
        self.under_way += 1
        self.most_under_way = max(self.most_under_way, self.under_way)
        try:
            if str(key.coordinates) in self.hung:
                await trio.sleep_forever()
            if self._cpu is not None:
                async with self._cpu:
                    await self._step()
            else:
                await self._step()
        finally:
            self.under_way -= 1
        if self.closed:
            raise SliceHostError("spawn", "the template did not fork: the slice store is shut down")
        if str(key.coordinates) in self.broken:
            raise ResolutionError("install", f"install failed: {MISSING}")
        self.loads += 1
        self.started_with_load += start
        instance = LocalInstance(key=key, host=FakeHost(key.label), entry_points=dict(self.entry_points))  # type: ignore[arg-type]
        if start and str(key.coordinates) not in self.failing_start:  # the host runs START right behind
            self.started.add(key)
        self.instances[key] = instance
        return instance

    async def activate(self, instance: LocalInstance) -> None:
        await self._step()
        if str(instance.key.coordinates) in self.failing_start:
            raise SliceHostError("raised", "start() raised RuntimeError: no database")
        if not instance.alive:
            raise SliceHostError("died", f"the slice process died ({instance.host.exit_reason})")
        self.started.add(instance.key)
        instance.phase = Phase.ACTIVE

    async def deactivate(self, instance: LocalInstance) -> None:
        await self._step()
        if not instance.alive:  # (as the real store finds when its STOP goes unanswered)
            raise SliceHostError("crashed", f"the slice process is gone ({instance.host.exit_reason})")
        instance.phase = Phase.LOADED
        self.started.discard(instance.key)

    async def unload(self, key: InstanceKey) -> None:
        if key in self.started:
            self.started.discard(key)
            self.unloaded_started.append(key)
        instance = self.instances.pop(key, None)
        if instance is not None and instance.alive:
            instance.host.crash("stopped")  # type: ignore[attr-defined]
        await trio.lowlevel.checkpoint()

    async def close_all(self) -> None:
        self.closed = True
        with trio.CancelScope(shield=True):
            for key in list(self.instances):
                await self.unload(key)
                if self.stop_time > 0:  # its stop hook, then the next one's
                    await trio.sleep(self.stop_time)

    def crash(self, key: InstanceKey, reason: str = "killed by signal 9") -> None:
        self.instances[key].host.crash(reason)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- KV records, as their writers write them


async def register(
    kv: KV,
    node_id: str,
    *,
    cpu: float = 4.0,
    memory_mib: int = 4096,
    ttl: float = 3600.0,
    peer: str | None = None,
    raft: str = "",
    leaving: bool = False,
) -> int:
    """A node's registration on a fresh lease (what `_Registration.register` writes); returns the lease.
    `raft`: its KV replica's address; `leaving`: as written when it stops gracefully."""
    lease = (await kv.lease_grant(ttl)).lease
    record = NodeRecord(
        node_id=node_id,
        ingress=f"127.0.0.1:{8000 + len(node_id)}",
        peer=peer or f"{node_id}.invalid:1",
        capacity=Capacity(cpu=cpu, memory_mib=memory_mib),
        lease_ttl=ttl,
        raft=raft,
        leaving=leaving,
    )
    await kv.put(node_key(node_id), encode_record(record), lease=lease)
    return lease


def node_info(node_id: str, *, leader: bool = False, instances: int = 1, active: int = 1) -> NodeInfo:
    """A registered node as the management API shows it (a worker with 1 CPU and 1 GiB, no addresses)."""
    return NodeInfo(
        node_id=node_id,
        ingress="",
        management="",
        peer="",
        cpu=1.0,
        memory_mib=1024,
        role="worker",
        started_at=0.0,
        instances=instances,
        active=active,
        leader=leader,
    )


def kv_status(*, quorum: bool = True, connected: bool = True, problems: tuple[str, ...] = ()) -> Status:
    """A KV replica's status as the leader's node reads it: replica a:1 leads (with `quorum`), b:1 is
    `connected` or not, and the replicas' `problems`."""
    return Status(
        self_address="a:1",
        leader="a:1" if quorum else None,
        is_leader=True,
        term=3,
        commit_index=10,
        last_applied=10,
        revision=40,
        compact_revision=0,
        has_quorum=quorum,
        members=(Member(raft_address="a:1", connected=True), Member(raft_address="b:1", connected=connected)),
        keys=5,
        leases=2,
        problems=problems,
    )


async def apply(kv: KV, name: str, *specs: SliceSpec) -> None:
    await kv.put(BLUEPRINTS + name, encode_record(Blueprint(name=name, slices=tuple(specs))))


async def instances(kv: KV) -> dict[str, SliceRecord]:
    """Every instance record: key → record."""
    listing = await kv.range(SLICES)
    return {item.key: decode_record(item.key, item.value, SliceRecord) for item in listing.kvs}


async def hold(seconds: float) -> None:
    """Let `seconds` of virtual time pass, for a test that asserts that nothing happens meanwhile (the
    managers make many passes): an absence has no condition to wait on. Only on trio's MockClock, where
    this costs no real time; refused on a real clock, so it can never become a real long sleep."""
    from trio.testing import MockClock

    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, MockClock), f"hold() runs on trio's MockClock only, not {clock!r}"
    await trio.sleep(seconds)


@contextlib.asynccontextmanager
async def handlers_over(kv: KV) -> AsyncIterator[Handlers]:
    """The management API's `Handlers` over `kv`, with an invoker of node n1 whose endpoint registry
    follows `kv` (and a slice store with nothing in it), until the block ends."""
    async with trio.open_nursery() as nursery:
        cache = KVCache(kv, EndpointRegistry.PREFIXES)
        await nursery.start(cache.run)
        invoker = ClusterInvoker(
            "n1", FakeSliceStore(), EndpointRegistry(cache), PeerClients(nursery, "s" * 32)
        )  # type: ignore[arg-type]
        yield Handlers(kv, invoker)
        nursery.cancel_scope.cancel()
