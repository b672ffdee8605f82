"""API keys and roles: who a request comes from, and whether its role allows it.

Two sources of keys, checked alike:
- the node's configuration (`--api-keys-file`, `AETHER_API_KEYS`: `role:key` items): the bootstrap keys,
  known as `config-key`; changed only by restarting the node;
- named keys in the KV (`cluster/api-keys/{name}`, `ApiKeyRecord`), made with `aether key create` and
  removed with `aether key revoke`. Every node follows that prefix through a watch-fed `KVCache`, so a new
  or revoked key counts on every node as soon as its cache has the change (milliseconds), no restart.

A key is kept as the SHA-256 of its secret (a random 256-bit token: a slow hash would add nothing), and a
presented key is compared with every known digest by `hmac.compare_digest`. The secret is shown once,
when the key is created.

Roles: viewer ⊂ operator ⊂ admin. No key → 401 "an API key is required"; a key the cluster does not
know (mistyped, revoked) → 401 saying so; a known key whose role is too weak → 403 naming the role needed.
With no key at all (none configured, none in the KV) the API is open only on a node in dev mode.

When a named key was last used is kept to a minute: a node that accepts a key whose `last_used` is older
than `USE_RESOLUTION` queues its name, and `record_uses` writes the time into the key's record
(compare-and-swap, so a key revoked meanwhile stays revoked): at most one write per key per node per
minute, never one per request. A use that cannot be queued or written is dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

import attrs
import trio
from starlette.requests import Request
from starlette.responses import Response

from aether_kv import KV, Compare, CompareOp, CompareTarget, Delete, KVError, Put

from ..client import ApiKeyInfo, CreatedApiKey
from ..core._error_kinds import ErrorKind
from ..core._errors import RequestError
from ..core._kv_cache import KVCache
from ..core._kv_errors import store_errors
from ..core._records import ApiKeyRecord, RecordError, decode_record, encode_record
from ..core._schema import API_KEYS, api_key_key
from ..core._text import shown
from ..routing._http import error_response

log = logging.getLogger("aether_node.api")

ROLES = ("viewer", "operator", "admin")
CONFIG_KEY = "config-key"  # who a key of the node's configuration is, in the audit log
SECRET_PREFIX = "aek_"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
NO_KEY = "an API key is required (Authorization: Bearer KEY)"
UNKNOWN_KEY = "the API key is not one of this cluster's keys (mistyped, or revoked)"
USE_RESOLUTION = 60.0  # seconds: how precisely a key's last use is kept
USES_QUEUED = 256  # names waiting for their use to be written (more are dropped)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_api_keys(text: str, where: str = "API keys") -> dict[str, str]:
    """`role:key` items separated by commas or newlines (a file or an environment variable, `where`) →
    key → role. A bad item is a ValueError naming `where`, its line (of several) and item (of several
    on its line)."""
    keys = {}
    lines = text.splitlines()
    for line_number, line in enumerate(lines, 1):
        items = [part.strip() for part in line.split(",")]
        for item_number, item in enumerate(items, 1):
            if not item or item.startswith("#"):
                continue
            role, sep, key = item.partition(":")
            if not sep or role not in ROLES or len(key) < 16:
                place = [f"line {line_number}"] if len(lines) > 1 else []
                place += [f"item {item_number}"] if len(items) > 1 else []
                raise ValueError(
                    f"{where}{''.join(f', {p}' for p in place)}: expected role:key with role one of"
                    f" {', '.join(ROLES)} and a key of at least 16 characters"
                )
            keys[key] = role
    return keys


def check_name(name: object) -> str:
    """A key's name, or a `bad_request` error saying what a name may be."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == CONFIG_KEY:
        raise RequestError(
            ErrorKind.BAD_REQUEST,
            f"name: expected 1 to 63 characters of a-z, 0-9, - and _, starting with a letter or digit"
            f" (not {CONFIG_KEY!r}), got {shown(name, 70)}",
        )
    return name


def check_role(role: object) -> str:
    if role not in ROLES:
        raise RequestError(
            ErrorKind.BAD_REQUEST, f"role: expected one of {', '.join(ROLES)}, got {shown(role)}"
        )
    return str(role)


@attrs.frozen
class _Known:
    digest: str
    who: str
    role: str
    last_used: float | None = None  # None: a configured key (its use is not recorded)


class Authorizer:
    """Answers who sent a request and whether its role may do what it asks. `cache` follows
    `cluster/api-keys/` (None: configured keys only, e.g. a test's)."""

    def __init__(
        self,
        keys: Mapping[str, str],
        *,
        open_access: bool,
        node_id: str = "",
        cache: KVCache | None = None,
    ) -> None:
        self.configured = [_Known(digest(key), CONFIG_KEY, role) for key, role in keys.items()]
        self.dev_mode = open_access
        self.node_id = node_id
        self.cache = cache
        self.clock = time.time
        self._named: tuple[int, list[_Known]] = (-1, [])
        self._uses, self._queued_uses = trio.open_memory_channel[str](USES_QUEUED)
        self._pending: set[str] = set()

    def _named_keys(self) -> list[_Known]:
        """The KV's keys, decoded again only after the cache moved."""
        if self.cache is None:
            return []
        seen = self.cache.seen[API_KEYS]
        if self._named[0] != seen:
            known = []
            for entry in self.cache.data[API_KEYS].values():
                try:
                    record = decode_record(entry.key, entry.value, ApiKeyRecord)
                except RecordError as error:
                    log.warning("%s", error.message)
                    continue
                known.append(_Known(record.digest, record.name, record.role, record.last_used))
            self._named = (seen, known)
        return self._named[1]

    @property
    def open_access(self) -> bool:
        return self.dev_mode and not self.configured and not self._named_keys()

    def identify(self, secret: str) -> _Known | None:
        wanted = digest(secret)
        found = None
        for known in (*self.configured, *self._named_keys()):  # every digest compared, in constant time
            if hmac.compare_digest(known.digest, wanted):
                found = known
        return found

    def check(self, request: Request, needed: str) -> tuple[str, Response | None]:
        """(who, None) if allowed; else (who, the refusal): who is "" when nobody could be identified."""
        if self.open_access:
            return f"node:{self.node_id}", None
        header = request.headers.get("authorization", "")
        key = header[7:] if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        if not key:
            return "", error_response(ErrorKind.UNAUTHENTICATED, NO_KEY)
        known = self.identify(key)
        if known is None:
            return "", error_response(ErrorKind.UNAUTHENTICATED, UNKNOWN_KEY)
        self._note_use(known)
        if ROLES.index(known.role) < ROLES.index(needed):
            return known.who, error_response(
                ErrorKind.FORBIDDEN, f"this operation needs the {needed} role; your key has {known.role}"
            )
        return known.who, None

    def _note_use(self, known: _Known) -> None:
        if known.last_used is None or known.who in self._pending:
            return
        if self.clock() - known.last_used < USE_RESOLUTION:
            return
        try:
            self._uses.send_nowait(known.who)
        except trio.WouldBlock:
            return  # a busy minute: this use is dropped, a later one is recorded
        self._pending.add(known.who)

    async def record_uses(
        self, keys: ApiKeys, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Write the uses `check` queued, one at a time, until cancelled (a node service)."""
        task_status.started()
        async for name in self._queued_uses:
            try:
                await keys.stamp_use(name, self.clock())
            except KVError as error:
                log.info("last use of key %r not recorded: %s", name, error.message)
            finally:
                self._pending.discard(name)


def _info(record: ApiKeyRecord) -> ApiKeyInfo:
    return ApiKeyInfo(
        name=record.name,
        role=record.role,
        created_at=record.created_at,
        created_by=record.created_by,
        last_used=record.last_used,
    )


class ApiKeys:
    """Create, list and revoke the named keys of `cluster/api-keys/` (the management API's key routes)."""

    def __init__(self, kv: KV, *, clock: Any = time.time) -> None:
        self.kv = kv
        self.clock = clock

    async def create(self, name: object, role: object, *, by: str) -> CreatedApiKey:
        """A new key; its secret is in the answer and nowhere else. A name in use → `conflict`."""
        name, role = check_name(name), check_role(role)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        record = ApiKeyRecord(
            name=name, role=role, digest=digest(secret), created_at=self.clock(), created_by=by
        )
        key = api_key_key(name)
        absent = Compare(key=key, target=CompareTarget.CREATE_REVISION, op=CompareOp.EQ, operand=0)
        with store_errors(f"could not create key {name!r}"):
            result = await self.kv.txn([absent], [Put(key=key, value=encode_record(record))])
        if not result.succeeded:
            raise RequestError(
                ErrorKind.CONFLICT,
                f"a key named {name!r} exists already: revoke it first, or pick another name",
            )
        return CreatedApiKey(name=name, role=role, created_at=record.created_at, created_by=by, secret=secret)

    async def list(self) -> list[ApiKeyInfo]:
        with store_errors():
            listing = await self.kv.range(API_KEYS, linearizable=True)
        found = []
        for entry in listing.kvs:
            try:
                found.append(_info(decode_record(entry.key, entry.value, ApiKeyRecord)))
            except RecordError as error:
                log.warning("%s", error.message)
        return sorted(found, key=lambda info: info.name)

    async def stamp_use(self, name: str, at: float) -> None:
        """Set the key's `last_used` to `at`, unless it is gone or changed meanwhile (then nothing)."""
        key = api_key_key(name)
        found = await self.kv.get(key, linearizable=True)
        if found is None:
            return
        try:
            record = decode_record(key, found.value, ApiKeyRecord)
        except RecordError:
            return
        unchanged = Compare(
            key=key, target=CompareTarget.MOD_REVISION, op=CompareOp.EQ, operand=found.mod_revision
        )
        await self.kv.txn(
            [unchanged], [Put(key=key, value=encode_record(attrs.evolve(record, last_used=at)))]
        )

    async def revoke(self, name: object, *, since: int | None = None) -> dict[str, str]:
        """Delete the key: every node refuses it once its cache has the change. Unknown → `not_found`.
        `since`: the revision the client read: a key of that name made after it is not revoked (a late
        copy of the request must not revoke the key made again after it), `conflict`."""
        name = check_name(name)
        key = api_key_key(name)
        compares = [Compare(key=key, target=CompareTarget.CREATE_REVISION, op=CompareOp.GT, operand=0)]
        if since is not None:
            compares.append(
                Compare(key=key, target=CompareTarget.CREATE_REVISION, op=CompareOp.LT, operand=since + 1)
            )
        with store_errors(f"could not revoke key {name!r}"):
            result = await self.kv.txn(compares, [Delete(key=key)])
            late = since is not None and not result.succeeded  # (absent, or made after `since`?)
            found = await self.kv.get(key, linearizable=True) if late else None
        if found is not None:
            raise RequestError(
                ErrorKind.CONFLICT,
                f"key {name!r} was made again at revision {found.create_revision}, after revision {since}"
                " that this request was made from: it was not revoked; read the keys again and decide",
            )
        if not result.succeeded:
            raise RequestError(ErrorKind.NOT_FOUND, f"no key named {name!r} (`aether key list` shows them)")
        return {"revoked": name}
