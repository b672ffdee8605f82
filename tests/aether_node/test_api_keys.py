"""The pure parts of API keys: names, roles, digests, who a request is (configured keys; named keys
from a KV cache are covered end to end by tests/integration/test_management_keys.py), and configured
keys read, a bad entry named by where it came from, its line and its item (the file's line 1 was said as
"API key entry 2", the variable's text counted in front of it, and the file not named)."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from aether_node.api._api_keys import (
    CONFIG_KEY,
    NO_KEY,
    UNKNOWN_KEY,
    Authorizer,
    check_name,
    check_role,
    digest,
    parse_api_keys,
)
from aether_node.core._errors import RequestError
from support import wait_until


def request(key: str | None) -> Request:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers})


@pytest.mark.parametrize("name", ["a", "ci", "deploy-bot_2", "0day", "x" * 63])
def test_good_names_pass(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "-x", "_x", "a/b", "a b", "x" * 64, CONFIG_KEY, None, 3, "ü"])
def test_bad_names_say_what_a_name_may_be(name: object) -> None:
    with pytest.raises(RequestError) as caught:
        check_name(name)
    assert caught.value.kind == "bad_request"
    assert caught.value.message.startswith("name: expected 1 to 63 characters of a-z, 0-9, - and _")


def test_roles() -> None:
    assert [check_role(r) for r in ("viewer", "operator", "admin")] == ["viewer", "operator", "admin"]
    with pytest.raises(RequestError, match='role: expected one of viewer, operator, admin, got "root"'):
        check_role("root")


def test_a_digest_is_sha256_hex_and_never_the_secret() -> None:
    assert digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_who_a_request_is_and_what_it_may_do() -> None:
    authorizer = Authorizer({"operator-key-0123456789": "operator"}, open_access=True, node_id="n1")
    assert authorizer.check(request("operator-key-0123456789"), "operator") == (CONFIG_KEY, None)
    who, denied = authorizer.check(request("operator-key-0123456789"), "admin")
    assert who == CONFIG_KEY and denied is not None and denied.status_code == 403
    for key, message in ((None, NO_KEY), ("wrong-key-0123456789", UNKNOWN_KEY)):
        who, denied = authorizer.check(request(key), "viewer")
        assert who == "" and denied is not None and denied.status_code == 401
        assert message.encode() in denied.body


def test_open_only_in_dev_mode_without_any_key() -> None:
    assert Authorizer({}, open_access=True, node_id="n1").check(request(None), "admin") == ("node:n1", None)
    _, denied = Authorizer({}, open_access=False, node_id="n1").check(request(None), "viewer")
    assert denied is not None and denied.status_code == 401


async def test_named_keys_on_a_store_are_accepted_used_and_revoked_at_once() -> None:
    import trio

    from aether_kv import MemoryStore
    from aether_node.api._api_keys import ApiKeys
    from aether_node.core._kv_cache import KVCache
    from aether_node.core._schema import API_KEYS

    store = MemoryStore()
    keys = ApiKeys(store, clock=lambda: 1000.0)
    cache = KVCache(store, [API_KEYS])
    authorizer = Authorizer({}, open_access=True, node_id="n1", cache=cache)
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)
        await nursery.start(authorizer.record_uses, keys)
        assert authorizer.check(request(None), "admin") == ("node:n1", None)  # no key at all: dev mode
        created = await keys.create("ci", "operator", by="node:n1")
        other = await keys.create("other", "viewer", by="ci")
        await cache.caught_up(API_KEYS, (await store.status()).revision)
        # the first named key closes the open API; its secret is accepted, as who it is
        assert authorizer.check(request(None), "viewer")[1] is not None
        assert authorizer.check(request(created.secret), "operator") == ("ci", None)
        # its use is written by the node's service
        await wait_until(
            keys.list, until=lambda found: found[0].last_used, timeout=5, interval=0.01, what="the use"
        )
        used, unused = await keys.list()
        assert (used.name, used.role, used.created_by, used.created_at) == ("ci", "operator", "node:n1", 1e3)
        assert (unused.name, unused.last_used) == ("other", 0.0)
        await keys.revoke("ci")
        await cache.caught_up(API_KEYS, (await store.status()).revision)
        who, denied = authorizer.check(request(created.secret), "viewer")
        assert who == "" and denied is not None and UNKNOWN_KEY.encode() in denied.body
        await keys.stamp_use("ci", 2000.0)  # a use written after the revocation brings nothing back
        assert [k.name for k in await keys.list()] == ["other"]
        # with the last named key revoked, a dev-mode node's API is open again (no key at all)
        await keys.revoke("other")
        await cache.caught_up(API_KEYS, (await store.status()).revision)
        assert authorizer.check(request(other.secret), "admin") == ("node:n1", None)
        nursery.cancel_scope.cancel()


async def test_a_late_revoke_does_not_revoke_the_key_made_again_after_it() -> None:
    from aether_kv import MemoryStore
    from aether_node.api._api_keys import ApiKeys

    store = MemoryStore()
    keys = ApiKeys(store, clock=lambda: 1000.0)
    await keys.create("ci", "operator", by="admin")
    read = (await store.status()).revision
    assert await keys.revoke("ci", since=read) == {"revoked": "ci"}  # the resend, elsewhere
    with pytest.raises(RequestError) as gone:
        await keys.revoke("ci", since=read)  # the first copy, nothing since: gone (done, to a resender)
    assert gone.value.kind == "not_found"
    await keys.create("ci", "viewer", by="admin")  # the admin makes it again
    with pytest.raises(RequestError) as refused:
        await keys.revoke("ci", since=read)  # the first copy, after that
    assert refused.value.kind == "conflict"
    assert refused.value.message.startswith("key 'ci' was made again at revision "), refused.value.message
    assert [(k.name, k.role) for k in await keys.list()] == [("ci", "viewer")]


GOOD = "operator:0123456789abcdef"


def test_keys_are_read_from_lines_and_commas_comments_skipped() -> None:
    text = f"# keys\n{GOOD}, viewer:fedcba9876543210\n\nadmin:aaaaaaaaaaaaaaaa\n"
    assert parse_api_keys(text, "keys.txt") == {
        "0123456789abcdef": "operator",
        "fedcba9876543210": "viewer",
        "aaaaaaaaaaaaaaaa": "admin",
    }


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("superuser:abcdefabcdefabcdef", "api_keys_file /etc/aether/keys"),
        ("admin:\n", "api_keys_file /etc/aether/keys"),
        (f"{GOOD}\nadmin abcdefabcdefabcdef\n", "api_keys_file /etc/aether/keys, line 2"),
        (f"# keys\n{GOOD}, viewer:short\n", "api_keys_file /etc/aether/keys, line 2, item 2"),
    ],
)
def test_a_bad_entry_is_named_by_its_file_line_and_item(text: str, place: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_api_keys(text, "api_keys_file /etc/aether/keys")
    assert str(refused.value) == (
        f"{place}: expected role:key with role one of viewer, operator, admin and a key of at least 16"
        " characters"
    )
