"""Linearizability of aether-kv under a leader kill and restart, checked with a WGL search.

Several clients do puts, linearizable gets and compare-and-swaps on a few keys while the leader is
SIGKILLed and later restarted. Every call is recorded with its invoke/return times and result; calls
that time out or lose their connection are recorded as unknown (they may or may not have happened).
"""

from __future__ import annotations

import random
import signal

import pytest
import trio

from aether_kv import (
    Compare,
    CompareTarget,
    ConnectionLostError,
    LocalCluster,
    OutcomeUnknownError,
    Put,
    UnavailableError,
    open_client,
    wait_until_ready,
)
from linearizability import Operation, check_linearizable
from support import settled_leader, wait_until

pytestmark = pytest.mark.integration

KEYS = ("x", "y", "z")
UNKNOWN = (OutcomeUnknownError, ConnectionLostError)


async def _client_loop(
    number: int, cluster: LocalCluster, history: list[Operation], stop: trio.Event, seed: int
) -> None:
    rng = random.Random(seed)
    endpoints = cluster.endpoints[number % 3 :] + cluster.endpoints[: number % 3]
    async with open_client(endpoints, cluster.secret, request_timeout=2.0) as client:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            key = f"lin/{rng.choice(KEYS)}"
            kind = rng.choice(("put", "get", "get", "cas"))
            value = f"{number}-{sequence}"
            expected: str | None = None
            invoked = trio.current_time()
            try:
                if kind == "put":
                    await client.put(key, value.encode())
                    result: object = None
                elif kind == "get":
                    kv = await client.get(key, linearizable=True)
                    result = kv.value.decode() if kv else None
                else:
                    current = await client.get(key)  # a likely-current expectation, any replica
                    expected = current.value.decode() if current else None
                    invoked = trio.current_time()
                    compare = (
                        Compare(key=key, target=CompareTarget.EXISTS, operand=False)
                        if expected is None
                        else Compare(key=key, target=CompareTarget.VALUE, operand=expected.encode())
                    )
                    outcome = await client.txn([compare], [Put(key=key, value=value.encode())])
                    result = outcome.succeeded
            except UNKNOWN:
                if kind != "get":
                    history.append(_op(number, kind, key, value, expected, invoked, None, None, True))
                continue
            except UnavailableError:
                continue  # certainly not applied: no effect to record
            returned = trio.current_time()
            history.append(_op(number, kind, key, value, expected, invoked, returned, result, False))


async def _completed(history: list[Operation], count: int, timeout: float = 60.0) -> None:
    """Phases are counted in recorded calls, not seconds."""
    await wait_until(
        lambda: len(history),
        until=lambda done: done >= count,
        timeout=timeout,
        interval=0.01,
        what=f"{count} calls",
    )


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


async def test_history_is_linearizable_across_a_leader_kill_and_restart(kv_cluster: LocalCluster) -> None:
    history: list[Operation] = []
    stop = trio.Event()
    leader = await settled_leader(kv_cluster)  # (every replica caught up: item 16)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            for number in range(6):
                nursery.start_soon(_client_loop, number, kv_cluster, history, stop, 1000 + number)
            await _completed(history, 300)  # load before the fault
            kv_cluster.kill(leader, signal.SIGKILL)
            await _completed(history, len(history) + 300)  # an election, then load on the survivors
            kv_cluster.start(leader)
            await wait_until_ready(kv_cluster, timeout=30)
            await _completed(history, len(history) + 300)  # load with the old leader back as a follower
            stop.set()

    completed = [op for op in history if not op.unknown]
    assert len(completed) > 200, f"too little work to say anything: {len(completed)} calls completed"
    assert any(op.kind == "cas" and op.result is True for op in completed)
    verdict = check_linearizable(history)
    unknown = len(history) - len(completed)
    print(f"{len(completed)} calls completed, {unknown} unknown, {verdict.explored} states")
    assert verdict.ok, verdict.message
