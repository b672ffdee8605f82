"""The Raft replica: the one module that runs pysyncobj (with `_pysyncobj_patches.py`, its fixes, and
`_journal.py`, its journal made durable).

It owns the pysyncobj object, its tick thread, when the journal is synced and the translation of pysyncobj's
failure codes. It knows nothing of trio: callers get plain callbacks that run on the tick thread and must
not block (see `_store.py`, which bridges them into trio in one place).

Durability (pysyncobj issue 84: its journal is an mmap that is never synced): every journal append only
marks the journal dirty; the journal is fsynced (`_journal.DurableJournal.sync`) before this
replica sends any Raft message but a leader's append-entries (so an acknowledgement, a vote, a forwarded
command always follows a durable write), at the end of every tick and at the start of every tick, before
upstream counts the leader itself toward a commit (so a leader never commits on its own unsynced entry).
A leader thus sends new entries first and syncs its journal while the followers sync theirs (Raft thesis
10.2.1: in parallel, as etcd does). One sync covers a whole batch: group commit. Term and vote are
fsynced when they change. What a power cut leaves is read back as `_journal.py` says.

Disk space (`_disk.py`): the journal writes only into blocks reserved beforehand with posix_fallocate (a
mapped page the disk cannot back was a SIGBUS), so a full disk is an ENOSPC that the replica meets as an
error: it refuses what it cannot store and says so in its status (`_pysyncobj_patches`, item 12). A
failed fsync is sticky: nothing is acknowledged after it until the replica is restarted.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pysyncobj.syncobj as _syncobj_module
from pysyncobj import FAIL_REASON, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.syncobj import _RAFT_STATE

from ._disk import DiskState, create_durably, remove_durably
from ._errors import (
    DiskFullError,
    KVError,
    LeaseNotFoundError,
    NoQuorumError,
    OutcomeUnknownError,
    UnavailableError,
)
from ._journal import DurableJournal, mend_journal, open_journal
from ._pysyncobj_patches import DISK_FULL, FOLLOWER_DISK_FULL, PatchedSyncObj
from ._raft_port import GuardedTransport
from ._records import BarrierResult, Batch, Command, ErrorResult, LeaseResult, Member, Result, Status
from ._state import KVState
from ._tls import ReloadingTLS

log = logging.getLogger("aether_kv.raft")
T = TypeVar("T")

Callback = Callable[[Result | None, KVError | None], None]
HEARTBEAT_PERIOD = 0.1


@attrs.frozen(kw_only=True)
class RaftConfig:
    """How one replica joins the Raft group. Timing defaults are the ones measured stable on 2 cores
    (benchmarks/README.md): replication is event-driven (a proposal is sent at once, see
    `_pysyncobj_patches`, item 4), `append_entries_period` is the leader's heartbeat when idle (100 ms),
    0.5–1.5 s elections, long connection timeout for fast failover."""

    raft_address: str
    peers: tuple[str, ...]
    data_dir: Path
    secret: str
    append_entries_period: float = HEARTBEAT_PERIOD
    election_min: float = 0.5
    election_max: float = 1.5
    # pysyncobj drops a link it has not read from for this long and notices only on the next send: idle
    # follower↔follower links then lose the first vote request of an election (failover took two
    # election timeouts). Dead peers are still noticed at once: their sockets close; a link whose data
    # goes unacknowledged (a partition) is dropped by the kernel (`_keepalive.UNACKNOWLEDGED`).
    connection_timeout: float = 3600.0
    # pysyncobj tries a peer it could not reach again only after this long (5 s upstream): a replica
    # that started before its peer listened, or whose peer came back from a restart or a partition, was
    # left unlinked for up to 5 s (health said "not connected" right after `dev up`; an election in that
    # window needed the missing link). One attempt a second per unreachable peer is cheap.
    connection_retry: float = 1.0
    leader_fallback_timeout: float = 3.0
    history_events: int = 20_000
    durable: bool = True
    # Log compaction (a snapshot, then the journal restarts) after this many entries or this long,
    # whichever comes first: every entry stays in memory until then (issue 18: +11 MiB per 10 min at
    # 6,500 writes/min). The snapshot is pickled in a forked child (`useFork`), so the tick thread does
    # not stall while it is taken and the threshold can be low (at 10,000 entries on the tick thread the
    # stall caused elections under load: benchmarks/README.md, aether-kv).
    log_compaction_entries: int = attrs.field(default=10_000, validator=attrs.validators.ge(2))
    log_compaction_seconds: float = attrs.field(default=600.0, validator=attrs.validators.gt(0))
    # The Raft port speaks mutual TLS with the certificate and CA in this directory (`_tls.py`) instead
    # of pysyncobj's password encryption (see `_raft_port.py`); None: encrypted with `secret`.
    tls_dir: Path | None = None


def translate_fail_reason(reason: Any, own_address: str | None = None) -> KVError:
    """pysyncobj failure code → this package's error (the only place that knows the codes). A disk-full
    refusal is `(DISK_FULL or FOLLOWER_DISK_FULL, raft addresses of the replicas without room)`
    (`_pysyncobj_patches`, item 12). A follower's refusal names the replicas in `replicas` only if it is
    about this replica's own disk (`own_address`): one passed on from the leader (a full leader handing
    over refuses what followers with room forwarded to it) says nothing of this replica's room, and the
    client counts an endpoint as full only by its own word (`_client._Refusals`)."""
    if isinstance(reason, tuple) and len(reason) == 2 and reason[0] == FOLLOWER_DISK_FULL:
        replicas = tuple(str(address) for address in reason[1])
        own = own_address is not None and replicas == (own_address,)
        return UnavailableError(
            f"not applied: the disk of KV replica {', '.join(replicas)} is full; another replica can take"
            " it: safe to retry",
            replicas=replicas if own else (),
        )
    if isinstance(reason, tuple) and len(reason) == 2 and reason[0] == DISK_FULL:
        replicas = tuple(str(address) for address in reason[1])
        return DiskFullError(
            f"not applied: the disk of KV replica {' and '.join(replicas) or '?'} is full, so the cluster"
            " cannot journal the request on its leader and a majority; free space in the data directory"
            " there, then retry",
            replicas=replicas,
        )
    if reason in (FAIL_REASON.QUEUE_FULL, FAIL_REASON.MISSING_LEADER, FAIL_REASON.REQUEST_DENIED):
        return UnavailableError(f"not applied: {_REASON_TEXT.get(reason, reason)}; safe to retry")
    if reason in (FAIL_REASON.DISCARDED, FAIL_REASON.NOT_LEADER):
        return UnavailableError(f"not applied: {_REASON_TEXT.get(reason, reason)}; safe to retry")
    return OutcomeUnknownError(
        f"outcome unknown: {_REASON_TEXT.get(reason, reason)}; re-read before retrying"
    )


_REASON_TEXT = {
    FAIL_REASON.QUEUE_FULL: "the proposal queue is full",
    FAIL_REASON.MISSING_LEADER: "there is no leader (election in progress or no quorum)",
    FAIL_REASON.DISCARDED: "a new leader replaced the entry",
    FAIL_REASON.NOT_LEADER: "the replica asked is no longer the leader",
    FAIL_REASON.LEADER_CHANGED: "the leader changed while the request was in flight",
    FAIL_REASON.REQUEST_DENIED: "the request was denied",
    FAIL_REASON.UNKNOWN_OUTCOME: "pysyncobj reported an unknown outcome",
}


class _SyncBeforeSendTransport(GuardedTransport):
    """Every message but a leader's append-entries leaves only after the journal is durable (a leader's
    own entries are synced before it counts them: `RaftReplica` hooks `before_commit_check`)."""

    def send(self, node: Any, message: Any) -> bool:
        journal = self._syncObj._SyncObj__raftLog
        if isinstance(journal, DurableJournal) and not _leader_append_entries(self._syncObj, message):
            journal.sync()
        return super().send(node, self._syncObj.with_problems(message))


def _leader_append_entries(obj: Any, message: Any) -> bool:
    return (
        isinstance(message, dict)
        and message.get("type") == "append_entries"
        and obj._SyncObj__raftState == _RAFT_STATE.LEADER
    )


class _KVConsumer(SyncObjConsumer):
    """Holds the replicated KVState. Attributes set before `super().__init__()` stay out of snapshots."""

    def __init__(self, history_events: int) -> None:
        self.lock = threading.Lock()
        super().__init__()
        self.state = KVState(history_events=history_events)

    @replicated
    def apply(self, command: Command | Batch) -> Result:
        with self.lock:
            try:
                return self.state.apply(command)
            except Exception as error:  # a bug: never let it stop pysyncobj's apply loop
                log.exception("applying %r failed", command)
                return ErrorResult(code="kv_error", message=f"internal error applying the command: {error!r}")


class LeaseClock:
    """The leader's lease deadlines, in its memory only (etcd's way): a keep-alive moves a deadline and
    writes nothing to the log; grants, revocations and expiries are log entries.

    Deadlines are on this process's monotonic clock and belong to one leadership (`epoch`: when it
    began). A new leadership starts every lease afresh at a full TTL plus `takeover_margin` (a deposed
    leader may have renewed a lease until it noticed, at most upstream's leader fallback timeout after
    losing its majority). A lease first seen later (just granted) gets a full TTL.

    A leader that stalls (a long log compaction, its process paused, an overloaded machine) cannot hear
    keep-alives meanwhile, so it must not blame the clients: while its tick thread has been silent for
    more than `stall` seconds nothing is due, and after a stall every deadline moves by its length.
    Thread-safe: renewals and ticks run on the tick thread, the expiry loop on trio's.
    """

    def __init__(self, *, takeover_margin: float, stall: float = 0.5) -> None:
        self.takeover_margin = takeover_margin
        self.stall = stall
        self._lock = threading.Lock()
        self._epoch: float | None = None
        self._deadlines: dict[int, float] = {}
        self._last_tick: float | None = None

    def tick(self, now: float) -> None:
        """The tick thread runs at `now`; a silence longer than `stall` before it postpones every lease."""
        with self._lock:
            self._tick(now)

    def _tick(self, now: float) -> None:
        if self._last_tick is not None and now - self._last_tick > self.stall:
            self._postpone(now - self._last_tick)
        self._last_tick = now

    def postpone(self, seconds: float) -> None:
        """Move every deadline `seconds` later (the expiry loop itself was held up that long)."""
        with self._lock:
            self._postpone(seconds)

    def _postpone(self, seconds: float) -> None:
        for lease_id in self._deadlines:
            self._deadlines[lease_id] += seconds

    def _sync(self, epoch: float, now: float, ttls: dict[int, float]) -> None:
        if epoch != self._epoch:
            self._epoch = epoch
            self._deadlines = {i: now + ttl + self.takeover_margin for i, ttl in ttls.items()}
            return
        for lease_id in [i for i in self._deadlines if i not in ttls]:
            del self._deadlines[lease_id]
        for lease_id, ttl in ttls.items():
            self._deadlines.setdefault(lease_id, now + ttl)

    def renew(self, lease_id: int, epoch: float, now: float, ttls: dict[int, float]) -> bool:
        """Give the lease a full TTL from `now`; False if its deadline has passed (it is expiring). Runs on
        the tick thread, so it counts as a tick: a keep-alive heard first after a stall finds the deadlines
        already postponed."""
        with self._lock:
            if self._last_tick is not None:
                self._tick(now)
            self._sync(epoch, now, ttls)
            deadline = self._deadlines.get(lease_id)
            if deadline is None or deadline <= now:
                return False
            self._deadlines[lease_id] = max(deadline, now + ttls[lease_id])
            return True

    def due(self, epoch: float, now: float, ttls: dict[int, float]) -> list[int]:
        """The leases whose deadline has passed (none while the tick thread is stalled: keep-alives may be
        waiting for it unheard)."""
        with self._lock:
            self._sync(epoch, now, ttls)
            if self._last_tick is not None and now - self._last_tick > self.stall:
                return []
            return [lease_id for lease_id, deadline in self._deadlines.items() if deadline <= now]

    def next_deadline(self, epoch: float, now: float, ttls: dict[int, float]) -> float | None:
        """The earliest deadline (on the monotonic clock), None without leases: the expiry loop sleeps
        until then instead of looking on a short timer."""
        with self._lock:
            self._sync(epoch, now, ttls)
            return min(self._deadlines.values(), default=None)


def _lease_ttls(state: KVState) -> dict[int, float]:
    return {lease_id: lease.ttl for lease_id, lease in state.leases.items()}


class RaftReplica:
    """One replica. Construct on a worker thread (it binds sockets); all callbacks run on the tick thread.

    `stand_aside()` runs on the tick thread every tick: a reason why this replica must not lead now (its
    owner is silent: `_serve.ParentHeartbeat`), or None; while it gives one, the replica steps down if
    it leads and does not stand for election (`_pysyncobj_patches`, item 14).

    `on_applied()` fires at the end of every tick in which the revision moved (coalesced),
    `on_lease_granted()` at the end of every tick in which a lease was granted (a grant moves no revision,
    but the leader's expiry loop sleeps until the next deadline it knows), and `on_leadership(is_leader)`
    whenever this replica gains or loses leadership or its term changes (a follower that moves to a new
    leader's term: a status waiter learns it at once).
    """

    def __init__(
        self,
        config: RaftConfig,
        *,
        on_applied: Callable[[], None] = lambda: None,
        on_leadership: Callable[[bool], None] = lambda is_leader: None,
        on_lease_granted: Callable[[], None] = lambda: None,
        stand_aside: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.config = config
        self._on_applied = on_applied
        self._on_lease_granted = on_lease_granted
        self._on_leadership = on_leadership
        self._notified_revision = -1
        self._notified_leases = -1
        self._notified_term = -1
        # when this replica last became the leader, on the monotonic clock (the wall clock may be stepped:
        # back by an hour, a new leader's lease grace lasted an hour, and no lease expired meanwhile)
        self.leader_since = 0.0
        self.disk = DiskState()
        data_dir = config.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self._consumer = _KVConsumer(config.history_events)
        conf = SyncObjConf(
            password=None if config.tls_dir is not None else config.secret,  # TLS: see _raft_port.py
            appendEntriesPeriod=config.append_entries_period,
            raftMinTimeout=config.election_min,
            raftMaxTimeout=config.election_max,
            connectionTimeout=config.connection_timeout,
            connectionRetryTime=config.connection_retry,
            leaderFallbackTimeout=config.leader_fallback_timeout,
            journalFile=str(data_dir / "raft.journal"),
            fullDumpFile=str(data_dir / "raft.dump"),
            dynamicMembershipChange=True,
            useFork=True,  # snapshots are pickled in a child: the tick thread goes on (see the patches)
            commandsWaitLeader=True,
            onStateChanged=self._state_changed,
            autoTickPeriod=config.append_entries_period,  # the longest wait before binding only
            logCompactionMinEntries=config.log_compaction_entries,
            logCompactionMinTime=config.log_compaction_seconds,
        )
        peers = [p for p in config.peers if p != config.raft_address]
        marker = data_dir / CATCHING_UP_MARKER
        # (a journal that lost entries it may have acknowledged is as a lost disk, item 16: the marker is
        # made durable before the journal is mended, so a crash in between does not forget it)
        mend_journal(
            conf.journalFile,
            on_lost_entries=functools.partial(create_durably, str(marker)) if peers else None,
        )
        catching_up = _starts_catching_up(marker, conf, peers)
        factory = self._durable_journal if config.durable else open_journal
        with _journal_factory(factory):
            self._obj = PatchedSyncObj(
                config.raft_address,
                peers,
                conf,
                consumers=[self._consumer],
                transportClass=_SyncBeforeSendTransport,
                raft_tls=ReloadingTLS(config.tls_dir) if config.tls_dir is not None else None,
                # (a replica that lost its disk rejoins: `_pysyncobj_patches`, item 16)
                catching_up=catching_up,
                on_caught_up=functools.partial(_remove_durably, marker),
            )
        # pysyncobj's tick thread stops when the thread that built it ends; we build it on a trio worker
        # thread (it binds sockets), which trio retires when idle. Tie the tick thread to the process.
        self._obj._SyncObj__mainThread = threading.main_thread()
        journal = self._obj._SyncObj__raftLog
        if isinstance(journal, DurableJournal):
            self._obj.addOnTickCallback(journal.sync)
            self._obj.addOnTickCallback(journal.recheck)
            self._obj.before_commit_check = journal.sync
            self._obj.journal_room = journal.room
            self._obj.disk_full = lambda: self.disk.problem is not None
        self._obj.own_problems = self._own_problems
        self._obj.stand_aside = stand_aside
        self._obj.addOnTickCallback(self._after_tick)
        self.lease_clock = LeaseClock(takeover_margin=config.leader_fallback_timeout)
        self._obj.leader_call_handler = self._on_leader_call

    def _durable_journal(self, path: str | None) -> Any:
        assert path is not None
        return DurableJournal(path, self.disk, mended=True)

    # ------------------------------------------------------------ tick-thread callbacks

    def _state_changed(self, old: int, new: int) -> None:
        log.info("this replica is now %s", _STATE_NAMES.get(new, new))
        leader_state = 2
        if new == leader_state:
            self.leader_since = time.monotonic()
        if leader_state in (old, new):
            self._on_leadership(new == leader_state)

    def _after_tick(self) -> None:
        self.lease_clock.tick(time.monotonic())
        state = self._consumer.state
        if state.revision != self._notified_revision:
            self._notified_revision = state.revision
            self._on_applied()
        if state.next_lease_id != self._notified_leases:
            self._notified_leases = state.next_lease_id
            self._on_lease_granted()
        term = self._obj._SyncObj__raftCurrentTerm
        if term != self._notified_term:
            self._notified_term = term
            self._on_leadership(self.is_leader)

    # ------------------------------------------------------------ any thread

    def propose(self, command: Command | Batch, callback: Callback) -> None:
        """Append `command` to the log (forwarded to the leader if needed); `callback(result, error)`
        runs on the tick thread once it is applied here, or fails. It may never run at all (pysyncobj
        drops some callbacks under leader churn): every caller needs its own deadline."""

        def done(result: Result | None, reason: Any) -> None:
            if reason == FAIL_REASON.SUCCESS:
                callback(result, None)
            else:
                callback(None, translate_fail_reason(reason, self.config.raft_address))

        self._consumer.apply(command, callback=done)

    def confirm_read(self, callback: Callback) -> None:
        """ReadIndex (see `_pysyncobj_patches`), no log entry: `callback(BarrierResult, None)` runs on the
        tick thread once this replica has applied everything committed before this call, so a local read
        that follows is linearizable; `callback(None, error)` if that cannot be confirmed now. It may
        never run (callers need a deadline)."""

        def done(index: int | None) -> None:
            if index is None:
                error = UnavailableError("not confirmed: no leader could confirm the read; safe to retry")
                callback(None, error)
            else:
                callback(BarrierResult(revision=self._consumer.state.revision), None)

        self._obj.read_index(done)

    def renew_lease(self, lease_id: int, callback: Callback) -> None:
        """Keep a lease alive on the leader, without a log entry (forwarded there if this replica
        follows). `callback(result, error)` runs on the tick thread, or never (callers need a deadline)."""

        def done(result: Any, answered: bool) -> None:
            if answered and isinstance(result, Result):
                callback(result, None)
            else:
                callback(None, UnavailableError("not applied: no leader to renew the lease; safe to retry"))

        self._obj.call_leader(("lease_keepalive", lease_id), done)

    def _on_leader_call(self, payload: Any) -> Result | None:  # on the leader's tick thread
        match payload:
            case ("lease_keepalive", int(lease_id)):
                ttls = self.read(_lease_ttls)
                if lease_id not in ttls or not self.lease_clock.renew(
                    lease_id, self.leader_since, time.monotonic(), ttls
                ):
                    error = LeaseNotFoundError(f"lease {lease_id} not found: it expired or was revoked")
                    return ErrorResult(code=error.code, message=error.message)
                ttl = ttls[lease_id]
                return LeaseResult(lease=lease_id, ttl=ttl, expires_at=time.time() + ttl)
        return None

    def due_leases(self) -> list[int]:
        """On the leader: the leases whose deadline has passed (see LeaseClock)."""
        return self.lease_clock.due(self.leader_since, time.monotonic(), self.read(_lease_ttls))

    def next_lease_deadline(self) -> float | None:
        """On the leader: when the next lease falls due if nothing renews it (`time.monotonic()`)."""
        return self.lease_clock.next_deadline(self.leader_since, time.monotonic(), self.read(_lease_ttls))

    def read(self, reader: Callable[[KVState], T]) -> T:
        """Run `reader` on the local state under the apply lock (a serializable read)."""
        consumer = self._consumer
        with consumer.lock:
            return reader(consumer.state)

    def add_member(self, raft_address: str, callback: Callable[[KVError | None], None]) -> None:
        self._obj.addNodeToCluster(raft_address, callback=_membership_done(callback))

    def remove_member(self, raft_address: str, callback: Callable[[KVError | None], None]) -> None:
        self._obj.removeNodeFromCluster(raft_address, callback=_membership_done(callback))

    @property
    def is_leader(self) -> bool:
        return bool(self._obj._isLeader())

    def status(self) -> Status:
        found = _read_racing(
            lambda: (self._obj.getStatus(), list(self._obj.otherNodes), self._obj.quorum_view())
        )
        if found is None:  # pragma: no cover
            raise UnavailableError("could not read a consistent status, try again")
        raw, others, (has_quorum, silent) = found
        leader = raw.get("leader")
        # A replica counts as connected only if the leader heard from it within the leader fallback
        # timeout too (`quorum_view`; on a follower, as its leader reported lately; with no leader, if it
        # answered this replica within that time): a stopped or hung replica keeps its TCP link open (for
        # up to the connection timeout, an hour), and `aether node stop` must not count it among the
        # replicas that are up, nor a status say there is a quorum.
        members = [Member(raft_address=self.config.raft_address, connected=True)]
        members += [
            Member(
                raft_address=node.address,
                connected=self._obj.isNodeConnected(node) and node.address not in silent,
            )
            for node in sorted(others, key=lambda n: n.address)
        ]
        revision, compact, keys, leases = self.read(
            lambda s: (s.revision, s.compact_revision, len(s.data), len(s.leases))
        )
        return Status(
            self_address=self.config.raft_address,
            leader=leader.address if leader is not None else None,
            is_leader=raw["state"] == 2,
            term=raw["raft_term"],
            commit_index=raw["commit_idx"],
            last_applied=raw["last_applied"],
            revision=revision,
            compact_revision=compact,
            has_quorum=has_quorum,
            members=tuple(members),
            keys=keys,
            leases=leases,
            problems=self._obj.problems(),
        )

    def no_quorum(self) -> NoQuorumError | None:
        """Why this replica can neither commit nor confirm a read now: it has heard from no majority of
        the replicas (itself included), nor led or had a leader, for longer than the leader fallback
        timeout (`quorum_view`). None otherwise (a leader change in progress included: the request waits
        for it; and a replica whose own disk is full, which refuses as such: `DiskFullError`, once every
        replica says so, is what the operator must act on). Any thread."""
        if self.disk.problem is not None:
            return None
        view = _read_racing(self._obj.quorum_view)
        if view is None or view[0]:
            return None
        silent = view[1]
        members, names = 1 + len(self._obj.otherNodes), ", ".join(sorted(silent))
        return NoQuorumError(
            f"not applied: no quorum: KV replica {self.config.raft_address} has heard from"
            f" {members - len(silent)} of the {members} replicas (itself included) within the last"
            f" {self.config.leader_fallback_timeout:g} s, not a majority (silent: {names});"
            " nothing can be written or read linearizably until a majority is back; safe to retry",
            replicas=tuple(sorted(silent)),
        )

    def _own_problems(self) -> tuple[str, ...]:
        """What is wrong with this replica itself, one line each naming it (a full disk)."""
        problem = self.disk.problem
        return (problem.describe(self.config.raft_address),) if problem is not None else ()

    def close(self) -> None:
        """Stop the tick thread and close sockets and files. Blocks; call from a worker thread."""
        self._obj.destroy()
        thread = self._obj._SyncObj__thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        journal = self._obj._SyncObj__raftLog
        if isinstance(journal, DurableJournal):
            journal.sync()


CATCHING_UP_MARKER = "raft.catching-up"  # a replica that started empty and has not caught up (item 16)


def _starts_catching_up(marker: Path, conf: SyncObjConf, peers: list[str]) -> bool:
    """Whether this replica starts catching up (`_pysyncobj_patches`, item 16): it has other replicas,
    and no journal and no snapshot (its disk lost, or a new cluster), or its marker says it started so
    and has not caught up since (restarted meanwhile), or that its journal lost entries it may have
    acknowledged (`mend_journal`). The marker is made durable before the journal."""
    if not peers:
        return False
    if marker.exists():
        return True
    if any(Path(file).exists() for file in (conf.journalFile, conf.fullDumpFile)):
        return False
    create_durably(str(marker))
    return True


def _remove_durably(path: Path) -> None:
    """On the tick thread, once caught up: the marker goes, durably (one fsync of its directory, once; a
    failure is logged: the replica then starts catching up again after a restart, which the leader's log
    soon ends)."""
    try:
        remove_durably(str(path))
    except OSError as error:
        log.warning("could not remove %s: %s", path, error)


def _read_racing(read: Callable[[], T]) -> T | None:
    """`read()` of pysyncobj's state from another thread than its tick thread, read again while a dict it
    walks changes size meanwhile (RuntimeError); None if it never reads through."""
    for _ in range(100):
        try:
            return read()
        except RuntimeError:
            continue
    return None  # pragma: no cover


_STATE_NAMES = {0: "a follower", 1: "a candidate", 2: "the leader"}  # pysyncobj's _RAFT_STATE


def _membership_done(callback: Callable[[KVError | None], None]) -> Callable[[Any, Any], None]:
    def done(_result: Any, reason: Any) -> None:
        callback(None if reason == FAIL_REASON.SUCCESS else translate_fail_reason(reason))

    return done


@contextlib.contextmanager
def _journal_factory(factory: Callable[[str | None], Any]):
    """pysyncobj builds its journal inside SyncObj.__init__ through a module-level function; swap it for
    the duration of the constructor only (construction is serialised by `_construct_lock`)."""
    with _construct_lock:
        original = _syncobj_module.createJournal
        _syncobj_module.createJournal = factory
        try:
            yield
        finally:
            _syncobj_module.createJournal = original


_construct_lock = threading.Lock()
