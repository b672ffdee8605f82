"""The cluster CA and certificates (`aether_kv._tls`): the CA is the same wherever the secret is, a
certificate names its hosts and is the CA's, and `ReloadingTLS` serves a replaced certificate to new
connections while an open one goes on. Real sockets on 127.0.0.1, in this process."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
import trio
from cryptography import x509

from aether_kv import (
    CERT_FILE,
    ReloadingTLS,
    TLSError,
    accept_tls,
    cluster_ca,
    connect_tls,
    issue,
    not_valid_after,
    write_identity,
)
from aether_kv._tls_stream import TLSSocketStream

SECRET = "a cluster secret of 32 characters"
NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)


def test_the_ca_is_derived_from_the_secret_the_same_everywhere() -> None:
    ca = cluster_ca(SECRET)
    again = cluster_ca.__wrapped__(SECRET)  # made afresh, not the cached one
    assert again.pem == ca.pem and again.fingerprint == ca.fingerprint and len(ca.fingerprint) == 64
    assert cluster_ca("another secret of 32 characters!").pem != ca.pem
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0


def test_a_certificate_names_its_hosts_and_is_issued_by_the_ca() -> None:
    ca = cluster_ca(SECRET)
    pem = issue(ca, name="node-1", hosts=("127.0.0.7", "a.example", "127.0.0.7", ""), now=NOW, lifetime=HOUR)
    certificate = x509.load_pem_x509_certificate(pem)
    certificate.verify_directly_issued_by(ca.certificate)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.7")]
    assert names.get_values_for_type(x509.DNSName) == ["a.example"]
    assert not_valid_after(pem) == NOW + HOUR
    assert certificate.not_valid_before_utc < NOW  # a little before: clocks differ
    assert b"PRIVATE KEY" in pem  # the key travels with it, in one file


def test_missing_or_broken_files_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TLSError, match=r"ca\.pem: cannot load the cluster CA certificate"):
        ReloadingTLS(tmp_path)
    ca = cluster_ca(SECRET)
    write_identity(tmp_path, ca, b"not a certificate")
    with pytest.raises(TLSError, match=r"cert\.pem: cannot load the certificate and key"):
        ReloadingTLS(tmp_path)


def _identity(directory: Path, name: str) -> None:
    ca = cluster_ca(SECRET)
    now = datetime.datetime.now(datetime.UTC)
    write_identity(directory, ca, issue(ca, name=name, hosts=("127.0.0.1",), now=now, lifetime=HOUR))


def _subject(stream: TLSSocketStream) -> str:
    der = stream.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


async def test_a_replaced_certificate_serves_new_connections_and_open_ones_go_on(tmp_path: Path) -> None:
    _identity(tmp_path / "server", "first")
    _identity(tmp_path / "client", "client")
    server, client = ReloadingTLS(tmp_path / "server"), ReloadingTLS(tmp_path / "client")

    async def echo(stream: trio.SocketStream) -> None:
        secured = await accept_tls(stream, server, timeout=5)
        assert secured is not None
        while data := await secured.receive_some():
            await secured.send_all(data)

    async def connect(port: int) -> TLSSocketStream:
        secured = await connect_tls(await trio.open_tcp_stream("127.0.0.1", port), client, "127.0.0.1")
        assert isinstance(secured, TLSSocketStream)
        return secured

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, echo, 0)
        port = listeners[0].socket.getsockname()[1]
        first = await connect(port)
        await first.send_all(b"one")
        assert await first.receive_some() == b"one" and _subject(first) == "CN=first"
        _identity(tmp_path / "server", "second")  # renewed: cert.pem replaced
        second = await connect(port)
        await second.send_all(b"two")
        assert await second.receive_some() == b"two" and _subject(second) == "CN=second"
        await first.send_all(b"still")  # the connection made before the renewal is not dropped
        assert await first.receive_some() == b"still"
        (tmp_path / "server" / CERT_FILE).write_bytes(b"broken")  # a bad file: the last good one stays
        third = await connect(port)
        await third.send_all(b"three")
        assert await third.receive_some() == b"three" and _subject(third) == "CN=second"
        nursery.cancel_scope.cancel()
