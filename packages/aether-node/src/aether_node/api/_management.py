"""The management API (JSON over HTTP): routes over the command handlers, API keys with roles, the audit
log, probes, and the event stream. Served by `_http.serve_http` on the node's management address.

Roles (`_api_keys.py`): viewer ⊂ operator ⊂ admin. Reading needs viewer; changing the cluster or invoking
needs operator; API keys, backup and restore need admin. No key → 401, an unknown key → 401 saying so (two
messages), a key whose role is too weak → 403 naming the role needed. With no keys at all the API is open
only if the node runs in dev mode.

Audit (`_audit.py`): every route marked `audit` (the changes: blueprints applied, deleted, rolled back,
slices scaled, node operations, nodes forgotten, keys created and revoked, restores) records who, what and
the status it answered, a refusal (403) included; a request nobody could be identified for (401) is not
recorded (anyone who can reach the port could fill the log). Invocations and the agent lease (renewed
every few seconds) are not changes of the cluster's state and are not recorded.

Errors: every route answers a RequestError (the handlers', a call's) as `{"error": {"kind", "message"[,
"type"][, "override"]}}` with its kind's status (`core/_error_kinds.py`), in one place (`route`);
`override` names the query parameter that makes the same request go through anyway (`force`, on a node
stop or restart refused for the KV store's majority).

`/metrics` (Prometheus text format) needs the viewer role like every read: Prometheus sends it as a bearer
token (`authorization: {credentials: KEY}` in a scrape config). The probes and the dashboard's static
files (`/dashboard`: no data in them; the page asks for a key and sends it with every request) need none.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from aether_kv import KV

from ..client import ACCESS_HEADER, MAX_CALL_TIMEOUT, MAX_EVENTS, OPEN_ACCESS, SINCE_HEADER, to_json
from ..core._error_kinds import ErrorKind
from ..core._errors import RequestError
from ..core._off_loop import run_sized
from ..core._paced_log import PacedLog
from ..core._table_problems import unknown_keys
from ..core._text import shown
from ..observe._events import EventFilter, EventFilterError
from ..observe._metrics import CONTENT_TYPE, NodeMetrics
from ..routing._http import error_response, parse_json, unanswerable
from ._agent_lease import AgentLeases
from ._api_keys import ApiKeys, Authorizer
from ._audit import AuditLog
from ._autoscale import AutoscaleOperations
from ._backup import restore_backup, take_backup
from ._dashboard import dashboard_routes
from ._handlers import Handlers
from ._join_tokens import JoinDesk
from ._operations import Operations
from ._reconcile import ReconcileOperations
from ._slice_logs import LOG_QUERY, LogRequest, Send, SliceLogs
from ._slice_retry import SliceRetry

log = logging.getLogger("aether_node.management")

KEEPALIVE = 15.0  # seconds between comment lines on an idle event stream


Endpoint = Callable[[Request], Awaitable[Any]]


class LineStream(Response):
    """A streamed answer of JSON lines that `produce(send)` writes, until it returns or the caller goes
    away (then it is cancelled). Its own ASGI call, so that its tasks have a nursery that outlives no
    request."""

    media_type = "application/x-ndjson"

    def __init__(self, produce: Callable[[Send], Awaitable[None]]) -> None:
        self.status_code = 200
        self.background = None
        self.raw_headers = [  # no content-length: the answer lasts as long as the stream
            (b"content-type", self.media_type.encode()),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        self.produce = produce

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def body(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        async with trio.open_nursery() as nursery:

            async def until_disconnected() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_disconnected)
            await self.produce(body)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()


async def parse_json_body(body: bytes) -> Any:
    """A request body's JSON, strictly (`_http.parse_json`, as the ingress reads a call's: no NaN or
    Infinity, no nesting past the parser's limit; a big one off the event loop). Anything else is a
    `bad_request` error saying why, before anything is done."""
    try:
        return await run_sized(len(body), parse_json, body)
    except ValueError as error:
        raise RequestError(ErrorKind.BAD_REQUEST, str(error)) from None


async def json_object(request: Request, keys: Collection[str] | None) -> dict[str, Any]:
    """A request body that must be a JSON object, with no key but `keys`: a misspelt key is refused, not
    left out unseen. None: any key (autoscale's and the policy's settings name every unknown one
    themselves; a backup's keys are its format's, checked by `restore_backup`)."""
    data = await parse_json_body(await request.body())
    if not isinstance(data, dict):
        raise RequestError(ErrorKind.BAD_REQUEST, "the request body must be a JSON object")
    unknown = unknown_keys(data, keys) if keys is not None else None
    if unknown:
        raise RequestError(ErrorKind.BAD_REQUEST, unknown)
    return data


def management_app(
    handlers: Handlers,
    authorizer: Authorizer,
    ready: Callable[[], Awaitable[bool]],
    *,
    metrics: NodeMetrics | None = None,
    status_kv: KV | None = None,
    node_id: str = "",
    logs: SliceLogs | None = None,
    join: JoinDesk | None = None,
) -> Starlette:
    """The API's routes. `metrics` are served at /metrics, with the status of the KV replica `status_kv`
    (this node's own, if it runs one) read at each scrape. `node_id` names this node in the audit log;
    `logs` serves the slice instances' output; `join` (with TLS on only) lets a new node trade a join
    token for the cluster secret."""
    metrics = metrics or NodeMetrics(enabled=False)
    audit_log = AuditLog(handlers.kv, node_id)

    def route(
        path: str,
        needed: str,
        method: str = "GET",
        *,
        audit: bool = False,
        query: tuple[str, ...] | None = (),
    ) -> Callable[[Endpoint], Route]:
        """`query`: the query parameters the route reads; any other is refused (a misspelt `?timout=5`
        was left out unseen, the call taking the default). None: any (a scraper's own)."""

        def wrap(endpoint: Endpoint) -> Route:
            async def answer(request: Request) -> tuple[str, Response]:
                who, denied = authorizer.check(request, needed)
                if denied is not None:
                    return who, denied
                request.state.who = who
                try:
                    if query is not None:
                        check_query(request.query_params.keys(), query)
                    result = await endpoint(request)
                except RequestError as error:  # the handlers' and the calls' errors alike
                    return who, error_response(
                        error.kind, error.message, type=error.remote_type, override=error.override
                    )
                if isinstance(result, Response):
                    return who, result
                return who, JSONResponse(to_json(result))

            async def audited(request: Request, who: str, status: int) -> None:
                if audit and who:  # (who is "" for a request nobody could be identified for: 401)
                    target = getattr(request.state, "target", "") or _target(request)
                    await audit_log.record(who, method, request.url.path, target, status)

            async def guarded(request: Request) -> Response:
                try:
                    who, response = await answer(request)
                except ClientDisconnect:
                    # The client went away before its body was read: nothing ran, no one reads an answer,
                    # and a traceback per such client would let any client fill the node's log.
                    return Response(status_code=400)
                except Exception:  # a bug: the server answers 500 (and logs it); the attempt is audited
                    await audited(request, getattr(request.state, "who", ""), 500)
                    raise
                await audited(request, who, response.status_code)
                if authorizer.open_access:  # so that a client which sent a key learns nothing checked it
                    response.headers[ACCESS_HEADER] = OPEN_ACCESS
                return response

            return Route(path, guarded, methods=[method])

        return wrap

    async def as_of(request: Request) -> int | None:
        """The revision the client read before this change (`_since`), checked against the KV's now: a
        revision the cluster has not reached cannot have been read from it, and it would turn the guard
        off for this change (nothing changes after it)."""
        since = _since(request)
        if since is not None and since > await handlers.local_revision():
            now = await handlers.current_revision()  # (a barrier only where this replica's copy is behind)
            if since > now:
                raise RequestError(
                    ErrorKind.BAD_REQUEST,
                    f"{SINCE_HEADER}: revision {since} is ahead of the cluster's revision {now}: send the"
                    " revision that GET /api/v1/revision answered before this change",
                )
        return since

    async def body_text(request: Request) -> tuple[str, str]:
        try:
            text = (await request.body()).decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(ErrorKind.BAD_REQUEST, "the blueprint must be UTF-8 TOML text") from None
        return text, request.query_params.get("source", "blueprint.toml")

    @route("/api/v1/blueprints", "operator", "POST", audit=True, query=("source",))
    async def apply(request: Request) -> Any:
        result = await handlers.apply_blueprint(*(await body_text(request)), since=await as_of(request))
        request.state.target = result.name
        return result

    @route("/api/v1/blueprints/validate", "viewer", "POST", query=("source",))
    async def validate(request: Request) -> Any:
        return await handlers.validate_blueprint(*(await body_text(request)))

    @route("/api/v1/revision", "viewer")
    async def revision(request: Request) -> Any:
        """The KV's revision now: what a client sends its next change with (`SINCE_HEADER`)."""
        return {"revision": await handlers.current_revision()}

    @route("/api/v1/blueprints", "viewer")
    async def list_blueprints(request: Request) -> Any:
        return await handlers.list_blueprints()

    @route("/api/v1/blueprints/{name}", "viewer")
    async def get_blueprint(request: Request) -> Any:
        return await handlers.get_blueprint(request.path_params["name"])

    @route("/api/v1/blueprints/{name}", "operator", "DELETE", audit=True)
    async def delete_blueprint(request: Request) -> Any:
        await handlers.delete_blueprint(request.path_params["name"], since=await as_of(request))
        return {"deleted": request.path_params["name"]}

    operations = Operations(handlers)

    @route("/api/v1/blueprints/diff", "viewer", "POST", query=("source",))
    async def diff(request: Request) -> Any:
        return await operations.diff(*(await body_text(request)))

    @route("/api/v1/blueprints/{name}/history", "viewer")
    async def history(request: Request) -> Any:
        return await operations.blueprint_history(request.path_params["name"])

    @route("/api/v1/blueprints/{name}/rollback", "operator", "POST", audit=True, query=("to",))
    async def rollback(request: Request) -> Any:
        """?to=REVISION (default: the revision before the current one)."""
        raw = request.query_params.get("to")
        try:
            to = None if raw is None else int(raw)
        except ValueError:
            raise RequestError(
                ErrorKind.BAD_REQUEST, f"to: expected a revision number, got {shown(raw)}"
            ) from None
        return await operations.rollback(request.path_params["name"], to, since=await as_of(request))

    @route("/api/v1/slices/{artifact}/scale", "operator", "POST", audit=True)
    async def scale(request: Request) -> Any:
        """Body: {"instances": N}."""
        body = await json_object(request, ("instances",))
        return await operations.scale(
            request.path_params["artifact"], body.get("instances"), since=await as_of(request)
        )

    autoscale = AutoscaleOperations(handlers)

    @route("/api/v1/autoscale", "viewer", query=("signals",))
    async def autoscale_list(request: Request) -> Any:
        """?signals=1: with each slice's signals (see `_autoscale`)."""
        return await autoscale.status(signals=_flag(request, "signals"))

    @route("/api/v1/autoscale/{artifact}", "viewer", query=("signals",))
    async def autoscale_status(request: Request) -> Any:
        return await autoscale.status(request.path_params["artifact"], signals=_flag(request, "signals"))

    @route("/api/v1/autoscale/{artifact}/set", "operator", "POST", audit=True)
    async def autoscale_set(request: Request) -> Any:
        """Body: {"cpu": 0.7, "p99_ms": 200, "min": 1, "max": 5} (any of them)."""
        return await autoscale.set(
            request.path_params["artifact"], await json_object(request, None), since=await as_of(request)
        )

    @route("/api/v1/autoscale/{artifact}/{operation}", "operator", "POST", audit=True)
    async def autoscale_operation(request: Request) -> Any:
        """pause or resume."""
        return await autoscale.operation(
            request.path_params["artifact"], request.path_params["operation"], since=await as_of(request)
        )

    reconcile = ReconcileOperations(handlers)

    @route("/api/v1/cluster/policy", "viewer")
    async def policy(request: Request) -> Any:
        return await reconcile.status()

    @route("/api/v1/cluster/policy", "operator", "POST", audit=True)
    async def set_policy(request: Request) -> Any:
        """Body: {"preset": "conservative", "rebalance_delay_s": 30, "max_moves": 2} (any of them)."""
        return await reconcile.set(await json_object(request, None), since=await as_of(request))

    @route("/api/v1/cluster/rebalance", "operator", "POST", audit=True)
    async def rebalance(request: Request) -> Any:
        return await reconcile.rebalance(since=await as_of(request))

    @route("/api/v1/slices/{artifact}/promote", "operator", "POST", audit=True)
    async def promote(request: Request) -> Any:
        return await operations.rollout(
            request.path_params["artifact"], "promote", since=await as_of(request)
        )

    @route("/api/v1/slices/{artifact}/abort", "operator", "POST", audit=True)
    async def abort(request: Request) -> Any:
        return await operations.rollout(request.path_params["artifact"], "abort", since=await as_of(request))

    slice_retry = SliceRetry(handlers)

    @route("/api/v1/slices/{artifact}/retry", "operator", "POST", audit=True)
    async def retry(request: Request) -> Any:
        return await slice_retry.retry(request.path_params["artifact"], since=await as_of(request))

    @route("/api/v1/slices/{artifact}/pause", "operator", "POST", audit=True)
    async def pause(request: Request) -> Any:
        return await operations.pause(request.path_params["artifact"], "pause", since=await as_of(request))

    @route("/api/v1/slices/{artifact}/resume", "operator", "POST", audit=True)
    async def resume(request: Request) -> Any:
        return await operations.pause(request.path_params["artifact"], "resume", since=await as_of(request))

    @route("/api/v1/nodes/{node_id}/{operation}", "operator", "POST", audit=True, query=("force",))
    async def node_operation(request: Request) -> Any:
        """cordon, uncordon, drain, stop or restart (?force=1: a stop even if the KV loses its quorum)."""
        return await operations.node_operation(
            request.path_params["node_id"],
            request.path_params["operation"],
            since=await as_of(request),
            force=_flag(request, "force"),
        )

    @route("/api/v1/blueprints/{name}/status", "viewer")
    async def blueprint_status(request: Request) -> Any:
        return await handlers.blueprint_status(request.path_params["name"])

    @route("/api/v1/slices", "viewer")
    async def list_slices(request: Request) -> Any:
        return await handlers.list_slices()

    @route("/api/v1/slices/{artifact}", "viewer")
    async def slice_status(request: Request) -> Any:
        return await handlers.slice_status(request.path_params["artifact"])

    @route("/api/v1/slices/{artifact}/entries", "viewer")
    async def entry_points(request: Request) -> Any:
        return await handlers.entry_points(request.path_params["artifact"])

    @route("/api/v1/slices/{artifact}/logs", "viewer", query=LOG_QUERY)
    async def slice_logs(request: Request) -> Any:
        """?instance=N&node=ID&lines=K: the last K lines of each chosen instance (JSON: InstanceLogs);
        with &follow=1, JSON lines (LogLine) that go on with each new line until the instances end."""
        if logs is None:
            raise RequestError(ErrorKind.NOT_FOUND, "this node serves no slice logs")
        asked = LogRequest.parse(request.path_params["artifact"], request.query_params)
        if not asked.follow:
            return await logs.tail(asked, request.headers)
        return LineStream(await logs.plan_follow(asked, request.headers))

    @route("/api/v1/slices/{artifact}/invoke/{entry}", "operator", "POST", query=("timeout",))
    async def invoke(request: Request) -> Any:
        """?timeout=SECONDS: how long the call may take (default: the node's invoke timeout); then 504."""
        body = await request.body()
        payload = await parse_json_body(body) if body.strip() else None
        raw = request.query_params.get("timeout")
        try:
            timeout = None if raw is None else float(raw)
        except ValueError:
            raise RequestError(
                ErrorKind.BAD_REQUEST, f"timeout: expected seconds, got {shown(raw)}"
            ) from None
        if timeout is not None and not 0 < timeout <= MAX_CALL_TIMEOUT:
            raise RequestError(
                ErrorKind.BAD_REQUEST,
                f"timeout: must be in (0, {MAX_CALL_TIMEOUT:g}] seconds, got {timeout:g}",
            )
        artifact, entry = request.path_params["artifact"], request.path_params["entry"]
        result = await handlers.invoke(artifact, entry, payload, timeout=timeout)
        try:
            return JSONResponse(result)
        except (ValueError, UnicodeEncodeError) as error:  # (NaN, a lone surrogate: as the ingress says)
            failed = unanswerable(artifact, entry, error)
            return error_response(failed.kind, failed.message)

    @route("/api/v1/cluster", "viewer")
    async def cluster(request: Request) -> Any:
        return await handlers.cluster_status()

    @route("/api/v1/nodes", "viewer")
    async def nodes(request: Request) -> Any:
        return await handlers.nodes()

    @route("/api/v1/nodes/{node_id}", "operator", "DELETE", audit=True)
    async def forget_node(request: Request) -> Any:
        return await handlers.forget_node(request.path_params["node_id"])

    @route("/api/v1/overview", "viewer")
    async def overview(request: Request) -> Any:
        return await handlers.overview()

    @route("/api/v1/calls", "viewer")
    async def calls(request: Request) -> Any:
        return await handlers.calls()

    def _limit(request: Request) -> int:
        try:
            limit = int(request.query_params.get("limit", "50"))
        except ValueError:
            raise RequestError(ErrorKind.BAD_REQUEST, "limit: expected an integer") from None
        if not 1 <= limit <= MAX_EVENTS:
            raise RequestError(
                ErrorKind.BAD_REQUEST, f"limit: must be between 1 and {MAX_EVENTS}, got {shown(limit)}"
            )
        return limit

    def _events_since(request: Request) -> int | None:
        """?since=REVISION of the event routes (not the revision header of a change: `_since`)."""
        since = request.query_params.get("since")
        if since is None:
            return None
        try:
            return int(since)
        except ValueError:
            raise RequestError(
                ErrorKind.BAD_REQUEST, f"since: expected a revision number, got {shown(since)}"
            ) from None

    def _selection(request: Request) -> EventFilter:
        """?kind=K[,K...] (repeatable), ?slice=group:artifact[:version], ?node=ID."""
        params = request.query_params
        try:
            return EventFilter.parse(params.getlist("kind"), params.get("slice"), params.get("node"))
        except EventFilterError as error:
            raise RequestError(ErrorKind.BAD_REQUEST, str(error)) from None

    @route("/api/v1/events", "viewer", query=("since", "limit", *EVENT_SELECTION))
    async def events(request: Request) -> Any:
        """The last `limit` events, or with `?since=REVISION` the first `limit` after it."""
        since = _events_since(request)
        if since is not None:
            return await handlers.events_after(since, _limit(request), _selection(request))
        found, _ = await handlers.recent_events(_limit(request), _selection(request))
        return found

    @route("/api/v1/events/stream", "viewer", query=("since", "limit", *EVENT_SELECTION))
    async def event_stream(request: Request) -> Any:
        """Server-sent events: the recent ones (or every one after `?since=REVISION`), then each new one as
        it is committed. Each has `data:` (the event's JSON, first) and `id:` (its revision); a comment
        line every 15 s keeps idle streams alive."""
        selection = _selection(request)
        since = _events_since(request)
        if since is not None:  # every event after this revision (a dashboard's snapshot), none before
            revision = since
            await handlers.check_history(revision)
            recent: list[Any] = []
        else:
            recent, revision = await handlers.recent_events(_limit(request), selection)

        def sse(event: Any) -> str:
            # data first: clients written before `id:` was sent read the first line of an event
            return f"data: {json.dumps(to_json(event))}\nid: {event.revision}\n\n"

        async def stream():  # type: ignore[no-untyped-def]
            for event in recent:
                yield sse(event)
            watch = handlers.follow(revision + 1)
            try:
                while True:
                    batch = None
                    with trio.move_on_after(KEEPALIVE):
                        batch = await watch.__anext__()
                    if batch is None:
                        yield ": keep-alive\n\n"
                        continue
                    for raw in batch:
                        for event in await handlers.describe(raw, selection):
                            yield sse(event)
            finally:
                await watch.aclose()

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    @route("/metrics", "viewer", query=None)
    async def prometheus(request: Request) -> Any:
        if not metrics.enabled:
            raise RequestError(
                ErrorKind.NOT_FOUND, "metrics are turned off on this node (it runs with --no-metrics)"
            )
        await metrics.refresh_kv(status_kv or handlers.kv)
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    keys = ApiKeys(handlers.kv)

    @route("/api/v1/keys", "admin")
    async def list_keys(request: Request) -> Any:
        return await keys.list()

    @route("/api/v1/keys", "admin", "POST", audit=True)
    async def create_key(request: Request) -> Any:
        """Body: {"name": NAME, "role": ROLE}. The answer holds the secret: the one time it is shown."""
        body = await json_object(request, ("name", "role"))
        request.state.target = body.get("name") if isinstance(body.get("name"), str) else ""
        if authorizer.open_access and body.get("role") != "admin":
            # The first key closes the open API: were it not an admin's, no one could create or revoke a
            # key again (nor take a backup) without restarting the nodes with a configured key.
            role = shown(body.get("role"))
            raise RequestError(
                ErrorKind.BAD_REQUEST,
                f"the API is open (no key yet) and the first key closes it: make it an admin key"
                f" (--role admin), or no one could manage keys afterwards; got role {role}",
            )
        return await keys.create(body.get("name"), body.get("role"), by=request.state.who)

    @route("/api/v1/keys/{name}", "admin", "DELETE", audit=True)
    async def revoke_key(request: Request) -> Any:
        return await keys.revoke(request.path_params["name"], since=await as_of(request))

    @route("/api/v1/cluster/backup", "admin")
    async def backup(request: Request) -> Any:
        return await take_backup(handlers.kv)

    @route("/api/v1/cluster/restore", "admin", "POST", audit=True)
    async def restore(request: Request) -> Any:
        return await restore_backup(handlers.kv, await json_object(request, None))

    agents = AgentLeases(handlers.kv)

    @route("/api/v1/agent-lease", "viewer")
    async def agent_lease(request: Request) -> Any:
        return await agents.current()

    @route("/api/v1/agent-lease", "operator", "POST")
    async def acquire_agent_lease(request: Request) -> Any:
        body = await json_object(request, ("holder", "token", "ttl"))
        return await agents.acquire(body.get("holder"), body.get("token"), body.get("ttl"))

    @route("/api/v1/agent-lease/release", "operator", "POST")
    async def release_agent_lease(request: Request) -> Any:
        return {"released": await agents.release((await json_object(request, ("token",))).get("token"))}

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def readyz(request: Request) -> Response:
        if await ready():
            return JSONResponse({"ready": True})
        return error_response(ErrorKind.UNAVAILABLE, "the node cannot reach a KV quorum")

    routes = [
        apply,
        validate,
        revision,
        list_blueprints,
        get_blueprint,
        delete_blueprint,
        diff,
        history,
        rollback,
        scale,
        autoscale_list,
        autoscale_status,
        autoscale_set,
        autoscale_operation,
        policy,
        set_policy,
        rebalance,
        promote,
        abort,
        retry,
        pause,
        resume,
        node_operation,
        blueprint_status,
        list_slices,
        slice_status,
        entry_points,
        slice_logs,
        invoke,
        cluster,
        nodes,
        forget_node,
        overview,
        calls,
        events,
        event_stream,
        agent_lease,
        acquire_agent_lease,
        release_agent_lease,
        list_keys,
        create_key,
        revoke_key,
        backup,
        restore,
        prometheus,
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        *dashboard_routes(),
        *(join_routes(join) if join is not None else ()),
    ]
    app = Starlette(routes=routes)
    app.state.audit_log = audit_log  # (its clock and pacing, for a test)
    return app


def join_routes(join: JoinDesk) -> list[Route]:
    """`GET /api/v1/join/ca`: the cluster CA certificate (public: a new node checks it against its
    token's fingerprint); `POST /api/v1/join` `{"token": T}`: the cluster secret, once per token. No API
    key: the token is the credential. Served over HTTPS only (the node has TLS on)."""
    refusals = PacedLog(log, JOIN_REFUSALS_EVERY)

    async def ca(request: Request) -> Response:
        return JSONResponse({"ca": join.ca_pem, "fingerprint": join.fingerprint})

    async def redeem(request: Request) -> Response:
        try:
            body = await parse_json_body(await request.body())
        except RequestError:
            body = None
        try:
            secret = await join.redeem(body.get("token") if isinstance(body, dict) else None, now=time.time())
        except RequestError as error:
            refusals.warning(
                "join",
                "join refused for %s: %s",
                request.client.host if request.client else "?",
                error.message,
            )
            return error_response(error.kind, error.message)
        log.info("join token redeemed by %s", request.client.host if request.client else "?")
        return JSONResponse({"secret": secret, "ca": join.ca_pem})

    return [Route("/api/v1/join/ca", ca), Route("/api/v1/join", redeem, methods=["POST"])]


JOIN_REFUSALS_EVERY = 10.0  # s: a refused join is logged at most so often (no key is needed to try one)


def _target(request: Request) -> str:
    """What a request acts on, from its path: a blueprint, slice, node or key."""
    params = request.path_params
    return next((str(params[p]) for p in ("name", "artifact", "node_id") if p in params), "")


def _since(request: Request) -> int | None:
    """The KV revision the client read before it sent this change (`SINCE_HEADER`), if it says one: the
    change then does not land over a change made after it (`control/_write_guard.py`)."""
    raw = request.headers.get(SINCE_HEADER)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20:
        raise RequestError(
            ErrorKind.BAD_REQUEST, f"{SINCE_HEADER}: expected a revision (a whole number), got {shown(raw)}"
        )
    return int(raw)


EVENT_SELECTION = ("kind", "slice", "node")  # the query parameters of `_selection`


def check_query(given: Iterable[str], taken: Collection[str]) -> None:
    """A `bad_request` error naming each query parameter of `given` that is not `taken`."""
    unknown = unknown_keys(given, taken, "query parameter")
    if unknown:
        raise RequestError(ErrorKind.BAD_REQUEST, unknown)


def _flag(request: Request, name: str) -> bool:
    """A yes/no query parameter: 1, true or yes (any case) is yes; absent or anything else, no."""
    return request.query_params.get(name, "0").lower() in ("1", "true", "yes")
