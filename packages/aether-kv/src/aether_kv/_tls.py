"""TLS for the client and peer protocols: the cluster CA, certificates it issues, and SSL contexts that
re-load a renewed certificate. Owns the crypto (the `cryptography` package; nothing hand-written) and the
certificate files; must not open sockets.

The cluster CA is derived from the cluster secret: its Ed25519 key is scrypt(secret), its certificate is
built from fixed fields and signed deterministically, so every process that holds the secret makes the
same CA, byte for byte, without asking anyone and without a CA key on disk. The secret was already the
cluster's root of trust (the Raft password, the HMAC proof of every connection); the CA adds no second
secret to store, copy or back up. Rotating the secret rotates the CA.

A process's own certificate and key live together in one PEM file (`cert.pem`, 0600), replaced
atomically, so a reader never sees a certificate with the wrong key. `ReloadingTLS` keeps one server
and one client context and loads the file into them again when it changed: new connections use the new
certificate; connections already open keep theirs.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import ipaddress
import logging
import os
import ssl
import tempfile
from pathlib import Path

import attrs
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ._errors import TLSError
from ._tls_stream import TLSSocketStream

log = logging.getLogger("aether_kv.tls")

CA_FILE = "ca.pem"
CERT_FILE = "cert.pem"  # this process's certificate and its private key
_SALT = b"aether cluster CA v1"
_CA_VALID_FROM = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
_CA_VALID_TO = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
BACKDATE = datetime.timedelta(minutes=5)  # a certificate is valid from a little before it was made


@attrs.frozen
class ClusterCA:
    key: ed25519.Ed25519PrivateKey
    certificate: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the CA certificate (DER), hex: what a join token or an operator pins."""
        return self.certificate.fingerprint(hashes.SHA256()).hex()


@functools.cache
def cluster_ca(secret: str) -> ClusterCA:
    """The cluster CA of `secret` (the same on every process that holds it). scrypt makes guessing a weak
    secret from a certificate slow (~50 ms per guess)."""
    seed = Scrypt(salt=_SALT, length=32, n=2**14, r=8, p=1).derive(secret.encode())
    key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key()
    digest = hashlib.sha256(public.public_bytes_raw()).digest()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Aether cluster CA {digest[:8].hex()}")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(int.from_bytes(digest[:16]) >> 1 or 1)
        .not_valid_before(_CA_VALID_FROM)
        .not_valid_after(_CA_VALID_TO)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, None)
    )
    return ClusterCA(key=key, certificate=certificate)


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


def issue(
    ca: ClusterCA,
    *,
    name: str,
    hosts: tuple[str, ...],
    now: datetime.datetime,
    lifetime: datetime.timedelta,
) -> bytes:
    """A new key and a certificate for `name`, valid for `hosts` (IP addresses or DNS names, its
    subject alternative names) from a little before `now` for `lifetime`, for both ends of a
    connection; the PEM of the certificate followed by its key (PKCS#8)."""
    key = ed25519.Ed25519PrivateKey.generate()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    unique = tuple(dict.fromkeys(h for h in hosts if h))
    if unique:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san(h) for h in unique]), critical=False
        )
    certificate = builder.sign(ca.key, None)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM) + key_pem


def not_valid_after(pem: bytes) -> datetime.datetime:
    """When the (first) certificate in `pem` expires."""
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` in one step (a reader sees the old file or the new one, whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class ReloadingTLS:
    """The SSL contexts of one process, all from the cluster CA: `server()` for a listener of mutual TLS
    (a client must present a certificate of the CA), `client()` for a connection (the server's
    certificate must be the CA's and name the host dialled), `https()` for an HTTPS listener (a client
    certificate is optional, but one presented must be the CA's and valid). Each call checks whether
    `cert.pem` in `directory` was replaced (one stat) and loads it into every context if so; `reload()`
    does it at once. A file that does not load leaves the old certificate in use (logged)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        ca = directory / CA_FILE
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.verify_mode = ssl.CERT_REQUIRED
        https = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        https.verify_mode = ssl.CERT_OPTIONAL
        https.set_alpn_protocols(["h2", "http/1.1"])
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
        self._contexts = (server, https, client)
        try:
            for context in self._contexts:
                context.minimum_version = ssl.TLSVersion.TLSv1_3
                context.load_verify_locations(cafile=str(ca))
        except (OSError, ssl.SSLError) as error:
            raise TLSError(f"{ca}: cannot load the cluster CA certificate ({error})") from None
        self._stamp: tuple[int, int] | None = None
        self.reload(strict=True)

    @property
    def cert_file(self) -> Path:
        return self.directory / CERT_FILE

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            status = self.cert_file.stat()
        except OSError:
            return None
        return (status.st_ino, status.st_mtime_ns)

    def reload(self, *, strict: bool = False) -> None:
        """Load `cert.pem` into every context now. `strict`: raise TLSError if it does not load."""
        stamp = self._file_stamp()
        try:
            for context in self._contexts:
                context.load_cert_chain(str(self.cert_file))
        except (OSError, ssl.SSLError) as error:
            if strict:
                raise TLSError(f"{self.cert_file}: cannot load the certificate and key ({error})") from None
            log.error(
                "%s: cannot load the renewed certificate (%s); keeping the old one", self.cert_file, error
            )
        self._stamp = stamp

    def _fresh(self, index: int) -> ssl.SSLContext:
        if self._file_stamp() != self._stamp:
            self.reload()
        return self._contexts[index]

    def server(self) -> ssl.SSLContext:
        return self._fresh(0)

    def https(self) -> ssl.SSLContext:
        return self._fresh(1)

    def client(self) -> ssl.SSLContext:
        return self._fresh(2)


def write_identity(directory: Path, ca: ClusterCA, identity: bytes) -> None:
    """Write the CA certificate and this process's certificate and key into `directory` (0700)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_file = directory / CA_FILE
    if not ca_file.exists() or ca_file.read_bytes() != ca.pem:
        write_atomically(ca_file, ca.pem, mode=0o644)
    write_atomically(directory / CERT_FILE, identity)


def client_identity(
    secret: str, directory: Path, *, name: str = "aether-tool", hosts: tuple[str, ...] = ()
) -> ReloadingTLS:
    """For a tool that holds the secret (tests, benchmarks, `aether dev`, the KV command line): a
    certificate of the cluster CA in `directory`, made now (valid a day), naming `hosts` if it is to
    serve too, and its contexts."""
    ca = cluster_ca(secret)
    now = datetime.datetime.now(datetime.UTC)
    write_identity(
        directory, ca, issue(ca, name=name, hosts=hosts, now=now, lifetime=datetime.timedelta(days=1))
    )
    return ReloadingTLS(directory)


async def accept_tls(
    stream: trio.SocketStream, tls: ReloadingTLS | None, *, timeout: float
) -> trio.abc.Stream | None:
    """The server's end of a new connection: `stream` itself without TLS, else the TLS stream once the
    handshake (the client's certificate checked) is done within `timeout`; None if it was not (the
    connection closed). Raises trio.BrokenResourceError for a client that failed the handshake (no
    certificate, another CA's, an expired one, or plain text; the connection closed). The TLS stream
    (`TLSSocketStream`) owns the connection: close it, not `stream`."""
    if tls is None:
        return stream
    with trio.move_on_after(timeout):
        return await TLSSocketStream.wrap(stream, tls.server(), server_side=True)
    return None


async def connect_tls(stream: trio.SocketStream, tls: ReloadingTLS | None, host: str) -> trio.abc.Stream:
    """The client's end: `stream` itself without TLS, else the TLS stream to `host` (whose certificate
    must name it) once the handshake is done. Raises trio.BrokenResourceError if it fails (the
    connection closed). The TLS stream (`TLSSocketStream`) owns the connection: close it, not
    `stream`."""
    if tls is None:
        return stream
    return await TLSSocketStream.wrap(stream, tls.client(), server_hostname=host.strip("[]"))
