"""Unit tests of the pure state machine `KVState`: revisions, ranges, transactions, leases, watch history,
validation, and model-based properties (hypothesis) against a plain dict.

No processes, no clocks: time is a command argument, so every test is a handful of `apply` calls.
"""

from __future__ import annotations

import itertools
import math
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aether_kv._errors import CompactedError, KVError
from aether_kv._records import (
    MAX_KEY_BYTES,
    MAX_LEASE_TTL,
    MAX_TXN_OPS,
    MAX_VALUE_BYTES,
    Barrier,
    BarrierResult,
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    DeletePrefix,
    DeleteResult,
    ErrorResult,
    Event,
    EventKind,
    Get,
    GetResult,
    KeyValue,
    LeaseExpire,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseResult,
    LeaseRevoke,
    Put,
    PutResult,
    Range,
    RangeResult,
    RevokeResult,
    Txn,
    TxnResult,
)
from aether_kv._state import KVState, prefix_end

MAX_CHAR = chr(0x10FFFF)
EQ, NE, LT, GT = CompareOp.EQ, CompareOp.NE, CompareOp.LT, CompareOp.GT


# ------------------------------------------------------------------------ helpers


def snapshot(state: KVState) -> tuple[Any, ...]:
    """Everything observable about a state, as plain comparable values (KVState has no __eq__)."""
    return (
        state.revision,
        state.compact_revision,
        state.next_lease_id,
        state.history_events,
        dict(state.data),
        {lid: (lease.ttl, lease.expires_at, frozenset(lease.keys)) for lid, lease in state.leases.items()},
        list(state.history),
    )


def ok(state: KVState, command: Any) -> Any:
    """Apply `command`, failing the test if the state machine answered with an error."""
    result = state.apply(command)
    assert not isinstance(result, ErrorResult), result
    return result


def put(state: KVState, key: str, value: bytes = b"v", lease: int = 0) -> PutResult:
    result = ok(state, Put(key=key, value=value, lease=lease))
    assert isinstance(result, PutResult)
    return result


def grant(state: KVState, ttl: float = 10.0, now: float = 100.0) -> int:
    result = ok(state, LeaseGrant(ttl=ttl, now=now))
    assert isinstance(result, LeaseResult)
    return result.lease


def keys(state: KVState, prefix: str = "", limit: int = 0) -> list[str]:
    return [kv.key for kv in state.range(prefix, limit).kvs]


def replay(events: list[Event], start: dict[str, bytes] | None = None) -> dict[str, bytes]:
    data = dict(start or {})
    for event in events:
        if event.kind is EventKind.PUT:
            data[event.kv.key] = event.kv.value
        else:
            del data[event.kv.key]
    return data


# ------------------------------------------------------------------------ revisions


def test_fresh_state_is_empty() -> None:
    state = KVState()
    assert state.revision == 0
    assert state.compact_revision == 0
    assert state.get("k") == GetResult(kv=None, revision=0)
    assert state.range("") == RangeResult(kvs=(), revision=0, more=False)
    assert state.events_since("", 1) == []
    assert state.expired_leases(1e12) == []


def test_put_creates_then_updates_with_etcd_metadata() -> None:
    state = KVState()
    first = put(state, "k", b"one")
    assert first == PutResult(revision=1, prev=None)
    created = state.get("k").kv
    assert created == KeyValue(key="k", value=b"one", create_revision=1, mod_revision=1, version=1, lease=0)

    put(state, "other")
    second = put(state, "k", b"two")
    assert second == PutResult(revision=3, prev=created)
    assert state.get("k") == GetResult(
        kv=KeyValue(key="k", value=b"two", create_revision=1, mod_revision=3, version=2), revision=3
    )
    # writing another key leaves this one alone
    assert state.get("other").kv == KeyValue(
        key="other", value=b"v", create_revision=2, mod_revision=2, version=1
    )


def test_putting_the_same_value_still_bumps_revision_and_version() -> None:
    state = KVState()
    put(state, "k", b"same")
    put(state, "k", b"same")
    kv = state.get("k").kv
    assert state.revision == 2
    assert kv is not None and (kv.version, kv.mod_revision, kv.create_revision) == (2, 2, 1)


def test_delete_then_recreate_resets_version_and_create_revision() -> None:
    state = KVState()
    put(state, "k", b"a")
    put(state, "k", b"b")
    deleted = ok(state, Delete(key="k"))
    assert deleted == DeleteResult(
        deleted=1,
        revision=3,
        prev=(KeyValue(key="k", value=b"b", create_revision=1, mod_revision=2, version=2),),
    )
    assert state.get("k") == GetResult(kv=None, revision=3)
    assert put(state, "k", b"c") == PutResult(revision=4, prev=None)
    assert state.get("k").kv == KeyValue(key="k", value=b"c", create_revision=4, mod_revision=4, version=1)


def test_delete_of_absent_key_does_not_bump_revision() -> None:
    state = KVState()
    put(state, "k")
    before = snapshot(state)
    assert ok(state, Delete(key="absent")) == DeleteResult(deleted=0, revision=1, prev=())
    assert snapshot(state) == before


def test_delete_prefix_matching_nothing_does_not_bump_revision() -> None:
    state = KVState()
    put(state, "a/1")
    before = snapshot(state)
    assert ok(state, DeletePrefix(prefix="b/")) == DeleteResult(deleted=0, revision=1, prev=())
    assert snapshot(state) == before


def test_delete_prefix_deletes_exactly_the_prefix_in_one_revision() -> None:
    state = KVState()
    for key in ("a", "a/1", "a/2", "a0", "b/1"):
        put(state, key)
    result = ok(state, DeletePrefix(prefix="a/"))
    assert isinstance(result, DeleteResult)
    assert result.deleted == 2
    assert result.revision == 6 == state.revision
    assert [kv.key for kv in result.prev] == ["a/1", "a/2"]
    assert keys(state) == ["a", "a0", "b/1"]
    assert [e.revision for e in state.events_since("", 6)] == [6, 6]


def test_delete_prefix_with_empty_prefix_deletes_everything() -> None:
    state = KVState()
    for key in ("x", "y", MAX_CHAR):
        put(state, key)
    result = ok(state, DeletePrefix(prefix=""))
    assert isinstance(result, DeleteResult)
    assert result.deleted == 3
    assert state.range("").kvs == ()
    assert state.revision == 4


def test_txn_with_several_writes_bumps_revision_once() -> None:
    state = KVState()
    put(state, "gone")
    result = ok(
        state,
        Txn(success=(Put(key="a", value=b"1"), Put(key="b", value=b"2"), Delete(key="gone"))),
    )
    assert isinstance(result, TxnResult)
    assert result.succeeded
    assert result.revision == 2 == state.revision
    assert result.results[0] == PutResult(revision=2, prev=None)
    assert result.results[1] == PutResult(revision=2, prev=None)
    assert isinstance(result.results[2], DeleteResult) and result.results[2].revision == 2
    assert {kv.key: kv.mod_revision for kv in state.range("").kvs} == {"a": 2, "b": 2}
    assert [(e.kind, e.kv.key, e.revision) for e in state.events_since("", 2)] == [
        (EventKind.PUT, "a", 2),
        (EventKind.PUT, "b", 2),
        (EventKind.DELETE, "gone", 2),
    ]


def test_failed_compare_txn_without_failure_ops_does_not_bump_revision() -> None:
    state = KVState()
    put(state, "k")
    before = snapshot(state)
    result = ok(
        state,
        Txn(
            compares=(Compare(key="k", target=CompareTarget.EXISTS, operand=False),),
            success=(Put(key="k", value=b"new"),),
        ),
    )
    assert result == TxnResult(succeeded=False, results=(), revision=1)
    assert snapshot(state) == before


def test_read_only_txn_and_empty_txn_do_not_bump_revision() -> None:
    state = KVState()
    put(state, "k")
    before = snapshot(state)
    assert ok(state, Txn()) == TxnResult(succeeded=True, results=(), revision=1)
    result = ok(state, Txn(success=(Get(key="k"), Range(prefix=""), Delete(key="absent"))))
    assert isinstance(result, TxnResult) and result.revision == 1
    assert snapshot(state) == before


def test_barrier_reports_revision_and_changes_nothing() -> None:
    state = KVState()
    put(state, "k")
    before = snapshot(state)
    assert state.apply(Barrier()) == BarrierResult(revision=1)
    assert snapshot(state) == before


def test_lease_grant_and_keepalive_do_not_bump_revision() -> None:
    state = KVState()
    put(state, "k")
    lease = grant(state)
    ok(state, LeaseKeepAlive(lease=lease, now=105.0))
    assert state.revision == 1
    assert state.events_since("", 1)[-1].revision == 1


# ------------------------------------------------------------------------ range


def test_range_returns_prefix_matches_in_sorted_order() -> None:
    state = KVState()
    for key in ("b", "a/2", "a", "a/10", "a/1", "ab", "c"):
        put(state, key)
    assert keys(state) == ["a", "a/1", "a/10", "a/2", "ab", "b", "c"]
    assert keys(state, "a/") == ["a/1", "a/10", "a/2"]
    assert keys(state, "a") == ["a", "a/1", "a/10", "a/2", "ab"]
    assert keys(state, "a/1") == ["a/1", "a/10"]
    assert keys(state, "zz") == []
    assert state.range("a/").revision == state.revision == 7


@pytest.mark.parametrize(
    ("limit", "expected", "more"),
    [
        (0, ["p/a", "p/b", "p/c"], False),
        (1, ["p/a"], True),
        (2, ["p/a", "p/b"], True),
        (3, ["p/a", "p/b", "p/c"], False),
        (10, ["p/a", "p/b", "p/c"], False),
    ],
)
def test_range_limit_and_more_flag(limit: int, expected: list[str], more: bool) -> None:
    state = KVState()
    for key in ("p/c", "p/a", "q", "p/b", "o"):
        put(state, key)
    result = state.range("p/", limit)
    assert [kv.key for kv in result.kvs] == expected
    assert result.more is more


def test_range_with_max_code_point_at_end_of_prefix() -> None:
    state = KVState()
    all_keys = [
        "a",
        "a" + MAX_CHAR,
        "a" + MAX_CHAR + "z",
        "a" + MAX_CHAR + MAX_CHAR,
        "b",
        MAX_CHAR,
        MAX_CHAR + "x",
        MAX_CHAR + MAX_CHAR,
    ]
    for key in all_keys:
        put(state, key)
    assert keys(state, "a" + MAX_CHAR) == ["a" + MAX_CHAR, "a" + MAX_CHAR + "z", "a" + MAX_CHAR + MAX_CHAR]
    assert keys(state, MAX_CHAR) == [MAX_CHAR, MAX_CHAR + "x", MAX_CHAR + MAX_CHAR]
    assert keys(state, MAX_CHAR + MAX_CHAR) == [MAX_CHAR + MAX_CHAR]
    assert keys(state, "a" + MAX_CHAR, limit=2) == ["a" + MAX_CHAR, "a" + MAX_CHAR + "z"]
    assert keys(state) == sorted(all_keys)
    # and deleting by such a prefix hits exactly the same keys
    result = ok(state, DeletePrefix(prefix="a" + MAX_CHAR))
    assert isinstance(result, DeleteResult) and result.deleted == 3
    assert keys(state) == ["a", "b", MAX_CHAR, MAX_CHAR + "x", MAX_CHAR + MAX_CHAR]


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        ("", None),
        ("a", "b"),
        ("ab", "ac"),
        ("a" + MAX_CHAR, "b"),
        ("ab" + MAX_CHAR + MAX_CHAR, "ac"),
        (MAX_CHAR, None),
        (MAX_CHAR * 3, None),
        ("\ud7ff", "\ud800"),
    ],
)
def test_prefix_end(prefix: str, end: str | None) -> None:
    assert prefix_end(prefix) == end


KEY_CHARS = st.sampled_from(["a", "b", "\x01", "\x7f", "é", "\uffff", "\U00010000", MAX_CHAR])
EDGE_KEYS = st.text(KEY_CHARS, min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(
    all_keys=st.sets(EDGE_KEYS, max_size=12),
    prefix=st.text(KEY_CHARS, max_size=3),
    limit=st.integers(0, 5),
)
def test_range_matches_filtering_a_sorted_list(all_keys: set[str], prefix: str, limit: int) -> None:
    state = KVState()
    for key in all_keys:
        put(state, key)
    matching = sorted(k for k in all_keys if k.startswith(prefix))
    expected = matching[:limit] if limit else matching
    result = state.range(prefix, limit)
    assert [kv.key for kv in result.kvs] == expected
    assert result.more == (bool(limit) and len(matching) > limit)


# ------------------------------------------------------------------------ transactions


def _txn_fixture() -> KVState:
    """k: value b"v2", create_revision 1, mod_revision 3, version 2; current revision 3."""
    state = KVState()
    put(state, "k", b"v1")
    put(state, "other")
    put(state, "k", b"v2")
    return state


def cmp(target: CompareTarget, op: CompareOp, operand: bytes | int | bool, key: str = "k") -> Compare:
    return Compare(key=key, target=target, op=op, operand=operand)


EXISTS, VALUE, VERSION = CompareTarget.EXISTS, CompareTarget.VALUE, CompareTarget.VERSION
MOD, CREATE = CompareTarget.MOD_REVISION, CompareTarget.CREATE_REVISION

COMPARE_CASES = [
    # present key "k"
    (cmp(EXISTS, EQ, True), True),
    (cmp(EXISTS, EQ, False), False),
    (cmp(EXISTS, NE, False), True),
    (cmp(EXISTS, NE, True), False),
    (cmp(VALUE, EQ, b"v2"), True),
    (cmp(VALUE, EQ, b"v1"), False),
    (cmp(VALUE, NE, b"v1"), True),
    (cmp(VALUE, NE, b"v2"), False),
    (cmp(VALUE, LT, b"v3"), True),
    (cmp(VALUE, LT, b"v2"), False),
    (cmp(VALUE, GT, b"v1"), True),
    (cmp(VALUE, GT, b"v2"), False),
    (cmp(VALUE, GT, b""), True),
    (cmp(VERSION, EQ, 2), True),
    (cmp(VERSION, EQ, 1), False),
    (cmp(VERSION, NE, 1), True),
    (cmp(VERSION, NE, 2), False),
    (cmp(VERSION, LT, 3), True),
    (cmp(VERSION, LT, 2), False),
    (cmp(VERSION, GT, 1), True),
    (cmp(VERSION, GT, 2), False),
    (cmp(MOD, EQ, 3), True),
    (cmp(MOD, EQ, 1), False),
    (cmp(MOD, NE, 1), True),
    (cmp(MOD, LT, 4), True),
    (cmp(MOD, LT, 3), False),
    (cmp(MOD, GT, 2), True),
    (cmp(MOD, GT, 3), False),
    (cmp(CREATE, EQ, 1), True),
    (cmp(CREATE, EQ, 3), False),
    (cmp(CREATE, NE, 3), True),
    (cmp(CREATE, NE, 1), False),
    (cmp(CREATE, LT, 2), True),
    (cmp(CREATE, LT, 1), False),
    (cmp(CREATE, GT, 0), True),
    (cmp(CREATE, GT, 1), False),
    # absent key: exists False, version/mod/create 0; any value comparison but != fails
    (cmp(EXISTS, EQ, False, key="absent"), True),
    (cmp(EXISTS, EQ, True, key="absent"), False),
    (cmp(VERSION, EQ, 0, key="absent"), True),
    (cmp(VERSION, GT, 0, key="absent"), False),
    (cmp(MOD, EQ, 0, key="absent"), True),
    (cmp(MOD, LT, 1, key="absent"), True),
    (cmp(CREATE, EQ, 0, key="absent"), True),
    (cmp(CREATE, NE, 0, key="absent"), False),
    (cmp(VALUE, EQ, b"", key="absent"), False),
    (cmp(VALUE, LT, b"zzz", key="absent"), False),
    (cmp(VALUE, GT, b"", key="absent"), False),
    (cmp(VALUE, NE, b"x", key="absent"), True),
]


@pytest.mark.parametrize(
    ("compare", "holds"), COMPARE_CASES, ids=lambda v: repr(v) if isinstance(v, bool) else None
)
def test_compare(compare: Compare, holds: bool) -> None:
    state = _txn_fixture()
    result = ok(
        state,
        Txn(
            compares=(compare,),
            success=(Put(key="branch", value=b"success"),),
            failure=(Put(key="branch", value=b"failure"),),
        ),
    )
    assert isinstance(result, TxnResult)
    assert result.succeeded is holds
    branch = state.get("branch").kv
    assert branch is not None and branch.value == (b"success" if holds else b"failure")
    assert state.revision == 4


def test_all_compares_must_hold() -> None:
    state = _txn_fixture()
    both = (cmp(VERSION, EQ, 2), cmp(EXISTS, EQ, True, key="other"))
    one_fails = (cmp(VERSION, EQ, 2), cmp(EXISTS, EQ, True, key="absent"))
    assert ok(state, Txn(compares=both)).succeeded is True
    assert ok(state, Txn(compares=one_fails)).succeeded is False


@pytest.mark.parametrize(
    "absent", [cmp(VERSION, EQ, 0, key="lock"), cmp(EXISTS, EQ, False, key="lock")], ids=["version", "exists"]
)
def test_create_if_absent(absent: Compare) -> None:
    state = KVState()
    txn = Txn(
        compares=(absent,),
        success=(Put(key="lock", value=b"me"),),
        failure=(Get(key="lock"),),
    )
    first = ok(state, txn)
    assert first == TxnResult(succeeded=True, results=(PutResult(revision=1, prev=None),), revision=1)

    second = ok(state, Txn(compares=(absent,), success=(Put(key="lock", value=b"you"),), failure=txn.failure))
    assert isinstance(second, TxnResult)
    assert second.succeeded is False
    assert second.revision == 1
    holder = state.get("lock").kv
    assert holder is not None and holder.value == b"me"
    assert second.results == (GetResult(kv=holder, revision=1),)


def test_compare_and_swap_on_value() -> None:
    state = KVState()
    put(state, "counter", b"1")

    def cas(old: bytes, new: bytes) -> bool:
        result = ok(
            state,
            Txn(compares=(cmp(VALUE, EQ, old, key="counter"),), success=(Put(key="counter", value=new),)),
        )
        assert isinstance(result, TxnResult)
        return result.succeeded

    assert cas(b"1", b"2") is True
    assert state.revision == 2
    assert cas(b"1", b"3") is False  # stale: nothing changes
    assert state.revision == 2
    kv = state.get("counter").kv
    assert kv is not None and (kv.value, kv.version) == (b"2", 2)


def test_compare_and_swap_on_mod_revision() -> None:
    state = KVState()
    seen = put(state, "k", b"a").revision
    put(state, "k", b"b")  # someone else wrote in between
    result = ok(state, Txn(compares=(cmp(MOD, EQ, seen),), success=(Put(key="k", value=b"mine"),)))
    assert isinstance(result, TxnResult) and result.succeeded is False
    kv = state.get("k").kv
    assert kv is not None and kv.value == b"b"


def test_failure_branch_runs_its_writes_atomically() -> None:
    state = KVState()
    put(state, "x", b"1")
    result = ok(
        state,
        Txn(
            compares=(cmp(VALUE, EQ, b"nope", key="x"),),
            success=(Put(key="s", value=b"s"),),
            failure=(Put(key="f1", value=b"1"), Delete(key="x"), Put(key="f2", value=b"2")),
        ),
    )
    assert isinstance(result, TxnResult)
    assert result.succeeded is False
    assert result.revision == 2
    assert keys(state) == ["f1", "f2"]
    assert {e.revision for e in state.events_since("", 2)} == {2}


def test_reads_inside_txn_see_earlier_writes_of_the_same_txn() -> None:
    state = KVState()
    put(state, "p/old", b"old")
    result = ok(
        state,
        Txn(
            success=(
                Get(key="p/new"),
                Put(key="p/new", value=b"new"),
                Get(key="p/new"),
                Delete(key="p/old"),
                Get(key="p/old"),
                Range(prefix="p/"),
            )
        ),
    )
    assert isinstance(result, TxnResult)
    before, _, after, _, deleted, ranged = result.results
    assert isinstance(before, GetResult) and before.kv is None
    assert isinstance(after, GetResult) and after.kv is not None
    assert (after.kv.value, after.kv.mod_revision, after.kv.version) == (b"new", 2, 1)
    assert isinstance(deleted, GetResult) and deleted.kv is None
    assert isinstance(ranged, RangeResult) and [kv.key for kv in ranged.kvs] == ["p/new"]
    assert state.revision == 2


def test_same_key_in_success_and_failure_is_allowed() -> None:
    state = KVState()
    result = ok(
        state,
        Txn(
            compares=(cmp(EXISTS, EQ, False),),
            success=(Put(key="k", value=b"s"),),
            failure=(Put(key="k", value=b"f"),),
        ),
    )
    assert isinstance(result, TxnResult) and result.succeeded


@pytest.mark.parametrize("branch", ["success", "failure"])
@pytest.mark.parametrize(
    "ops",
    [
        (Put(key="k", value=b"1"), Put(key="k", value=b"2")),
        (Put(key="k", value=b"1"), Delete(key="k")),
        (Delete(key="k"), Put(key="k", value=b"1")),
        (Delete(key="k"), Delete(key="k")),
        (Put(key="k", value=b"1"), Get(key="other"), Put(key="k", value=b"2")),
    ],
    ids=["put-put", "put-delete", "delete-put", "delete-delete", "put-get-put"],
)
def test_key_written_twice_in_one_branch_is_rejected(branch: str, ops: tuple[Any, ...]) -> None:
    state = KVState()
    put(state, "k", b"0")
    before = snapshot(state)
    # the compare selects `branch`, so a lenient implementation would actually run the duplicate writes
    txn = Txn(compares=(cmp(EXISTS, EQ, branch == "success"),), **{branch: ops})
    result = state.apply(txn)
    assert isinstance(result, ErrorResult)
    assert result.code == "invalid_request"
    assert f"txn.{branch}[{len(ops) - 1}].key" in result.message
    assert "'k'" in result.message
    assert snapshot(state) == before


def test_reading_a_key_twice_in_one_branch_is_fine() -> None:
    state = KVState()
    result = ok(state, Txn(success=(Get(key="k"), Put(key="k", value=b"1"), Get(key="k"))))
    assert isinstance(result, TxnResult) and len(result.results) == 3


def test_txn_over_the_op_limit_is_rejected() -> None:
    state = KVState()
    at_limit = Txn(success=tuple(Put(key=f"k{i}", value=b"") for i in range(MAX_TXN_OPS)))
    result = ok(state, at_limit)
    assert isinstance(result, TxnResult) and result.revision == 1
    before = snapshot(state)
    over = Txn(
        compares=(cmp(EXISTS, EQ, True),),
        success=tuple(Put(key=f"k{i}", value=b"") for i in range(MAX_TXN_OPS)),
    )
    rejected = state.apply(over)
    assert isinstance(rejected, ErrorResult) and rejected.code == "invalid_request"
    assert "txn" in rejected.message and str(MAX_TXN_OPS) in rejected.message
    assert snapshot(state) == before


# ------------------------------------------------------------------------ leases


def test_lease_grant_assigns_increasing_ids() -> None:
    state = KVState()
    results = [ok(state, LeaseGrant(ttl=5.0 + i, now=100.0)) for i in range(3)]
    assert [r.lease for r in results] == [1, 2, 3]
    assert results[0] == LeaseResult(lease=1, ttl=5.0, expires_at=105.0)
    assert results[2] == LeaseResult(lease=3, ttl=7.0, expires_at=107.0)
    # ids are never reused, even after a revoke
    ok(state, LeaseRevoke(lease=3))
    assert grant(state) == 4


def test_put_with_unknown_lease_is_rejected_and_changes_nothing() -> None:
    state = KVState()
    put(state, "k", b"old")
    revoked = grant(state)
    ok(state, LeaseRevoke(lease=revoked))
    before = snapshot(state)
    for lease in (99, revoked):
        result = state.apply(Put(key="k", value=b"new", lease=lease))
        assert isinstance(result, ErrorResult)
        assert result.code == "lease_not_found"
        assert str(lease) in result.message
        assert snapshot(state) == before
    # inside a txn the whole branch is refused, including the writes before the bad one
    result = state.apply(Txn(success=(Put(key="a", value=b"1"), Put(key="b", value=b"2", lease=99))))
    assert isinstance(result, ErrorResult) and result.code == "lease_not_found"
    assert snapshot(state) == before


def test_bad_lease_in_the_branch_not_taken_does_not_matter() -> None:
    state = KVState()
    result = ok(
        state,
        Txn(
            compares=(cmp(EXISTS, EQ, False),),
            success=(Put(key="k", value=b"1"),),
            failure=(Put(key="k", value=b"1", lease=99),),
        ),
    )
    assert isinstance(result, TxnResult) and result.succeeded


def test_put_with_lease_attaches_key() -> None:
    state = KVState()
    lease = grant(state)
    put(state, "k", lease=lease)
    kv = state.get("k").kv
    assert kv is not None and kv.lease == lease
    assert state.leases[lease].keys == {"k"}


def test_keepalive_extends_and_never_shortens() -> None:
    state = KVState()
    lease = grant(state, ttl=10.0, now=100.0)
    assert state.apply(LeaseKeepAlive(lease=lease, now=105.0)) == LeaseResult(
        lease=lease, ttl=10.0, expires_at=115.0
    )
    # a keep-alive with an older timestamp (e.g. from a lagging proposer) does not pull the deadline back
    assert state.apply(LeaseKeepAlive(lease=lease, now=50.0)) == LeaseResult(
        lease=lease, ttl=10.0, expires_at=115.0
    )
    assert state.leases[lease].expires_at == 115.0


def test_keepalive_and_revoke_of_unknown_lease() -> None:
    state = KVState()
    before = snapshot(state)
    for command in (LeaseKeepAlive(lease=7, now=1.0), LeaseRevoke(lease=7)):
        result = state.apply(command)
        assert isinstance(result, ErrorResult) and result.code == "lease_not_found"
        assert "7" in result.message
    assert snapshot(state) == before


def test_expired_leases() -> None:
    state = KVState()
    short = grant(state, ttl=5.0, now=100.0)  # expires at 105
    long = grant(state, ttl=50.0, now=100.0)  # expires at 150
    assert state.expired_leases(104.9) == []
    assert state.expired_leases(105.0) == [short]  # the deadline itself counts as expired
    assert sorted(state.expired_leases(150.0)) == [short, long]
    ok(state, LeaseKeepAlive(lease=short, now=104.0))  # now expires at 109
    assert state.expired_leases(105.0) == []
    assert state.expired_leases(109.0) == [short]


def test_lease_expire_deletes_attached_keys_in_one_revision() -> None:
    state = KVState()
    lease = grant(state, ttl=5.0, now=100.0)
    other = grant(state, ttl=5.0, now=100.0)
    for key in ("s/c", "s/a", "s/b"):
        put(state, key, lease=lease)
    put(state, "s/other-lease", lease=other)
    put(state, "s/no-lease")
    assert state.revision == 5
    result = state.apply(LeaseExpire(lease=lease, now=105.0))
    assert result == RevokeResult(revoked=True, deleted=3, revision=6)
    assert state.revision == 6
    assert keys(state) == ["s/no-lease", "s/other-lease"]
    assert lease not in state.leases
    events = state.events_since("", 6)
    assert [(e.kind, e.kv.key, e.revision) for e in events] == [
        (EventKind.DELETE, "s/a", 6),
        (EventKind.DELETE, "s/b", 6),
        (EventKind.DELETE, "s/c", 6),
    ]
    assert all(e.prev is not None and e.prev.lease == lease for e in events)
    # the lease is gone: a second expire is a no-op and keep-alive fails
    assert state.apply(LeaseExpire(lease=lease, now=200.0)) == RevokeResult(
        revoked=False, deleted=0, revision=6
    )
    keepalive = state.apply(LeaseKeepAlive(lease=lease, now=200.0))
    assert isinstance(keepalive, ErrorResult) and keepalive.code == "lease_not_found"


def test_lease_expire_is_a_no_op_if_kept_alive_past_now() -> None:
    state = KVState()
    lease = grant(state, ttl=5.0, now=100.0)
    put(state, "k", lease=lease)
    # the leader saw it expired at 105, but a keep-alive committed first
    ok(state, LeaseKeepAlive(lease=lease, now=104.0))
    before = snapshot(state)
    assert state.apply(LeaseExpire(lease=lease, now=105.0)) == RevokeResult(
        revoked=False, deleted=0, revision=1
    )
    assert snapshot(state) == before
    # and past the new deadline it does expire
    assert state.apply(LeaseExpire(lease=lease, now=109.0)) == RevokeResult(
        revoked=True, deleted=1, revision=2
    )


def test_lease_expire_of_a_lease_without_keys_does_not_bump_revision() -> None:
    state = KVState()
    put(state, "k")
    lease = grant(state, ttl=1.0, now=0.0)
    assert state.apply(LeaseExpire(lease=lease, now=1.0)) == RevokeResult(revoked=True, deleted=0, revision=1)
    assert state.revision == 1 and state.leases == {}


def test_lease_expire_of_unknown_lease_is_a_no_op() -> None:
    state = KVState()
    before = snapshot(state)
    assert state.apply(LeaseExpire(lease=42, now=1.0)) == RevokeResult(revoked=False, deleted=0, revision=0)
    assert snapshot(state) == before


def test_revoke_deletes_attached_keys() -> None:
    state = KVState()
    lease = grant(state)
    put(state, "a", lease=lease)
    put(state, "b", lease=lease)
    put(state, "c")
    assert state.apply(LeaseRevoke(lease=lease)) == RevokeResult(revoked=True, deleted=2, revision=4)
    assert keys(state) == ["c"]
    assert state.leases == {}
    again = state.apply(LeaseRevoke(lease=lease))
    assert isinstance(again, ErrorResult) and again.code == "lease_not_found"


@pytest.mark.parametrize("new_lease", ["other", "none"])
def test_reput_with_another_lease_detaches_key_from_old_lease(new_lease: str) -> None:
    state = KVState()
    old = grant(state)
    other = grant(state)
    put(state, "k", b"1", lease=old)
    put(state, "stays", b"x", lease=old)
    target = other if new_lease == "other" else 0
    put(state, "k", b"2", lease=target)
    assert state.leases[old].keys == {"stays"}
    assert state.apply(LeaseRevoke(lease=old)) == RevokeResult(revoked=True, deleted=1, revision=4)
    kv = state.get("k").kv
    assert kv is not None and (kv.value, kv.lease) == (b"2", target)
    if target:
        assert state.leases[other].keys == {"k"}
        assert state.apply(LeaseRevoke(lease=other)) == RevokeResult(revoked=True, deleted=1, revision=5)
        assert state.get("k").kv is None


def test_reput_with_the_same_lease_keeps_it_attached() -> None:
    state = KVState()
    lease = grant(state)
    put(state, "k", b"1", lease=lease)
    put(state, "k", b"2", lease=lease)
    assert state.leases[lease].keys == {"k"}
    assert state.apply(LeaseRevoke(lease=lease)) == RevokeResult(revoked=True, deleted=1, revision=3)


@pytest.mark.parametrize(
    "removal", [Delete(key="k"), DeletePrefix(prefix="k")], ids=["delete", "delete_prefix"]
)
def test_deleted_leased_key_is_not_deleted_again_by_revoke(removal: Any) -> None:
    state = KVState()
    lease = grant(state)
    put(state, "k", lease=lease)
    ok(state, removal)
    assert state.leases[lease].keys == set()
    put(state, "k", b"recreated")  # without a lease
    assert state.apply(LeaseRevoke(lease=lease)) == RevokeResult(revoked=True, deleted=0, revision=3)
    kv = state.get("k").kv
    assert kv is not None and kv.value == b"recreated"


# ------------------------------------------------------------------------ watch history


def test_events_since_returns_events_from_revision_for_prefix_in_order() -> None:
    state = KVState()
    put(state, "w/a", b"1")  # 1
    put(state, "x/a", b"1")  # 2
    put(state, "w/b", b"1")  # 3
    put(state, "w/a", b"2")  # 4
    ok(state, Delete(key="w/b"))  # 5
    ok(state, Delete(key="absent"))  # no revision
    put(state, "x/a", b"2")  # 6

    events = state.events_since("w/", 1)
    assert [(e.kind, e.kv.key, e.revision) for e in events] == [
        (EventKind.PUT, "w/a", 1),
        (EventKind.PUT, "w/b", 3),
        (EventKind.PUT, "w/a", 4),
        (EventKind.DELETE, "w/b", 5),
    ]
    assert [e.revision for e in state.events_since("w/", 4)] == [4, 5]
    assert [e.revision for e in state.events_since("w/", 5)] == [5]
    assert state.events_since("w/", 6) == []
    assert state.events_since("w/", 7) == []
    assert [e.revision for e in state.events_since("", 1)] == [1, 2, 3, 4, 5, 6]
    assert [e.revision for e in state.events_since("x/", 3)] == [6]


def test_event_contents_for_create_update_and_delete() -> None:
    state = KVState()
    put(state, "k", b"1")
    put(state, "k", b"2")
    ok(state, Delete(key="k"))
    create, update, delete = state.events_since("k", 1)
    v1 = KeyValue(key="k", value=b"1", create_revision=1, mod_revision=1, version=1)
    v2 = KeyValue(key="k", value=b"2", create_revision=1, mod_revision=2, version=2)
    assert create == Event(kind=EventKind.PUT, kv=v1, prev=None, revision=1)
    assert update == Event(kind=EventKind.PUT, kv=v2, prev=v1, revision=2)
    assert delete.kind is EventKind.DELETE
    assert delete.prev == v2
    assert delete.revision == 3
    assert (delete.kv.key, delete.kv.value, delete.kv.mod_revision) == ("k", b"", 3)


def test_bounded_history_raises_compacted() -> None:
    state = KVState(history_events=3)
    for i in range(5):
        put(state, f"k{i}")
    assert state.revision == 5
    assert state.compact_revision == 2
    for start in (0, 1, 2):
        with pytest.raises(CompactedError) as info:
            state.events_since("", start)
        assert info.value.compact_revision == 2
        assert info.value.code == "compacted"
        assert isinstance(info.value, KVError)
    assert [e.revision for e in state.events_since("", 3)] == [3, 4, 5]
    assert [e.kv.key for e in state.events_since("k4", 3)] == ["k4"]
    # compaction is about the revision, not the prefix: even a prefix with no events raises
    with pytest.raises(CompactedError):
        state.events_since("no-such-prefix", 2)


def test_compaction_never_hands_out_part_of_a_revision() -> None:
    state = KVState(history_events=2)
    ok(state, Txn(success=(Put(key="a", value=b""), Put(key="b", value=b""), Put(key="c", value=b""))))
    # one event of revision 1 was dropped: revision 1 as a whole is compacted
    assert state.compact_revision == 1
    with pytest.raises(CompactedError):
        state.events_since("", 1)
    assert state.events_since("", 2) == []
    put(state, "d")
    assert [e.kv.key for e in state.events_since("", 2)] == ["d"]


def test_compact_revision_only_moves_forward_and_tracks_the_history() -> None:
    state = KVState(history_events=4)
    compacts = []
    for i in range(12):
        put(state, f"k{i % 3}")
        compacts.append(state.compact_revision)
        assert len(state.history) <= 4
        # the oldest kept event is always exactly one past the compact revision
        assert state.history[0].revision == state.compact_revision + 1
        assert len(state.events_since("", state.compact_revision + 1)) == len(state.history)
    assert compacts == sorted(compacts)
    assert compacts[-1] == 8


# ------------------------------------------------------------------------ invalid commands


class _Unknown:
    pass


BIG_KEY = "k" * (MAX_KEY_BYTES + 1)
BIG_MULTIBYTE_KEY = "é" * (MAX_KEY_BYTES // 2 + 1)  # fewer characters than the limit, more bytes

INVALID_COMMANDS = [
    pytest.param(Put(key=BIG_KEY, value=b"v"), "request.key", id="put-key-too-big"),
    pytest.param(Put(key=BIG_MULTIBYTE_KEY, value=b"v"), "request.key", id="put-key-too-many-bytes"),
    pytest.param(Put(key="k", value=b"v" * (MAX_VALUE_BYTES + 1)), "request.value", id="put-value-too-big"),
    pytest.param(Put(key="", value=b"v"), "request.key", id="put-empty-key"),
    pytest.param(Put(key="a\x00b", value=b"v"), "request.key", id="put-nul-key"),
    pytest.param(Put(key=b"k", value=b"v"), "request.key", id="put-bytes-key"),  # type: ignore[arg-type]
    pytest.param(Put(key="k", value="v"), "request.value", id="put-str-value"),  # type: ignore[arg-type]
    pytest.param(
        Put(key="k", value=bytearray(b"v")),  # type: ignore[arg-type]
        "request.value",
        id="put-bytearray-value",
    ),
    pytest.param(Put(key="k", value=None), "request.value", id="put-none-value"),  # type: ignore[arg-type]
    pytest.param(Put(key="k", value=b"v", lease=-1), "request.lease", id="put-negative-lease"),
    pytest.param(Put(key="k", value=b"v", lease=True), "request.lease", id="put-bool-lease"),
    pytest.param(Delete(key=""), "request.key", id="delete-empty-key"),
    pytest.param(Delete(key=BIG_KEY), "request.key", id="delete-key-too-big"),
    pytest.param(DeletePrefix(prefix=BIG_KEY), "request.prefix", id="delete-prefix-too-big"),
    pytest.param(DeletePrefix(prefix="a\x00"), "request.prefix", id="delete-prefix-nul"),
    pytest.param(LeaseGrant(ttl=0.0, now=1.0), "ttl", id="ttl-zero"),
    pytest.param(LeaseGrant(ttl=-1.0, now=1.0), "ttl", id="ttl-negative"),
    pytest.param(LeaseGrant(ttl=math.nan, now=1.0), "ttl", id="ttl-nan"),
    pytest.param(LeaseGrant(ttl=math.inf, now=1.0), "ttl", id="ttl-inf"),
    pytest.param(LeaseGrant(ttl=MAX_LEASE_TTL + 1, now=1.0), "ttl", id="ttl-too-long"),
    pytest.param(LeaseGrant(ttl=True, now=1.0), "ttl", id="ttl-bool"),
    pytest.param(LeaseGrant(ttl="5", now=1.0), "ttl", id="ttl-str"),  # type: ignore[arg-type]
    pytest.param(LeaseGrant(ttl=5.0, now=math.nan), "now", id="grant-now-nan"),
    pytest.param(LeaseKeepAlive(lease=0, now=1.0), "lease", id="keepalive-lease-zero"),
    pytest.param(LeaseKeepAlive(lease=1, now=math.inf), "now", id="keepalive-now-inf"),
    pytest.param(LeaseRevoke(lease=-3), "lease", id="revoke-negative"),
    pytest.param(LeaseExpire(lease=0, now=1.0), "lease", id="expire-lease-zero"),
    pytest.param(Txn(success=(Put(key="", value=b""),)), "txn.success[0].key", id="txn-put-empty-key"),
    pytest.param(
        Txn(failure=(Get(key="ok"), Put(key="k", value="s"))),  # type: ignore[arg-type]
        "txn.failure[1].value",
        id="txn-put-str-value",
    ),
    pytest.param(
        Txn(success=(Range(prefix="a", limit=-1),)), "txn.success[0].limit", id="txn-range-negative-limit"
    ),
    pytest.param(Txn(success=(Get(key=BIG_KEY),)), "txn.success[0].key", id="txn-get-key-too-big"),
    pytest.param(Txn(success=(_Unknown(),)), "txn.success[0]", id="txn-unknown-op"),  # type: ignore[arg-type]
    pytest.param(
        Txn(success=(Barrier(),)),  # type: ignore[arg-type]
        "txn.success[0]",
        id="txn-barrier-as-op",
    ),
    pytest.param(
        Txn(compares=(cmp(VERSION, EQ, "1"),)),  # type: ignore[arg-type]
        "txn.compares[0].operand",
        id="compare-version-str",
    ),
    pytest.param(
        Txn(compares=(cmp(VERSION, EQ, True),)), "txn.compares[0].operand", id="compare-version-bool"
    ),
    pytest.param(Txn(compares=(cmp(EXISTS, EQ, 1),)), "txn.compares[0].operand", id="compare-exists-int"),
    pytest.param(Txn(compares=(cmp(VALUE, EQ, 5),)), "txn.compares[0].operand", id="compare-value-int"),
    pytest.param(
        Txn(compares=(cmp(VALUE, EQ, b"x" * (MAX_VALUE_BYTES + 1)),)),
        "txn.compares[0].operand",
        id="compare-value-too-big",
    ),
    pytest.param(
        Txn(compares=(cmp(EXISTS, EQ, True, key=""),)), "txn.compares[0].key", id="compare-empty-key"
    ),
    pytest.param(Txn(compares=(Get(key="k"),)), "txn.compares[0]", id="compare-not-a-compare"),  # type: ignore[arg-type]
    pytest.param(_Unknown(), "unknown operation _Unknown", id="unknown-command"),
    pytest.param(Get(key="k"), "unknown operation Get", id="read-as-command"),
    pytest.param(None, "unknown operation NoneType", id="none"),
]


@pytest.mark.parametrize(("command", "field"), INVALID_COMMANDS)
def test_invalid_command_is_rejected_and_changes_nothing(command: Any, field: str) -> None:
    state = KVState(history_events=100)
    lease = grant(state)
    put(state, "k", b"v", lease=lease)
    put(state, "other", b"w")
    before = snapshot(state)
    result = state.apply(command)
    assert isinstance(result, ErrorResult)
    assert result.code == "invalid_request"
    assert result.message.startswith(field), result.message
    assert snapshot(state) == before


@pytest.mark.parametrize(
    "command",
    [
        Put(key="k" * MAX_KEY_BYTES, value=b""),
        Put(key="é" * (MAX_KEY_BYTES // 2), value=b""),
        Put(key="k", value=b"v" * MAX_VALUE_BYTES),
        Put(key=MAX_CHAR, value=b""),
        Put(key="k", value=b""),
        DeletePrefix(prefix=""),
        LeaseGrant(ttl=MAX_LEASE_TTL, now=0),
        LeaseGrant(ttl=1e-9, now=-5.0),
        LeaseGrant(ttl=1, now=1),
        Txn(compares=(cmp(VALUE, EQ, b""),), success=(Range(prefix="", limit=0),)),
    ],
    ids=[
        "max-key",
        "max-multibyte-key",
        "max-value",
        "max-code-point-key",
        "empty-value",
        "empty-prefix",
        "max-ttl",
        "tiny-ttl",
        "int-ttl",
        "empty-value-compare",
    ],
)
def test_boundary_commands_are_accepted(command: Any) -> None:
    state = KVState()
    ok(state, command)


@pytest.mark.parametrize(
    "command",
    [
        Txn(compares=(Compare(key="k", target="size", operand=1),)),  # type: ignore[arg-type]
        Txn(compares=(Compare(key="k", target=VERSION, op="<=", operand=1),)),  # type: ignore[arg-type]
        Txn(compares=None),  # type: ignore[arg-type]
        Txn(success=None),  # type: ignore[arg-type]
    ],
    ids=["unknown-target", "unknown-op", "compares-none", "success-none"],
)
def test_malformed_txn_is_an_error_result_not_an_exception(command: Txn) -> None:
    state = KVState()
    put(state, "k")
    before = snapshot(state)
    result = state.apply(command)
    assert isinstance(result, ErrorResult) and result.code == "invalid_request"
    assert snapshot(state) == before


# ------------------------------------------------------------------------ model-based (hypothesis)

KEYS = ["a", "aa", "ab", "b", "b/a", "ba"]
PREFIXES = ["", "a", "ab", "b", "b/", "c"]
VALUES = [b"", b"0", b"1", b"xyz"]


NOWS = [0.0, 4.0, 5.0, 10.0, 30.0]
TTLS = [1.0, 5.0, 10.0]

_keys = st.sampled_from(KEYS)
_values = st.sampled_from(VALUES)
_ops = st.sampled_from(list(CompareOp))
_lease_ids = st.integers(0, 4)

compares = st.one_of(
    st.builds(
        Compare, key=_keys, target=st.just(EXISTS), op=st.sampled_from([EQ, NE]), operand=st.booleans()
    ),
    st.builds(Compare, key=_keys, target=st.just(VALUE), op=_ops, operand=_values),
    st.builds(
        Compare, key=_keys, target=st.sampled_from([VERSION, MOD, CREATE]), op=_ops, operand=st.integers(0, 8)
    ),
)
writes = st.one_of(
    st.builds(Put, key=_keys, value=_values, lease=st.sampled_from([0, 0, 0, 1, 2, 3])),
    st.builds(Delete, key=_keys),
    st.builds(DeletePrefix, prefix=st.sampled_from(PREFIXES)),
)
txn_ops = st.one_of(
    writes,
    st.builds(Get, key=_keys),
    st.builds(Range, prefix=st.sampled_from(PREFIXES), limit=st.integers(0, 3)),
)
txns = st.builds(
    Txn,
    compares=st.lists(compares, max_size=2).map(tuple),
    success=st.lists(txn_ops, max_size=4).map(tuple),
    failure=st.lists(txn_ops, max_size=3).map(tuple),
)
# CAS-style: "if key has this value (or is absent), write it", the common client idiom
cas_txns = st.builds(
    lambda key, old, new: Txn(
        compares=(
            Compare(key=key, target=VALUE, operand=old)
            if old is not None
            else Compare(key=key, target=VERSION, operand=0),
        ),
        success=(Put(key=key, value=new),),
        failure=(Get(key=key),),
    ),
    _keys,
    st.none() | _values,
    _values,
)
commands = st.one_of(
    writes,
    writes,
    txns,
    cas_txns,
    st.builds(LeaseGrant, ttl=st.sampled_from(TTLS), now=st.sampled_from(NOWS)),
    st.builds(LeaseKeepAlive, lease=st.integers(1, 4), now=st.sampled_from(NOWS)),
    st.builds(LeaseRevoke, lease=st.integers(1, 4)),
    st.builds(LeaseExpire, lease=st.integers(1, 4), now=st.sampled_from(NOWS)),
    st.just(Barrier()),
)


class Model:
    """An independent, deliberately naive implementation of the semantics over plain dicts.

    Lease membership is derived from the data (kv.lease), not tracked incrementally as KVState does."""

    def __init__(self) -> None:
        self.data: dict[str, KeyValue] = {}
        self.leases: dict[int, tuple[float, float]] = {}  # id -> (ttl, expires_at)
        self.next_lease = 1
        self.revision = 0

    def holds(self, c: Compare) -> bool:
        kv = self.data.get(c.key)
        if c.target is VALUE and kv is None:
            return c.op is NE
        actual: Any = {
            EXISTS: kv is not None,
            VALUE: kv.value if kv else None,
            VERSION: kv.version if kv else 0,
            MOD: kv.mod_revision if kv else 0,
            CREATE: kv.create_revision if kv else 0,
        }[c.target]
        return {
            EQ: actual == c.operand,
            NE: actual != c.operand,
            LT: actual < c.operand,
            GT: actual > c.operand,
        }[c.op]

    def write(self, ops: list[Any], new_revision: int) -> bool:
        changed = False
        for op in ops:
            if isinstance(op, Put):
                prev = self.data.get(op.key)
                self.data[op.key] = KeyValue(
                    key=op.key,
                    value=op.value,
                    create_revision=prev.create_revision if prev else new_revision,
                    mod_revision=new_revision,
                    version=prev.version + 1 if prev else 1,
                    lease=op.lease,
                )
                changed = True
            elif isinstance(op, Delete):
                changed |= self.data.pop(op.key, None) is not None
            elif isinstance(op, DeletePrefix):
                for key in [k for k in self.data if k.startswith(op.prefix)]:
                    del self.data[key]
                    changed = True
        return changed

    def apply(self, command: Any) -> tuple[str | None, bool | None, bool]:
        """(error code or None, txn succeeded or None, whether the revision moved)."""
        new_revision = self.revision + 1
        changed = False
        succeeded = None
        is_txn = isinstance(command, Txn)
        if isinstance(command, Put | Delete | DeletePrefix):
            command = Txn(success=(command,))
        if isinstance(command, Txn):
            succeeded = all(self.holds(c) for c in command.compares)
            for branch in (command.success, command.failure):
                written = [op.key for op in branch if isinstance(op, Put | Delete)]
                if len(written) != len(set(written)):
                    return "invalid_request", None, False
                prefixes = [op.prefix for op in branch if isinstance(op, DeletePrefix)]
                if any(key.startswith(prefix) for key in written for prefix in prefixes):
                    return "invalid_request", None, False  # etcd: no put/delete under a deleted prefix
            ops = list(command.success if succeeded else command.failure)
            if any(isinstance(op, Put) and op.lease and op.lease not in self.leases for op in ops):
                return "lease_not_found", None, False
            changed = self.write(ops, new_revision)
        elif isinstance(command, LeaseGrant):
            self.leases[self.next_lease] = (command.ttl, command.now + command.ttl)
            self.next_lease += 1
        elif isinstance(command, LeaseKeepAlive):
            if command.lease not in self.leases:
                return "lease_not_found", None, False
            ttl, expires = self.leases[command.lease]
            self.leases[command.lease] = (ttl, max(expires, command.now + ttl))
        elif isinstance(command, LeaseRevoke | LeaseExpire):
            lease = self.leases.get(command.lease)
            if lease is None:
                return ("lease_not_found" if isinstance(command, LeaseRevoke) else None), None, False
            if isinstance(command, LeaseExpire) and lease[1] > command.now:
                return None, None, False
            del self.leases[command.lease]
            doomed = [Delete(key=k) for k, kv in self.data.items() if kv.lease == command.lease]
            changed = self.write(doomed, new_revision)
        if changed:
            self.revision = new_revision
        return None, succeeded if is_txn else None, changed

    def lease_keys(self, lease: int) -> set[str]:
        return {k for k, kv in self.data.items() if kv.lease == lease}


class KVStateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = KVState()
        self.bounded = KVState(history_events=5)
        self.model = Model()
        self.mutations = 0
        self.values_at: dict[int, dict[str, bytes]] = {0: {}}

    @rule(command=commands)
    def apply(self, command: Any) -> None:
        code, succeeded, changed = self.model.apply(command)
        result = self.state.apply(command)
        assert self.bounded.apply(command) == result
        if code is not None:
            assert isinstance(result, ErrorResult) and result.code == code, result
        else:
            assert not isinstance(result, ErrorResult), result
        if succeeded is not None:
            assert isinstance(result, TxnResult) and result.succeeded is succeeded
        if changed:
            self.mutations += 1
            self.values_at[self.model.revision] = {k: kv.value for k, kv in self.model.data.items()}

    @rule()
    @precondition(lambda self: self.mutations > 0)
    def snapshot_and_restore(self) -> None:
        """pysyncobj snapshots pickle the state; the restored copy must carry on identically."""
        restored = pickle.loads(pickle.dumps(self.state))
        assert snapshot(restored) == snapshot(self.state)
        self.state = restored

    @invariant()
    def data_matches_model(self) -> None:
        assert self.state.range("") == RangeResult(
            kvs=tuple(self.model.data[k] for k in sorted(self.model.data)), revision=self.mutations
        )
        assert self.state.revision == self.model.revision == self.mutations
        assert dict(self.bounded.data) == dict(self.state.data)

    @invariant()
    def leases_match_model(self) -> None:
        assert self.state.next_lease_id == self.model.next_lease
        assert {lid: (lease.ttl, lease.expires_at) for lid, lease in self.state.leases.items()} == (
            self.model.leases
        )
        for lid, lease in self.state.leases.items():
            assert lease.keys == self.model.lease_keys(lid)
        for now in NOWS:
            expected = sorted(lid for lid, (_, expires) in self.model.leases.items() if expires <= now)
            assert sorted(self.state.expired_leases(now)) == expected

    @invariant()
    def history_replays_to_data(self) -> None:
        current = {k: kv.value for k, kv in self.model.data.items()}
        events = self.state.events_since("", 1)
        assert len(events) == len(self.state.history)
        assert [e.revision for e in events] == sorted(e.revision for e in events)
        assert replay(events) == current
        for prefix in PREFIXES:
            assert replay(self.state.events_since(prefix, 1)) == {
                k: v for k, v in current.items() if k.startswith(prefix)
            }

    @invariant()
    def bounded_history_replays_from_its_compact_revision(self) -> None:
        compact = self.bounded.compact_revision
        assert self.bounded.revision == self.mutations
        if compact:
            with pytest.raises(CompactedError):
                self.bounded.events_since("", compact)
        start = self.values_at[compact]
        events = self.bounded.events_since("", compact + 1)
        assert replay(events, start) == {k: kv.value for k, kv in self.model.data.items()}


KVStateMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestKVStateAgainstModel = KVStateMachine.TestCase


def _run(commands_: list[Any], state: KVState | None = None) -> tuple[KVState, list[Any]]:
    state = state if state is not None else KVState(history_events=10)
    return state, [state.apply(command) for command in commands_]


@settings(max_examples=100, deadline=None)
@given(st.lists(commands, max_size=40))
def test_same_commands_give_same_state(sequence: list[Any]) -> None:
    first, first_results = _run(sequence)
    second, second_results = _run(sequence)
    assert first_results == second_results
    assert snapshot(first) == snapshot(second)


@settings(max_examples=100, deadline=None)
@given(st.lists(commands, max_size=30), st.lists(commands, max_size=15))
def test_pickled_state_is_equal_and_evolves_identically(before: list[Any], after: list[Any]) -> None:
    original, _ = _run(before)
    restored = pickle.loads(pickle.dumps(original))
    assert type(restored) is KVState
    assert snapshot(restored) == snapshot(original)
    _, original_results = _run(after, original)
    _, restored_results = _run(after, restored)
    assert original_results == restored_results
    assert snapshot(restored) == snapshot(original)


def _distinct_key_values(state: KVState) -> int:
    held = [event.kv for event in state.history] + [event.prev for event in state.history]
    held += list(state.data.values())
    return len({id(item) for item in held if item is not None})


def test_a_restored_state_holds_each_key_value_once_as_the_original_does() -> None:
    # A key's value is also its last event, and each event's kv the next one's prev: a snapshot that
    # copied them made a restarted replica hold twice as many (about 10 MiB more in the 30-minute soak).
    state = KVState()
    for n in range(60):
        state.apply(Put(key=f"k{n % 3}", value=b"v" * 100))
    state.apply(Delete(key="k0"))
    restored = pickle.loads(pickle.dumps(state))
    assert snapshot(restored) == snapshot(state)
    assert _distinct_key_values(restored) == _distinct_key_values(state) == 61
    assert restored.data["k2"] is restored.history[-2].kv
    events = [e for e in restored.history if e.kv.key == "k1"]
    assert all(later.prev is earlier.kv for earlier, later in itertools.pairwise(events))
