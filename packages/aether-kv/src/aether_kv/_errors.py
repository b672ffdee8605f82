"""Errors of aether-kv.

    KVError                      base of everything this package raises
    ├── InvalidRequestError      the caller sent something malformed, oversized or unknown (caller's fault)
    ├── AuthenticationError      wrong or missing cluster secret (caller's configuration)
    ├── CompactedError           a watch asked for history older than the store keeps (caller must re-read)
    ├── LeaseNotFoundError       keep-alive/revoke/attach on a lease that does not exist (expired or revoked)
    ├── UnavailableError         the request was NOT applied: no leader, queue full, rejected, a read
    │   │                        unanswered (it changes nothing), a full follower's refusal (naming it);
    │   │                        safe to retry
    │   ├── DiskFullError        ... for want of disk space on the leader or a majority, or on every
    │   │                        replica that answered (retry once space is freed there)
    │   └── NoQuorumError        ... for want of a majority: no replica that answered has heard from one
    │                            for longer than a leader change takes (naming the silent replicas)
    ├── OutcomeUnknownError      the request may or may not have been applied (timeout, leader lost mid-way)
    ├── ConnectionLostError      the client could not reach any endpoint (network, all replicas down)
    ├── TLSError                 a CA certificate, certificate or key that cannot be loaded (operator's)
    └── JournalFormatError       a replica's Raft journal in a format this version does not know

Every error from a lower layer (pysyncobj, sockets, json) is translated into one of these at the boundary
where it happens; nothing else escapes the public API.
"""

from __future__ import annotations


class KVError(Exception):
    """Base class of every aether-kv error. `code` is the stable wire name of the error."""

    code = "kv_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(KVError):
    """Raised when a request is malformed, oversized or names an unknown operation. The caller's fault;
    nothing was changed."""

    code = "invalid_request"


class AuthenticationError(KVError):
    """Raised when the cluster secret is missing or wrong. The caller's configuration; nothing was changed."""

    code = "unauthenticated"


class CompactedError(KVError):
    """Raised when a watch starts at a revision older than the bounded history. The watcher must re-read the
    current state (range) and watch from that revision."""

    code = "compacted"

    def __init__(self, message: str, *, compact_revision: int = 0) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class LeaseNotFoundError(KVError):
    """Raised when a lease operation or a put names a lease that does not exist (never granted, expired or
    revoked). The caller should grant a new lease."""

    code = "lease_not_found"


class UnavailableError(KVError):
    """Raised when the request was certainly not applied: no leader yet, the proposal queue is full, the
    entry was discarded by a new leader; and by the network client for a read that got no answer in time
    (a read changes nothing). Safe to retry. `replicas` names (by Raft address) the replicas whose disks
    are full where that is why (a follower without room refuses to take a write: another replica may
    have room); empty otherwise."""

    code = "unavailable"

    def __init__(self, message: str, *, replicas: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.replicas = replicas


class DiskFullError(UnavailableError):
    """Raised when a write could not be journaled for want of disk space, on the leader or on so many
    followers that no majority could store it: it was certainly not applied. `replicas` names (by Raft
    address) the replicas whose disks are full. The operator's to fix (free space in their data
    directories); writes succeed again without a restart. Safe to retry then."""

    code = "disk_full"


class NoQuorumError(UnavailableError):
    """Raised when the replica asked has heard from no majority of the replicas (itself included) for
    longer than the leader fallback timeout, and so cannot commit, nor confirm a read: not a leader change
    (that is over in less), but replicas that are down, hung or cut off. `replicas` names (by Raft address)
    the ones it has not heard from. The client asks every endpoint it can reach before it says so. The
    request was certainly not applied; safe to retry once a majority is back."""

    code = "no_quorum"


class OutcomeUnknownError(KVError):
    """Raised when the request timed out or lost its leader after it was proposed: it may or may not have
    been applied. Re-read before retrying anything that is not idempotent."""

    code = "outcome_unknown"


class ConnectionLostError(KVError):
    """Raised by the network client when no endpoint can be reached or the connection dropped mid-request
    (for a write: the outcome is unknown, see `OutcomeUnknownError`)."""

    code = "connection_lost"


class TLSError(KVError):
    """Raised when TLS material (the CA certificate, a certificate and its key) cannot be made or loaded:
    names the file and what is wrong. The operator's to fix; raised at start-up, never mid-connection."""

    code = "tls"


class JournalFormatError(KVError):
    """Raised when a replica's Raft journal is in a format this version does not know (written by a later
    version): the replica does not start, and the file is left as it was."""

    code = "journal_format"


ERRORS_BY_CODE: dict[str, type[KVError]] = {
    cls.code: cls
    for cls in (
        KVError,
        InvalidRequestError,
        AuthenticationError,
        CompactedError,
        LeaseNotFoundError,
        UnavailableError,
        DiskFullError,
        NoQuorumError,
        OutcomeUnknownError,
        ConnectionLostError,
        TLSError,
        JournalFormatError,
    )
}
