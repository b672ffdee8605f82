"""The nemeses: each injects one kind of fault, holds it, and heals it. `NEMESES` names them all.

A nemesis acts through a `Run` (see `chaos_runner`): `run.cluster` (processes), `run.network`
(namespaces), `run.rng` (seeded), `run.leader()` (the node whose replica leads Raft), `run.expect_down`
/ `run.restart` (so the death watch knows which exits were asked for), `run.violation(...)`.

`loses_nodes`: while the fault lasts (and until the cluster converged after it) nodes count as lost,
so the availability floor is not judged then.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from typing import TYPE_CHECKING, ClassVar

import trio
from chaos_net import have_nft
from disk_support import fill

from aether_kv import KVError, open_client

if TYPE_CHECKING:
    from chaos_cluster import Node
    from chaos_runner import Run


class Nemesis:
    name: ClassVar[str]
    loses_nodes: ClassVar[bool] = False
    needs_nft: ClassVar[bool] = False

    async def inject(self, run: Run) -> str:
        raise NotImplementedError

    async def during(self, run: Run, hold: float) -> None:
        await trio.sleep(hold)

    async def heal(self, run: Run) -> None:
        raise NotImplementedError


class KillNode(Nemesis):
    name = "kill-node"
    loses_nodes = True
    leader_only: ClassVar[bool] = False

    async def inject(self, run: Run) -> str:
        leader = await run.leader() if self.leader_only else None
        self.victim: Node = leader or run.rng.choice(run.cluster.nodes)
        run.expect_down(self.victim)
        run.cluster.kill(self.victim)
        return f"SIGKILL {self.victim.node_id}"

    async def heal(self, run: Run) -> None:
        await run.restart(self.victim)


class KillLeader(KillNode):
    name = "kill-leader"
    leader_only = True


class LoseDisk(KillNode):
    """A machine rebuilt: its node SIGKILLed, its KV replica's data directory emptied (the disk lost),
    the node started again with the same addresses. Its replica catches up from the leader, and votes
    only once it has (`_pysyncobj_patches`, item 16): nothing acknowledged may be lost."""

    name = "lose-disk"

    async def inject(self, run: Run) -> str:
        said = await super().inject(run)
        with trio.fail_after(30):  # its replica ends with it (it watches its parent)
            while run.cluster.kv_replica_pids(self.victim):
                await trio.sleep(0.05)
        kv = self.victim.data_dir / "kv"
        for entry in list(kv.iterdir()) if kv.is_dir() else []:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        return f"{said}, its KV data directory emptied"


class PauseNode(Nemesis):
    name = "pause-node"
    loses_nodes = True
    leader_only: ClassVar[bool] = False

    async def inject(self, run: Run) -> str:
        leader = await run.leader() if self.leader_only else None
        self.victim = leader or run.rng.choice(run.cluster.nodes)
        run.recovering.add(self.victim.node_id)  # its own ingress cannot answer: not counted as failures
        run.cluster.signal(self.victim, signal.SIGSTOP)
        return f"SIGSTOP {self.victim.node_id} (node process only)"

    async def heal(self, run: Run) -> None:
        run.cluster.signal(self.victim, signal.SIGCONT)


class PauseLeaderNode(PauseNode):
    """The Raft leader's node stopped, its replica left running: the replica must hand the lead over
    (its node's heartbeat falls silent) and another node lead the cluster."""

    name = "pause-leader-node"
    leader_only = True


class _ProcessSignal(Nemesis):
    """SIGKILL or SIGSTOP one process of a kind (KV replica or slice host) on a random node."""

    what: ClassVar[str]
    sig: ClassVar[int]

    def _pids(self, run: Run, node: Node) -> list[int]:
        raise NotImplementedError

    async def inject(self, run: Run) -> str:
        candidates = [(n, p) for n in run.cluster.nodes for p in self._pids(run, n)]
        if not candidates:
            self.pid = 0
            return f"no {self.what} process found"
        node, self.pid = run.rng.choice(candidates)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, self.sig)
        return f"{signal.Signals(self.sig).name} {self.what} pid {self.pid} on {node.node_id}"

    async def heal(self, run: Run) -> None:
        if self.pid and self.sig == signal.SIGSTOP:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)


class KillReplica(_ProcessSignal):
    name, what, sig = "kill-replica", "KV replica", signal.SIGKILL

    def _pids(self, run: Run, node: Node) -> list[int]:
        return run.cluster.kv_replica_pids(node)


class PauseReplica(KillReplica):
    name, sig = "pause-replica", signal.SIGSTOP


class KillSlice(_ProcessSignal):
    name, what, sig = "kill-slice", "slice host", signal.SIGKILL
    loses_nodes = True  # an instance is lost with its process (not the manager's doing)

    def _pids(self, run: Run, node: Node) -> list[int]:
        return run.cluster.slice_host_pids(node)


class PauseSlice(KillSlice):
    name, sig = "pause-slice", signal.SIGSTOP


class _Partition(Nemesis):
    loses_nodes = True
    needs_nft = True

    async def heal(self, run: Run) -> None:
        run.network.heal_partition()


class IsolateLeader(_Partition):
    name = "partition-leader"

    async def inject(self, run: Run) -> str:
        leader = await run.leader() or run.rng.choice(run.cluster.nodes)
        others = [n.index for n in run.cluster.nodes if n is not leader]
        run.network.partition([leader.index], others)
        return f"isolate leader {leader.node_id} from the other nodes"


class MajorityMinority(_Partition):
    name = "partition-halves"

    async def inject(self, run: Run) -> str:
        order = [n.index for n in run.cluster.nodes]
        run.rng.shuffle(order)
        minority, majority = order[: (len(order) - 1) // 2 or 1], order[(len(order) - 1) // 2 or 1 :]
        run.network.partition(minority, majority)
        names = lambda group: ",".join(run.cluster.nodes[i].node_id for i in group)  # noqa: E731
        return f"partition [{names(minority)}] | [{names(majority)}]"


class BridgePartition(_Partition):
    name = "partition-bridge"

    async def inject(self, run: Run) -> str:
        order = [n.index for n in run.cluster.nodes]
        run.rng.shuffle(order)
        bridge, left, right = order[0], order[1 : 1 + len(order) // 2], order[1 + len(order) // 2 :]
        run.network.partition(left, right)
        names = lambda group: ",".join(run.cluster.nodes[i].node_id for i in group)  # noqa: E731
        return (
            f"[{names(left)}] and [{names(right)}] cut apart; {run.cluster.nodes[bridge].node_id} sees both"
        )


RESET_EVERY = 1.0  # the nemesis's pace: one node's connections reset per second while it holds


class ResetConnections(Nemesis):
    name = "reset-connections"

    async def inject(self, run: Run) -> str:
        self.count = 0
        return "RST every established TCP connection of a random node, once a second"

    async def during(self, run: Run, hold: float) -> None:
        with trio.move_on_after(hold):  # the fault's duration: one reset a second meanwhile
            while True:
                node = run.rng.choice(run.cluster.nodes)
                self.count += run.network.reset_connections(node.index)
                await trio.sleep(RESET_EVERY)

    async def heal(self, run: Run) -> None:
        run.note(f"{self.name}: {self.count} connections reset")


class SlowLink(Nemesis):
    name = "slow-link"

    async def inject(self, run: Run) -> str:
        node = run.rng.choice(run.cluster.nodes)
        how = run.network.slow(node.index, 200)
        return f"{node.node_id}: {how}"

    async def heal(self, run: Run) -> None:
        run.network.heal_slow()


class LossyLink(Nemesis):
    name = "lossy-link"
    needs_nft = True

    async def inject(self, run: Run) -> str:
        node = run.rng.choice(run.cluster.nodes)
        run.network.lossy(node.index, 25)
        return f"{node.node_id}: drop 25% of its packets to and from the other nodes"

    async def heal(self, run: Run) -> None:
        run.network.heal_loss()


FILLER = "chaos-filler"  # the disk-full nemesis's file, beside the replica's own (the soak leaves it out)


REPLICA_EXITED = "KV replica exited with"  # what a node logs when its replica process ends unasked


class DiskFull(Nemesis):
    """Fills node 1's KV data directory. The replica must meet it as an error: stay up (a store into its
    mapped journal once ended it with SIGBUS, and the node restarted it) and say "disk full" in its status
    while it lasts (noted: it says so only once it had to write)."""

    name = "disk-full"

    async def inject(self, run: Run) -> str:
        tmpfs = run.cluster.tmpfs
        if tmpfs is None:
            self.filler = None
            return "no tmpfs under a replica's data dir"
        self.node = run.cluster.nodes[0]
        self.log_from = self.node.log_path.stat().st_size if self.node.log_path.exists() else 0
        # (unbuffered: a buffered file that met ENOSPC raised it again when closed)
        self.filler = fill(tmpfs, FILLER)
        written = self.filler.stat().st_size
        return f"filled the tmpfs under {tmpfs} ({written >> 20} MiB, the replica of node-1)"

    async def during(self, run: Run, hold: float) -> None:
        self.reported: float | None = None
        with trio.move_on_after(hold):
            while self.filler is not None:
                if self.reported is None and await self._says_disk_full(run):
                    self.reported = run.clock()
                await trio.sleep(0.25)

    async def _says_disk_full(self, run: Run) -> bool:
        with contextlib.suppress(KVError), trio.move_on_after(2):
            async with open_client([self.node.kv_endpoint], run.cluster.secret, request_timeout=1.5) as kv:
                return any("disk full" in problem for problem in (await kv.status()).problems)
        return False

    async def heal(self, run: Run) -> None:
        if self.filler is None:
            return
        with contextlib.suppress(OSError):
            self.filler.unlink()
        with open(self.node.log_path, "rb") as log:
            log.seek(self.log_from)
            exits = [
                line for line in log.read().decode(errors="replace").splitlines() if REPLICA_EXITED in line
            ]
        if exits:
            run.violation(
                "disk-full-handled",
                f"{self.node.node_id}'s KV replica ended while its disk was full",
                "\n".join(exits[:5]),
            )
        said = f"at t={self.reported:.1f}s" if self.reported is not None else "not while the fault lasted"
        run.note(f"{self.name}: {self.node.node_id}'s replica reported 'disk full' {said}")


class KillAll(Nemesis):
    name = "kill-all"
    loses_nodes = True

    async def inject(self, run: Run) -> str:
        for node in run.cluster.nodes:
            run.expect_down(node)
            run.cluster.kill(node)
        return "SIGKILL every node"

    async def heal(self, run: Run) -> None:
        for node in run.cluster.nodes:
            await run.restart(node)


NEMESES: dict[str, type[Nemesis]] = {
    cls.name: cls
    for cls in (
        KillNode,
        KillLeader,
        LoseDisk,
        PauseNode,
        PauseLeaderNode,
        KillReplica,
        PauseReplica,
        KillSlice,
        PauseSlice,
        IsolateLeader,
        MajorityMinority,
        BridgePartition,
        ResetConnections,
        SlowLink,
        LossyLink,
        DiskFull,
        KillAll,
    )
}

# Nemeses that can be combined with each other (kill-all replaces every other fault).
COMBINABLE = tuple(name for name in NEMESES if name != "kill-all")


def available(names: list[str]) -> tuple[list[str], list[str]]:
    """(usable, skipped with the reason) on this machine."""
    usable, skipped = [], []
    for name in names:
        if NEMESES[name].needs_nft and not have_nft():
            skipped.append(f"{name}: needs nft (nftables), not installed")
        else:
            usable.append(name)
    return usable, skipped
