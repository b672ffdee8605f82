"""The audit log of the management API in process (a memory store, starlette's ASGI app through
httpx): a change that fails with a bug (a handler raising what nobody expected) answers 500 and is
still audited, with who and the 500 — the log records attempts, not only the changes that worked."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from aether_kv import MemoryStore
from aether_node.api._api_keys import Authorizer
from aether_node.api._handlers import Handlers
from aether_node.api._management import management_app
from aether_node.core._records import AuditRecord, decode_record
from aether_node.core._schema import audit_key


async def ready() -> bool:
    return True


async def test_a_change_that_fails_with_a_bug_answers_500_and_is_audited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = MemoryStore()
    handlers = Handlers(store, invoker=None)  # type: ignore[arg-type] (applying a blueprint calls nothing)

    async def broken(self: Any, text: str, source: str) -> Any:
        raise RuntimeError("a bug in the handler")

    monkeypatch.setattr(Handlers, "apply_blueprint", broken)
    app = management_app(handlers, Authorizer({}, open_access=True, node_id="n1"), ready, node_id="n1")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        response = await client.post("/api/v1/blueprints", content=b'name = "web"\n')
    assert response.status_code == 500

    found = await store.get(audit_key("n1"))
    assert found is not None, "the failed change left no audit record"
    record = decode_record(audit_key("n1"), found.value, AuditRecord)
    assert (record.who, record.method, record.route, record.status) == (
        "node:n1",
        "POST",
        "/api/v1/blueprints",
        500,
    )
