"""The public surface of `aether_kv`: what `__init__` exports is pinned here, so changing it is a deliberate
edit of this test, and the error hierarchy keeps its promises (one base, one distinct wire code per class,
documented)."""

from __future__ import annotations

import inspect

import pytest

import aether_kv
from aether_kv import _errors

EXPECTED_EXPORTS = {
    # trio API (a replica in this process)
    "KVStore",
    "Watch",
    "FramedStream",
    "client_handshake",
    "server_handshake",
    "MAX_HANDSHAKE_BYTES",  # before the secret is proved, the largest message (the node's peer port too)
    "Replies",  # a multiplexed connection's waiting requests (the KV client's, the node's peers')
    "Reply",
    "open_store",
    "wait_for_leader",
    "RaftConfig",
    # the async interface every store satisfies, and the in-memory one for tests
    "KV",
    "KVWatch",
    "MemoryStore",
    "MemoryWatch",
    # network client
    "KVClient",
    "ClientWatch",
    "open_client",
    # TLS: the cluster CA (derived from the secret), certificates, contexts that re-load a renewed one
    "CA_FILE",
    "CERT_FILE",
    "ClusterCA",
    "ReloadingTLS",
    "TLSError",
    "accept_tls",
    "client_identity",
    "cluster_ca",
    "connect_tls",
    "issue",
    "not_valid_after",
    "write_identity",
    # a TLS connection as a trio stream, OpenSSL's record layer on the socket (also the node's HTTPS)
    "TLSSocketStream",
    # replica processes
    "ServeConfig",
    "serve_replica",
    "LocalCluster",
    "free_port",
    "plan_local_cluster",
    "running_local_cluster",
    "wait_until_ready",
    # a server process's own: its open-files limit, keep-alive on the connections it accepts (the node's too),
    # and the bound on a connection's unacknowledged data (the node's links to other nodes too)
    "raise_open_files_limit",
    "out_of_files_hint",
    "keep_alive",
    "bound_unacknowledged",
    # errors
    "KVError",
    "InvalidRequestError",
    "AuthenticationError",
    "CompactedError",
    "LeaseNotFoundError",
    "UnavailableError",
    "DiskFullError",
    "NoQuorumError",
    "OutcomeUnknownError",
    "ConnectionLostError",
    "JournalFormatError",
    # records
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "MAX_TXN_OPS",
    "KeyValue",
    "Event",
    "EventKind",
    "Compare",
    "compare_holds",
    "CompareOp",
    "CompareTarget",
    "Get",
    "Range",
    "Put",
    "Delete",
    "DeletePrefix",
    "GetResult",
    "RangeResult",
    "PutResult",
    "DeleteResult",
    "TxnResult",
    "LeaseResult",
    "RevokeResult",
    "Member",
    "Status",
}


def public_names() -> set[str]:
    return {name for name in vars(aether_kv) if not name.startswith("_")}


def exported_errors() -> list[type[BaseException]]:
    return [
        obj
        for name in sorted(public_names())
        if isinstance(obj := getattr(aether_kv, name), type) and issubclass(obj, BaseException)
    ]


def module_errors() -> list[type[BaseException]]:
    return [
        obj
        for obj in vars(_errors).values()
        if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == _errors.__name__
    ]


def test_exports_are_exactly_the_expected_set() -> None:
    names = public_names()
    assert names - EXPECTED_EXPORTS == set(), "new public names: add them to EXPECTED_EXPORTS deliberately"
    assert EXPECTED_EXPORTS - names == set(), "public names disappeared"


def test_no_submodule_leaks_into_the_namespace() -> None:
    assert not any(inspect.ismodule(getattr(aether_kv, name)) for name in public_names())


def test_all_if_defined_matches_the_exports() -> None:
    exported = getattr(aether_kv, "__all__", None)
    if exported is not None:
        assert set(exported) == EXPECTED_EXPORTS


def test_version_is_a_string() -> None:
    assert isinstance(aether_kv.__version__, str) and aether_kv.__version__


def test_package_has_a_docstring() -> None:
    assert aether_kv.__doc__ and aether_kv.__doc__.strip()


def test_limits_are_positive_ints() -> None:
    assert isinstance(aether_kv.MAX_KEY_BYTES, int) and aether_kv.MAX_KEY_BYTES > 0
    assert isinstance(aether_kv.MAX_VALUE_BYTES, int) and aether_kv.MAX_VALUE_BYTES > aether_kv.MAX_KEY_BYTES


def test_exported_errors_derive_from_kv_error() -> None:
    errors = exported_errors()
    assert aether_kv.KVError in errors
    assert len(errors) == 12
    for cls in errors:
        assert issubclass(cls, aether_kv.KVError), cls


def test_exported_errors_have_distinct_codes() -> None:
    codes = [cls.code for cls in exported_errors()]  # type: ignore[attr-defined]
    assert all(isinstance(code, str) and code for code in codes)
    assert len(codes) == len(set(codes)), codes


def test_every_error_in_errors_module_is_exported_and_known_by_code() -> None:
    errors = module_errors()
    assert set(errors) == set(exported_errors())
    assert set(_errors.ERRORS_BY_CODE.values()) == set(errors)
    for code, cls in _errors.ERRORS_BY_CODE.items():
        assert cls.code == code


@pytest.mark.parametrize("cls", module_errors(), ids=lambda cls: cls.__name__)
def test_every_error_class_has_its_own_docstring(cls: type[BaseException]) -> None:
    # a class without a docstring has __doc__ None (not inherited), but check its own __dict__ to be sure
    doc = cls.__dict__.get("__doc__")
    assert isinstance(doc, str) and doc.strip(), f"{cls.__name__} has no docstring"


@pytest.mark.parametrize("cls", module_errors(), ids=lambda cls: cls.__name__)
def test_every_error_class_is_constructible_with_a_message(cls: type[BaseException]) -> None:
    error = cls("what happened")
    assert isinstance(error, aether_kv.KVError)
    assert error.message == "what happened"
    assert str(error) == "what happened"


def test_compacted_error_carries_compact_revision() -> None:
    error = aether_kv.CompactedError("gone", compact_revision=7)
    assert error.compact_revision == 7
    assert aether_kv.CompactedError("gone").compact_revision == 0


def test_errors_module_docstring_lists_every_error() -> None:
    doc = _errors.__doc__ or ""
    for cls in module_errors():
        assert cls.__name__ in doc, cls.__name__
