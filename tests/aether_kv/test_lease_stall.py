"""A leader whose tick thread stalls (a long log compaction, an overloaded machine) hears no keep-alive
meanwhile; the leases of clients that kept sending them must survive the stall, and a lease nobody keeps
alive must still expire after it. A real replica; the stall is a tick callback that blocks once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import trio

from aether_kv import LeaseNotFoundError, RaftConfig, open_store, wait_for_leader
from aether_kv._ports import free_port
from support import wait_until

STALL = 2.5  # longer than the TTL below


async def test_keepalives_unheard_during_a_leader_stall_do_not_cost_the_lease(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = RaftConfig(raft_address=address, peers=(address,), data_dir=tmp_path, secret="a-test-secret")
    async with open_store(config, lease_grace=0.0) as store:
        await wait_for_leader(store)
        kept = (await store.lease_grant(1.0)).lease
        abandoned = (await store.lease_grant(1.0)).lease
        await store.put("kept", b"v", lease=kept)
        await store.put("abandoned", b"v", lease=abandoned)
        stalled = threading.Event()

        def stall_once() -> None:
            if not stalled.is_set():
                stalled.set()
                time.sleep(STALL)

        renewals = 0

        async def keep_alive() -> None:
            nonlocal renewals
            while True:
                await store.lease_keepalive(kept)
                renewals += 1
                await trio.sleep(0.2)

        async def renewed(times: int) -> None:
            goal = renewals + times
            await wait_until(lambda: renewals >= goal, timeout=30, what=f"{times} more renewals")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_alive)
            await renewed(2)  # renewals heard before the stall
            store._replica._obj.addOnTickCallback(stall_once)
            await wait_until(stalled.is_set, timeout=10, what="the tick thread to stall")
            # the abandoned lease expires once the leader hears again and its (postponed) TTL passes
            await wait_until(
                lambda: store.get("abandoned"),
                until=lambda kv: kv is None,
                timeout=10,
                what="the abandoned lease's key to go",
            )
            assert await store.get("kept") is not None, "a lease kept alive through the stall was expired"
            await renewed(8)  # more than a TTL of normal running after the stall (one per 0.2 s)
            assert await store.get("kept") is not None
            nursery.cancel_scope.cancel()
        try:
            await store.lease_keepalive(abandoned)
        except LeaseNotFoundError:
            pass
        else:
            raise AssertionError("the abandoned lease is still alive")
