"""Joining a cluster with a token: the new node's side (`aether-node run --join HOST:PORT --token T`).

1. GET `https://HOST:PORT/api/v1/join/ca` without checking the server (it is not trusted yet) and keep the
   CA certificate only if its SHA-256 is the fingerprint in the token: a stranger in between cannot
   offer a CA of its own.
2. POST the token to `/api/v1/join` over TLS checked against that CA (and HOST named by the node's
   certificate): the cluster secret comes back, once per token.
3. Check that the secret derives that same CA, then write it to the secret file (0600), whole or not at
   all. The file is opened before step 1: one that cannot be written fails before the token is spent.

A node whose secret file exists already does not join again (a restart must not need a new token).
Runs before the node starts (blocking httpx); every failure is a `ConfigError` that says what to do.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from aether_kv import cluster_ca

from ..api._join_tokens import JoinToken
from ..core._config import ConfigError
from ..core._errors import RequestError

TIMEOUT = 10.0


def join_cluster(address: str, token_text: str, secret_file: Path) -> bool:
    """Get the cluster secret from the node at `address` with the join token, into `secret_file`.
    False if the file exists already (nothing done); True once it is written."""
    if secret_file.exists():
        return False
    try:
        token = JoinToken.parse(token_text)
    except RequestError as error:
        raise ConfigError(f"--token: {error.message}") from None
    # the file is made before the token is spent: a secret file that cannot be written (a read-only
    # /etc under systemd's ProtectSystem, a directory of another owner) must not use the token up
    try:
        secret_file.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=secret_file.parent, prefix=f".{secret_file.name}.")  # 0600
    except OSError as error:
        raise ConfigError(
            f"kv.secret_file {secret_file}: cannot write it ({error.strerror or error}); nothing was"
            " sent, the token is still good: make the file's directory writable by this user"
        ) from None
    try:
        with os.fdopen(fd, "w") as file:
            file.write(_fetch_secret(address, token) + "\n")
        os.replace(temporary, secret_file)
    except BaseException:
        os.unlink(temporary)
        raise
    return True


def _fetch_secret(address: str, token: JoinToken) -> str:
    """The cluster secret, from the node at `address`, for `token` (used up once this returns)."""
    base = f"https://{address}/api/v1/join"
    try:
        with httpx.Client(verify=False, timeout=TIMEOUT) as untrusted:  # checked against the token below
            answer = untrusted.get(f"{base}/ca")
        answer.raise_for_status()
        ca_pem = str(answer.json()["ca"])
        offered = x509.load_pem_x509_certificate(ca_pem.encode()).fingerprint(hashes.SHA256()).hex()
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"--join {address}: cannot fetch the cluster CA ({error})") from None
    if offered != token.fingerprint:
        raise ConfigError(
            f"--join {address}: the node offers a CA whose fingerprint is not the token's: not the"
            " cluster the token is for (or someone in between); nothing was sent"
        )
    trusted = ssl.create_default_context(cadata=ca_pem)
    try:
        with httpx.Client(verify=trusted, timeout=TIMEOUT) as client:
            answer = client.post(base, json={"token": token.text})
        body = answer.json()
    except (httpx.HTTPError, ValueError) as error:
        raise ConfigError(f"--join {address}: the join failed ({error})") from None
    if answer.status_code != 200:
        message = body.get("error", {}).get("message", answer.text) if isinstance(body, dict) else answer.text
        raise ConfigError(f"--join {address}: the cluster refused the token: {message}")
    secret = str(body.get("secret", "")) if isinstance(body, dict) else ""
    if len(secret) < 16 or cluster_ca(secret).fingerprint != token.fingerprint:
        raise ConfigError(f"--join {address}: the secret received does not make the token's CA")
    return secret
