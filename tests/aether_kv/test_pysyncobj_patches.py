"""The patch layer over pysyncobj (`aether_kv._pysyncobj_patches`): the pinned version, every private name
it relies on, and the append-entries fix, driven through the real handler of a real SyncObj."""

from __future__ import annotations

import importlib
import logging
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.journal import FileJournal
from pysyncobj.syncobj import _RAFT_STATE
from pysyncobj.version import VERSION

import aether_kv._pysyncobj_patches as patches
from aether_kv import RaftConfig
from aether_kv._ports import free_port
from aether_kv._pysyncobj_patches import PRIVATE_NAMES, PYSYNCOBJ_VERSION, PatchedSyncObj
from aether_kv._raft import RaftReplica

REPO = Path(__file__).resolve().parents[2]
NO_OP = struct.pack("B", 1)  # pysyncobj's _COMMAND_TYPE.NO_OP: applies to nothing


def test_pysyncobj_is_pinned_to_the_patched_version() -> None:
    pyproject = (REPO / "packages/aether-kv/pyproject.toml").read_text()
    assert re.search(rf'"pysyncobj=={re.escape(PYSYNCOBJ_VERSION)}"', pyproject), "pin the patched version"
    assert VERSION == PYSYNCOBJ_VERSION, (
        f"installed pysyncobj {VERSION}, patches written for {PYSYNCOBJ_VERSION}"
    )


def _resolve(dotted: str) -> Any:
    module_name, _, attribute = dotted.rpartition(".")
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError:
        return getattr(importlib.import_module(module_name), attribute)


def test_every_private_pysyncobj_name_the_patches_rely_on_exists(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    replica = RaftReplica(
        RaftConfig(raft_address=address, peers=(address,), data_dir=tmp_path, secret="a-test-secret")
    )
    try:
        syncobj = replica._obj
        journal = syncobj._SyncObj__raftLog._inner
        upstream_journal = FileJournal(str(tmp_path / "upstream.journal"))
        instances = {
            "pysyncobj.syncobj.SyncObj instance": syncobj,
            "pysyncobj.journal.FileJournal instance": upstream_journal,  # (`_journal._Journal` sets them)
            "pysyncobj.journal.ResizableFile instance": journal._FileJournal__journalFile,
            "pysyncobj.transport.TCPTransport instance": syncobj._SyncObj__transport,
            "pysyncobj.serializer.Serializer instance": syncobj._SyncObj__serializer,
            "pysyncobj.tcp_connection.TcpConnection instance": _a_connection(),
            "pysyncobj.fast_queue.FastQueue instance": syncobj._commands._inner,
        }
        missing = []
        for holder, names in PRIVATE_NAMES.items():
            target = instances[holder] if holder.endswith(" instance") else _resolve(holder)
            missing += [f"{holder}.{name}" for name in names if not hasattr(target, name)]
        assert not missing, f"pysyncobj {VERSION} lacks names the patches rely on: {missing}"
    finally:
        replica.close()


PRIVATE_NAME = r"\b_(?:SyncObj|FileJournal|ResizableFile|TcpConnection|FastQueue|Serializer)__\w+"


def test_the_private_name_list_covers_what_the_code_uses() -> None:
    """Every `_Class__name` spelled in the package's source is listed (so the test above checks it)."""
    source = REPO / "packages/aether-kv/src/aether_kv"
    used = set()
    for path in source.glob("*.py"):
        used |= set(re.findall(PRIVATE_NAME, path.read_text()))
    listed = {name for names in PRIVATE_NAMES.values() for name in names}
    assert used <= listed, f"used but not listed in PRIVATE_NAMES: {sorted(used - listed)}"


def _a_connection() -> Any:
    from pysyncobj.poller import createPoller
    from pysyncobj.tcp_connection import TcpConnection

    return TcpConnection(createPoller("auto"))


# ---------------------------------------------------------------- append entries


@pytest.fixture
def follower_classes() -> Iterator[list[SyncObj]]:
    built: list[SyncObj] = []
    yield built
    for obj in built:
        obj.destroy()
        obj._onTick(0)  # upstream finishes destroying on its next tick


def _follower(cls: type[SyncObj], built: list[SyncObj]) -> SyncObj:
    """A real SyncObj (no tick thread, in-memory journal) that has a peer it never reaches: the test
    plays the leader by handing its append-entries handler messages."""
    conf = SyncObjConf(autoTick=False, raftMinTimeout=60, raftMaxTimeout=61, connectionTimeout=120)
    obj = cls(f"127.0.0.1:{free_port()}", [f"127.0.0.1:{free_port()}"], conf)
    built.append(obj)
    return obj


def _leader(obj: SyncObj) -> Any:
    return next(iter(obj.otherNodes))


def _append(
    obj: SyncObj, *, term: int, prev: tuple[int, int], entries: list[tuple[int, int]], commit: int
) -> None:
    obj._SyncObj__onMessageReceived(
        _leader(obj),
        {
            "type": "append_entries",
            "term": term,
            "commit_index": commit,
            "prevLogIdx": prev[0],
            "prevLogTerm": prev[1],
            "entries": [(NO_OP, index, entry_term) for index, entry_term in entries],
        },
    )
    obj._onTick(0)  # apply what is committed


def _log(obj: SyncObj) -> list[tuple[int, int]]:
    journal = obj._SyncObj__raftLog
    return [(journal[i][1], journal[i][2]) for i in range(len(journal))]


def _applied(obj: SyncObj) -> tuple[list[tuple[int, int]], int, int]:
    return _log(obj), obj.raftCommitIndex, obj.raftLastApplied


def test_a_resent_overlapping_batch_keeps_the_applied_entries(
    follower_classes: list[SyncObj], caplog: pytest.LogCaptureFixture
) -> None:
    """The leader resends entries 2-3 (its next index moved back) after the follower applied 2-4."""
    caplog.set_level(logging.WARNING, logger="pysyncobj")
    follower = _follower(PatchedSyncObj, follower_classes)
    _append(follower, term=1, prev=(1, 0), entries=[(2, 1), (3, 1), (4, 1)], commit=4)
    assert _applied(follower) == ([(1, 0), (2, 1), (3, 1), (4, 1)], 4, 4)

    _append(follower, term=1, prev=(1, 0), entries=[(2, 1), (3, 1)], commit=4)
    _append(follower, term=1, prev=(2, 1), entries=[], commit=4)  # a heartbeat behind the follower's log

    assert _applied(follower) == ([(1, 0), (2, 1), (3, 1), (4, 1)], 4, 4)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.CRITICAL]


def test_upstream_truncates_the_same_applied_entries(
    follower_classes: list[SyncObj], caplog: pytest.LogCaptureFixture
) -> None:
    """The control: unpatched pysyncobj deletes entry 4 and says so (if this fails, upstream fixed it and
    the patch can go)."""
    caplog.set_level(logging.WARNING, logger="pysyncobj")
    follower = _follower(SyncObj, follower_classes)
    _append(follower, term=1, prev=(1, 0), entries=[(2, 1), (3, 1), (4, 1)], commit=4)
    _append(follower, term=1, prev=(1, 0), entries=[(2, 1), (3, 1)], commit=4)
    assert _log(follower) == [(1, 0), (2, 1), (3, 1)]
    assert any("truncating already-applied" in r.getMessage() for r in caplog.records)


def test_a_conflicting_entry_is_replaced_from_the_first_conflict_on(follower_classes: list[SyncObj]) -> None:
    follower = _follower(PatchedSyncObj, follower_classes)
    _append(follower, term=1, prev=(1, 0), entries=[(2, 1), (3, 1), (4, 1)], commit=2)
    # A new leader (term 2) holds 3 from term 1 but wrote its own 4 and 5.
    _append(follower, term=2, prev=(2, 1), entries=[(3, 1), (4, 2), (5, 2)], commit=2)
    assert _applied(follower) == ([(1, 0), (2, 1), (3, 1), (4, 2), (5, 2)], 2, 2)
    _append(follower, term=2, prev=(5, 2), entries=[], commit=5)
    assert _applied(follower) == ([(1, 0), (2, 1), (3, 1), (4, 2), (5, 2)], 5, 5)


def test_matching_entries_do_not_commit_what_the_leader_did_not_send(follower_classes: list[SyncObj]) -> None:
    """Entries past the last one the leader sent are kept but not known to be the leader's: the commit
    index stops at the last entry sent (Raft: min(leaderCommit, index of last new entry))."""
    follower = _follower(PatchedSyncObj, follower_classes)
    _append(follower, term=1, prev=(1, 0), entries=[(2, 1), (3, 1), (4, 1)], commit=1)
    _append(follower, term=2, prev=(2, 1), entries=[(3, 1)], commit=10)
    assert _applied(follower) == ([(1, 0), (2, 1), (3, 1), (4, 1)], 3, 3)
    assert follower.raftCurrentTerm == 2
    assert follower.getStatus()["leader_commit_idx"] == 10


def test_a_stale_leader_changes_nothing(follower_classes: list[SyncObj]) -> None:
    follower = _follower(PatchedSyncObj, follower_classes)
    _append(follower, term=3, prev=(1, 0), entries=[(2, 3), (3, 3)], commit=2)
    _append(follower, term=2, prev=(1, 0), entries=[(2, 2)], commit=2)
    assert _applied(follower) == ([(1, 0), (2, 3), (3, 3)], 2, 2)


# ---------------------------------------------------------------- acknowledgements of heartbeats


def _record_sends(follower: SyncObj, sent: list[dict[str, Any]]) -> None:
    """Messages go to `sent`; the fake leader, never reached, does not count as a link that dropped."""
    transport = follower._SyncObj__transport
    transport.send = lambda node, message: sent.append(message) or True
    transport.setOnNodeDisconnectedCallback(lambda node: None)


def test_a_follower_repeats_an_unchanged_acknowledgement_only_every_ack_repeat(
    follower_classes: list[SyncObj], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Heartbeats that change nothing are answered once per ACK_REPEAT (the leader's check-quorum still
    hears from the follower); progress, a failure and a new term are answered at once."""
    now = [1000.0]
    monkeypatch.setattr(patches, "_monotonic", lambda: now[0])
    follower = _follower(PatchedSyncObj, follower_classes)
    sent: list[dict[str, Any]] = []
    _record_sends(follower, sent)

    def answers() -> list[tuple[int, bool, bool]]:
        found = [(m["next_node_idx"], m["success"], m["reset"]) for m in sent if m["type"] == "next_node_idx"]
        sent.clear()
        return found

    _append(follower, term=1, prev=(1, 0), entries=[(2, 1)], commit=1)
    assert answers() == [(3, True, False)]
    for _ in range(5):  # idle heartbeats within ACK_REPEAT: the leader knows all this already
        now[0] += patches.ACK_REPEAT / 10
        _append(follower, term=1, prev=(2, 1), entries=[], commit=2)
    assert answers() == []
    now[0] += patches.ACK_REPEAT
    _append(follower, term=1, prev=(2, 1), entries=[], commit=2)
    assert answers() == [(3, True, False)]  # the repeat check-quorum needs
    _append(follower, term=1, prev=(2, 1), entries=[(3, 1)], commit=2)
    assert answers() == [(4, True, False)]  # progress: at once
    _append(follower, term=1, prev=(9, 1), entries=[], commit=2)
    assert answers() == [(4, False, True)]  # a gap: the failure at once
    _append(follower, term=1, prev=(3, 1), entries=[], commit=3)
    assert answers() == [(4, True, False)]  # after a failure, the success again at once
    _append(follower, term=2, prev=(3, 1), entries=[], commit=3)
    assert answers() == [(4, True, False)]  # a new term (maybe a new leader): at once


def test_the_first_acknowledgement_after_the_link_dropped_is_sent_again(
    follower_classes: list[SyncObj], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(patches, "_monotonic", lambda: 1000.0)  # the clock stands still: no repeat is due
    follower = _follower(PatchedSyncObj, follower_classes)
    sent: list[dict[str, Any]] = []
    _record_sends(follower, sent)
    _append(follower, term=1, prev=(1, 0), entries=[(2, 1)], commit=1)
    _append(follower, term=1, prev=(2, 1), entries=[], commit=2)
    assert len([m for m in sent if m["type"] == "next_node_idx"]) == 1
    follower._SyncObj__onNodeDisconnected(_leader(follower))  # the answer may have been lost with the link
    _append(follower, term=1, prev=(2, 1), entries=[], commit=2)
    assert len([m for m in sent if m["type"] == "next_node_idx"]) == 2


# ---------------------------------------------------------------- pre-vote


def _pre_vote(follower: SyncObj, term: int) -> None:
    follower._SyncObj__onMessageReceived(
        _leader(follower),
        {"type": "pre_vote", "term": term, "last_log_index": 99, "last_log_term": 99},
    )


@pytest.mark.parametrize("catching_up", [False, True], ids=["a follower", "a replica catching up"])
def test_no_election_starts_in_a_tick_whose_pre_vote_check_allowed_none(
    follower_classes: list[SyncObj], catching_up: bool
) -> None:
    """Item 3 (and 16): the election deadline runs out between the pre-vote check and upstream's own test
    of it, a slow fsync of the journal in between (`before_commit_check`): upstream held an election
    then, without a pre-vote round, and a replica catching up stood (seen: one was elected over the
    leader's log, and an acknowledged entry truncated on the replica that held it). Now that tick holds
    no election; the next one holds a pre-vote round, or, catching up, stands aside."""
    follower = _follower(PatchedSyncObj, follower_classes)
    follower.catching_up = catching_up  # (with its one peer not catching up: it withholds)
    follower._SyncObj__connectedToAnyone = lambda: True  # (upstream elects only with a link up)
    sent: list[dict[str, Any]] = []
    _record_sends(follower, sent)
    deadline = patches._monotonic() + 0.005
    follower._SyncObj__raftElectionDeadline = deadline
    follower.before_commit_check = lambda: time.sleep(0.02)  # the journal's fsync, slow
    follower._onTick(0)
    assert follower._SyncObj__raftState == _RAFT_STATE.FOLLOWER
    assert not [m for m in sent if m["type"] == "request_vote"]
    assert follower._SyncObj__raftElectionDeadline == deadline  # given back, not moved
    follower.before_commit_check = lambda: None
    follower._onTick(0)
    assert follower._SyncObj__raftState == _RAFT_STATE.FOLLOWER
    assert [m["type"] for m in sent if m["type"] != "catching_up"] == ([] if catching_up else ["pre_vote"])


def test_a_tick_that_raises_gives_the_held_election_deadline_back(follower_classes: list[SyncObj]) -> None:
    """Item 3: a tick that ends in an error after the deadline was held back (a leader call's callback,
    the journal's fsync) gives it back: left at infinity, the follower would never stand again."""
    follower = _follower(PatchedSyncObj, follower_classes)
    _record_sends(follower, [])
    deadline = patches._monotonic() + 30
    follower._SyncObj__raftElectionDeadline = deadline

    def failing_sync() -> None:
        raise OSError(5, "Input/output error")

    follower.before_commit_check = failing_sync
    with pytest.raises(OSError):
        follower._onTick(0)
    assert follower._SyncObj__raftElectionDeadline == deadline
    follower.before_commit_check = lambda: None
    follower._onTick(0)
    assert follower._SyncObj__raftElectionDeadline == deadline


def test_granting_a_pre_vote_puts_the_replicas_own_election_off_and_a_refusal_does_not(
    follower_classes: list[SyncObj], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 3 (and 10): a replica that says yes to a pre-vote expects the asker's election and moves its
    own election deadline to at least an election timeout ahead, as a vote granted does; one that says
    no (it heard from a leader lately) leaves its deadline as it was."""
    now = [1000.0]
    monkeypatch.setattr(patches, "_monotonic", lambda: now[0])
    follower = _follower(PatchedSyncObj, follower_classes)  # election timeout 60-61 s
    sent: list[dict[str, Any]] = []
    _record_sends(follower, sent)
    term = follower._SyncObj__raftCurrentTerm

    follower._SyncObj__raftElectionDeadline = now[0] + 0.1  # its own election is due in 0.1 s
    _pre_vote(follower, term + 1)
    assert [(m["type"], m["granted"]) for m in sent] == [("pre_vote_response", True)]
    assert follower._SyncObj__raftElectionDeadline >= now[0] + 60  # put off by an election timeout

    sent.clear()
    _append(follower, term=term + 1, prev=(1, 0), entries=[], commit=0)  # a leader is heard from
    follower._SyncObj__raftElectionDeadline = deadline = now[0] + 0.1
    now[0] += 1  # within an election timeout of that leader
    _pre_vote(follower, term + 2)
    assert [(m["type"], m["granted"]) for m in sent if m["type"] == "pre_vote_response"] == [
        ("pre_vote_response", False)
    ]
    assert follower._SyncObj__raftElectionDeadline == deadline
