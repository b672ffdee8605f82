"""Blueprint revisions: every blueprint the cluster is given (applied, rolled back, scaled) is kept as a
numbered revision at `blueprint-revisions/{name}/{revision:08d}` (the blueprint record itself, with its
`revision` and `change`), the last `keep` of each blueprint.

`store_revision` writes `blueprints/{name}` and its new revision in one transaction that compares the
blueprint's mod revision with the one it read, so two writers never take one number and a write never
lands on a blueprint changed under it (it reads again and retries). Owns no other key but the
blueprint's tombstone; never raises anything but `KVError`, `RevisionConflict` and `Superseded`.

A transaction whose answer was lost (a leader change while it was in flight) raises `WriteInDoubt`, an
`OutcomeUnknownError` that carries the mod revision it was conditional on. A caller that sends the same
change again passes it as `in_doubt`: the change is then written only while the blueprint still has that
mod revision (so the first attempt certainly did not land), found done if the blueprint holds the same
content, and refused (`RevisionConflict`) if another writer changed it in between: a resent change never
overwrites a change that came after the first attempt.

`since`: the KV revision an operator's client read before it sent the change (`control/_write_guard.py`):
the change is found done, or refused (`Superseded`), if the blueprint changed or was deleted after it.
"""

from __future__ import annotations

import attrs

from aether_kv import (
    KV,
    Compare,
    CompareTarget,
    ConnectionLostError,
    Delete,
    KeyValue,
    OutcomeUnknownError,
    Put,
)

from ..core._blueprint import Blueprint
from ..core._records import RecordError, decode_record, encode_record
from ..core._schema import BLUEPRINTS, SLICE_CLAIMS, revision_key, revision_prefix
from ._write_guard import (
    Superseded,
    changed_after,
    guarded_put,
    superseded_message,
    tombstone_key,
    unchanged_since,
)

DEFAULT_KEEP = 20  # revisions kept per blueprint (`blueprint_history` in the node's configuration)
ATTEMPTS = 5  # tries of the compare-and-swap before a writer gives up (others write the same blueprint)


class RevisionConflict(Exception):
    """The blueprint kept changing under this write (ATTEMPTS times): another writer's fault, or a race;
    nothing was written."""


class ClaimsChanged(RevisionConflict):
    """Another blueprint was given slices (`SLICE_CLAIMS` moved) after the claims this write was checked
    against were read: nothing was written; read the blueprints and check again."""


async def claims_revision(kv: KV) -> int:
    """The revision at which a blueprint was last given slices (0: never): read it before the blueprints
    the check against other blueprints' slices reads, and pass it to `store_revision` as `claims`."""
    found = await kv.get(SLICE_CLAIMS, linearizable=True)
    return found.mod_revision if found is not None else 0


class WriteInDoubt(OutcomeUnknownError):
    """Raised when the transaction of `store_revision` was sent and no answer says whether it was applied.
    `compared`: the revision the blueprint's key (or its tombstone: a delete) last changed at, which it
    was conditional on (0: it was to create a blueprint never deleted); pass it as `in_doubt` to send the
    change again safely. Nobody's fault: a leader change."""

    def __init__(self, message: str, *, compared: int) -> None:
        super().__init__(message)
        self.compared = compared


@attrs.frozen(kw_only=True)
class Stored:
    blueprint: Blueprint  # as stored, with its revision number
    created: bool  # no blueprint of that name existed
    kv_revision: int
    new_revision: bool  # False: the same content was applied again (no new revision)


def same_content(a: Blueprint, b: Blueprint) -> bool:
    """Whether two blueprints ask for the same thing from the same TOML (timestamps aside)."""
    return a.slices == b.slices and a.source == b.source


def revision_number(key: str, name: str) -> int | None:
    tail = key[len(revision_prefix(name)) :]
    return int(tail) if tail.isdigit() else None


async def read_current(kv: KV, name: str) -> tuple[Blueprint | None, int]:
    """The stored blueprint `name` (None if there is none or it does not decode) and its mod revision
    (0: no key)."""
    return _decoded(await kv.get(BLUEPRINTS + name, linearizable=True))


def _decoded(found: KeyValue | None) -> tuple[Blueprint | None, int]:
    if found is None:
        return None, 0
    try:
        return decode_record(found.key, found.value, Blueprint), found.mod_revision
    except RecordError:
        return None, found.mod_revision


async def history(kv: KV, name: str) -> list[Blueprint]:
    """Every kept revision of blueprint `name`, oldest first (records that do not decode are skipped)."""
    listing = await kv.range(revision_prefix(name), linearizable=True)
    found = []
    for item in sorted(listing.kvs, key=lambda kv: kv.key):
        try:
            found.append(decode_record(item.key, item.value, Blueprint))
        except RecordError:
            continue
    return found


async def store_revision(
    kv: KV,
    blueprint: Blueprint,
    *,
    change: str,
    keep: int = DEFAULT_KEEP,
    dedupe: bool = False,
    fence: Compare | None = None,
    in_doubt: int | None = None,
    since: int | None = None,
    claims: int | None = None,
) -> Stored:
    """Store `blueprint` as the next revision of its name (`change` says how it came). With `dedupe`, a
    blueprint whose content equals the stored one is stored again with its number (a resent apply makes
    no new revision). Revisions beyond the last `keep` are deleted in the same transaction. `fence` (the
    leader's claim, for the autoscaler) must hold too; if it does not, RevisionConflict at once.
    `in_doubt`: the `WriteInDoubt.compared` of an earlier attempt of this change; `since`: the revision
    the operator's client read (see the module); `claims`: the `claims_revision` read before the caller
    checked that no other blueprint deploys this one's slices (the write moves it; ClaimsChanged if it
    moved since: another blueprint was given slices meanwhile, which the check did not see)."""
    key = BLUEPRINTS + blueprint.name
    for _ in range(ATTEMPTS):
        found = await kv.get(key, linearizable=True)
        current, mod_revision = _decoded(found)
        tombstone = await kv.get(tombstone_key(key), linearizable=True)
        last_changed = max(mod_revision, tombstone.mod_revision if tombstone else 0)  # (a delete too)
        if in_doubt is not None and last_changed != in_doubt:
            return _settled(blueprint, current, mod_revision, in_doubt)
        if changed_after(since, found, tombstone):
            if current is not None and same_content(current, blueprint):
                return Stored(blueprint=current, created=False, kv_revision=mod_revision, new_revision=False)
            raise Superseded(superseded_message(since, found, f"blueprint {blueprint.name!r}"))
        listing = await kv.range(revision_prefix(blueprint.name), linearizable=True)
        numbers = sorted(
            n for n in (revision_number(item.key, blueprint.name) for item in listing.kvs) if n is not None
        )
        last = max([*numbers, current.revision if current else 0])
        ops: list[Put | Delete] = []
        if dedupe and current is not None and same_content(current, blueprint):
            stored = attrs.evolve(blueprint, revision=current.revision, change=current.change)
        else:
            stored = attrs.evolve(blueprint, revision=last + 1, change=change)
            ops.append(Put(key=revision_key(blueprint.name, stored.revision), value=encode_record(stored)))
            kept = [*numbers, stored.revision][-keep:]
            ops += [Delete(key=revision_key(blueprint.name, n)) for n in numbers if n not in kept]
        ops[:0] = guarded_put(key, encode_record(stored))
        compares = [*unchanged_since(key, found, tombstone), *([fence] if fence is not None else [])]
        if claims is not None:
            compares.append(Compare(key=SLICE_CLAIMS, target=CompareTarget.MOD_REVISION, operand=claims))
            ops.append(Put(key=SLICE_CLAIMS, value=blueprint.name.encode()))
        try:
            result = await kv.txn(compares, ops)
        except (OutcomeUnknownError, ConnectionLostError) as error:
            # (a lost connection means "not sent" from the network client; held in doubt all the same:
            # doubt costs a resend nothing but its refusal to overwrite another writer's change)
            raise WriteInDoubt(error.message, compared=last_changed) from None
        if not result.succeeded and claims is not None and await claims_revision(kv) != claims:
            raise ClaimsChanged(
                f"another blueprint was given slices while blueprint {blueprint.name!r} was checked against"
                " the others: nothing was written"
            )
        if not result.succeeded and fence is not None:
            holds = await kv.txn([fence], [])
            if not holds.succeeded:
                raise RevisionConflict("this node no longer leads the cluster: nothing was written")
        if result.succeeded:
            return Stored(
                blueprint=stored,
                created=mod_revision == 0,
                kv_revision=result.revision,
                new_revision=stored.revision != (current.revision if current else 0) or current is None,
            )
    raise RevisionConflict(f"blueprint {blueprint.name!r} kept changing while this change was written")


def _settled(blueprint: Blueprint, current: Blueprint | None, mod_revision: int, compared: int) -> Stored:
    """The blueprint changed since an attempt of this change that went unanswered: it is done if the
    blueprint now holds this content (that attempt landed, or someone applied the same); otherwise another
    writer's change came after it, and sending it again would overwrite that change."""
    if current is not None and same_content(current, blueprint):
        return Stored(blueprint=current, created=compared == 0, kv_revision=mod_revision, new_revision=True)
    now = f"now revision {current.revision}" if current is not None else "now removed"
    raise RevisionConflict(
        f"blueprint {blueprint.name!r} was changed by another writer ({now}) while this change went"
        " unanswered, perhaps after it landed: sending it again would overwrite that change, so nothing"
        " more was written"
    )
