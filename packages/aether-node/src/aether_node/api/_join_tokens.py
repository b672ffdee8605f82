"""Join tokens: how a new host gets the cluster secret without a file copied by hand (the kubeadm model).

`aether-node token create` (on a host of the cluster) makes a token and records it, hashed, at
`cluster/join-tokens/{id}` with an expiry; the token carries the cluster CA's fingerprint. A new node
started with `--join HOST:PORT --token T` (`node/_join.py`) fetches the CA certificate from that node's
management API, checks it against the fingerprint, then, over TLS verified by that CA, trades the token
for the secret here (`redeem`): once (compare-and-swap on the record), before it expires. The token text:

    aej1.{id}.{secret}.{sha-256 of the CA certificate, hex}

Owns the token's format, its record and redeeming it; the HTTP routes are in `_management.py`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

import attrs

from aether_kv import KV, Compare, CompareOp, CompareTarget, Put

from ..core._error_kinds import ErrorKind
from ..core._errors import RequestError
from ..core._kv_errors import store_errors
from ..core._records import JoinTokenRecord, RecordError, decode_record, encode_record
from ..core._schema import join_token_key

PREFIX = "aej1"
_TOKEN = re.compile(rf"{PREFIX}\.([0-9a-f]{{16}})\.([A-Za-z0-9_-]{{32,}})\.([0-9a-f]{{64}})")
LEASE_SLACK = 60.0  # the record outlives its expiry this long (then its lease takes it away)


def _refused(message: str) -> RequestError:
    """A join token that cannot be redeemed (malformed, unknown, another cluster's, expired, used): 401."""
    return RequestError(ErrorKind.UNAUTHENTICATED, message)


@attrs.frozen
class JoinToken:
    token_id: str
    secret: str
    fingerprint: str  # the cluster CA's (hex SHA-256 of its certificate)

    @property
    def text(self) -> str:
        return f"{PREFIX}.{self.token_id}.{self.secret}.{self.fingerprint}"

    @classmethod
    def parse(cls, text: str) -> JoinToken:
        found = _TOKEN.fullmatch(text.strip())
        if found is None:
            raise _refused(f"not a join token: expected {PREFIX}.ID.SECRET.FINGERPRINT")
        return cls(*found.groups())


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_token(kv: KV, fingerprint: str, *, ttl: float, now: float) -> JoinToken:
    """A new token, valid `ttl` seconds from `now`, recorded (hashed) in the KV."""
    token = JoinToken(secrets.token_hex(8), secrets.token_urlsafe(32), fingerprint)
    record = JoinTokenRecord(
        token_id=token.token_id, digest=_digest(token.secret), expires_at=now + ttl, created_at=now
    )
    lease = await kv.lease_grant(ttl + LEASE_SLACK)
    await kv.put(join_token_key(token.token_id), encode_record(record), lease=lease.lease)
    return token


async def redeem_token(kv: KV, text: str, fingerprint: str, *, now: float) -> str:
    """Use the token `text` (once): its id, if it is this cluster's (`fingerprint`), known, not expired and
    not used. Raises RequestError (401) saying which; KVError if the store cannot answer."""
    token = JoinToken.parse(text)
    if not hmac.compare_digest(token.fingerprint, fingerprint):
        raise _refused("the join token is for another cluster (its CA fingerprint is not this one's)")
    key = join_token_key(token.token_id)
    found = await kv.get(key, linearizable=True)
    try:
        record = decode_record(key, found.value, JoinTokenRecord) if found else None
    except RecordError:
        record = None
    if found is None or record is None or not hmac.compare_digest(record.digest, _digest(token.secret)):
        raise _refused("unknown join token (never made here, or gone a minute after it expired)")
    if record.used_at:
        raise _refused("the join token was used already: make a new one (`aether-node token create`)")
    if now >= record.expires_at:
        raise _refused("the join token expired: make a new one (`aether-node token create`)")
    used = attrs.evolve(record, used_at=now)
    unchanged = Compare(
        key=key, target=CompareTarget.MOD_REVISION, op=CompareOp.EQ, operand=found.mod_revision
    )
    result = await kv.txn([unchanged], [Put(key=key, value=encode_record(used), lease=found.lease)])
    if not result.succeeded:
        raise _refused("the join token was used already: make a new one (`aether-node token create`)")
    return token.token_id


@attrs.frozen
class JoinDesk:
    """What a node's management API needs to let new nodes join: the store (the tokens), the secret it
    hands out, and the cluster CA (its certificate, for the new node to check against its token)."""

    kv: KV
    secret: str
    ca_pem: str
    fingerprint: str

    async def redeem(self, text: object, *, now: float) -> str:
        """The secret, for a good token (used up now); RequestError otherwise."""
        if not isinstance(text, str):
            raise RequestError(ErrorKind.BAD_REQUEST, 'expected {"token": "aej1...."}')
        with store_errors("redeem the join token"):
            await redeem_token(self.kv, text, self.fingerprint, now=now)
        return self.secret
