"""aether-kv with three real replica processes on 127.0.0.1: faults lose nothing acknowledged."""

from __future__ import annotations

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
    Status,
    UnavailableError,
    open_client,
    wait_until_ready,
)
from support import leader_id, settled_leader, wait_until

pytestmark = pytest.mark.integration

WRITE_ERRORS = (OutcomeUnknownError, UnavailableError, ConnectionLostError)


async def test_put_get_range_delete_across_replicas(kv_cluster: LocalCluster) -> None:
    first, _second, third = kv_cluster.endpoints
    async with open_client([first], kv_cluster.secret) as writer:
        await writer.put("app/a", b"1")
        await writer.put("app/b", b"2")
        await writer.put("other", b"3")
    async with open_client([third], kv_cluster.secret) as reader:
        listing = await reader.range("app/", linearizable=True)
        assert [(kv.key, kv.value) for kv in listing.kvs] == [("app/a", b"1"), ("app/b", b"2")]
        deleted = await reader.delete_prefix("app/")
        assert deleted.deleted == 2
        assert await reader.get("app/a", linearizable=True) is None
        assert (await reader.get("other", linearizable=True)).value == b"3"  # type: ignore[union-attr]


async def test_no_acknowledged_write_is_lost_when_the_leader_is_killed(kv_cluster: LocalCluster) -> None:
    secret = kv_cluster.secret
    acknowledged: dict[str, bytes] = {}
    acked_after_kill = 0
    killed = trio.Event()

    async def writer(number: int, endpoints: list[str]) -> None:
        nonlocal acked_after_kill
        async with open_client(endpoints, secret, request_timeout=3.0) as client:
            sequence = 0
            while acked_after_kill < 200:
                key, value = f"w{number}/{sequence}", f"value-{number}-{sequence}".encode()
                sequence += 1
                try:
                    await client.put(key, value)
                except WRITE_ERRORS:
                    continue
                acknowledged[key] = value
                if killed.is_set():
                    acked_after_kill += 1

    old_leader = await settled_leader(kv_cluster)
    rotations = [kv_cluster.endpoints[i:] + kv_cluster.endpoints[:i] for i in range(3)]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for number in range(8):
                nursery.start_soon(writer, number, rotations[number % 3])
            await wait_until(lambda: _true(len(acknowledged) >= 200), timeout=20, what="200 writes")
            kv_cluster.kill(old_leader, signal.SIGKILL)
            killed.set()

    survivors = [r.client_address for r in kv_cluster.replicas if r.replica_id != old_leader]
    async with open_client(survivors, secret) as checker:
        status = await checker.status()
        assert status.leader is not None and leader_id(kv_cluster, status) != old_leader
        stored = {kv.key: kv.value for kv in (await checker.range("w", linearizable=True)).kvs}
    missing = {key for key in acknowledged if stored.get(key) != acknowledged[key]}
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:5]}"


async def test_a_leader_that_loses_its_majority_says_so_to_a_status_wait(kv_cluster: LocalCluster) -> None:
    """A status wait on the leader's endpoint answers when it steps down (its followers paused), not at
    its max_wait: the node's leadership monitor learns of a lost lead this way, without polling."""
    leader = await settled_leader(kv_cluster)  # (every replica caught up: item 16)
    others = [r.replica_id for r in kv_cluster.replicas if r.replica_id != leader]
    async with open_client(
        [kv_cluster.spec(leader).client_address], kv_cluster.secret, request_timeout=240.0
    ) as client:
        here = await client.status()
        assert here.is_leader
        for replica in others:
            kv_cluster.processes[replica].send_signal(signal.SIGSTOP)
        try:
            with trio.fail_after(30):  # its max_wait is 60 s: only a step-down answers within this
                after = await client.wait_status_change(True, here.term, max_wait=60)
        finally:
            for replica in others:
                kv_cluster.processes[replica].send_signal(signal.SIGCONT)
    assert not after.is_leader


async def test_a_follower_whose_term_moves_says_so_to_a_status_wait(kv_cluster: LocalCluster) -> None:
    """With the leader paused, both followers' status waits answer with the new term, not at their
    max_wait: at most one of them wins the election, so the other answers for the term change alone."""
    leader = await settled_leader(kv_cluster)  # (every replica caught up: item 16)
    followers = [r.replica_id for r in kv_cluster.replicas if r.replica_id != leader]
    before: dict[str, Status] = {}
    for replica in followers:
        async with open_client([kv_cluster.spec(replica).client_address], kv_cluster.secret) as client:
            before[replica] = await client.status()
            assert not before[replica].is_leader
    answers: dict[str, Status] = {}

    async def wait_on(replica: str) -> None:
        async with open_client([kv_cluster.spec(replica).client_address], kv_cluster.secret) as client:
            answers[replica] = await client.wait_status_change(False, before[replica].term, max_wait=60)

    kv_cluster.processes[leader].send_signal(signal.SIGSTOP)
    try:
        with trio.fail_after(30):  # their max_wait is 60 s: only a term change answers within this
            async with trio.open_nursery() as nursery:
                for replica in followers:
                    nursery.start_soon(wait_on, replica)
    finally:
        kv_cluster.processes[leader].send_signal(signal.SIGCONT)
    assert sorted(answers) == sorted(followers)
    assert all(answers[r].term > before[r].term for r in followers), answers


async def _true(value: bool) -> bool:
    return value


@pytest.mark.long
async def test_everything_acknowledged_survives_killing_every_replica(kv_cluster: LocalCluster) -> None:
    secret = kv_cluster.secret
    async with open_client(kv_cluster.endpoints, secret) as client:
        results = [await client.put(f"durable/{i}", str(i).encode()) for i in range(300)]
        lease = await client.lease_grant(3600)
        await client.put("durable/leased", b"x", lease=lease.lease)
    last_revision = results[-1].revision + 1

    for replica in kv_cluster.replicas:  # no clean shutdown: nothing gets a chance to flush
        kv_cluster.kill(replica.replica_id, signal.SIGKILL)
    for replica in kv_cluster.replicas:
        kv_cluster.start(replica.replica_id)
    await wait_until_ready(kv_cluster, timeout=30)

    async with open_client(kv_cluster.endpoints, secret) as client:
        stored = await client.range("durable/", linearizable=True)
        assert {kv.key: kv.value for kv in stored.kvs} == {
            **{f"durable/{i}": str(i).encode() for i in range(300)},
            "durable/leased": b"x",
        }
        assert stored.revision >= last_revision
        assert (await client.get("durable/leased")).lease == lease.lease  # type: ignore[union-attr]


async def test_watch_sees_every_event_once_in_order_across_a_replica_restart(
    kv_cluster: LocalCluster,
) -> None:
    secret = kv_cluster.secret
    watched = kv_cluster.replicas[0]
    others = [r.client_address for r in kv_cluster.replicas[1:]]
    received: list[tuple[int, str]] = []
    total = 150

    async def watcher(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # The watcher's first endpoint is the replica we kill; it must fail over and resume.
        async with open_client([watched.client_address, *others], secret) as client:
            stream = client.watch("feed/", 1)
            task_status.started()
            async for events in stream:
                received.extend((event.revision, event.kv.key) for event in events)
                if len(received) >= total:
                    return

    async with open_client(others, secret) as writer:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(watcher)
                for i in range(total):
                    if i == 50:
                        kv_cluster.kill(watched.replica_id, signal.SIGKILL)
                    if i == 100:
                        kv_cluster.start(watched.replica_id)
                    while True:
                        try:
                            await writer.put(f"feed/{i:04d}", b"x")
                            break
                        except WRITE_ERRORS:
                            continue  # an unknown outcome could repeat a key; the check below catches it

    keys = [key for _, key in received]
    assert keys == [f"feed/{i:04d}" for i in range(total)], "events lost, repeated or out of order"
    revisions = [revision for revision, _ in received]
    assert revisions == sorted(set(revisions))


async def test_concurrent_compare_and_swap_has_exactly_one_winner_per_round(
    kv_cluster: LocalCluster,
) -> None:
    secret = kv_cluster.secret
    rounds, contenders = 15, 6
    winners: dict[int, list[int]] = {r: [] for r in range(1, rounds + 1)}

    async def contender(number: int) -> None:
        endpoints = kv_cluster.endpoints[number % 3 :] + kv_cluster.endpoints[: number % 3]
        async with open_client(endpoints, secret) as client:
            for round_ in range(1, rounds + 1):
                previous = str(round_ - 1).encode()
                compare = (
                    Compare(key="cas/counter", target=CompareTarget.EXISTS, operand=False)
                    if round_ == 1
                    else Compare(key="cas/counter", target=CompareTarget.VALUE, operand=previous)
                )
                result = await client.txn([compare], [Put(key="cas/counter", value=str(round_).encode())])
                if result.succeeded:
                    winners[round_].append(number)
                await wait_until(
                    lambda r=round_: _at_least(client, r),
                    timeout=10,
                    what=f"round {round_} to finish",
                    interval=0.01,
                )

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            for number in range(contenders):
                nursery.start_soon(contender, number)
    assert {r: len(w) for r, w in winners.items()} == {r: 1 for r in range(1, rounds + 1)}


async def _at_least(client, round_: int) -> bool:  # type: ignore[no-untyped-def]
    kv = await client.get("cas/counter", linearizable=True)
    return kv is not None and int(kv.value) >= round_


async def test_an_expired_lease_removes_its_keys_on_every_replica(kv_cluster: LocalCluster) -> None:
    secret = kv_cluster.secret
    for endpoint in kv_cluster.endpoints:  # every replica caught up (a follower may still be connecting)
        async with open_client([endpoint], secret) as one:
            await one.get("nodes/plain", linearizable=True)
    async with open_client(kv_cluster.endpoints, secret) as client:
        # TTLs long enough that the key is seen on every replica before it expires, even on a busy machine
        short = await client.lease_grant(3.0)
        kept = await client.lease_grant(3.0)
        await client.put("nodes/gone", b"1", lease=short.lease)
        await client.put("nodes/alive", b"2", lease=kept.lease)
        await client.put("nodes/plain", b"3")

        async def everywhere(key: str, present: bool) -> bool:
            for endpoint in kv_cluster.endpoints:  # serializable reads: each replica's own state
                async with open_client([endpoint], secret) as one:
                    if (await one.get(key) is not None) != present:
                        return False
            return True

        await wait_until(lambda: everywhere("nodes/gone", True), timeout=5, what="the key on all")

        async def kept_alive_and_gone() -> bool:  # the kept lease is renewed while the short one lapses
            gone = await everywhere("nodes/gone", False)
            if not gone:
                await client.lease_keepalive(kept.lease)
            return gone

        await wait_until(
            kept_alive_and_gone, timeout=20, interval=0.2, what="the short lease's key gone on all"
        )
        assert await everywhere("nodes/alive", True), "a kept-alive lease lost its key"
        assert await everywhere("nodes/plain", True)
        with pytest.raises(Exception, match=r"lease .* not found"):
            await client.lease_keepalive(short.lease)
        revoked = await client.lease_revoke(kept.lease)
        assert revoked.deleted == 1
        await wait_until(lambda: everywhere("nodes/alive", False), timeout=5, what="revoke on all")


@pytest.mark.long
async def test_a_replica_can_be_added_and_removed_while_the_cluster_runs(
    kv_cluster: LocalCluster, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from aether_kv._local import ReplicaSpec, free_port

    secret = kv_cluster.secret
    newcomer = ReplicaSpec(
        replica_id="kv4",
        raft_address=f"127.0.0.1:{free_port()}",
        client_address=f"127.0.0.1:{free_port()}",
        data_dir=kv_cluster.directory / "kv4",
    )
    # A membership change waits for the newcomer to catch up: allow it more than a plain write's 5 s.
    async with open_client(kv_cluster.endpoints, secret, request_timeout=30.0) as client:
        await client.put("before/join", b"1")
        kv_cluster.replicas.append(newcomer)
        kv_cluster.start("kv4")  # its peers: every current member
        await client.add_member(newcomer.raft_address)
        await client.put("after/join", b"2")
        async with open_client([newcomer.client_address], secret) as fourth:

            async def caught_up() -> bool:
                try:
                    return (await fourth.get("after/join")) is not None
                except (ConnectionLostError, OutcomeUnknownError, UnavailableError):
                    return False

            await wait_until(caught_up, timeout=20, what="the new replica to catch up")
            status = await fourth.status()
            assert len(status.members) == 4
            assert (await fourth.get("before/join", linearizable=True)) is not None
        await client.remove_member(newcomer.raft_address)
        kv_cluster.kill("kv4", signal.SIGTERM)
        kv_cluster.replicas.remove(newcomer)
        await client.put("after/leave", b"3")  # three members still make a quorum
        status = await client.status()
        assert newcomer.raft_address not in {m.raft_address for m in status.members}
