"""Join tokens (`api/_join_tokens.py`) on the in-memory store: a good token gives the secret once; a
reused, expired, unknown, malformed or other cluster's token is refused (401) saying which, and a refused
one changes nothing."""

from __future__ import annotations

import pytest

from aether_kv import MemoryStore
from aether_node.api._join_tokens import JoinDesk, JoinToken, create_token, redeem_token
from aether_node.core._error_kinds import ErrorKind
from aether_node.core._errors import RequestError

FINGERPRINT = "ab" * 32
OTHER = "cd" * 32


async def refusal(store: MemoryStore, text: str, *, now: float, fingerprint: str = FINGERPRINT) -> str:
    with pytest.raises(RequestError) as raised:
        await redeem_token(store, text, fingerprint, now=now)
    assert raised.value.kind == ErrorKind.UNAUTHENTICATED
    return raised.value.message


async def test_a_token_is_redeemed_once_then_refused() -> None:
    store = MemoryStore()
    token = await create_token(store, FINGERPRINT, ttl=600, now=1000.0)
    assert JoinToken.parse(token.text) == token and token.text.startswith("aej1.")
    desk = JoinDesk(
        kv=store, secret="the cluster secret, 32 characters", ca_pem="PEM", fingerprint=FINGERPRINT
    )
    assert await desk.redeem(token.text, now=1001.0) == "the cluster secret, 32 characters"
    assert "used already" in await refusal(store, token.text, now=1002.0)


async def test_an_expired_token_is_refused_and_stays_unused() -> None:
    store = MemoryStore()
    token = await create_token(store, FINGERPRINT, ttl=60, now=1000.0)
    assert "expired" in await refusal(store, token.text, now=1060.0)
    assert "expired" in await refusal(store, token.text, now=1061.0)  # still expired: not "used"


async def test_unknown_malformed_and_foreign_tokens_are_refused() -> None:
    store = MemoryStore()
    token = await create_token(store, FINGERPRINT, ttl=600, now=1000.0)
    forged = JoinToken(token.token_id, "x" * 43, FINGERPRINT)  # the right id, a guessed secret
    assert "unknown join token" in await refusal(store, forged.text, now=1001.0)
    assert "not a join token" in await refusal(store, "aej1.nonsense", now=1001.0)
    assert "another cluster" in await refusal(store, token.text, now=1001.0, fingerprint=OTHER)
    assert await redeem_token(store, token.text, FINGERPRINT, now=1002.0) == token.token_id  # still good


async def test_a_body_without_a_token_is_a_bad_request() -> None:
    desk = JoinDesk(kv=MemoryStore(), secret="s" * 32, ca_pem="PEM", fingerprint=FINGERPRINT)
    with pytest.raises(RequestError) as raised:
        await desk.redeem(None, now=0.0)
    assert raised.value.kind == ErrorKind.BAD_REQUEST


async def test_a_stranger_trying_made_up_tokens_costs_the_node_one_log_line_per_spell(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`POST /api/v1/join` needs no key (the token is the credential): each refusal was a warning in the
    node's log, so any client could fill it. Through the route, on starlette's app in process."""
    import httpx
    from starlette.applications import Starlette

    from aether_node.api._management import join_routes

    desk = JoinDesk(kv=MemoryStore(), secret="s" * 32, ca_pem="PEM", fingerprint=FINGERPRINT)
    app = Starlette(routes=join_routes(desk))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        for _ in range(20):
            refused = await client.post("/api/v1/join", json={"token": "aej1.made-up"})
            assert refused.status_code == 401
    said = [r for r in caplog.records if "join refused" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
