"""Fixes to pysyncobj, as subclasses of its classes. Only `_raft.py` imports this module.

pysyncobj is pinned (`pysyncobj==0.3.17` in packages/aether-kv/pyproject.toml) because these patches
override private, name-mangled methods and read private attributes of that exact version. Every such
name is listed in `PRIVATE_NAMES`; tests/aether_kv/test_pysyncobj_patches.py fails if one is missing,
so a version bump shows at once what to re-check. The changes against upstream 0.3.17:

1. `PatchedSyncObj._SyncObj__onMessageReceived` (append entries). Upstream, a follower deletes every
   entry after the leader's `prevLogIdx` whenever it holds more entries than that, conflict or not; the
   leader resends overlapping batches routinely (an out-of-order acknowledgement moves its next index
   back), so followers threw away entries they had acknowledged and applied ("CRITICAL truncating
   already-applied log entries"), and a committed entry could sit on too few replicas if the leader
   died then. Raft (Figure 2, receiver rule 3) deletes only from the first entry that conflicts (same
   index, different term). The patch skips the entries the follower already holds with the same term
   before upstream's handler runs, so upstream truncates only from a real conflict; when everything
   matches, it keeps the log as it is and answers for the last entry the leader sent (the commit index
   never moves past that entry: entries after it are not known to be the leader's).
2. The Raft port (`_raft_port.py`, pysyncobj's TCP transport and connection subclassed there, its
   private names listed here). Upstream buffers whatever a connection sends, before authentication,
   until a whole frame has arrived; a peer announcing a 2 GB frame and trickling junk starved the
   replica. Now frames are limited in size and a peer has a deadline to identify itself; and with the
   cluster's TLS the port speaks mutual TLS from the cluster CA instead of upstream's password
   encryption. See that module's docstring.
3. `PatchedSyncObj._onTick` / pre-vote (Raft thesis 9.6). Upstream, a follower whose election timer
   runs out becomes a candidate at once and raises its term: an isolated replica raised its term again
   and again and, on rejoining, its higher term made the leader step down (a needless election). Now it
   first asks the others whether they would vote for it at the next term ("pre_vote", answered by
   "pre_vote_response"); a replica says yes only if it has neither heard from a leader nor granted its
   vote for an election timeout (or its leader's port refused since: item 10) and the asker's log is at
   least as up to date as its own, and it changes nothing when asked.
   Only with a majority of yeses does upstream's election run. A "no" carries the answering replica's
   term, so a replica that fell behind in term catches up without an election. Check-quorum on the
   leader's side is upstream's `leaderFallbackTimeout` (a leader that hears from no majority for that
   long steps down). Skipped for a one-replica cluster and a leadership transfer (TimeoutNow).
   Upstream's election runs only in a tick where the pre-vote check allowed it (`_maybe_pre_vote`
   returns so): the check and upstream's own test of the election deadline are apart by the journal's
   fsync (`before_commit_check`) and the leader calls, so a deadline that was still ahead at the check
   had run out by upstream's test, which then held an election without a pre-vote round, and without
   the checks of items 14 and 16 (a replica catching up was elected over the leader's log: the entry it
   lacked, acknowledged, was truncated on the replica that held it). The deadline is held back (at
   infinity) through upstream's tick and given back before its poll.

4. `PatchedSyncObj._onTick` / `_checkCommandsToApply` / the poller (event-driven replication).
   Upstream (batch mode) ticks on a fixed period: a new command waits for the next tick, append-entries
   go out only every `appendEntriesPeriod`, and followers learn a commit index only with the next
   heartbeat; a short period (5 ms) bought latency with idle CPU (~13 % of a core per replica). Now a
   proposal, a leader call or a read wakes the tick thread at once (a pipe in its poller), and a leader
   sends append-entries in the same tick whenever its log or its commit index moved (everything queued
   goes in one batch: one journal sync, one message per follower). With nothing to do a replica sleeps
   until its next deadline: the leader's heartbeat (`appendEntriesPeriod`, now 100 ms) or a follower's
   election timeout, and at most `IDLE_WAIT`.

5. `PatchedSyncObj._SyncObj__loadDumpFile` (snapshots written by a forked child). The replica takes
   its snapshots in a child process (`useFork`), so a long pickle no longer stalls the tick thread (a
   10-minute compaction under load held it for over 3 s: every lease lapsed). The child may finish after
   its parent died, leaving a snapshot newer than the journal's start: upstream then replaces the whole
   journal by the snapshot's two entries, throwing away every entry after the snapshot (acknowledged
   ones included). Now, when the journal holds the snapshot's last two entries, only the entries before
   them go and the rest is kept. A child that has not finished after `SNAPSHOT_DEADLINE` seconds is
   killed (upstream would wait for it for ever, and the log would never be compacted again); the
   snapshot is then taken again later.

6. `pysyncobj.serializer.gzip` (snapshot compression). Upstream gzips snapshots at level 9: for a state
   of 16,384 keys and 20,000 history events that took 0.38 s of CPU against 0.01 s at level 1, for a
   file 1 % smaller. Snapshots are now written at `SNAPSHOT_COMPRESSLEVEL` (reading is unchanged).

7. `PatchedSyncObj._SyncObj__sendNextNodeIdx` (acknowledgements of heartbeats). Upstream, a follower
   answers every append-entries, so an idle cluster's leader received two answers per heartbeat (20 a
   second, each a wake-up of its tick thread, a decryption and a dispatch), nearly all saying again what
   it already knew. Now a follower skips a successful answer identical to the last one it sent that
   leader in the same term (the same next index) if that one left less than `ACK_REPEAT` seconds ago.
   Within a term the leader's match index only grows, so such an answer only refreshes the time it last
   heard from the follower, which check-quorum (3 s) needs: it still gets one every `ACK_REPEAT`.
   Failures, resets, progress (a new next index) and a new term are always answered at once, and so is
   the first answer after the link to the leader dropped (an answer may have been lost with it).

8. `PatchedSyncObj._SyncObj__applyLogEntries` (the commit index reaches the followers first). Upstream,
   a leader whose commit index moved applies the entries (running its clients' callbacks, which wake
   the thread that answers them) and only then, later in the tick, sends the new index; on a 2-core
   machine that message waited for the leader's own reply, and a watcher on a follower heard of a write
   ~0.5 ms after the writer did (a follower applies an entry only once it learns it committed). Now the
   leader sends append-entries with the new commit index (and any proposals queued meanwhile) before it
   applies, as etcd's leader broadcasts its commit index before applying. Proposals queued during that
   apply go out in the next tick, at once (one append-entries per tick, as before, not two).

9. `PatchedSyncObj._keep_matching_entries` (an entry sent in chunks). A leader sends an entry larger than
   a batch (64 KiB) in chunks marked start, process and finish, but upstream marks a chunk "finish" once
   it reaches the *command's* length, not the pickled entry's, which is longer (a few bytes; up to 1.5x
   for binary values under pysyncobj's pickle protocol 2, before item 11), so two or more chunks
   say "finish". Upstream's follower raised on each early one (after trying pysyncobj's pure-Python
   unpickler too, ~0.3 s for a 1 MiB entry) and loaded the last; patch 1's handler reset its buffer
   before loading, lost the chunks, and the entry, with every write after it, never committed. Now the
   follower tries the C unpickler only and keeps buffering while the chunks do not load yet (a prefix
   of a pickle never loads).

10. `PatchedSyncObj._SyncObj__onNodeDisconnected` (a leader whose process died is replaced at once).
   Upstream, a follower learns that its leader is gone only from the silence: its election timer (0.5-
   1.5 s) runs out, and with pre-vote (item 3) the other follower must also have heard nothing for an
   election timeout before it says yes. But a leader whose process died closed its sockets at once.
   Now a follower whose link to its leader closes dials the leader's Raft port once, apart from the link
   (`_raft_port.GuardedTransport.probe`: only the higher address dials a link, so the follower the
   leader dialled would otherwise never try). If the dial is refused (the host is up and nothing
   listens: the replica process is gone) the follower stops counting the leader as recently heard (it
   says yes to a pre-vote) and brings its election deadline forward to a random time within
   `LEADER_GONE_ELECTION` (random, so the two followers do not split the vote; and a replica that says
   yes to a pre-vote puts its own election off by an election timeout, as a vote granted does). A
   connection the port accepts and resets at once also counts as refused (a killed process's links can
   close before its listening socket does). A dial that is answered (a reset link, a restarted peer)
   changes nothing, nor does one without an answer (a host gone: the election timeout as before); a
   paused leader keeps its links open and is not probed. A follower that still hears from a live
   leader never says yes: that leader's port does not refuse.

11. `pysyncobj.pickle`'s protocol (binary values). Upstream pickles log entries, Raft messages and
   snapshots with protocol 2, which writes `bytes` as latin-1 text: a binary value took up to 1.5x its
   size, and a large entry's chunks were marked "finish" early (item 9) about a third of the time, each
   such chunk a failed unpickling of everything received so far on the follower. Now protocol
   `PICKLE_PROTOCOL` (4: bytes as bytes): a 1 MiB random value commits ~3x sooner (in-process, 3
   replicas: p50 ~0.37-0.49 s -> ~0.11-0.13 s). Any replica of Python 3 reads both protocols, so
   replicas of the old and the new code can run side by side during an upgrade, and old journals and
   snapshots load.

12. A full disk (`DurableJournal` in `_journal.py` reserves the journal's blocks; the rest is here).
   Upstream's journal is an mmap grown with ftruncate, which allocates nothing: on a full disk a store
   into a new page killed the replica with SIGBUS. Now the journal reserves its blocks first
   (`posix_fallocate`, a MiB at a time, which fails cleanly with ENOSPC) and an append that finds no room
   raises before it writes anything. A leader refuses what is queued (`DISK_FULL`, with the addresses of
   the replicas without room: the client's `DiskFullError`) when it cannot journal it itself or when the
   followers whose last answer said their disk is full leave no majority that could (`_disk.
   refuse_for_disk`); a proposal queued after that check whose append fails is refused the same way. A
   leader whose own disk is full, when the followers with room are a majority by themselves, asks a
   caught-up one of them to take over (Raft's TimeoutNow, upstream's `transferLeadership`) and sends
   proposals elsewhere for an election timeout; it keeps leading (and serving reads) until it hears of
   a newer term, which it cannot store: then it steps down (a step down stores nothing). A
   follower checks the room for a batch of entries before upstream's handler touches its log: without
   room it stores nothing and answers for what it holds up to `prevLogIdx` (the leader's check-quorum
   still hears from it; nothing it could not store is acknowledged). A follower whose disk is full
   refuses proposals at once (`FOLLOWER_DISK_FULL`: it answers a forwarded proposal only once it has
   applied the entry, which it cannot store; the client asks another replica) and fails ReadIndex reads.
   Term and vote are written before they change in memory (`_SyncObj__setCurrentTerm`; upstream changed
   them first and went on with a term it had not stored); a message or tick whose write fails for want
   of room is dropped whole (a leader that could not journal its new term's no-op steps down), a
   replica that drops a leader's message so tells it its problems ("replica_problems"), and a replica
   whose disk is full does not stand for election. Snapshots are fsynced before they replace
   the previous one, and the directory after (upstream renamed without an fsync: a crash after the
   journal was compacted could leave neither); a failed snapshot's temporary file is removed (it held
   the space a full disk lacks) and the next try waits `SNAPSHOT_RETRY` (upstream forked a new child on
   every tick). The disk state clears by itself once a probe finds room (`_journal.DurableJournal.recheck`):
   writes resume without a restart.

13. Replicas' problems travel with Raft messages (`problems`, `with_problems`). A follower's
   acknowledgements carry its own problems (and `disk_full`), a leader's append-entries everyone's it
   knows, so every replica's `Status.problems` names a replica whose disk is full, whichever one a
   client asks; nothing is added to the messages while there is none (upstream ignores the keys). A
   leader's append-entries also name the followers it has not heard from within the leader fallback
   timeout (`silent`, `silent_replicas`): a follower's `Status.members` then counts them as not connected,
   as the leader's does (a stopped replica's TCP link stays open, and a follower hears nothing from the
   other followers to tell).

14. `PatchedSyncObj.stand_aside` (a replica whose owner is silent does not lead). Upstream, a replica
   leads for as long as Raft lets it, whatever happens around it; a node runs its replica as a child
   process and leads the cluster while its replica leads, so a node that hung (its process stopped, its
   event loop blocked) kept the cluster's leadership through its healthy replica, and nothing was
   reconciled until it came back. Now the owner tells the replica, on every tick, whether it must stand
   aside (`stand_aside()`: why, or None; `_serve.ParentHeartbeat` says so once the parent stopped
   writing to the replica's stdin for a while). A leader standing aside asks a caught-up follower to
   take over (TimeoutNow), steps down to follower at once (as check-quorum does: its term stays, so
   Raft's safety is untouched) and says so; a replica standing aside neither holds pre-votes nor
   elections, nor takes over when a leader asks it to (it drops "timeout_now"), but still votes,
   follows, forwards and serves reads, so the others elect a leader among themselves (two of three
   suffice). Once its owner is back it may stand again, through pre-vote: it does not unseat a working
   leader. A one-replica cluster never stands aside (no other replica could lead). Nor does one no
   other replica could be elected instead of (`_no_other_can_lead`): two replicas left, the silent one
   holding entries the other lacks (Raft elects no replica whose log is behind), or the others catching
   up (item 16: a new cluster whose first leader's owner went silent before its first commit); there
   was no leader until the owner came back. Once no leader was heard for an election timeout, it
   stands, is elected, leads until a follower holds its whole log (at most `LEAD_FOR_LACK`) and hands
   over to it.

15. `PatchedSyncObj.quorum_view` (whether the replica sees a leader with a majority, and who is silent).
   Upstream's `hasQuorum` counts the replicas it holds a TCP link to: a stopped or hung replica keeps its
   link open, so with two of three replicas stopped the third said "quorum: yes" for as long as they
   stayed stopped (an operator's status said the cluster was healthy while nothing could be written).
   Now: a leader has a majority if it heard from one (itself included) within the leader fallback
   timeout (after which upstream's check-quorum makes it step down); a follower, if it heard from its
   leader within that timeout; a replica with no leader, if a majority answered it within that timeout
   (its pre-votes are answered by every replica that is up, so "no" means an election cannot succeed,
   not that one is running), or if it had one within that timeout (an election is on: a follower hears
   nothing from the other followers until it starts). Every message from a replica counts as hearing
   from it (`_heard_at`).

16. `PatchedSyncObj` started with `catching_up` (a replica that lost its disk rejoins). Upstream, a
   replica whose data directory is gone (a machine rebuilt, a disk replaced) starts again at term 0 with
   an empty log and votes for any candidate: an entry committed with its old acknowledgement (on the
   leader and on it alone) was lost once the leader died and the third replica, which lacked it, won
   with the empty replica's vote. Now a replica that started empty (`_raft.py` keeps a marker file until
   it has caught up, so a restart meanwhile does not forget it) neither votes, nor grants pre-votes, nor
   stands for election until it has caught up: until it holds the entry at a leader's commit index, of
   that leader's term (the leader has committed in its own term, so its commit index covers everything
   committed before, and the replica's log, matching the leader's to there, holds it all), or it is
   elected. Every message it sends says so (`catching_up`; and with no leader it tells the others every
   `CATCHING_UP_NOTICE` s, which a replica that kept its log answers at once), and while a majority of
   the replicas are catching up, as in a new cluster, or when most of the disks were lost (where no
   better choice is left than the most complete log), they vote and stand as Raft says, but not for one
   another while a replica that kept its log is known. With the leader gone before it caught up, the
   rest cannot elect one without it: they wait for a replica that holds the log (said once, in the
   replica's log).

17. `PatchedSyncObj._SyncObj__loadDumpFile` says when the members differ. With dynamic membership,
   upstream takes a replica's members from its snapshot at start, whatever peers it was given: an
   operator who edited the peer list of a replica with data saw nothing change, and nothing said why.
   It still runs with the stored members (they are what the cluster agreed on), and says so once.

Beside the fixes, two additions: `PatchedSyncObj.call_leader` runs a function on the current leader
without a log entry ("leader_call" / "leader_call_response" messages), for requests only the leader
answers from its memory (lease keep-alives, see `_raft.LeaseClock`); and `PatchedSyncObj.read_index`,
Raft's ReadIndex (thesis 6.4) for linearizable reads without a log entry: the leader records its commit
index, confirms it still leads with one round of "read_index_probe" / "read_index_ack" to a majority
(every read waiting when a round starts shares it), and the read is served once this replica has applied
up to that index. A follower asks the leader for the index ("read_index_request" / "_response") and
waits until it has applied up to it itself. A leader answers only once it has committed an entry of its
own term (its no-op), so its commit index covers everything committed before.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import itertools
import logging
import math
import os
import pickle as _stdlib_pickle
import queue
import random
import signal
import threading
from collections.abc import Callable
from typing import Any

import pysyncobj.pickle as _pickle_module
import pysyncobj.serializer as _serializer_module
from pysyncobj import FAIL_REASON, SyncObj
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.monotonic import monotonic as _monotonic
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.syncobj import _RAFT_STATE

from ._disk import (
    JournalFullError,
    can_hand_over,
    durable_replace,
    is_disk_full,
    record_bytes,
    refuse_for_disk,
)

log = logging.getLogger("aether_kv.raft")

PYSYNCOBJ_VERSION = "0.3.17"

LEADER_CALL_FORGET_AFTER = 60.0  # a leader call unanswered this long is forgotten (its caller gave up)
IDLE_WAIT = 0.25  # the longest an idle replica sleeps (reconnects, handshake deadlines are checked per tick)
SNAPSHOT_DEADLINE = 300.0  # a snapshot child still running after this long is killed
SNAPSHOT_COMPRESSLEVEL = 1
PICKLE_PROTOCOL = 4  # bytes as bytes (protocol 2, upstream's, writes them as latin-1 text: up to 1.5x)
ACK_REPEAT = 0.5  # a follower repeats an unchanged acknowledgement this often (check-quorum: 3 s)
LEADER_GONE_ELECTION = (0.05, 0.2)  # the election window of a follower whose leader's port refused (s)
NEVER = -1e9  # a monotonic time long past
LEAD_FOR_LACK = 10.0  # a replica standing aside, elected for lack of another, leads this long at most (s)
CATCHING_UP_NOTICE = 0.1  # a replica catching up without a leader tells the others this often (item 16)
# our failure codes beside FAIL_REASON, given as (code, raft addresses of the replicas with full disks):
DISK_FULL = 100  # the leader, or a majority, has no room: not applied
FOLLOWER_DISK_FULL = 101  # this follower has no room to follow: not forwarded (another replica can take it)
SNAPSHOT_RETRY = 10.0  # after a snapshot failed (a full disk, most likely), the next try waits this long
MAX_HEARD_PROBLEMS = 16  # problems a replica takes from one message of a peer (each cut to PROBLEM_CHARS)
PROBLEM_CHARS = 500

# Every private or name-mangled pysyncobj name this package relies on, by the class or module holding it.
PRIVATE_NAMES: dict[str, tuple[str, ...]] = {
    "pysyncobj.syncobj.SyncObj": (
        "_SyncObj__onMessageReceived",
        "_SyncObj__getEntries",
        "_SyncObj__onBecomeLeader",
        "_SyncObj__sendNextNodeIdx",
        "_SyncObj__getCurrentLogIndex",
        "_SyncObj__getCurrentLogTerm",
        "_SyncObj__generateRaftTimeout",
        "_SyncObj__setCurrentTerm",
        "_SyncObj__setState",
        "_SyncObj__sendAppendEntries",
        "_SyncObj__applyLogEntries",
        "_SyncObj__onNodeDisconnected",
        "_isLeader",
        "_onTick",
        "_applyCommand",
        "_checkCommandsToApply",
        "_doDestroy",
        "_SyncObj__loadDumpFile",
        "_SyncObj__tryLogCompaction",
    ),
    "pysyncobj.syncobj.SyncObj instance": (
        "_SyncObj__raftCurrentTerm",
        "_SyncObj__recvTransmission",
        "_SyncObj__leaderCommitIndex",
        "_SyncObj__raftLog",
        "_SyncObj__thread",
        "_SyncObj__mainThread",
        "_SyncObj__raftState",
        "_SyncObj__raftElectionDeadline",
        "_SyncObj__raftLeader",
        "_SyncObj__otherNodes",
        "_SyncObj__selfNode",
        "_SyncObj__transport",
        "_SyncObj__transferInProgress",
        "_SyncObj__conf",
        "_SyncObj__raftCommitIndex",
        "_SyncObj__raftLastApplied",
        "_SyncObj__newAppendEntriesTime",
        "_SyncObj__serializer",
        "_SyncObj__votedForNodeId",
        "_SyncObj__raftMatchIndex",
        "_SyncObj__lastResponseTime",
        "_SyncObj__commandsQueue",
        "_poller",
    ),
    "pysyncobj.serializer.Serializer instance": ("_Serializer__pid", "deserialize", "checkSerializing"),
    "pysyncobj.serializer": ("gzip", "atomicReplace"),
    "pysyncobj.fast_queue.FastQueue instance": ("_FastQueue__queue", "_FastQueue__lock", "get_nowait"),
    "pysyncobj.syncobj._RAFT_STATE": ("FOLLOWER", "CANDIDATE", "LEADER"),
    "pysyncobj.syncobj": ("createJournal",),
    "pysyncobj.pickle": ("__protocol",),
    "pysyncobj.journal.FileJournal instance": (
        "_FileJournal__journalFile",
        "_FileJournal__currentOffset",
        "_FileJournal__meta",
        "_FileJournal__metaSaved",
        "_FileJournal__metaStorer",
        "_FileJournal__journal",
    ),
    "pysyncobj.journal.FileJournal": ("_FileJournal__setLastRecordOffset",),
    "pysyncobj.journal.ResizableFile instance": ("_ResizableFile__f", "_ResizableFile__mm"),
    # the Raft port (`_raft_port.py`)
    "pysyncobj.tcp_connection.TcpConnection": (
        "_TcpConnection__processRead",
        "_TcpConnection__processSend",
        "_TcpConnection__processParseMessage",
        "_TcpConnection__processConnection",
        "_TcpConnection__trySendBuffer",
    ),
    "pysyncobj.tcp_connection.TcpConnection instance": (
        "_TcpConnection__readBuffer",
        "_TcpConnection__writeBuffer",
        "_TcpConnection__socket",
        "_TcpConnection__poller",
        "_TcpConnection__recvBufferSize",
    ),
    "pysyncobj.transport.TCPTransport": (
        "_onNewIncomingConnection",
        "_onIncomingMessageReceived",
        "_onOutgoingConnected",
        "_connToNode",
        "_onTick",
        "addNode",
    ),
    "pysyncobj.transport.TCPTransport instance": ("_syncObj", "_unknownConnections", "_connections"),
    "pysyncobj.tcp_connection": ("_getAddrType",),
}


# ---------------------------------------------------------------- snapshot compression


class _FastGzip:
    """Stands in for the `gzip` module inside pysyncobj's serializer: level 1 instead of 9 on write."""

    @staticmethod
    def GzipFile(*args: Any, **kwargs: Any) -> gzip.GzipFile:
        if "w" in kwargs.get("mode", ""):
            kwargs.setdefault("compresslevel", SNAPSHOT_COMPRESSLEVEL)
        return gzip.GzipFile(*args, **kwargs)


_serializer_module.gzip = _FastGzip  # type: ignore[assignment]
_serializer_module.atomicReplace = durable_replace  # item 12: a snapshot is on disk before it replaces one

setattr(_pickle_module, "__protocol", PICKLE_PROTOCOL)


# ---------------------------------------------------------------- the replica


class PatchedSyncObj(SyncObj):
    """SyncObj with the fixes listed in the module docstring. Runs on pysyncobj's tick thread."""

    def __init__(
        self,
        *args: Any,
        raft_tls: Any = None,
        catching_up: bool = False,
        on_caught_up: Callable[[], None] = lambda: None,
        **kwargs: Any,
    ) -> None:
        self.raft_tls = raft_tls  # a ReloadingTLS: the Raft port speaks mutual TLS (`_raft_port.py`)
        # started empty (its disk lost): no vote, no candidacy until caught up (item 16)
        self.catching_up = catching_up
        self._on_caught_up = on_caught_up
        self._peers_catching_up: dict[Any, bool] = {}  # what each replica's last message said
        self._catching_up_said_at = NEVER  # when this replica last told the others it is catching up
        self._refusal_said = False
        self._leader_heard_at = NEVER  # monotonic time of the last append-entries from a current leader
        self._heard_at: dict[Any, float] = {}  # node → monotonic time of its last message (item 15)
        # monotonic time this replica last heard a current leader (from its start: an election); not
        # kept while it leads: a leader that steps down has heard its followers' answers lately
        self._had_leader_at = _monotonic()
        self._pre_vote_term = 0  # the term a pre-vote round in progress asks about (0: none)
        self._held_deadline: float | None = None  # the election deadline held back during a tick (item 3)
        self._pre_votes: set[Any] = set()
        self._pre_vote_won = False
        # leader calls: queued by any thread, sent on the tick thread; answers matched by id
        self.leader_call_handler: Callable[[Any], Any] = lambda payload: None
        self._leader_calls: queue.SimpleQueue[tuple[Any, Callable[[Any, bool], None]]] = queue.SimpleQueue()
        self._leader_call_ids = itertools.count(1)
        self._leader_calls_waiting: dict[int, tuple[float, Callable[[Any, bool], None]]] = {}
        # event-driven ticks: any thread wakes the tick thread through this pipe
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._wake_subscribed = False
        self._wake_closed = False
        self._tick_thread_id: int | None = None
        self._sent_log_index = 0  # log and commit index as of the last append-entries sent
        self._sent_commit_index = 0
        self._sent_before_apply = False  # this tick's append-entries went out before the apply (item 8)
        self._reads = _ReadIndex(self)
        # called at the start of every tick, before upstream counts the leader itself toward a commit
        self.before_commit_check: Callable[[], None] = lambda: None
        self._snapshot_child: tuple[int, float] | None = None  # (pid, when first seen) of a snapshot child
        self._acks_sent: dict[Any, tuple[tuple[int, int], float]] = {}  # leader → ((term, next), when)
        # a full disk (item 12): whether `nbytes` more fit in the journal (reserving them), and whether
        # the disk is known to be full; set by the owner of the journal
        self.journal_room: Callable[[int], bool] = lambda nbytes: True
        self.disk_full: Callable[[], bool] = lambda: False
        self._snapshot_retry_at = NEVER
        # set below, named here: upstream's __init__ keeps every attribute named after it out of the
        # snapshots, and pickles the rest (a queue does not pickle)
        self._commands: _TrackedQueue = None  # type: ignore[assignment]
        # replicas' problems (item 13): this one's own, its followers' (leader) or its leader's report
        self.own_problems: Callable[[], tuple[str, ...]] = lambda: ()
        self._follower_problems: dict[Any, tuple[str, ...]] = {}
        self._full_followers: set[Any] = set()  # followers whose last answer said their disk is full
        self._handing_over_until = NEVER  # a follower was asked to take over; proposals go elsewhere
        self._problems_told: dict[Any, float] = {}  # leader → when a message it sent was answered so
        self._followers_report: tuple[str, ...] = ()
        self._leader_report: tuple[str, ...] = ()
        self._leader_silent: frozenset[str] = frozenset()  # the replicas the leader said it does not hear
        # item 14: why this replica must not lead now (None: it may); set by the owner, called per tick
        self.stand_aside: Callable[[], str | None] = lambda: None
        self._standing_aside: str | None = None
        # when, standing aside, it last refused a pre-vote only because the asker's log is behind its own
        self._fresher_than_asker_at = NEVER
        self._standing_for_lack = False  # (said once per time)
        self._leads_for_lack_until = NEVER  # elected though standing aside: it hands over by then at most
        super().__init__(*args, **kwargs)
        # (wrapped, not replaced: the tick thread runs already and may hold the queue)
        self._commands = commands = _TrackedQueue(self._SyncObj__commandsQueue)
        self._SyncObj__commandsQueue = commands
        serializer = self._SyncObj__serializer
        serializer.checkSerializing = functools.partial(self._check_snapshot, serializer.checkSerializing)

    # ------------------------------------------------------------ event-driven ticks

    def wake(self) -> None:
        """Make the tick thread run a tick now (thread-safe; a no-op on the tick thread itself)."""
        if threading.get_ident() != self._tick_thread_id and not self._wake_closed:
            try:
                os.write(self._wake_write, b"w")
            except (BlockingIOError, OSError):
                pass  # the pipe is full (a wake-up is pending anyway) or closed (destroyed)

    def _drain_wake_pipe(self, _descr: int, _event: int) -> None:
        try:
            while os.read(self._wake_read, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _applyCommand(self, command: Any, callback: Any, commandType: Any = None) -> None:
        super()._applyCommand(command, callback, commandType)
        self.wake()

    def _checkCommandsToApply(self) -> None:
        """Upstream queues new entries here (after applying what committed); then send append-entries
        at once if the log or the commit index moved, and serve the reads that can be served."""
        started = _monotonic()
        if self._SyncObj__raftState == _RAFT_STATE.LEADER and self.disk_full():
            self._hand_over_leadership()
        if self._SyncObj__raftState == _RAFT_STATE.LEADER:
            self._refuse_without_room()
        elif self.disk_full():
            # A follower answers a proposal it forwarded once it has applied the entry itself, which it
            # cannot store now (nor take a new leader's term): the client would wait in vain. Refused at
            # once, the client asks another replica.
            self._refuse_queued((FOLLOWER_DISK_FULL, (self._SyncObj__selfNode.address,)))
        try:
            super()._checkCommandsToApply()
        except JournalFullError:
            # queued after the room check (other threads queue at any time): refused, as it was not
            # journaled, and so is everything still queued
            reason = (DISK_FULL, (self._SyncObj__selfNode.address,))
            self._refuse(self._commands.taken, reason)
            self._refuse_queued(reason)
        if _monotonic() - started >= self._SyncObj__conf.appendEntriesPeriod:
            self.wake()  # upstream stopped at its time budget with commands left: another tick at once
        if self._SyncObj__raftState == _RAFT_STATE.LEADER and (
            self._SyncObj__raftCommitIndex != self._sent_commit_index
            or (
                self._SyncObj__getCurrentLogIndex() != self._sent_log_index
                # proposals queued during the apply go in the next tick's message, which `_tick_wait`
                # runs at once (one append-entries per tick, as before item 8, not two)
                and not self._sent_before_apply
            )
        ):
            self._SyncObj__sendAppendEntries()
        self._reads.tick()

    # ------------------------------------------------------------ a full disk (item 12)

    def _hand_over_leadership(self) -> None:
        """A leader whose disk is full asks a caught-up follower with room to take over (Raft's
        TimeoutNow) when the followers with room are a majority by themselves; writes go on there. It
        keeps leading until it hears of the new leader (reads go on; a follower whose disk turns out to
        be full too cannot store its new term and is not elected), sends proposals to another replica
        meanwhile, and asks again at most every election timeout. It does not stand for election while
        its disk is full (`_maybe_pre_vote`)."""
        now = _monotonic()
        if now < self._handing_over_until:
            return
        followers = self._SyncObj__otherNodes
        with_room = [node for node in followers if node not in self._full_followers]
        if not can_hand_over(replicas=len(followers) + 1, followers_with_room=len(with_room)):
            return
        ready = self._caught_up_followers()
        if not ready:
            return  # they catch up (this leader's log does not grow): tried again next tick
        target = min(ready, key=lambda node: node.address)
        outcome: list[int] = []
        self.transferLeadership(target, callback=lambda _result, reason: outcome.append(reason))
        if outcome == [FAIL_REASON.SUCCESS]:
            log.warning("disk full: asked %s, which has room, to take over the leadership", target.address)
            self._handing_over_until = now + self._SyncObj__conf.raftMaxTimeout

    def _refuse_without_room(self) -> None:
        """On the leader: refuse what is queued if it or a majority lacks the room to journal it."""
        waiting = self._commands.pending_bytes()
        if not waiting:
            return
        if _monotonic() < self._handing_over_until:  # another replica is taking over: ask it
            self._refuse_queued((FOLLOWER_DISK_FULL, (self._SyncObj__selfNode.address,)))
            return
        has_room = not self.disk_full() and self.journal_room(waiting)
        full = [] if has_room else [self._SyncObj__selfNode.address]
        full += sorted(node.address for node in self._full_followers if node in self._SyncObj__otherNodes)
        replicas = len(self._SyncObj__otherNodes) + 1
        if refuse_for_disk(leader_has_room=has_room, replicas=replicas, without_room=len(full)):
            self._refuse_queued((DISK_FULL, tuple(full)))

    def _refuse(self, callback: Any, reason: Any) -> None:
        """Answer a proposal that was not journaled (safe to retry)."""
        if isinstance(callback, tuple):  # forwarded by a follower: (node, request id)
            node, request_id = callback
            answer = {"type": "apply_command_response", "request_id": request_id, "error": reason}
            self._SyncObj__transport.send(node, answer)
        elif callback is not None:
            callback(None, reason)

    def _refuse_queued(self, reason: Any) -> None:
        for _command, callback in self._commands.drain():
            self._refuse(callback, reason)

    def _SyncObj__setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        """The journal first: on a full disk it raises and the term and vote stay as they were, here as
        on disk (upstream changed them in memory first, and went on with a term it had not stored)."""
        self._SyncObj__raftLog.setCurrentTerm(term, votedForNodeId)
        self._SyncObj__raftCurrentTerm = term
        self._SyncObj__votedForNodeId = votedForNodeId

    def _room_for_entries(self, node: Any, message: dict[str, Any]) -> bool:
        """A follower about to append entries: True if they fit in its journal. If not, it answers for
        what it holds up to `prevLogIdx` only (it must not acknowledge what it cannot store; the answer
        keeps the leader's check-quorum content) and takes the term, leader and commit index from the
        message as far as they concern entries it holds."""
        entries = message.get("entries") or []
        if not entries or self.journal_room(record_bytes([entry[0] for entry in entries])):
            return True
        prev_idx = message["prevLogIdx"]
        local = self._SyncObj__getEntries(prev_idx, 1)
        if not local or local[0][2] != message["prevLogTerm"]:
            # a gap or a mismatch: upstream answers so (it truncates nothing then) and stores nothing
            super()._SyncObj__onMessageReceived(node, {**message, "entries": []})
            return False
        self._acknowledge_up_to(node, message, prev_idx)
        return False

    def _disk_full_during(self, what: str, *, newer_term: bool = False) -> None:
        """A write failed for want of room while handling `what` (the disk state says where and was
        logged): a leader that could not journal the no-op of its new term, or that heard of a newer
        term it could not store (a replica it handed over to, say), steps down (a step down changes
        nothing stored); the rest is retried when the message comes again."""
        if self._SyncObj__raftState == _RAFT_STATE.LEADER and (
            newer_term or self._SyncObj__getCurrentLogTerm() != self._SyncObj__raftCurrentTerm
        ):
            log.warning("disk full: not leading any more (%s could not be stored)", what)
            self._SyncObj__setState(_RAFT_STATE.FOLLOWER)
            self._SyncObj__raftLeader = None
        log.debug("%s: not stored, the disk is full", what)

    def _check_snapshot(self, check: Callable[[], tuple[int, Any]]) -> tuple[int, Any]:
        """Upstream's `checkSerializing`; after a failed snapshot, remove what the child left of its
        temporary file (it holds the space a full disk lacks) and wait SNAPSHOT_RETRY before the next try
        (upstream tried again at once, forking a child per tick)."""
        state, ident = check()
        if state == SERIALIZER_STATE.FAILED:
            dump = self._SyncObj__conf.fullDumpFile
            if dump is not None:
                with contextlib.suppress(OSError):
                    os.unlink(dump + ".tmp")
            self._snapshot_retry_at = _monotonic() + SNAPSHOT_RETRY
            log.warning("a snapshot failed (the previous one is kept): next try in %g s", SNAPSHOT_RETRY)
        return state, ident

    def _SyncObj__tryLogCompaction(self) -> None:
        if _monotonic() < self._snapshot_retry_at:
            return
        super()._SyncObj__tryLogCompaction()

    def _SyncObj__applyLogEntries(self) -> bool:
        """A leader whose commit index moved tells the followers before it applies the entries itself
        (item 8); new proposals go in the same message."""
        if (
            self._SyncObj__raftState == _RAFT_STATE.LEADER
            and self._SyncObj__raftCommitIndex != self._sent_commit_index
        ):
            self._checkCommandsToApply()
            self._sent_before_apply = True
        return super()._SyncObj__applyLogEntries()

    def _SyncObj__sendAppendEntries(self) -> None:
        self._sent_log_index = self._SyncObj__getCurrentLogIndex()
        self._sent_commit_index = self._SyncObj__raftCommitIndex
        super()._SyncObj__sendAppendEntries()

    def _SyncObj__sendNextNodeIdx(
        self, node: Any, reset: bool = False, nextNodeIdx: int | None = None, success: bool = False
    ) -> None:
        """A follower's answer to append-entries; an unchanged success is repeated only every ACK_REPEAT
        (item 7)."""
        if nextNodeIdx is None:
            nextNodeIdx = self._SyncObj__getCurrentLogIndex() + 1
        if success and not reset:
            ack, now = (self._SyncObj__raftCurrentTerm, nextNodeIdx), _monotonic()
            last = self._acks_sent.get(node)
            if last is not None and last[0] == ack and now - last[1] < ACK_REPEAT:
                return
            self._acks_sent[node] = (ack, now)
        else:
            self._acks_sent.pop(node, None)
        super()._SyncObj__sendNextNodeIdx(node, reset=reset, nextNodeIdx=nextNodeIdx, success=success)

    def _SyncObj__onNodeDisconnected(self, node: Any) -> None:
        self._acks_sent.pop(node, None)  # what it was last told may have been lost with the link
        self._full_followers.discard(node)
        if self._follower_problems.pop(node, None) is not None:
            self._followers_report = _merged(self._follower_problems.values())
        super()._SyncObj__onNodeDisconnected(node)
        probe = getattr(self._SyncObj__transport, "probe", None)
        if (
            probe is not None
            and self._SyncObj__raftState == _RAFT_STATE.FOLLOWER
            and node == self._SyncObj__raftLeader
            and self._leader_heard_at != NEVER  # not already found gone
        ):
            probe(node, functools.partial(self._leader_probed, node))  # item 10

    def _leader_probed(self, node: Any, outcome: str) -> None:
        """The dial to the leader's port after its link closed ended (item 10): refused, the leader's
        process is gone: stop counting it as heard and hold an election soon."""
        if (
            outcome != "refused"
            or self._SyncObj__raftState != _RAFT_STATE.FOLLOWER
            or node != self._SyncObj__raftLeader
        ):
            log.debug("the link to the leader %s closed; its Raft port: %s", node, outcome)
            return
        self._leader_heard_at = NEVER
        soon = _monotonic() + random.uniform(*LEADER_GONE_ELECTION)
        self._SyncObj__raftElectionDeadline = min(self._SyncObj__raftElectionDeadline, soon)
        log.info(
            "the leader %s is gone (its link closed and its Raft port refused a connection): an"
            " election within %.0f ms unless a leader is heard",
            node.address,
            1000 * max(self._SyncObj__raftElectionDeadline - _monotonic(), 0.0),
        )

    def _tick_wait(self, requested: float) -> float:
        """How long the poll at the end of a tick may sleep: until the next thing this replica must do
        by itself (messages and wake-ups end the sleep earlier)."""
        self._give_deadline_back()  # (upstream's election check is behind: this tick holds none)
        if not self._SyncObj__conf.autoTick:
            return requested  # ticked by hand (tests): as asked
        now = _monotonic()
        if self._SyncObj__raftState == _RAFT_STATE.LEADER:
            if self._SyncObj__getCurrentLogIndex() != self._sent_log_index:
                return 0.0  # entries not sent yet (queued during this tick's apply): the next tick sends
            deadline = self._SyncObj__newAppendEntriesTime
        else:
            deadline = self._SyncObj__raftElectionDeadline
        if self._reads.busy():
            deadline = min(deadline, now + self._SyncObj__conf.appendEntriesPeriod)
        # (a deadline that passed is acted on in the next tick; 1 ms floor: never spin)
        return min(max(deadline - now, 0.001), IDLE_WAIT)

    def destroy(self) -> None:
        super().destroy()
        self.wake()

    def _doDestroy(self) -> None:
        super()._doDestroy()
        if self._wake_subscribed:
            self._poller.unsubscribe(self._wake_read)
        self._wake_closed = True
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        if isinstance(message, dict) and message.get("type", "").startswith("read_index_"):
            self._reads.on_message(node, message)
            return
        try:
            self._on_message(node, message)
        except OSError as error:
            if not is_disk_full(error):
                raise
            kind = message.get("type") if isinstance(message, dict) else None
            term = message.get("term", -1) if isinstance(message, dict) else -1
            newer = isinstance(term, int) and term > self._SyncObj__raftCurrentTerm
            self._disk_full_during(f"a {kind!r} message", newer_term=newer)
            if kind == "append_entries":
                self._tell_problems(node)

    # ------------------------------------------------------------ replicas' problems (item 13)

    def problems(self) -> tuple[str, ...]:
        """What is wrong with the replicas, as far as this one knows: its own problems, and its
        followers' (on the leader) or what its leader reported lately (on a follower). Any thread."""
        if self._SyncObj__raftState == _RAFT_STATE.LEADER:
            heard = self._followers_report
        elif _monotonic() - self._leader_heard_at < self._SyncObj__conf.raftMaxTimeout:
            heard = self._leader_report
        else:
            heard = ()
        return _merged((self.own_problems(), heard))

    def with_problems(self, message: Any) -> Any:
        """`message` as the transport sends it: an acknowledgement carries this replica's own problems,
        a leader's append-entries everyone's it knows (nothing is added when there are none)."""
        if not isinstance(message, dict):
            return message
        if self.catching_up:  # (item 16)
            message = {**message, "catching_up": True}
        kind = message.get("type")
        if kind == "next_node_idx":
            if self.disk_full():
                return {**message, "problems": list(self.own_problems()), "disk_full": True}
            problems = self.own_problems()
        elif kind == "append_entries" and self._SyncObj__raftState == _RAFT_STATE.LEADER:
            problems = self.problems()
            silent = self.silent_followers()
            if silent:  # (every follower then counts the replicas that are up as the leader does)
                return {**message, "problems": list(problems), "silent": silent}
        else:
            return message
        return {**message, "problems": list(problems)} if problems else message

    def silent_followers(self) -> list[str]:
        """On the leader: the addresses of the replicas it has not heard from within the leader fallback
        timeout (a stopped or hung replica keeps its TCP link open for an hour); none elsewhere. Members
        only: upstream keeps a removed replica's last answer time until the next election."""
        if self._SyncObj__raftState != _RAFT_STATE.LEADER:
            return []
        since = _monotonic() - self._SyncObj__conf.leaderFallbackTimeout
        heard, members = self._SyncObj__lastResponseTime, self._SyncObj__otherNodes
        return sorted(node.address for node, last in heard.items() if last <= since and node in members)

    def silent_replicas(self) -> frozenset[str]:
        """The replicas not heard from lately, as far as this one knows: on the leader its own silent
        followers; on a follower what its leader reported lately, and the leader itself if it was not
        heard from within the leader fallback timeout. Any thread (may raise RuntimeError if the tick
        thread changes a dict meanwhile: read again)."""
        if self._SyncObj__raftState == _RAFT_STATE.LEADER:
            return frozenset(self.silent_followers())
        quiet = _monotonic() - self._leader_heard_at
        silent = self._leader_silent if quiet < self._SyncObj__conf.raftMaxTimeout else frozenset()
        leader = self._SyncObj__raftLeader
        if leader is not None and quiet >= self._SyncObj__conf.leaderFallbackTimeout:
            silent |= {leader.address}  # (the leader itself, by the leader's own rule)
        return silent

    def quorum_view(self) -> tuple[bool, frozenset[str]]:
        """Whether this replica sees a leader with a majority (or, with no leader, a majority it could
        elect one with), and the addresses of the other members it counts as silent (item 15). Any
        thread (may raise RuntimeError if the tick thread changes a dict meanwhile: read again)."""
        members = self._SyncObj__otherNodes
        fallback = self._SyncObj__conf.leaderFallbackTimeout
        now = _monotonic()
        leader = self._SyncObj__raftLeader
        if self._SyncObj__raftState == _RAFT_STATE.LEADER:
            silent = self.silent_replicas()
        elif (leader is not None and now - self._leader_heard_at < fallback) or (
            now - self._had_leader_at < fallback
        ):
            # its leader steps down once it hears from no majority; with no leader for less than that, an
            # election is on (a follower hears nothing from the other followers until it is)
            return True, self.silent_replicas()
        else:
            since = now - fallback
            heard = self._heard_at
            silent = frozenset(node.address for node in members if heard.get(node, NEVER) <= since)
        up = 1 + sum(1 for node in members if node.address not in silent and self.isNodeConnected(node))
        return up > (len(members) + 1) / 2, silent

    def _tell_problems(self, node: Any) -> None:
        """To a leader whose message this replica had to drop (its new term could not be stored: it does
        not follow, nor acknowledge anything): its problems, in a message of their own (every
        ACK_REPEAT at most), so that the cluster still knows why."""
        now = _monotonic()
        if now - self._problems_told.get(node, NEVER) < ACK_REPEAT:
            return
        self._problems_told[node] = now
        report = {
            "type": "replica_problems",
            "problems": list(self.own_problems()),
            "disk_full": self.disk_full(),
        }
        self._SyncObj__transport.send(node, report)

    def _heard_problems(self, node: Any, message: dict[str, Any]) -> None:
        raw = message.get("problems")
        problems = (
            tuple(str(p)[:PROBLEM_CHARS] for p in raw[:MAX_HEARD_PROBLEMS]) if isinstance(raw, list) else ()
        )
        if message.get("type") == "append_entries":
            if message.get("term", -1) >= self._SyncObj__raftCurrentTerm:
                self._leader_report = problems
                silent = message.get("silent")
                self._leader_silent = (
                    frozenset(str(a)[:PROBLEM_CHARS] for a in silent[:MAX_HEARD_PROBLEMS])
                    if isinstance(silent, list)
                    else frozenset()
                )
            return
        if message.get("disk_full") is True:
            self._full_followers.add(node)
        else:
            self._full_followers.discard(node)
        if self._follower_problems.get(node, ()) != problems:
            if problems:
                self._follower_problems[node] = problems
            else:
                self._follower_problems.pop(node, None)
            self._followers_report = _merged(self._follower_problems.values())

    # ------------------------------------------------------------ linearizable reads (ReadIndex)

    def read_index(self, callback: Callable[[int | None], None]) -> None:
        """Linearizable read barrier without a log entry: `callback(index)` runs on the tick thread once
        this replica has applied every entry committed before this call (read the state then), or
        `callback(None)` when that cannot be confirmed now (no leader, leadership lost: safe to retry).
        The callback may never run (a message lost): callers need their own deadline. Thread-safe."""
        self._reads.requests.put(callback)
        self.wake()

    # ------------------------------------------------------------ leader calls

    def call_leader(self, payload: Any, callback: Callable[[Any, bool], None]) -> None:
        """Run `leader_call_handler(payload)` on the leader; `callback(result, True)` runs on this
        replica's tick thread with its result, or `callback(None, False)` when no leader is known. The
        callback may never run (the message or its answer lost): callers need their own deadline.
        Thread-safe."""
        self._leader_calls.put((payload, callback))
        self.wake()

    def _send_leader_calls(self) -> None:
        now = _monotonic()
        for call_id, (sent_at, _callback) in list(self._leader_calls_waiting.items()):
            if now - sent_at > LEADER_CALL_FORGET_AFTER:
                del self._leader_calls_waiting[call_id]
        while True:
            try:
                payload, callback = self._leader_calls.get_nowait()
            except queue.Empty:
                return
            leader = self._SyncObj__raftLeader
            if self._SyncObj__raftState == _RAFT_STATE.LEADER:
                callback(self._run_leader_call(payload), True)
            elif leader is None:
                callback(None, False)
            else:
                call_id = next(self._leader_call_ids)
                self._leader_calls_waiting[call_id] = (now, callback)
                if not self._SyncObj__transport.send(
                    leader, {"type": "leader_call", "id": call_id, "payload": payload}
                ):
                    del self._leader_calls_waiting[call_id]
                    callback(None, False)

    def _answer_leader_call(self, node: Any, message: dict[str, Any]) -> None:
        is_leader = self._SyncObj__raftState == _RAFT_STATE.LEADER
        result = self._run_leader_call(message.get("payload")) if is_leader else None
        answer = {"type": "leader_call_response", "id": message.get("id"), "result": result, "ok": is_leader}
        self._SyncObj__transport.send(node, answer)

    def _run_leader_call(self, payload: Any) -> Any:
        try:
            return self.leader_call_handler(payload)
        except Exception:  # a bug: never let it stop the tick thread
            log.exception("leader call %r failed", payload)
            return None

    def _leader_call_answered(self, message: dict[str, Any]) -> None:
        waiting = self._leader_calls_waiting.pop(message.get("id"), None)  # type: ignore[arg-type]
        if waiting is not None:
            waiting[1](message.get("result"), bool(message.get("ok")))

    # ------------------------------------------------------------ pre-vote

    def _onTick(self, timeToWait: float = 0.0) -> None:
        if not self._wake_subscribed and self._SyncObj__conf.autoTick:
            self._tick_thread_id = threading.get_ident()
            self._poller.subscribe(self._wake_read, self._drain_wake_pipe, POLL_EVENT_TYPE.READ)
            self._wake_subscribed = True
        self._sent_before_apply = False
        self._watch_snapshot_child()
        self._check_stand_aside()
        # Upstream polls at the end of its tick with the time given; the wait is decided then (after
        # this tick's sends and deadlines moved), by `_tick_wait`, through the poller wrapper.
        poller = self._poller
        try:
            if not self._maybe_pre_vote():  # (item 3) no election in this tick: hold upstream's back
                self._held_deadline = self._SyncObj__raftElectionDeadline
                self._SyncObj__raftElectionDeadline = math.inf
            self._send_leader_calls()
            self.before_commit_check()
            self._poller = _DeferredWaitPoller(poller, self._tick_wait)
            try:
                super()._onTick(timeToWait)
            except OSError as error:
                if not is_disk_full(error):
                    raise
                self._disk_full_during("a tick")  # an election that could not store its term, say
        finally:
            self._give_deadline_back()  # (whatever ended the tick: never left at infinity)
            self._poller = poller

    def _give_deadline_back(self) -> None:
        """The election deadline held back for upstream's election check (item 3), once it has run: before
        the poll at the end of upstream's tick (`_tick_wait`), or after the tick if it ended earlier."""
        if self._held_deadline is not None:
            if self._SyncObj__raftElectionDeadline == math.inf:  # (nothing moved it meanwhile)
                self._SyncObj__raftElectionDeadline = self._held_deadline
            self._held_deadline = None

    # ------------------------------------------------------------ standing aside (item 14)

    def _check_stand_aside(self) -> None:
        """Ask the owner whether this replica must stand aside (said once per change), and step down if it
        leads meanwhile."""
        why = self.stand_aside() if self._SyncObj__otherNodes else None
        if (why is None) != (self._standing_aside is None):
            if why is None:
                log.warning("this replica may lead again (it stood aside: %s)", self._standing_aside)
            else:
                log.warning("this replica stands aside: %s; it does not lead until that ends", why)
        self._standing_aside = why
        if why is not None and self._SyncObj__raftState == _RAFT_STATE.LEADER:
            if _monotonic() < self._leads_for_lack_until and not self._caught_up_followers():
                return  # it holds entries no other replica has: it leads until one has them
            self._step_down(why)

    def _caught_up_followers(self) -> list[Any]:
        """The followers a leader could hand over to: connected, holding its whole log, with room, and
        able to stand (item 16)."""
        last = self._SyncObj__getCurrentLogIndex()
        matched = self._SyncObj__raftMatchIndex
        return [
            node
            for node in self._SyncObj__otherNodes
            if node not in self._full_followers
            and self.isNodeConnected(node)
            and matched.get(node, 0) == last
            and not self._peers_catching_up.get(node)  # (it would not stand: item 16)
        ]

    def _no_other_can_lead(self, now: float) -> bool:
        """Whether this replica, standing aside, must stand for election all the same, no leader having
        been heard for an election timeout: a replica asking to be elected was refused by it lately for
        lacking entries it holds (Raft elects no replica whose log is behind: with two replicas left,
        none would be), or the other replicas heard from lately are all catching up (item 16: they stand
        for no election while a replica that kept its log is there; a new cluster whose first leader's
        owner went silent before its first commit). Said once per time."""
        conf = self._SyncObj__conf
        if now - self._leader_heard_at < conf.raftMaxTimeout:
            alone = False
        elif now - self._fresher_than_asker_at < 2 * conf.raftMaxTimeout:
            alone = True
        else:
            heard = [
                n
                for n in self._SyncObj__otherNodes
                if now - self._heard_at.get(n, NEVER) < conf.raftMaxTimeout
            ]
            alone = bool(heard) and all(self._peers_catching_up.get(node) for node in heard)
        if alone and not self._standing_for_lack:
            log.warning(
                "this replica stands for election though it stands aside (%s): no other replica can be"
                " elected (one lacks entries it holds, or the others are catching up); it hands over once"
                " one holds its whole log",
                self._standing_aside,
            )
        self._standing_for_lack = alone
        return alone

    def _step_down(self, why: str) -> None:
        """Hand the leadership to a caught-up follower (TimeoutNow: it holds an election at once), if
        one is connected, and become a follower in the same term at once (check-quorum's step down)."""
        ready = self._caught_up_followers()
        target = min(ready, key=lambda node: node.address) if ready else None
        self._leads_for_lack_until = NEVER
        if target is not None:
            self.transferLeadership(target, callback=lambda _result, _reason: None)
        self._SyncObj__setState(_RAFT_STATE.FOLLOWER)
        self._SyncObj__raftLeader = None
        self._SyncObj__raftElectionDeadline = _monotonic() + self._SyncObj__generateRaftTimeout()
        log.warning(
            "the leader steps down (%s)%s",
            why,
            f"; asked {target.address} to take over" if target is not None else "",
        )

    # ------------------------------------------------------------ snapshots in a child process

    def _watch_snapshot_child(self) -> None:
        """Kill a snapshot child that outlived `SNAPSHOT_DEADLINE`; upstream then reaps it (a failed
        snapshot) and takes another one later."""
        pid = self._SyncObj__serializer._Serializer__pid
        if pid <= 0:
            self._snapshot_child = None
            return
        now = _monotonic()
        if self._snapshot_child is None or self._snapshot_child[0] != pid:
            self._snapshot_child = (pid, now)
        elif now - self._snapshot_child[1] > SNAPSHOT_DEADLINE:
            log.error("the snapshot child %d ran for over %g s: killed", pid, SNAPSHOT_DEADLINE)
            self._snapshot_child = (pid, float("inf"))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _SyncObj__loadDumpFile(self, clearJournal: bool) -> None:
        """At start (clearJournal False): keep the journal's entries after a snapshot newer than its
        start, instead of letting upstream replace the journal by the snapshot's two entries; and say so
        when the snapshot's members are not the configured ones (item 17)."""
        if not clearJournal:
            self._drop_journal_before_snapshot()
        configured = {node.address for node in self._SyncObj__otherNodes}
        super()._SyncObj__loadDumpFile(clearJournal)
        stored = {node.address for node in self._SyncObj__otherNodes}
        if not clearJournal and stored != configured:
            own = self._SyncObj__selfNode.address
            log.warning(
                "the configured peers (%s) are not the members this replica's data holds (%s): it runs"
                " with the stored members; members are changed with `aether-kv member add|remove` (of a"
                " running member), not by editing the peer list",
                ", ".join(sorted({own, *configured})),
                ", ".join(sorted({own, *stored})),
            )

    def _drop_journal_before_snapshot(self) -> None:
        try:
            data = self._SyncObj__serializer.deserialize()
            before_last, last = data[2], data[1]
        except Exception:  # upstream's own load reports an unreadable snapshot
            return
        journal = self._SyncObj__raftLog
        first = journal[0][1] if len(journal) else None
        if first is None or not first <= before_last[1] < first + len(journal) - 1:
            return
        offset = before_last[1] - first
        if journal[offset] == before_last and journal[offset + 1] == last and offset > 0:
            log.warning(
                "the snapshot (entry %d) is newer than the journal's start (entry %d): the entries"
                " before it are dropped, the %d after it kept",
                last[1],
                first,
                len(journal) - offset - 2,
            )
            journal.deleteEntriesTo(offset)

    def _maybe_pre_vote(self) -> bool:
        """Before upstream's election check: when the election timer has run out, hold a pre-vote round
        instead (and push the timer back), unless a round just won. Whether upstream may hold an election
        in this tick (a round won, a leader's transfer, or no pre-vote: one replica, or not a follower)."""
        if self._SyncObj__raftState not in (_RAFT_STATE.FOLLOWER, _RAFT_STATE.CANDIDATE):
            return True
        if self._SyncObj__selfNode is None or not self._SyncObj__otherNodes:
            return True
        now = _monotonic()
        if (
            self.catching_up
            and now - self._leader_heard_at >= self._SyncObj__conf.raftMinTimeout  # (no leader lately)
            and now - self._catching_up_said_at >= CATCHING_UP_NOTICE
        ):
            # (item 16) the others count the replicas catching up before they vote: told at once, not at
            # the next election timeout (a new cluster, every replica catching up, elects as soon as before)
            self._catching_up_said_at = now
            for node in self._SyncObj__otherNodes:
                self._SyncObj__transport.send(node, {"type": "catching_up"})
        owner_silent = self._standing_aside is not None and not self._no_other_can_lead(now)
        if owner_silent or self._stands_aside_catching_up():
            # no election, not even one a leader asked for: its owner is silent (item 14), or it started
            # empty and has not caught up (item 16; looked at again soon then: the others may say they
            # are catching up too, and a new cluster elects as soon as before)
            self._SyncObj__transferInProgress = False
            self._pre_vote_won = False
            if self._SyncObj__raftElectionDeadline < now:
                soon = random.uniform(*LEADER_GONE_ELECTION)
                wait = self._SyncObj__generateRaftTimeout() if owner_silent else soon
                self._SyncObj__raftElectionDeadline = now + wait
            return False
        if self._SyncObj__transferInProgress:
            return True  # the leader asked this replica to take over: a real election at once
        if self._SyncObj__raftElectionDeadline >= now:
            return False  # (not yet: nor may upstream, whose test of the deadline comes a while later)
        if self.disk_full():
            # it could not store its new term, nor lead: it does not stand (it still votes when it can)
            self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
            self._pre_vote_won = False
            return False
        if self._pre_vote_won:
            self._pre_vote_won = False
            return True  # upstream starts the election in this tick
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
        self._pre_vote_term = self._SyncObj__raftCurrentTerm + 1
        self._pre_votes = {self._SyncObj__selfNode}
        request = {
            "type": "pre_vote",
            "term": self._pre_vote_term,
            "last_log_index": self._SyncObj__getCurrentLogIndex(),
            "last_log_term": self._SyncObj__getCurrentLogTerm(),
        }
        for node in self._SyncObj__otherNodes:
            self._SyncObj__transport.send(node, request)
        return False

    def _answer_pre_vote(self, node: Any, message: dict[str, Any]) -> None:
        term = self._SyncObj__raftCurrentTerm
        heard_recently = _monotonic() - self._leader_heard_at < self._SyncObj__conf.raftMinTimeout
        my_log = (self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex())
        eligible = (
            message.get("term", -1) > term
            and self._SyncObj__raftState != _RAFT_STATE.LEADER
            and not heard_recently
            and not self._votes_withheld(node)
        )
        fresher = (message.get("last_log_term", -1), message.get("last_log_index", -1)) < my_log
        granted = eligible and not fresher
        if eligible and fresher and self._standing_aside is not None:
            self._fresher_than_asker_at = _monotonic()  # (item 14) it may have to lead all the same
        if granted and not self._pre_vote_won:
            # As a vote granted does: the asker is likely to hold an election now; an election of this
            # replica's own at about the same time would split the vote (two followers whose leader's
            # port refused set their deadlines within 50-200 ms of each other: item 10).
            self._SyncObj__raftElectionDeadline = max(
                self._SyncObj__raftElectionDeadline, _monotonic() + self._SyncObj__generateRaftTimeout()
            )
        self._SyncObj__transport.send(
            node,
            {
                "type": "pre_vote_response",
                "term": message.get("term"),
                "granted": granted,
                "current_term": term,
            },
        )

    def _count_pre_vote(self, node: Any, message: dict[str, Any]) -> None:
        their_term = message.get("current_term", -1)
        if their_term > self._SyncObj__raftCurrentTerm and self._SyncObj__raftState != _RAFT_STATE.LEADER:
            self._SyncObj__setCurrentTerm(their_term, None)  # behind in term: catch up, stay a follower
            self._SyncObj__setState(_RAFT_STATE.FOLLOWER)
            self._pre_vote_term = 0
            return
        if (
            not message.get("granted")
            or message.get("term") != self._pre_vote_term
            or self._pre_vote_term != self._SyncObj__raftCurrentTerm + 1
            or self._SyncObj__raftState not in (_RAFT_STATE.FOLLOWER, _RAFT_STATE.CANDIDATE)
        ):
            return
        self._pre_votes.add(node)
        if len(self._pre_votes) > (len(self._SyncObj__otherNodes) + 1) / 2:
            self._pre_vote_term = 0
            self._pre_vote_won = True
            self._SyncObj__raftElectionDeadline = 0  # upstream's election runs on the next tick

    # ------------------------------------------------------------ messages

    def _on_message(self, node: Any, message: Any) -> None:
        self._heard_at[node] = _monotonic()
        if isinstance(message, dict):
            kind = message.get("type")
            self._peers_catching_up[node] = bool(message.get("catching_up"))  # (item 16)
            if kind == "catching_up":
                if message.get("catching_up") and not self.catching_up:
                    # this replica kept its log: the one asking learns so before it counts the replicas
                    # catching up (two of three empty would elect one of them over this log)
                    self._SyncObj__transport.send(node, {"type": "catching_up"})
                return
            if kind in ("next_node_idx", "append_entries", "replica_problems"):
                self._heard_problems(node, message)
                if kind == "replica_problems":
                    return
            if kind == "pre_vote":
                self._answer_pre_vote(node, message)
                return
            if kind == "pre_vote_response":
                self._count_pre_vote(node, message)
                return
            if kind == "timeout_now" and self._standing_aside is not None:
                return  # it must not lead (item 14): the leader's transfer fails, and it asks again
            if kind == "leader_call":
                self._answer_leader_call(node, message)
                return
            if kind == "leader_call_response":
                self._leader_call_answered(message)
                return
            if kind == "append_entries" and message.get("term", -1) >= self._SyncObj__raftCurrentTerm:
                self._leader_heard_at = self._had_leader_at = _monotonic()
                self._pre_vote_term, self._pre_vote_won = 0, False
            if kind == "request_vote":
                if self._votes_withheld(node):
                    return
                deadline = self._SyncObj__raftElectionDeadline
                super()._SyncObj__onMessageReceived(node, message)
                if self._SyncObj__raftElectionDeadline != deadline:  # it granted its vote
                    # A leader is being elected: refuse pre-votes as if it had heard from one, so a
                    # replica whose timer runs out in the meantime cannot unseat it straight away.
                    self._leader_heard_at = _monotonic()
                return
        if (
            isinstance(message, dict)
            and message.get("type") == "append_entries"
            and "prevLogIdx" in message
            and message.get("term", -1) >= self._SyncObj__raftCurrentTerm
        ):
            message = self._keep_matching_entries(node, message)
            if message is None or not self._room_for_entries(node, message):
                return
        super()._SyncObj__onMessageReceived(node, message)
        if self.catching_up and isinstance(message, dict) and message.get("type") == "append_entries":
            self._check_caught_up(message)

    # ------------------------------------------------------------ a replica that lost its disk (item 16)

    def _withholding(self) -> bool:
        """Whether this replica, started empty and not caught up, must neither vote nor stand: unless a
        majority of the replicas are catching up (a new cluster; most disks lost)."""
        if not self.catching_up:
            return False
        others = self._SyncObj__otherNodes
        catching_up = 1 + sum(1 for node in others if self._peers_catching_up.get(node))
        return catching_up <= (len(others) + 1) / 2

    def _log_holder_known(self) -> bool:
        """Whether a replica that is not catching up (that kept its log) said so in its last message."""
        return any(self._peers_catching_up.get(node) is False for node in self._SyncObj__otherNodes)

    def _stands_aside_catching_up(self) -> bool:
        """Whether this replica must not stand for election (item 16): withholding, or, with a majority
        catching up, while a replica that kept its log is there to be elected instead."""
        return self.catching_up and (self._withholding() or self._log_holder_known())

    def _votes_withheld(self, node: Any) -> bool:
        """Whether this replica withholds its vote (or pre-vote) from the candidate `node`; said once.
        With a majority catching up, it votes, but not for another replica catching up while one that
        kept its log is there (two disks of three lost: the one log left, not an empty one)."""
        if not self.catching_up:
            return False
        if self._withholding():
            if not self._refusal_said:
                self._refusal_said = True
                log.warning(
                    "this replica started with an empty data directory (its disk lost?) in a cluster"
                    " whose other replicas have theirs: it neither votes (%s asked) nor stands until it"
                    " holds a leader's log (what it acknowledged before may be on no other replica but"
                    " the leader)",
                    getattr(node, "address", node),
                )
            return True
        return bool(self._peers_catching_up.get(node)) and self._log_holder_known()

    def _SyncObj__onBecomeLeader(self) -> None:
        self._caught_up()  # elected: its log is the one the others follow (before its first message)
        # (item 14) elected though standing aside, for lack of another: it hands over soon
        self._leads_for_lack_until = _monotonic() + LEAD_FOR_LACK if self._standing_aside else NEVER
        super()._SyncObj__onBecomeLeader()  # type: ignore[misc]

    def _check_caught_up(self, message: dict[str, Any]) -> None:
        """After an append-entries from a current leader: caught up once this replica holds the entry at
        the leader's commit index and that entry is of the leader's term."""
        term, commit = message.get("term"), message.get("commit_index")
        if term != self._SyncObj__raftCurrentTerm or not isinstance(commit, int):
            return
        entries = self._SyncObj__getEntries(commit, 1)
        if entries and entries[0][1] == commit and entries[0][2] == term:
            log.info("this replica holds the leader's log up to its commit index %d: it votes again", commit)
            self._caught_up()

    def _caught_up(self) -> None:
        if self.catching_up:
            self.catching_up = False
            self._on_caught_up()
            for node in self._SyncObj__otherNodes:  # (a follower sends the others nothing otherwise)
                self._SyncObj__transport.send(node, {"type": "catching_up"})  # without the flag: done

    def _keep_matching_entries(self, node: Any, message: dict[str, Any]) -> dict[str, Any] | None:
        """Rewrite an append-entries message so that upstream's handler truncates only from the first
        conflicting entry; handle it here (and return None) when nothing conflicts."""
        transmission = message.get("transmission")
        if transmission in ("start", "process"):
            return message  # chunks of one large entry: upstream buffers them
        if transmission == "finish":  # the last chunk: assemble the entry as upstream would
            buffered = self._SyncObj__recvTransmission
            if not isinstance(buffered, bytes):
                return None  # no start seen (upstream would fail on str + bytes); the leader resends
            data = buffered + message["data"]
            try:
                # the C unpickler only: pysyncobj's `loads` retries a failure with the pure-Python one
                # (for Python 2 peers), ~0.3 s per attempt on a 1 MiB entry
                entry = _stdlib_pickle.loads(data)
            except Exception:  # EOFError, UnpicklingError, ...: whatever a prefix raises
                # Upstream's leader marks a chunk "finish" once it reaches the *command's* length, not
                # the pickled entry's, which is longer (a few bytes since item 11; up to 1.5x under
                # protocol 2), so more than one chunk may say "finish". A prefix of a pickle never
                # loads: keep buffering, as for "process".
                self._SyncObj__recvTransmission = data
                self._SyncObj__sendNextNodeIdx(node, success=False, reset=False)
                return None
            self._SyncObj__recvTransmission = ""
            message = {k: v for k, v in message.items() if k not in ("transmission", "data")}
            message["entries"] = [entry]
        elif transmission is not None:
            return message  # upstream raises on an unknown kind

        prev_idx = message["prevLogIdx"]
        entries = message.get("entries", [])
        local = self._SyncObj__getEntries(prev_idx)
        if not local or local[0][2] != message["prevLogTerm"] or len(local) == 1:
            return message  # a gap or a mismatch at prevLogIdx (upstream asks to go back), or no overlap
        held = 0
        for entry in entries:
            position = entry[1] - prev_idx
            if position >= len(local) or local[position][2] != entry[2]:
                break
            held += 1
        if held < len(entries):
            if held:
                last = entries[held - 1]
                message = {
                    **message,
                    "prevLogIdx": last[1],
                    "prevLogTerm": last[2],
                    "entries": entries[held:],
                }
            return message  # upstream truncates from the first conflict (if any) and appends the rest

        # Every entry sent is already here with the same term: keep the log (entries past the last one
        # sent are not known to be the leader's, so the commit index stops at that one).
        self._acknowledge_up_to(node, message, prev_idx + len(entries))
        return None

    def _acknowledge_up_to(self, node: Any, message: dict[str, Any], last: int) -> None:
        """Answer an append-entries `message` for the log up to index `last` only, storing none of its
        entries: its term, leader, election timer and commit index (capped at `last`: past it this log is
        not known to be the leader's) are taken as upstream takes them from a heartbeat."""
        header = {k: v for k, v in message.items() if k not in ("prevLogIdx", "prevLogTerm", "entries")}
        header["commit_index"] = min(message["commit_index"], last)
        super()._SyncObj__onMessageReceived(node, header)  # term, leader, election timer, commit index
        self._SyncObj__leaderCommitIndex = message["commit_index"]
        self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=last + 1, success=True)


def _merged(groups: Any) -> tuple[str, ...]:
    """The problems of several replicas in one tuple, each once, in order."""
    return tuple(dict.fromkeys(problem for group in groups for problem in group))


class _TrackedQueue:
    """Upstream's proposal queue (a FastQueue), which also says what it holds in journal bytes and which
    item the tick thread took last (the one a failed journal append belongs to)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.taken: Any = None

    def put_nowait(self, item: Any) -> None:
        self._inner.put_nowait(item)

    def get_nowait(self) -> Any:
        self.taken = None
        item = self._inner.get_nowait()
        self.taken = item[1]
        return item

    def pending_bytes(self) -> int:
        with self._inner._FastQueue__lock:
            return record_bytes([command for command, _callback in self._inner._FastQueue__queue])

    def drain(self) -> list[Any]:
        with self._inner._FastQueue__lock:
            items = list(self._inner._FastQueue__queue)
            self._inner._FastQueue__queue.clear()
        return items


class _DeferredWaitPoller:
    """Upstream's poller, whose `poll(timeout)` waits as long as `wait(timeout)` says at call time."""

    def __init__(self, inner: Any, wait: Callable[[float], float]) -> None:
        self._inner = inner
        self._wait = wait

    def poll(self, timeout: float) -> None:
        self._inner.poll(self._wait(timeout))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _ReadIndex:
    """ReadIndex for one PatchedSyncObj (see the module docstring, item 4's sibling); runs on its tick
    thread apart from `requests`, which any thread fills."""

    def __init__(self, obj: PatchedSyncObj) -> None:
        self.obj = obj
        self.requests: queue.SimpleQueue[Callable[[int | None], None]] = queue.SimpleQueue()
        self.ids = itertools.count(1)
        # leader side: reads waiting for the next round, and the round in flight
        self.pending: list[tuple[Any, Any]] = []  # (callback, None) local, or (None, (node, id)) remote
        self.round_id = 0
        self.round: dict[str, Any] | None = None  # id, term, index, started, acks, reads
        # both sides: confirmed reads waiting until this replica has applied their index
        self.ready: list[tuple[int, Callable[[int | None], None]]] = []
        # follower side: requests sent to the leader, by id
        self.forwarded: dict[int, tuple[float, Callable[[int | None], None]]] = {}

    def busy(self) -> bool:
        return bool(self.pending or self.round or self.ready)

    def tick(self) -> None:
        obj = self.obj
        is_leader = obj._SyncObj__raftState == _RAFT_STATE.LEADER
        now = _monotonic()
        while True:
            try:
                callback = self.requests.get_nowait()
            except queue.Empty:
                break
            leader = obj._SyncObj__raftLeader
            if is_leader:
                self.pending.append((callback, None))
            elif leader is None or obj.disk_full():  # a full follower may never apply the index (item 12)
                callback(None)
            else:
                request_id = next(self.ids)
                self.forwarded[request_id] = (now, callback)
                if not obj._SyncObj__transport.send(leader, {"type": "read_index_request", "id": request_id}):
                    del self.forwarded[request_id]
                    callback(None)
        for request_id, (sent_at, _callback) in list(self.forwarded.items()):
            if now - sent_at > LEADER_CALL_FORGET_AFTER:
                del self.forwarded[request_id]
        if self.round is not None and (
            not is_leader
            or self.round["term"] != obj._SyncObj__raftCurrentTerm
            or now - self.round["started"] > obj._SyncObj__conf.raftMaxTimeout
        ):
            # leadership lost, or not confirmed within the longest election timeout (a shorter bound
            # failed every read on an overloaded machine, where a round trip can take half a second)
            self._fail(self.round["reads"])
            self.round = None
        if not is_leader and self.pending:
            self._fail(self.pending)
            self.pending = []
        if is_leader and self.pending and self.round is None and self._own_term_committed():
            self._start_round()
        self._release()

    def _own_term_committed(self) -> bool:
        obj = self.obj
        entries = obj._SyncObj__getEntries(obj._SyncObj__raftCommitIndex, 1)
        return bool(entries) and entries[0][2] == obj._SyncObj__raftCurrentTerm

    def _start_round(self) -> None:
        obj = self.obj
        self.round_id += 1
        self.round = {
            "id": self.round_id,
            "term": obj._SyncObj__raftCurrentTerm,
            "index": obj._SyncObj__raftCommitIndex,
            "started": _monotonic(),
            "acks": {obj._SyncObj__selfNode},
            "reads": self.pending,
        }
        self.pending = []
        probe = {"type": "read_index_probe", "term": self.round["term"], "round": self.round_id}
        for node in obj._SyncObj__otherNodes:
            obj._SyncObj__transport.send(node, probe)
        self._count_acks()

    def _count_acks(self) -> None:
        obj = self.obj
        current = self.round
        if current is None or len(current["acks"]) <= (len(obj._SyncObj__otherNodes) + 1) / 2:
            return
        self.round = None
        for callback, remote in current["reads"]:
            if callback is not None:
                self.ready.append((current["index"], callback))
            else:
                node, request_id = remote
                obj._SyncObj__transport.send(
                    node, {"type": "read_index_response", "id": request_id, "index": current["index"]}
                )
        self._start_round_if_possible()  # reads that came in during the round: the next round
        self._release()

    def _start_round_if_possible(self) -> None:
        if self.round is None and self.pending and self._own_term_committed():
            self._start_round()

    def _release(self) -> None:
        applied = self.obj._SyncObj__raftLastApplied
        waiting = []
        for index, callback in self.ready:
            if applied >= index:
                callback(index)
            else:
                waiting.append((index, callback))
        self.ready = waiting

    def _fail(self, reads: list[tuple[Any, Any]]) -> None:
        for callback, remote in reads:
            if callback is not None:
                callback(None)
            else:
                node, request_id = remote
                self.obj._SyncObj__transport.send(
                    node, {"type": "read_index_response", "id": request_id, "index": None}
                )

    def on_message(self, node: Any, message: dict[str, Any]) -> None:
        obj = self.obj
        kind = message.get("type")
        term = obj._SyncObj__raftCurrentTerm
        if kind == "read_index_probe":
            # "I have not moved past your term": no leader of a later term can have been elected
            # without a majority that moved past it.
            ok = isinstance(message.get("term"), int) and message["term"] >= term
            obj._SyncObj__transport.send(
                node,
                {
                    "type": "read_index_ack",
                    "round": message.get("round"),
                    "term": message.get("term"),
                    "ok": ok,
                },
            )
        elif kind == "read_index_ack":
            current = self.round
            if (
                current is not None
                and message.get("ok") is True
                and message.get("round") == current["id"]
                and message.get("term") == current["term"] == term
            ):
                current["acks"].add(node)
                self._count_acks()
        elif kind == "read_index_request":
            request_id = message.get("id")
            if obj._SyncObj__raftState == _RAFT_STATE.LEADER:
                self.pending.append((None, (node, request_id)))
                self._start_round_if_possible()
            else:
                obj._SyncObj__transport.send(
                    node, {"type": "read_index_response", "id": request_id, "index": None}
                )
        elif kind == "read_index_response":
            waiting = self.forwarded.pop(message.get("id"), None)  # type: ignore[arg-type]
            if waiting is None:
                return
            index = message.get("index")
            if isinstance(index, int) and not isinstance(index, bool):
                self.ready.append((index, waiting[1]))
                self._release()
            else:
                waiting[1](None)
