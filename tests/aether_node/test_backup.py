"""Backup and restore of the desired state on an in-process store (`MemoryStore`): what a backup holds,
that a restore gives it back, and that a bad backup or a cluster with state is refused with nothing
written. End to end through the CLI: tests/integration/test_cluster_backup.py."""

from __future__ import annotations

from typing import Any

import pytest

from aether_kv import MemoryStore
from aether_node.api._backup import check_backup, restore_backup, take_backup
from aether_node.core._blueprint import Blueprint, SliceSpec
from aether_node.core._errors import RequestError
from aether_node.core._records import ApiKeyRecord, decode_record, encode_record


def shop(revision: int) -> bytes:
    spec = SliceSpec(artifact="org.aether:echo:1.0.0", instances=revision)
    return encode_record(Blueprint(name="shop", slices=(spec,), revision=revision))


STATE = {
    "blueprints/shop": shop(2),
    "blueprint-revisions/shop/00000001": shop(1),
    "blueprint-revisions/shop/00000002": shop(2),
    "cluster/api-keys/ci": encode_record(ApiKeyRecord(name="ci", role="operator", digest="ab" * 32)),
}
KEY = STATE["cluster/api-keys/ci"].decode()


def one(key: str, value: str) -> dict[str, Any]:
    """A backup of one entry."""
    return {"format": "aether-backup", "version": 1, "entries": [{"key": key, "value": value}]}


NOT_BACKED_UP = {"nodes/n1": b"{}", "cluster/leader": b"{}", "slices/n1/org.aether:echo:1.0.0/1": b"{}"}


async def filled() -> MemoryStore:
    store = MemoryStore()
    for key, value in {**STATE, **NOT_BACKED_UP}.items():
        await store.put(key, value)
    return store


async def test_a_backup_holds_the_desired_state_at_one_revision_and_restores_it() -> None:
    source = await filled()
    backup = await take_backup(source, now=100.0)
    assert backup["revision"] == (await source.status()).revision and backup["taken_at"] == 100.0
    assert {e["key"]: e["value"].encode() for e in backup["entries"]} == STATE
    fresh = MemoryStore()
    answer = await restore_backup(fresh, backup)
    assert answer["restored"] == 4
    restored = await fresh.range("", linearizable=True)
    assert {kv.key: kv.value for kv in restored.kvs} == STATE


async def test_a_cluster_with_state_is_refused_and_nothing_is_written() -> None:
    backup = await take_backup(await filled())
    target = MemoryStore()
    await target.put("blueprint-revisions/other/00000001", b"{}")
    with pytest.raises(RequestError) as caught:
        await restore_backup(target, backup)
    assert caught.value.kind == "conflict"
    assert "already has state under blueprint-revisions/" in caught.value.message
    assert [kv.key for kv in (await target.range("", linearizable=True)).kvs] == [
        "blueprint-revisions/other/00000001"
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "backup: not an Aether backup"),
        ({"format": "aether-backup", "version": 9, "entries": []}, "backup: version 9 is not understood"),
        ({"format": "aether-backup", "version": 1}, 'backup: "entries" must be a list'),
        (
            {"format": "aether-backup", "version": 1, "entries": [{"key": "nodes/n1", "value": "{}"}]},
            'backup: entries[0]: key "nodes/n1" is not under blueprints/',
        ),
        (
            {"format": "aether-backup", "version": 1, "entries": [{"key": "blueprints/a", "value": 3}]},
            "backup: entries[0] (blueprints/a): value must be text",
        ),
        (
            {
                "format": "aether-backup",
                "version": 1,
                "entries": [
                    {"key": "blueprints/shop", "value": shop(1).decode()},
                    {"key": "blueprints/a", "value": "garbage{"},
                ],
            },
            "backup: entries[1]: blueprints/a: not a valid Blueprint record: Expecting value",
        ),
        (
            {
                "format": "aether-backup",
                "version": 1,
                "entries": [{"key": "blueprint-revisions/a/00000001", "value": '{"name": "a"}'}],
            },
            "backup: entries[0]: blueprint-revisions/a/00000001: not a valid Blueprint record: required field"
            " missing @ $.slices",
        ),
        (
            {
                "format": "aether-backup",
                "version": 1,
                "entries": [{"key": "cluster/api-keys/ci", "value": '{"name": "ci", "role": "admin"}'}],
            },
            "backup: entries[0]: cluster/api-keys/ci: not a valid ApiKeyRecord record: required field missing"
            " @ $.digest",
        ),
        (
            one("cluster/api-keys/ci", KEY.replace('"operator"', '"root"')),
            "backup: entries[0]: role: expected one of",
        ),
        (
            one("cluster/api-keys/other", KEY),
            "backup: entries[0]: cluster/api-keys/other: holds the key named 'ci'",
        ),
        (
            one("cluster/api-keys/ci", KEY.replace('"ci"', '"config-key"')),
            "backup: entries[0]: name: expected",
        ),
        (
            one("blueprints/a\nb", shop(1).decode()),
            "backup: entries[0]: blueprints/a\nb: holds blueprint 'shop' (revision 1),"
            " kept at blueprints/shop",
        ),
        (
            one("blueprints/shop", "[" * 100_000 + "]" * 100_000),
            "backup: entries[0]: blueprints/shop: nested too deeply",
        ),
        (
            one("blueprints/shop", shop(1).decode().replace('"timestamp":0.0', '"timestamp":NaN')),
            "backup: entries[0]: blueprints/shop: not JSON as JSON is: NaN is not a JSON value",
        ),
    ],
)
async def test_a_bad_backup_is_refused_saying_where_and_writes_nothing(data: Any, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        check_backup(data)
    assert caught.value.kind == "bad_request" and caught.value.message.startswith(message)
    store = MemoryStore()
    with pytest.raises(RequestError):
        await restore_backup(store, data)
    assert (await store.range("", linearizable=True)).kvs == ()


async def test_a_record_a_node_wrote_under_older_rules_is_restored() -> None:
    """A cluster's own backup must restore: a kept revision holding a lone surrogate (a TOML comment
    could, before bodies and records refused or escaped them) is restored, and read back as text."""
    spec = SliceSpec(artifact="org.aether:echo:1.0.0", instances=1)
    # (as json.dumps stored it then: the surrogate's escape in the JSON)
    old = encode_record(Blueprint(name="shop", slices=(spec,), revision=1, source="# cafe\n"))
    old = old.replace(b"# cafe", b"# caf\\udce9")
    store = MemoryStore()
    backup = {
        "format": "aether-backup",
        "version": 1,
        "entries": [{"key": "blueprints/shop", "value": old.decode()}],
    }
    assert (await restore_backup(store, backup))["restored"] == 1
    found = await store.get("blueprints/shop")
    assert found is not None
    assert decode_record("blueprints/shop", found.value, Blueprint).source == "# caf\\udce9\n"
