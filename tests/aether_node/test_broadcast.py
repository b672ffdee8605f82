"""`runtime._broadcast`: waiting for whichever of several events comes first, with no task per event."""

from __future__ import annotations

import trio
import trio.testing

from aether_node.runtime._broadcast import Broadcast, wait_any


async def test_wait_any_returns_when_either_is_set_and_leaves_no_relay_behind() -> None:
    first, second = Broadcast(), Broadcast()
    woke: list[str] = []

    async def waiter() -> None:
        await wait_any(first, second)
        woke.append("woke")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert not woke
        second.set()
    assert woke == ["woke"]
    assert not first._relays and not second._relays  # the waiter's event is not kept by the other
    assert second.is_set() and not first.is_set()


async def test_wait_any_returns_at_once_if_one_is_set_already() -> None:
    done, never = Broadcast(), Broadcast()
    done.set()
    with trio.fail_after(1):
        await wait_any(never, done)
    assert not never._relays


async def test_a_cancelled_wait_leaves_no_relay_behind() -> None:
    first, second = Broadcast(), Broadcast()
    with trio.move_on_after(0.01):
        await wait_any(first, second)
    assert not first._relays and not second._relays
    first.set()  # sets nothing left over


async def test_a_broadcast_wakes_its_own_waiters_and_every_wait_any_on_it() -> None:
    shared = Broadcast()
    woke: list[str] = []

    async def plain() -> None:
        await shared.wait()
        woke.append("plain")

    async def either(other: Broadcast) -> None:
        await wait_any(other, shared)
        woke.append("either")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(plain)
        for _ in range(3):
            nursery.start_soon(either, Broadcast())
        await trio.testing.wait_all_tasks_blocked()
        shared.set()
    assert sorted(woke) == ["either", "either", "either", "plain"]
