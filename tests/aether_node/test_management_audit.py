"""The audit log of the management API in process (a memory store, starlette's ASGI app through
httpx): a change that fails with a bug (a handler raising what nobody expected) answers 500 and is
still audited, with who and the 500 — the log records attempts, not only the changes that worked."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from aether_kv import KVError, MemoryStore, OutcomeUnknownError, UnavailableError
from aether_node.api._api_keys import Authorizer
from aether_node.api._audit import AuditLog
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


async def test_a_flood_of_refused_changes_is_paced_per_identity_and_counted() -> None:
    """A viewer key sending refused changes in a loop wrote an audit record, a Raft write and an event,
    for each: the history's last 20,000 events were soon only its refusals. Now 10 at once, then one a
    second each, and the next record says how many went unrecorded."""
    store = MemoryStore()
    handlers = Handlers(store, invoker=None)  # type: ignore[arg-type] (a refused change calls nothing)
    authorizer = Authorizer({"viewer-key-0123456789": "viewer"}, open_access=False, node_id="n1")
    app = management_app(handlers, authorizer, ready, node_id="n1")
    now = [1000.0]
    app.state.audit_log.clock = lambda: now[0]
    records: list[AuditRecord] = []

    async def last_record() -> AuditRecord:
        found = await store.get(audit_key("n1"))
        assert found is not None
        return decode_record(audit_key("n1"), found.value, AuditRecord)

    transport = httpx.ASGITransport(app=app)
    viewer = {"Authorization": "Bearer viewer-key-0123456789"}
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        before = (await store.status()).revision
        for _ in range(50):
            refused = await client.post("/api/v1/cluster/rebalance", headers=viewer)
            assert refused.status_code == 403
        assert (await store.status()).revision - before == 10  # the burst; 40 counted
        now[0] += 5.0  # five seconds later: five more may be recorded
        for _ in range(6):
            await client.post("/api/v1/cluster/rebalance", headers=viewer)
            records.append(await last_record())
        assert (await store.status()).revision - before == 15
        assert [r.unrecorded for r in records[:5]] == [40, 0, 0, 0, 0] and records[0].status == 403
    assert records[5] == records[4]  # the sixth went unrecorded


async def test_a_path_with_control_characters_is_recorded_with_them_as_escapes() -> None:
    """A viewer's refused request to a path holding a line break (or ESC, or a bidi override) and a
    made-up entry after it was recorded as sent: any reader of the log but the CLI saw two entries."""
    store = MemoryStore()
    handlers = Handlers(store, invoker=None)  # type: ignore[arg-type] (a refused change calls nothing)
    app = management_app(
        handlers,
        Authorizer({"viewer-key-0123456789": "viewer"}, open_access=False, node_id="n1"),
        ready,
        node_id="n1",
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        forged = "n1%0Aalice:%20DELETE%20all%20%E2%80%AE%1B[2J/cordon"
        answer = await client.post(
            f"/api/v1/nodes/{forged}", headers={"Authorization": "Bearer viewer-key-0123456789"}
        )
        assert answer.status_code == 403
    found = await store.get(audit_key("n1"))
    assert found is not None
    record = decode_record(audit_key("n1"), found.value, AuditRecord)
    assert record.target == "n1\\nalice: DELETE all \\u202e\\x1b[2J", record
    assert "\n" not in record.route and "\x1b" not in record.route, record


class LeaderChanging(MemoryStore):
    """A store whose writes meet a leader change first: no leader yet, then an outcome unknown (as for
    a write in flight when the leader's node stops), then taken."""

    def __init__(self, failures: list[KVError]) -> None:
        super().__init__()
        self.failures = failures

    async def put(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures:
            raise self.failures.pop(0)
        return await super().put(*args, **kwargs)


async def test_an_audit_record_is_written_again_through_a_leader_change(autojump_clock: Any) -> None:
    """Stopping the leader's node: the record's write lost its leader, and the record was dropped at once
    ("audit record lost ... outcome unknown"): the stop was in no audit."""
    store = LeaderChanging([UnavailableError("no leader yet"), OutcomeUnknownError("the leader changed")])
    audit = AuditLog(store, "n1")
    await audit.record("config-key", "POST", "/api/v1/nodes/n2/stop", "n2", 200)
    found = await store.get(audit_key("n1"))
    assert found is not None, "the record was dropped"
    assert decode_record(audit_key("n1"), found.value, AuditRecord).route == "/api/v1/nodes/n2/stop"

    refused = LeaderChanging([KVError("a bug of the store's")])  # not for now: dropped, as before
    await AuditLog(refused, "n1").record("config-key", "POST", "/api/v1/nodes/n2/stop", "n2", 200)
    assert await refused.get(audit_key("n1")) is None
