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
2. `GuardedTransport` / `_GuardedConnection` (the Raft port). Upstream buffers whatever a connection
   sends, before authentication, until a whole frame has arrived: a peer without the secret announcing
   a 2 GB frame and trickling junk made the tick thread copy an ever-growing buffer (replica starved,
   elections, memory up). Now a frame larger than `MAX_FRAME_BYTES` (`MAX_UNAUTHENTICATED_FRAME_BYTES`
   before the peer has proved the secret) drops the connection as soon as its 4-byte header arrives,
   and a connection that has not identified itself as a cluster member within
   `AUTHENTICATION_DEADLINE` seconds is dropped (checked on every read and every tick).
3. `PatchedSyncObj._onTick` / pre-vote (Raft thesis 9.6). Upstream, a follower whose election timer
   runs out becomes a candidate at once and raises its term: an isolated replica raised its term again
   and again and, on rejoining, its higher term made the leader step down (a needless election). Now it
   first asks the others whether they would vote for it at the next term ("pre_vote", answered by
   "pre_vote_response"); a replica says yes only if it has neither heard from a leader nor granted its
   vote for an election timeout and the asker's log is at least as up to date as its own, and it
   changes nothing when asked.
   Only with a majority of yeses does upstream's election run. A "no" carries the answering replica's
   term, so a replica that fell behind in term catches up without an election. Check-quorum on the
   leader's side is upstream's `leaderFallbackTimeout` (a leader that hears from no majority for that
   long steps down). Skipped for a one-replica cluster and a leadership transfer (TimeoutNow).

Beside the fixes, one addition: `PatchedSyncObj.call_leader` runs a function on the current leader
without a log entry ("leader_call" / "leader_call_response" messages), for requests only the leader
answers from its memory (lease keep-alives, see `_raft.LeaseClock`).
"""

from __future__ import annotations

import itertools
import logging
import queue
import struct
from collections.abc import Callable
from typing import Any

import pysyncobj.pickle as _pickle
from pysyncobj import SyncObj
from pysyncobj.monotonic import monotonic as _monotonic
from pysyncobj.syncobj import _RAFT_STATE
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
from pysyncobj.transport import TCPTransport

log = logging.getLogger("aether_kv.raft")

PYSYNCOBJ_VERSION = "0.3.17"

# A Raft frame holds an append-entries batch (64 KiB plus at most one entry, itself under the client
# protocol's 4 MiB frame), a snapshot chunk or a forwarded command; compressed, then encrypted (4/3).
MAX_FRAME_BYTES = 64 * 1024 * 1024
# Before the secret is proved a peer sends only handshake frames (a random key, its address), a few
# hundred bytes each.
MAX_UNAUTHENTICATED_FRAME_BYTES = 64 * 1024
AUTHENTICATION_DEADLINE = 10.0
LEADER_CALL_FORGET_AFTER = 60.0  # a leader call unanswered this long is forgotten (its caller gave up)

# Every private or name-mangled pysyncobj name this package relies on, by the class or module holding it.
PRIVATE_NAMES: dict[str, tuple[str, ...]] = {
    "pysyncobj.syncobj.SyncObj": (
        "_SyncObj__onMessageReceived",
        "_SyncObj__getEntries",
        "_SyncObj__sendNextNodeIdx",
        "_SyncObj__getCurrentLogIndex",
        "_SyncObj__getCurrentLogTerm",
        "_SyncObj__generateRaftTimeout",
        "_SyncObj__setCurrentTerm",
        "_SyncObj__setState",
        "_isLeader",
        "_onTick",
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
    ),
    "pysyncobj.syncobj._RAFT_STATE": ("FOLLOWER", "CANDIDATE", "LEADER"),
    "pysyncobj.syncobj": ("createJournal",),
    "pysyncobj.journal.FileJournal instance": ("_FileJournal__journalFile",),
    "pysyncobj.journal.ResizableFile instance": ("_ResizableFile__f",),
    "pysyncobj.tcp_connection.TcpConnection": (
        "_TcpConnection__processRead",
        "_TcpConnection__processParseMessage",
    ),
    "pysyncobj.tcp_connection.TcpConnection instance": ("_TcpConnection__readBuffer",),
    "pysyncobj.transport.TCPTransport": (
        "_onNewIncomingConnection",
        "_onIncomingMessageReceived",
        "_onTick",
        "addNode",
    ),
    "pysyncobj.transport.TCPTransport instance": ("_syncObj", "_unknownConnections", "_connections"),
}


# ---------------------------------------------------------------- the replica


class PatchedSyncObj(SyncObj):
    """SyncObj with the fixes listed in the module docstring. Runs on pysyncobj's tick thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._leader_heard_at = -1e9  # monotonic time of the last append-entries from a current leader
        self._pre_vote_term = 0  # the term a pre-vote round in progress asks about (0: none)
        self._pre_votes: set[Any] = set()
        self._pre_vote_won = False
        # leader calls: queued by any thread, sent on the tick thread; answers matched by id
        self.leader_call_handler: Callable[[Any], Any] = lambda payload: None
        self._leader_calls: queue.SimpleQueue[tuple[Any, Callable[[Any, bool], None]]] = queue.SimpleQueue()
        self._leader_call_ids = itertools.count(1)
        self._leader_calls_waiting: dict[int, tuple[float, Callable[[Any, bool], None]]] = {}
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------ leader calls

    def call_leader(self, payload: Any, callback: Callable[[Any, bool], None]) -> None:
        """Run `leader_call_handler(payload)` on the leader; `callback(result, True)` runs on this
        replica's tick thread with its result, or `callback(None, False)` when no leader is known. The
        callback may never run (the message or its answer lost): callers need their own deadline.
        Thread-safe."""
        self._leader_calls.put((payload, callback))

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
        self._maybe_pre_vote()
        self._send_leader_calls()
        super()._onTick(timeToWait)

    def _maybe_pre_vote(self) -> None:
        """Before upstream's election check: when the election timer has run out, hold a pre-vote round
        instead (and push the timer back), unless a round just won."""
        if self._SyncObj__raftState not in (_RAFT_STATE.FOLLOWER, _RAFT_STATE.CANDIDATE):
            return
        if self._SyncObj__selfNode is None or not self._SyncObj__otherNodes:
            return
        if self._SyncObj__transferInProgress:
            return  # the leader asked this replica to take over: a real election at once
        now = _monotonic()
        if self._SyncObj__raftElectionDeadline >= now:
            return
        if self._pre_vote_won:
            self._pre_vote_won = False
            return  # upstream starts the election in this tick
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

    def _answer_pre_vote(self, node: Any, message: dict[str, Any]) -> None:
        term = self._SyncObj__raftCurrentTerm
        heard_recently = _monotonic() - self._leader_heard_at < self._SyncObj__conf.raftMinTimeout
        my_log = (self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex())
        granted = (
            message.get("term", -1) > term
            and self._SyncObj__raftState != _RAFT_STATE.LEADER
            and not heard_recently
            and (message.get("last_log_term", -1), message.get("last_log_index", -1)) >= my_log
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

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        if isinstance(message, dict):
            kind = message.get("type")
            if kind == "pre_vote":
                self._answer_pre_vote(node, message)
                return
            if kind == "pre_vote_response":
                self._count_pre_vote(node, message)
                return
            if kind == "leader_call":
                self._answer_leader_call(node, message)
                return
            if kind == "leader_call_response":
                self._leader_call_answered(message)
                return
            if kind == "append_entries" and message.get("term", -1) >= self._SyncObj__raftCurrentTerm:
                self._leader_heard_at = _monotonic()
                self._pre_vote_term, self._pre_vote_won = 0, False
            if kind == "request_vote":
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
            if message is None:
                return
        super()._SyncObj__onMessageReceived(node, message)

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
            self._SyncObj__recvTransmission = ""
            message = {k: v for k, v in message.items() if k not in ("transmission", "data")}
            message["entries"] = [_pickle.loads(data)]
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
        last_sent = prev_idx + len(entries)
        header = {k: v for k, v in message.items() if k not in ("prevLogIdx", "prevLogTerm", "entries")}
        header["commit_index"] = min(message["commit_index"], last_sent)
        super()._SyncObj__onMessageReceived(node, header)  # term, leader, election timer, commit index
        self._SyncObj__leaderCommitIndex = message["commit_index"]
        self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=last_sent + 1, success=True)
        return None


# ---------------------------------------------------------------- the Raft port


class _GuardedConnection(TcpConnection):
    """A TcpConnection that refuses oversized frames and, until authenticated, slow handshakes.

    Instances are upstream connections whose class is switched right after construction (upstream builds
    them in places this package cannot reach: the TCP server's accept handler), then `_guard` is called."""

    max_frame: int = MAX_FRAME_BYTES
    deadline: float | None = None

    def _guard(self, *, authenticated: bool) -> None:
        if authenticated:
            self.max_frame, self.deadline = MAX_FRAME_BYTES, None
        else:
            self.max_frame = MAX_UNAUTHENTICATED_FRAME_BYTES
            self.deadline = _monotonic() + AUTHENTICATION_DEADLINE

    def expired(self) -> bool:
        return self.deadline is not None and _monotonic() > self.deadline

    def _refuse(self, why: str) -> None:
        log.warning("dropping a Raft connection: %s", why)
        self.disconnect()

    def _frame_ok(self) -> bool:
        buffer = self._TcpConnection__readBuffer
        if len(buffer) < 4:
            return True
        (size,) = struct.unpack("i", buffer[:4])
        if not 0 <= size <= self.max_frame:
            state = "an unauthenticated" if self.deadline is not None else "a"
            self._refuse(f"{state} peer announced a frame of {size} bytes (limit {self.max_frame})")
            return False
        return True

    def _TcpConnection__processRead(self) -> bool:
        if self.expired():
            self._refuse(f"the peer did not authenticate within {AUTHENTICATION_DEADLINE:g} s")
            return False
        more = super()._TcpConnection__processRead()
        if self.state == CONNECTION_STATE.DISCONNECTED or not self._frame_ok():
            return False
        if self.deadline is not None and len(self._TcpConnection__readBuffer) > self.max_frame + 4:
            return False  # let the handshake frames be parsed before reading more
        return more

    def _TcpConnection__processParseMessage(self) -> Any:
        if not self._frame_ok():
            return None
        return super()._TcpConnection__processParseMessage()


def _guard(connection: TcpConnection, *, authenticated: bool) -> None:
    if type(connection) is TcpConnection:
        connection.__class__ = _GuardedConnection
    if isinstance(connection, _GuardedConnection):
        connection._guard(authenticated=authenticated)


class GuardedTransport(TCPTransport):
    """TCPTransport whose connections are `_GuardedConnection`s; see the module docstring."""

    def _onNewIncomingConnection(self, conn: TcpConnection) -> None:
        _guard(conn, authenticated=False)
        super()._onNewIncomingConnection(conn)

    def _onIncomingMessageReceived(self, conn: TcpConnection, message: Any) -> None:
        super()._onIncomingMessageReceived(conn, message)
        if conn not in self._unknownConnections and conn.state != CONNECTION_STATE.DISCONNECTED:
            _guard(conn, authenticated=True)  # it proved the secret and named a cluster member

    def addNode(self, node: Any) -> None:
        super().addNode(node)
        conn = self._connections.get(node)
        if conn is not None:
            _guard(conn, authenticated=True)  # outgoing, to a configured peer: only the frame limit

    def _onTick(self) -> None:
        for conn in list(self._unknownConnections):
            if isinstance(conn, _GuardedConnection) and conn.expired():
                conn._refuse(f"the peer did not authenticate within {AUTHENTICATION_DEADLINE:g} s")
                self._unknownConnections.discard(conn)
        super()._onTick()
