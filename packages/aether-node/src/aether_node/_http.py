"""The node's HTTP serving: the one module that serves HTTP (starlette on hypercorn's trio worker).

App ingress: `POST /invoke/{group}:{artifact}/{entry}` with a JSON body → the entry point's JSON result.
Errors are JSON `{"error": {"kind", "message", ...}}` with a status that says what failed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._blueprint import Balancing
from ._errors import InvocationError

log = logging.getLogger("aether_node.http")

Invoke = Callable[..., Awaitable[Any]]  # (artifact, entry, payload, *, timeout=, balancing=) → result

STATUS_BY_KIND = {
    "bad_request": 400,
    "no_endpoint": 404,
    "raised": 500,
    "unavailable": 503,
    "timeout": 504,
}


def error_response(kind: str, message: str, status: int | None = None, **extra: Any) -> JSONResponse:
    body = {"error": {"kind": kind, "message": message, **{k: v for k, v in extra.items() if v is not None}}}
    return JSONResponse(body, status_code=status or STATUS_BY_KIND.get(kind, 500))


def _call_options(request: Request) -> dict[str, Any]:
    """Per-call options from the query string: ?timeout=SECONDS&balancing=STRATEGY."""
    options: dict[str, Any] = {}
    if "timeout" in request.query_params:
        try:
            timeout = float(request.query_params["timeout"])
        except ValueError:
            raise ValueError(f"timeout: expected seconds, got {request.query_params['timeout']!r}") from None
        if not 0 < timeout <= 3600:
            raise ValueError(f"timeout: must be in (0, 3600] seconds, got {timeout:g}")
        options["timeout"] = timeout
    if "balancing" in request.query_params:
        try:
            options["balancing"] = Balancing(request.query_params["balancing"])
        except ValueError:
            choices = ", ".join(b.value for b in Balancing)
            raise ValueError(f"balancing: must be one of {choices}") from None
    return options


def ingress_app(invoke: Invoke) -> Starlette:
    async def invoke_endpoint(request: Request) -> Response:
        artifact = request.path_params["artifact"]
        entry = request.path_params["entry"]
        body = await request.body()
        try:
            payload = json.loads(body) if body.strip() else None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return error_response("bad_request", f"the request body is not valid JSON: {error}")
        try:
            options = _call_options(request)
        except ValueError as error:
            return error_response("bad_request", str(error))
        try:
            result = await invoke(artifact, entry, payload, **options)
        except InvocationError as error:
            return error_response(error.kind, error.message, type=error.remote_type)
        return JSONResponse(result)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/invoke/{artifact}/{entry}", invoke_endpoint, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


async def serve_http(
    app: Starlette, address: str, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve `app` on host:port until cancelled; reports the bound addresses once listening."""
    config = HypercornConfig()
    config.bind = [address]
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = 75.0
    await serve(app, config, task_status=task_status)  # type: ignore[arg-type]
