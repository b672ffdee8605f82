"""The nemesis suite's own parts, fast: its invariant checks on recorded histories (pure), its seeded
schedule, and its namespaces (made and removed, also after a killed run)."""

from __future__ import annotations

import functools
import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
from chaos_checks import (
    CallRecord,
    FloorSample,
    Series,
    backlog_drains,
    executions,
    floor,
    kv_history,
    lost_writes,
    trend,
)
from chaos_nemesis import FILLER
from chaos_net import STATE_DIR, Network, missing_tools, sweep_stale
from chaos_runner import RunConfig, death_cause, schedule
from chaos_soak import Soak, kv_files_mib, term_rises
from chaos_workloads import Clock, KVRegisters

from aether_kv import GetResult
from aether_kv._wire import FramedStream, encode, server_handshake
from linearizability import Operation
from support import wait_until


def _call(request_id: str, outcome: str = "ok", *, idempotent: bool = False) -> CallRecord:
    return CallRecord(request_id=request_id, idempotent=idempotent, caller="api", at=1.0, outcome=outcome)


def test_a_non_idempotent_call_that_ran_twice_is_a_violation_whatever_the_caller_saw() -> None:
    calls = [_call("a-1", "unknown"), _call("a-2"), _call("i0-1", idempotent=True)]
    journal = ["a-1 0 100", "a-1 1 200", "a-2 0 100", "i0-1 0 100", "i0-1 2 300"]
    found = executions(calls, journal)
    assert [(v.invariant, v.message.split()[2]) for v in found] == [("non-idempotent-once", "a-1")]
    assert "ran 2 times" in found[0].message and "unknown" in found[0].message


def test_an_acknowledged_call_that_never_ran_is_a_violation() -> None:
    found = executions([_call("a-1"), _call("a-2", "failed")], [])
    assert [v.invariant for v in found] == ["acked-call-executed"]


def test_acknowledged_writes_must_all_be_present() -> None:
    assert lost_writes({"k1": 1.0, "k2": 2.0}, {"k1", "k2", "k3"}) == []
    (found,) = lost_writes({"k1": 1.0, "k2": 2.0}, {"k1"})
    assert found.invariant == "no-acked-write-lost" and "k2" in found.evidence and found.at == 2.0


def _sample(at: float, active: int, lost: tuple[str, ...] = ()) -> FloorSample:
    return FloorSample(at=at, slice="g:a", floor=2, active=active, records="...", lost_nodes=lost)


def test_the_floor_is_judged_only_while_no_node_is_lost() -> None:
    samples = [
        _sample(1, 2),
        _sample(2, 1),
        _sample(3, 1),
        _sample(4, 2),
        _sample(5, 0, ("node-2",)),
        _sample(6, 1),
        _sample(7, 1),
    ]
    found = floor(samples, exempt=[(5.5, 6.5)], recovery=1.5)
    # one violation per stretch: t=2-3, then t=7 (t=5 had a node missing, t=6 was inside a fault and
    # within the recovery bound of the loss; t=7 is past it)
    assert [v.at for v in found] == [2, 7]
    assert all(v.invariant == "availability-floor" for v in found)


def test_a_lost_node_excuses_the_floor_until_the_slice_is_back_at_it() -> None:
    # node-1's lease lapsed and it registered again between samples: the cluster forgot its instances
    samples = [_sample(1, 2), _sample(2, 2, ("node-1",)), _sample(3, 1), _sample(4, 1), _sample(5, 2)]
    assert floor(samples, exempt=[]) == []
    # once back at the floor, a later dip with no node lost is a violation again
    (found,) = floor([*samples, _sample(6, 1)], exempt=[])
    assert found.at == 6
    # and a slice that does not recover within the bound is one too
    (late,) = floor([_sample(1, 2, ("node-1",)), _sample(2, 1), _sample(9, 1)], exempt=[], recovery=5)
    assert late.at == 9


def test_a_stale_read_is_not_linearizable() -> None:
    history = [
        Operation(client=0, kind="put", key="k", value="1", invoked=0, returned=1, result=None),
        Operation(client=1, kind="put", key="k", value="2", invoked=2, returned=3, result=None),
        Operation(client=2, kind="get", key="k", invoked=4, returned=5, result="1"),
    ]
    assert kv_history(history[:2]) == []
    (found,) = kv_history(history)
    assert found.invariant == "kv-linearizable"


def test_growth_after_the_warm_up_is_a_leak_and_growth_during_it_is_not() -> None:
    warming = Series(
        name="rss", points=((0, 10), (1, 40), (2, 60), (3, 61), (4, 60), (5, 61), (6, 60)), limit_per_10min=5
    )
    assert trend(warming, warmup_minutes=3) is None
    leaking = Series(name="rss", points=tuple((m, 60 + 2 * m) for m in range(10)), limit_per_10min=5)
    found = trend(leaking, warmup_minutes=3)
    assert found is not None and "20.00 per 10 min" in found.message


def test_a_process_restarted_late_warms_up_from_its_own_start() -> None:
    # node-2 killed at minute 28 and restarted: 21 MiB at its first sample, 55 MiB once running
    restarted = Series(
        name="rss", points=((28.7, 21), (29.2, 55), (29.7, 55.4), (30, 55.5)), limit_per_10min=5
    )
    assert trend(restarted, warmup_minutes=10) is None
    # and once past its own warm-up, its growth counts like any other's
    leaking = Series(name="rss", points=tuple((10 + m, 60 + 2 * m) for m in range(20)), limit_per_10min=5)
    found = trend(leaking, warmup_minutes=3)
    assert found is not None and "20.00 per 10 min" in found.message


def test_a_process_that_ends_soon_after_its_warm_up_is_not_judged_on_a_short_window() -> None:
    # the soak of 2026-12-04: a replica killed at minute 12.5, judged on minutes 10-12 (a log-compaction
    # cycle's peak and the watch history filling): +9.5 MiB per 10 min from a 2 MiB step
    rss = (47.0, 50.3, 52.7, 54.4, 55.4, 57.4, 58.5, 58.7, 58.9, 59.7, 61.3, 62.9, 63.2)
    killed = Series(name="rss", points=tuple(enumerate(rss)), limit_per_10min=5)
    assert trend(killed, warmup_minutes=10) is None
    # the same growth kept up for 5 minutes past the warm-up is a leak
    leaking = Series(name="rss", points=tuple((m, 51 + m) for m in range(16)), limit_per_10min=5)
    found = trend(leaking, warmup_minutes=10)
    assert found is not None and "10.00 per 10 min" in found.message


def test_a_backlog_must_come_back_to_about_zero() -> None:
    assert backlog_drains("n1", [(0, 0), (1, 30), (2, 12), (3, 1), (4, 0)]) is None
    found = backlog_drains("n1", [(0, 0), (1, 10), (2, 24), (3, 24), (4, 25)])
    assert found is not None and found.invariant == "soak-backlog-drains"


def test_a_term_rise_says_whether_the_leader_changed_and_every_sample_is_kept() -> None:
    points = [(0.0, 1, "a:1"), (1.0, 1, "a:1"), (2.0, 3, "a:1"), (3.0, 4, "b:1"), (4.0, 5, "")]
    assert term_rises(points) == [
        "minute 2.0: 1 → 3 (same leader)",
        "minute 3.0: 3 → 4 (leader a:1 → b:1)",
        "minute 4.0: 4 → 5 (leader b:1 → -)",
    ]
    soak = Soak(terms={"node-1": points})
    soak.add("node-1 replica rss_mib", 42, 0.0, 50.5)
    kept = json.loads(json.dumps(soak.to_json()))
    assert kept["terms"]["node-1"][2] == [2.0, 3, "a:1"]
    assert kept["series"] == [{"name": "node-1 replica rss_mib", "pid": 42, "points": [[0.0, 50.5]]}]
    assert "node-1 Raft term rises: minute 2.0: 1 → 3 (same leader)" in soak.table(warmup=3)[-1]


def test_the_schedule_is_a_function_of_the_seed() -> None:
    config = RunConfig(
        directory=Path("unused"),
        seed=7,
        nemeses=("kill-node", "pause-node", "slow-link"),
        rounds=5,
        combine=True,
    )
    first, again = schedule(config, random.Random(7)), schedule(config, random.Random(7))
    assert first == again and len(first) == 5 and all(len(r) == 2 and r[0] != r[1] for r in first)


def _links() -> str:
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.mark.skipif(bool(missing_tools()), reason=f"needs {', '.join(missing_tools())}")
def test_namespaces_are_made_reachable_and_removed() -> None:
    network = Network.create(2)
    try:
        names = [h.name for h in network.hosts]
        assert all(name in _namespaces() for name in names)
        ping = subprocess.run(
            [
                *network.exec_prefix(network.hosts[0]),
                "python3",
                "-c",
                f"import socket; socket.create_connection(('{network.gateway}', 9), timeout=2)",
            ],
            capture_output=True,
            text=True,
        )
        # the bridge address answers (connection refused: nothing listens on port 9, but it is reached)
        assert "ConnectionRefusedError" in ping.stderr, ping.stderr
    finally:
        network.destroy()
    assert not any(name in _namespaces() for name in names)
    assert network.bridge not in _links()


@pytest.mark.skipif(bool(missing_tools()), reason=f"needs {', '.join(missing_tools())}")
def test_what_a_killed_run_left_behind_is_swept() -> None:
    network = Network.create(1)
    # the owner "dies": its state file names a pid that does not exist
    (STATE_DIR / network.run_id).write_text(f"999999999 {network.subnet}\n")
    assert network.run_id in sweep_stale()
    assert network.hosts[0].name not in _namespaces()
    assert network.bridge not in _links()


def test_a_death_names_the_innermost_exception_of_the_last_traceback() -> None:
    log = """aether-node node-1 ready
  + Exception Group Traceback (most recent call last):
  | ExceptionGroup: Exceptions from Trio nursery (1 sub-exception)
    | ConnectionResetError: [Errno 104] Connection reset by peer
    | trio.BrokenResourceError: socket connection broken: [Errno 104] Connection reset by peer
    +------------------------------------
"""
    assert death_cause(log) == (
        "trio.BrokenResourceError: socket connection broken: [Errno 104] Connection reset by peer"
    )
    assert death_cause("Killed\n") == "no traceback in the log"


async def test_a_kv_write_in_flight_when_the_workload_stops_is_recorded_as_unknown() -> None:
    """A run ends by cancelling its workloads. A write already sent may still be applied and read by
    another client, so the register history must hold it (as unknown): dropping it made a correct
    linearizable read of it look like a stale read (pause-node, seed 930189). The server here speaks the
    real client protocol, answers reads and holds every write unanswered (it may or may not apply it)."""
    secret = "a-test-secret"
    writes: list[dict[str, Any]] = []

    async def handle(stream: trio.SocketStream) -> None:
        framed = FramedStream(stream)
        if not await server_handshake(framed, secret, "holds-writes"):
            return
        while (message := await framed.receive()) is not None:
            if message["op"] == "get":
                await framed.send({"id": message["id"], "ok": encode(GetResult(kv=None, revision=1))})
            else:
                writes.append(message)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        endpoint = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        kv = KVRegisters(endpoints=[endpoint], secret=secret, clock=Clock(), seed=1, clients=1)
        async with trio.open_nursery() as workload:
            await workload.start(kv.run)
            await wait_until(lambda: writes, timeout=30, interval=0.01, what="a write sent to the server")
            workload.cancel_scope.cancel()
        nursery.cancel_scope.cancel()

    kinds = {"put": "put", "txn": "cas"}
    unknown_writes = [op.kind for op in kv.history if op.unknown]
    assert unknown_writes == [kinds[m["op"]] for m in writes]


def test_the_soak_sizes_a_replicas_files_without_the_disk_full_nemesiss_filler(tmp_path: Path) -> None:
    (tmp_path / "raft.journal").write_bytes(b"j" * (1 << 20))
    (tmp_path / FILLER).write_bytes(b"\0" * (3 << 20))
    assert kv_files_mib(tmp_path) == 1.0
