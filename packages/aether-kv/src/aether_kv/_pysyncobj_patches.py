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
"""

from __future__ import annotations

from typing import Any

import pysyncobj.pickle as _pickle
from pysyncobj import SyncObj

PYSYNCOBJ_VERSION = "0.3.17"

# Every private or name-mangled pysyncobj name this package relies on, by the class or module holding it.
PRIVATE_NAMES: dict[str, tuple[str, ...]] = {
    "pysyncobj.syncobj.SyncObj": (
        "_SyncObj__onMessageReceived",
        "_SyncObj__getEntries",
        "_SyncObj__sendNextNodeIdx",
        "_isLeader",
    ),
    "pysyncobj.syncobj.SyncObj instance": (
        "_SyncObj__raftCurrentTerm",
        "_SyncObj__recvTransmission",
        "_SyncObj__leaderCommitIndex",
        "_SyncObj__raftLog",
        "_SyncObj__thread",
        "_SyncObj__mainThread",
    ),
    "pysyncobj.syncobj": ("createJournal",),
    "pysyncobj.journal.FileJournal instance": ("_FileJournal__journalFile",),
    "pysyncobj.journal.ResizableFile instance": ("_ResizableFile__f",),
    "pysyncobj.transport.TCPTransport instance": ("_syncObj",),
}


# ---------------------------------------------------------------- append entries


class PatchedSyncObj(SyncObj):
    """SyncObj with the fixes listed in the module docstring. Runs on pysyncobj's tick thread."""

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
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
