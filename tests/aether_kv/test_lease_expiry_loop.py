"""The leader's lease-expiry loop sleeps until the next deadline it knows instead of looking every 100 ms.
A real replica: a lease granted while the loop sleeps towards a far deadline still expires on time (the
grant wakes it), a kept-alive lease stays, and a lapsed one goes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
import trio.testing

import aether_kv._raft
import aether_kv._store
from aether_kv import LeaseNotFoundError, RaftConfig, open_store, wait_for_leader
from aether_kv._ports import free_port
from support import wait_until

LONGEST = 5.0  # the loop's longest sleep (KVStore._expire_leases)


def _config(tmp_path: Path) -> RaftConfig:
    address = f"127.0.0.1:{free_port()}"
    return RaftConfig(raft_address=address, peers=(address,), data_dir=tmp_path, secret="a-test-secret")


async def test_a_short_lease_granted_while_the_loop_sleeps_long_expires_on_time(tmp_path: Path) -> None:
    async with open_store(_config(tmp_path), lease_grace=0.0) as store:
        await wait_for_leader(store)
        await store.lease_grant(600.0)  # the loop now sleeps as long as it may
        await trio.testing.wait_all_tasks_blocked()
        short = (await store.lease_grant(0.3)).lease
        await store.put("short", b"v", lease=short)
        # well before the loop's own timer could fire again: only the grant's wake-up gets it there
        await wait_until(
            lambda: store.get("short"),
            until=lambda kv: kv is None,
            timeout=LONGEST - 1.0,
            what="the short lease's key to go",
        )
        with pytest.raises(LeaseNotFoundError):
            await store.lease_keepalive(short)


async def test_a_kept_alive_lease_stays_and_a_lapsed_one_goes(tmp_path: Path) -> None:
    async with open_store(_config(tmp_path), lease_grace=0.0) as store:
        await wait_for_leader(store)
        kept = (await store.lease_grant(1.0)).lease
        lapsed = (await store.lease_grant(1.0)).lease
        await store.put("kept", b"v", lease=kept)
        await store.put("lapsed", b"v", lease=lapsed)
        renewals = 0

        async def keep_alive() -> None:
            nonlocal renewals
            while True:
                await store.lease_keepalive(kept)
                renewals += 1
                await trio.sleep(0.25)

        async def gone() -> bool:
            return await store.get("lapsed") is None

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_alive)
            await wait_until(gone, timeout=20, what="the lapsed lease to expire")
            goal = renewals + 8  # two seconds of renewals (two TTLs) after that
            await wait_until(lambda: renewals >= goal, timeout=30, what="8 more renewals")
            assert await store.get("kept") is not None, "a lease kept alive was expired"
            nursery.cancel_scope.cancel()


class _WallClockSteppedBack:
    """The `time` module with its wall clock an hour behind (NTP stepping a fast clock back, a VM
    resumed). Stepping the machine's own clock would disturb every other process here (certificates,
    tokens), so the modules under test get this in its place; their monotonic clock is the real one."""

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)

    @staticmethod
    def time() -> float:
        return time.time() - 3600.0


async def test_a_wall_clock_stepped_back_does_not_hold_lease_expiry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new leader expires no lease for its first `lease_grace` s. That was counted on the wall clock:
    stepped back an hour after the replica became the leader, no lease expired for an hour, so the
    instances of a node that died were never placed elsewhere."""
    async with open_store(_config(tmp_path), lease_grace=1.0) as store:
        await wait_for_leader(store)
        monkeypatch.setattr(aether_kv._store, "time", _WallClockSteppedBack())
        monkeypatch.setattr(aether_kv._raft, "time", _WallClockSteppedBack())
        lapsed = (await store.lease_grant(0.5)).lease
        await store.put("lapsed", b"v", lease=lapsed)
        await wait_until(
            lambda: store.get("lapsed"),
            until=lambda kv: kv is None,
            timeout=LONGEST + 5.0,
            what="the lapsed lease's key to go",
        )
