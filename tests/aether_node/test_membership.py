"""The expected nodes kept by the leader (`control/_membership.py`) on an in-memory KV: what a new leader
rebuilds from history respects `forget`, and a node that registers again by itself is expected again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
from shell_support import register

from aether_kv import MemoryStore
from aether_node.control._membership import Membership, expected_nodes, forget, forgotten_key
from support import wait_until


@pytest.fixture
async def kv() -> AsyncIterator[MemoryStore]:
    yield MemoryStore()


async def leading(kv: MemoryStore, body: Callable[[], Awaitable[None]]) -> None:
    """Run a leader's membership keeper (its `_follow`, as on taking over) while `body` runs."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(Membership(kv)._follow)
        await body()
        nursery.cancel_scope.cancel()


async def expects(kv: MemoryStore, node_id: str) -> list[str]:
    return await wait_until(
        lambda: expected_nodes(kv),
        until=lambda found: node_id in found,
        timeout=10,
        what=f"{node_id} expected",
    )


async def test_a_new_leader_does_not_bring_a_forgotten_node_back_from_history(kv: MemoryStore) -> None:
    async def first() -> None:
        await register(kv, "n1")
        lease = await register(kv, "n4")
        await expects(kv, "n4")
        await kv.lease_revoke(lease)  # lost (not leaving): still expected

    await leading(kv, first)
    assert await expected_nodes(kv) == ["n1", "n4"]
    assert await forget(kv, "n4")
    assert not await forget(kv, "n4")  # not expected any more

    async def second() -> None:
        await register(kv, "n5")  # once it is expected, the replay has gone past n4's registration
        assert "n4" not in await expects(kv, "n5")

    await leading(kv, second)

    async def third() -> None:
        await register(kv, "n4")  # back by itself: expected again, the marker has done its job
        await expects(kv, "n4")
        await wait_until(
            lambda: kv.get(forgotten_key("n4")),
            until=lambda found: found is None,
            timeout=10,
            what="the forgotten marker deleted",
        )

    await leading(kv, third)


async def test_a_registration_after_the_forget_counts_in_a_new_leaders_replay(kv: MemoryStore) -> None:
    lease = await register(kv, "n4")
    await leading(kv, lambda: expects(kv, "n4"))
    await kv.lease_revoke(lease)
    assert await forget(kv, "n4")
    lease = await register(kv, "n4")  # back by itself, and lost again, while no leader kept the members
    await kv.lease_revoke(lease)
    await leading(kv, lambda: expects(kv, "n4"))
