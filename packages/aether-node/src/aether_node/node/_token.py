"""`aether-node token create`: a join token recorded in the cluster's store, through a KV client that
holds a short-lived certificate of the cluster CA (made from the secret, in a temporary directory)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from aether_kv import client_identity, cluster_ca, open_client

from ..api._join_tokens import create_token


async def make_token(endpoints: list[str], secret: str, ttl: float) -> str:
    """The text of a new join token, valid `ttl` seconds. Raises KVError if the store cannot record it."""
    with tempfile.TemporaryDirectory(prefix="aether-token-") as directory:
        tls = client_identity(secret, Path(directory))
        async with open_client(endpoints, secret, tls=tls, request_timeout=10.0) as kv:
            token = await create_token(kv, cluster_ca(secret).fingerprint, ttl=ttl, now=time.time())
    return token.text
