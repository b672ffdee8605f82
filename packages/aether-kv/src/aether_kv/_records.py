"""Records of aether-kv: stored key-values, watch events, operations and their results.

Frozen attrs records only; no behaviour beyond validation of their own fields. The wire codec lives in
`_wire.py`, the semantics in `_state.py`.
"""

from __future__ import annotations

import enum

import attrs

#: Limits checked at every boundary (client protocol, trio API, state machine).
MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 1024 * 1024
MAX_TXN_OPS = 1024  # of one txn (compares, operations, reads): 300 new instances are one txn
MAX_LEASE_TTL = 24 * 3600.0


@attrs.frozen(kw_only=True)
class KeyValue:
    """A stored key: its value, the revision that created it, the revision that last changed it, how many
    times it was written since creation, and the lease it is bound to (0: none)."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


class EventKind(enum.StrEnum):
    PUT = "put"
    DELETE = "delete"


@attrs.frozen(kw_only=True)
class Event:
    """One change seen by watchers. For a delete, `kv` carries the key with an empty value and the
    revision of the delete; `prev` is the value before the change (None for a creation)."""

    kind: EventKind
    kv: KeyValue
    prev: KeyValue | None
    revision: int


# ---------------------------------------------------------------- compares and operations


class CompareTarget(enum.StrEnum):
    EXISTS = "exists"
    VALUE = "value"
    VERSION = "version"
    MOD_REVISION = "mod_revision"
    CREATE_REVISION = "create_revision"


class CompareOp(enum.StrEnum):
    EQ = "=="
    NE = "!="
    LT = "<"
    GT = ">"


@attrs.frozen(kw_only=True)
class Compare:
    """A condition of a transaction on one key. `exists` compares a bool; `value` compares bytes;
    the others compare ints (an absent key has version, mod_revision and create_revision 0)."""

    key: str
    target: CompareTarget
    op: CompareOp = CompareOp.EQ
    operand: bytes | int | bool = True


@attrs.frozen(kw_only=True)
class Get:
    key: str


@attrs.frozen(kw_only=True)
class Range:
    prefix: str
    limit: int = 0


@attrs.frozen(kw_only=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@attrs.frozen(kw_only=True)
class Delete:
    key: str


@attrs.frozen(kw_only=True)
class DeletePrefix:
    prefix: str


TxnOp = Get | Range | Put | Delete | DeletePrefix


@attrs.frozen(kw_only=True)
class Txn:
    """If every compare holds, run `success`, else `failure`; atomically, one revision for all changes."""

    compares: tuple[Compare, ...] = ()
    success: tuple[TxnOp, ...] = ()
    failure: tuple[TxnOp, ...] = ()


@attrs.frozen(kw_only=True)
class LeaseGrant:
    ttl: float
    now: float


@attrs.frozen(kw_only=True)
class LeaseKeepAlive:
    lease: int
    now: float


@attrs.frozen(kw_only=True)
class LeaseRevoke:
    lease: int


@attrs.frozen(kw_only=True)
class LeaseExpire:
    """Proposed by the leader only, when it sees `lease` past its deadline at `now`. Applied only if the
    lease is still past its deadline at `now` (a keep-alive may have been committed in between)."""

    lease: int
    now: float


@attrs.frozen(kw_only=True)
class Barrier:
    """A no-op through the log: once applied locally, local reads are linearizable."""


Command = (
    Put | Delete | DeletePrefix | Txn | LeaseGrant | LeaseKeepAlive | LeaseRevoke | LeaseExpire | Barrier
)

#: Commands in one `Batch` at most.
MAX_BATCH_COMMANDS = 256


@attrs.frozen(kw_only=True)
class Batch:
    """Commands proposed together as one Raft entry (group commit, see `_batcher.py`); applied one after
    another, each exactly as if proposed alone (its own revision, its own result)."""

    commands: tuple[Command, ...]


# ---------------------------------------------------------------- results


@attrs.frozen(kw_only=True)
class GetResult:
    kv: KeyValue | None
    revision: int


@attrs.frozen(kw_only=True)
class RangeResult:
    kvs: tuple[KeyValue, ...]
    revision: int
    more: bool = False


@attrs.frozen(kw_only=True)
class PutResult:
    revision: int
    prev: KeyValue | None = None


@attrs.frozen(kw_only=True)
class DeleteResult:
    deleted: int
    revision: int
    prev: tuple[KeyValue, ...] = ()


TxnOpResult = GetResult | RangeResult | PutResult | DeleteResult


@attrs.frozen(kw_only=True)
class TxnResult:
    succeeded: bool
    results: tuple[TxnOpResult, ...]
    revision: int


@attrs.frozen(kw_only=True)
class LeaseResult:
    lease: int
    ttl: float
    expires_at: float


@attrs.frozen(kw_only=True)
class RevokeResult:
    revoked: bool
    deleted: int
    revision: int


@attrs.frozen(kw_only=True)
class BarrierResult:
    revision: int


@attrs.frozen(kw_only=True)
class BatchResult:
    """The result of each command of a `Batch`, in order."""

    results: tuple[Result, ...]


@attrs.frozen(kw_only=True)
class ErrorResult:
    """What the state machine returns instead of raising (it runs on pysyncobj's tick thread, where an
    exception would stop the apply loop). Turned into the `_errors` class named by `code` at the API."""

    code: str
    message: str


Result = (
    GetResult
    | RangeResult
    | PutResult
    | DeleteResult
    | TxnResult
    | LeaseResult
    | RevokeResult
    | BarrierResult
    | BatchResult
    | ErrorResult
)


@attrs.frozen(kw_only=True)
class Member:
    raft_address: str
    # linked to the replica that says so; on the leader, also heard from within the leader fallback time
    connected: bool


@attrs.frozen(kw_only=True)
class Status:
    """What one replica knows of the cluster."""

    self_address: str
    leader: str | None
    is_leader: bool
    term: int
    commit_index: int
    last_applied: int
    revision: int
    compact_revision: int
    has_quorum: bool
    members: tuple[Member, ...]
    keys: int
    leases: int
    # what is wrong with the replicas as far as this one knows (its own, and its followers' or what its
    # leader reported), one line each naming the replica ("KV replica …: disk full: …")
    problems: tuple[str, ...] = ()
    # the client connections and watches the replica's server serves now (counted by the server that
    # answered: a store asked in its own process says 0): a figure that only grows shows a client that
    # leaks connections or watches
    clients: int = 0
    watches: int = 0


def compare_holds(compare: Compare, kv: KeyValue | None) -> bool:
    """Whether `compare` holds for the key as `kv` shows it (None: absent): the one rule the state machine
    applies to a transaction's compares, for anyone who must predict its decision. Pure."""
    actual: object
    match compare.target:
        case CompareTarget.EXISTS:
            actual = kv is not None
        case CompareTarget.VALUE:
            if kv is None:
                return compare.op is CompareOp.NE
            actual = kv.value
        case CompareTarget.VERSION:
            actual = kv.version if kv else 0
        case CompareTarget.MOD_REVISION:
            actual = kv.mod_revision if kv else 0
        case CompareTarget.CREATE_REVISION:
            actual = kv.create_revision if kv else 0
    operand = compare.operand
    match compare.op:
        case CompareOp.EQ:
            return actual == operand
        case CompareOp.NE:
            return actual != operand
        case CompareOp.LT:
            return actual < operand  # type: ignore[operator]
        case CompareOp.GT:
            return actual > operand  # type: ignore[operator]
    return False  # pragma: no cover
