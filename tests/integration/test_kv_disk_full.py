"""A full disk under real KV replica processes: the replica meets it as an error, never a signal (the
journal is a memory-mapped file; a store into a page the disk cannot back was a SIGBUS), refuses what it
cannot store (the client gets DiskFullError naming the replica), says so in its status, loses nothing
acknowledged, and takes writes again once space is freed, without a restart.

Each replica's data directory is its own small file system (`disk_support`: tmpfs, or a loop-mounted
ext4 image in the long runs); the tests skip, saying why, where mounting is impossible (not root)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
from disk_support import fill, small_filesystem

from aether_kv import (
    DiskFullError,
    KVClient,
    KVError,
    LocalCluster,
    OutcomeUnknownError,
    Status,
    UnavailableError,
    open_client,
    plan_local_cluster,
    wait_until_ready,
)
from support import wait_until

pytestmark = pytest.mark.integration

VALUE = os.urandom(16 << 10)  # 16 KiB: a replica's journal reserve (1 MiB) runs out within ~70 writes
FS_MIB = 8


@asynccontextmanager
async def cluster_on_small_disks(tmp_path: Path, kind: str) -> AsyncIterator[LocalCluster]:
    cluster = plan_local_cluster(tmp_path / "kv", 3)
    with ExitStack() as mounts:
        for spec in cluster.replicas:
            mounts.enter_context(small_filesystem(spec.data_dir, mib=FS_MIB, kind=kind))
        try:
            for spec in cluster.replicas:
                cluster.start(spec.replica_id)
            await wait_until_ready(cluster)
            await wait_until(
                lambda: agreed_leader(cluster),
                timeout=20,
                what="every replica to follow one leader (before a disk fills: a replica that has not taken"
                " the leader's term by then cannot store it)",
            )
            yield cluster
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(cluster.stop_all)


async def agreed_leader(cluster: LocalCluster) -> bool:
    statuses = [await status_of(cluster, spec.replica_id) for spec in cluster.replicas]
    known = {(s.leader, s.term) for s in statuses if isinstance(s, Status)}
    return len(known) == 1 and all(isinstance(s, Status) and s.leader for s in statuses)


def log_tails(cluster: LocalCluster) -> str:
    return "\n".join(
        f"--- {spec.replica_id}:\n{(cluster.directory / f'{spec.replica_id}.log').read_text()[-1500:]}"
        for spec in cluster.replicas
    )


def assert_all_alive(cluster: LocalCluster) -> None:
    ended = {rid: process.poll() for rid, process in cluster.processes.items() if process.poll() is not None}
    assert not ended, f"replicas ended (negative: killed by that signal): {ended}\n{log_tails(cluster)}"


async def status_of(cluster: LocalCluster, replica_id: str) -> Status | KVError:
    endpoint = cluster.spec(replica_id).client_address
    try:
        async with open_client([endpoint], cluster.secret, request_timeout=2.0) as client:
            return await client.status()
    except KVError as error:
        return error


def disk_full_named(status: Status | KVError, raft_addresses: Sequence[str]) -> bool:
    if not isinstance(status, Status):
        return False
    return all(
        any(p.startswith(f"KV replica {address}: disk full") for p in status.problems)
        for address in raft_addresses
    )


async def write_once(client: KVClient, acknowledged: dict[str, bytes]) -> KVError | None:
    """One new key; recorded in `acknowledged` if the write was acknowledged."""
    key = f"k{len(acknowledged):05d}"
    try:
        await client.put(key, VALUE)
    except KVError as error:
        return error
    acknowledged[key] = VALUE
    return None


async def write_until_refused(
    cluster: LocalCluster, client: KVClient, acknowledged: dict[str, bytes], *, limit: int
) -> KVError:
    """Write until a write is refused (anything but OutcomeUnknownError: the first write past what the
    followers can store may have been journaled by a leader that had room and did not know yet that
    they had none; it commits once they have room, or is replaced)."""
    for _ in range(limit):
        error = await write_once(client, acknowledged)
        if error is not None and not isinstance(error, OutcomeUnknownError):
            return error
    pytest.fail(f"{limit} writes of {len(VALUE)} bytes all succeeded on full disks\n{log_tails(cluster)}")


async def caught_up_and_clear(cluster: LocalCluster, replica_id: str, ahead: Status) -> None:
    """Wait until replica `replica_id` has applied what `ahead` had and reports no problem (its disk has
    room again)."""
    await wait_until(
        lambda: status_of(cluster, replica_id),
        timeout=30,
        what=f"{replica_id} to catch up and its problem to clear",
        until=lambda status: (
            isinstance(status, Status) and not status.problems and status.last_applied >= ahead.last_applied
        ),
    )


async def assert_everything_acknowledged_is_there(
    cluster: LocalCluster, acknowledged: dict[str, bytes]
) -> None:
    async with open_client(cluster.endpoints, cluster.secret, request_timeout=10.0) as client:
        found = await client.range("k", linearizable=True)
    values = {kv.key: kv.value for kv in found.kvs}
    lost = sorted(key for key, value in acknowledged.items() if values.get(key) != value)
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"


async def test_a_full_disk_refuses_writes_by_name_and_they_resume_when_space_is_freed(tmp_path: Path) -> None:
    """The short run: every replica's disk fills (tmpfs)."""
    await full_disks_everywhere(tmp_path, "tmpfs", rounds=1)


@pytest.mark.long
@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
async def test_full_disks_everywhere_again_and_again(tmp_path: Path, kind: str) -> None:
    await full_disks_everywhere(tmp_path, kind, rounds=3)


async def full_disks_everywhere(tmp_path: Path, kind: str, *, rounds: int) -> None:
    acknowledged: dict[str, bytes] = {}
    with trio.fail_after(60 + 60 * rounds):
        async with cluster_on_small_disks(tmp_path, kind) as cluster:
            for round_ in range(rounds):
                fillers = [fill(spec.data_dir) for spec in cluster.replicas]
                async with open_client(cluster.endpoints, cluster.secret, request_timeout=10.0) as client:
                    await full_round(cluster, client, fillers, acknowledged, round_)
                await assert_everything_acknowledged_is_there(cluster, acknowledged)
                assert_all_alive(cluster)


async def full_round(
    cluster: LocalCluster, client: KVClient, fillers: list[Path], acknowledged: dict[str, bytes], round_: int
) -> None:
    error = await write_until_refused(cluster, client, acknowledged, limit=FS_MIB * 1024 // 16)
    assert isinstance(error, DiskFullError), f"round {round_}: {error!r}\n{log_tails(cluster)}"
    assert error.replicas and set(error.replicas) <= set(cluster.peers), error
    assert all(address in error.message for address in error.replicas) and "full" in error.message
    assert_all_alive(cluster)
    full = [s for s in cluster.replicas if s.raft_address in error.replicas]
    for spec in full:
        await wait_until(
            lambda spec=spec: status_of(cluster, spec.replica_id),
            timeout=10,
            what=f"{spec.replica_id}'s status to say its disk is full",
            until=lambda status, spec=spec: disk_full_named(status, [spec.raft_address]),
        )
    again = await write_once(client, acknowledged)
    assert isinstance(again, DiskFullError), f"a write while still full: {again!r}"

    for filler in fillers:
        filler.unlink()
    await wait_until(
        lambda: write_once(client, acknowledged),
        timeout=20,
        what="a write to succeed once space is freed",
        until=lambda error: error is None,
    )
    for spec in cluster.replicas:
        await wait_until(
            lambda spec=spec: status_of(cluster, spec.replica_id),
            timeout=10,
            what=f"{spec.replica_id}'s status to clear the disk-full problems",
            until=lambda status: isinstance(status, Status) and not status.problems,
        )


async def test_with_every_disk_full_and_no_leader_a_write_is_refused_as_disk_full(tmp_path: Path) -> None:
    """Every disk full, then the leader gone: the two left are full followers, which do not stand for
    election and refuse a write ("my disk is full; another replica can take it"), true of neither. The
    client, having heard that from every replica that answered, says what stops the write: DiskFullError
    naming them (it was "unavailable" until its deadline). Once space is freed and the replica is back,
    writes resume and nothing acknowledged is lost."""
    acknowledged: dict[str, bytes] = {}
    with trio.fail_after(150):
        async with cluster_on_small_disks(tmp_path, "tmpfs") as cluster:
            fillers = [fill(spec.data_dir) for spec in cluster.replicas]
            async with open_client(cluster.endpoints, cluster.secret, request_timeout=10.0) as client:
                refused = await write_until_refused(cluster, client, acknowledged, limit=FS_MIB * 1024 // 16)
                assert isinstance(refused, DiskFullError), f"{refused!r}\n{log_tails(cluster)}"
                leader = (await client.status()).leader
            gone = next(spec for spec in cluster.replicas if spec.raft_address == leader)
            cluster.kill(gone.replica_id)
            left = [spec for spec in cluster.replicas if spec is not gone]
            for spec in left:
                await wait_until(
                    lambda spec=spec: status_of(cluster, spec.replica_id),
                    timeout=20,
                    what=f"{spec.replica_id} to know its disk is full, with no leader",
                    until=lambda status, spec=spec: (
                        disk_full_named(status, [spec.raft_address])
                        and isinstance(status, Status)
                        and status.leader in (None, leader)
                    ),
                )
            async with open_client(cluster.endpoints, cluster.secret, request_timeout=4.0) as client:
                error = await write_once(client, acknowledged)
            assert isinstance(error, DiskFullError), f"{error!r}\n{log_tails(cluster)}"
            assert set(error.replicas) >= {spec.raft_address for spec in left}, error
            assert all(spec.raft_address in error.message for spec in left), error.message

            for filler in fillers:
                filler.unlink()
            cluster.start(gone.replica_id)
            async with open_client(cluster.endpoints, cluster.secret, request_timeout=10.0) as client:
                await wait_until(
                    lambda: write_once(client, acknowledged),
                    timeout=30,
                    what="a write to succeed once space is freed and the replica is back",
                    until=lambda error: error is None,
                )
            await assert_everything_acknowledged_is_there(cluster, acknowledged)
            assert_all_alive(cluster)


@pytest.mark.long
@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
async def test_a_follower_with_a_full_disk_acknowledges_nothing_it_cannot_store(
    tmp_path: Path, kind: str
) -> None:
    """One follower's disk fills: the other two go on committing (the follower acknowledges only what it
    stored), every replica's status names it, and it catches up once space is freed."""
    acknowledged: dict[str, bytes] = {}
    with trio.fail_after(180):
        async with (
            cluster_on_small_disks(tmp_path, kind) as cluster,
            open_client(cluster.endpoints, cluster.secret, request_timeout=10.0) as client,
        ):
            leader = (await client.status()).leader
            leader_id = next(s.replica_id for s in cluster.replicas if s.raft_address == leader)
            follower = next(s for s in cluster.replicas if s.raft_address != leader)
            filler = fill(follower.data_dir)
            # 2 MiB: more than the journal reserve (1 MiB) it may hold when its disk fills
            unknown = 0
            for _ in range(2 * 1024 // 16):
                error = await write_once(client, acknowledged)
                if isinstance(error, OutcomeUnknownError):
                    # forwarded through the follower just before it found its disk full: it answers
                    # a forwarded write once it has applied it, and now never will (later ones it
                    # refuses at once, and the client asks another replica)
                    unknown += 1
                    continue
                assert error is None, f"{error!r}\n{log_tails(cluster)}"
            assert unknown <= 2, f"{unknown} writes of unknown outcome\n{log_tails(cluster)}"
            assert_all_alive(cluster)
            for spec in cluster.replicas:
                await wait_until(
                    lambda spec=spec: status_of(cluster, spec.replica_id),
                    timeout=10,
                    what=f"{spec.replica_id}'s status to name {follower.replica_id}'s full disk",
                    until=lambda status: disk_full_named(status, [follower.raft_address]),
                )
            behind, ahead = await status_of(cluster, follower.replica_id), await status_of(cluster, leader_id)
            assert isinstance(behind, Status) and isinstance(ahead, Status)
            assert behind.last_applied < ahead.last_applied, (
                "the full follower stored what it had no room for"
            )
            filler.unlink()
            await caught_up_and_clear(cluster, follower.replica_id, ahead)
            async with open_client([follower.client_address], cluster.secret, request_timeout=10.0) as local:
                found = await local.range("k")  # serializable: this replica's own state
            assert {kv.key for kv in found.kvs} >= set(acknowledged)
            await assert_everything_acknowledged_is_there(cluster, acknowledged)
            assert_all_alive(cluster)


@pytest.mark.long
@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
async def test_a_leader_whose_disk_fills_hands_over_to_a_replica_with_room(tmp_path: Path, kind: str) -> None:
    """The leader's disk alone fills: it hands its leadership to a follower with room and steps down;
    writes go on there (a few refused or of unknown outcome meanwhile), and it catches up once space is
    freed."""
    acknowledged: dict[str, bytes] = {}
    with trio.fail_after(180):
        async with (
            cluster_on_small_disks(tmp_path, kind) as cluster,
            open_client(cluster.endpoints, cluster.secret, request_timeout=10.0) as client,
        ):
            old = (await client.status()).leader
            full = next(s for s in cluster.replicas if s.raft_address == old)
            filler = fill(full.data_dir)
            errors: list[KVError] = []
            for _ in range(2 * 1024 // 16):  # 2 MiB: more than the journal reserve it may hold
                error = await write_once(client, acknowledged)
                if error is not None:
                    assert isinstance(error, DiskFullError | OutcomeUnknownError | UnavailableError), error
                    errors.append(error)
            assert len(errors) <= 5, f"{errors}\n{log_tails(cluster)}"
            assert_all_alive(cluster)
            now = await client.status()
            assert now.leader not in (None, old), f"{old} still leads\n{log_tails(cluster)}"
            for spec in cluster.replicas:
                await wait_until(
                    lambda spec=spec: status_of(cluster, spec.replica_id),
                    timeout=10,
                    what=f"{spec.replica_id}'s status to name {full.replica_id}'s full disk",
                    until=lambda status: disk_full_named(status, [old]),
                )
            filler.unlink()
            ahead = await status_of(
                cluster, next(s.replica_id for s in cluster.replicas if s.raft_address == now.leader)
            )
            assert isinstance(ahead, Status)
            await caught_up_and_clear(cluster, full.replica_id, ahead)
            await assert_everything_acknowledged_is_there(cluster, acknowledged)
            assert_all_alive(cluster)
