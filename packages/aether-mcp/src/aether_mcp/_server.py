"""The MCP server: tools, resources, notifications and the one-agent gate, assembled on the official SDK's
`MCPServer`; and the two ways to serve it: Streamable HTTP on hypercorn's trio worker, and stdio."""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus, ServerEvent
from mcp.shared.exceptions import MCPError
from mcp.types import Resource, SubscribeRequestParams, UnsubscribeRequestParams
from mcp.types import Tool as MCPTool
from mcp_types import CLIENT_INFO_META_KEY
from pydantic import ValidationError

from aether_node.client import HTTP_STATUS, ApiClient, ErrorKind, to_json, unknown_keys, visible

from ._agent import Agent, AgentGate, service_description
from ._config import McpConfig
from ._errors import RESOURCE_ERROR_BY_KIND, AgentBusyError, ClusterError
from ._gateway import ClusterGateway
from ._legacy_subscriptions import LegacySubscriptions
from ._notifications import EventPump
from ._resources import (
    BLUEPRINT_TEMPLATE,
    CLUSTER_STATUS,
    SLICE_TEMPLATE,
    blueprint_uri,
    known_slices,
    slice_uri,
)
from ._stdio import serve_stdio
from ._tools import TOOLS, error_result, register_tools

log = logging.getLogger("aether_mcp")

AGENT_BUSY = -32001  # server-defined JSON-RPC error codes
CLUSTER_ERROR = -32002
GATED = frozenset({"tools/call", "resources/read", "subscriptions/listen", "resources/subscribe"})
INSTRUCTIONS = (
    "Operate an Aether cluster: apply TOML blueprints (which slices, how many instances), watch them "
    "converge with blueprint_status or by subscribing to aether://blueprints/{name}, invoke slices, and "
    "diagnose with cluster_status, cluster_nodes and cluster_events. Every tool mirrors an `aether` CLI "
    "command and answers what `aether ... --json` prints."
)


def argument_errors(tool: str, error: ValidationError) -> str:
    """What is wrong with a tool call's arguments: `tool: argument: what, got value`, per problem."""
    said = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "arguments"
        message = problem["msg"]
        if message.startswith("Input should be "):
            message = "must be " + message.removeprefix("Input should be ")
        got = "" if problem["type"] == "missing" else f", got {problem['input']!r}"
        said.append(f"{tool}: {where}: {message}{got}"[:300])
    return "; ".join(said)


class AetherMcpServer(MCPServer):
    """MCPServer whose resource list also names every blueprint and slice the cluster has now, and whose
    change notifications reach both kinds of subscriber (`publish`)."""

    def __init__(
        self,
        gateway: ClusterGateway,
        transport: str,
        *,
        unlisted: frozenset[str] = frozenset(),
        **kwargs: Any,
    ) -> None:
        self.bus = InMemorySubscriptionBus()
        super().__init__(subscriptions=self.bus, **kwargs)
        self.gateway = gateway
        self.unlisted = unlisted  # tools not listed (with --read-only, those that change the cluster)
        self._arguments: dict[str, tuple[str, ...]] | None = None  # tool → its arguments, once listed
        self.legacy = LegacySubscriptions(lambda ctx: identify(ctx, transport).key)
        lowlevel = self._lowlevel_server  # MCPServer has no hook for these; the lowlevel server does
        lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, self.legacy.subscribe)
        lowlevel.add_request_handler(
            "resources/unsubscribe", UnsubscribeRequestParams, self.legacy.unsubscribe
        )

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        """`MCPServer.call_tool`, with arguments the tool's schema refuses said in one sentence per
        argument ("slice_invoke: timeout: must be greater than 0, got 0"), as the CLI says them, not as
        pydantic's report (its model's name, a URL per error); an argument the tool does not take is
        refused too, naming the one it may mean (the SDK dropped it unseen: `node_stop` with `forse`
        stopped the node without force, as if it had not been given), and nothing is done."""
        taken = await self._arguments_of(name)
        unknown = None if taken is None else unknown_keys(arguments or {}, taken, "argument")
        if unknown is not None:
            raise ToolError(f"{name}: {unknown}")
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as error:
            if isinstance(error.__cause__, ValidationError):
                raise ToolError(argument_errors(name, error.__cause__)) from None
            raise

    async def _arguments_of(self, name: str) -> tuple[str, ...] | None:
        """The names of the arguments tool `name` takes (its input schema's properties), listed once;
        None for a name that is no tool (`call_tool` refuses it as such)."""
        if self._arguments is None:
            self._arguments = {
                tool.name: tuple(tool.input_schema.get("properties", {}))
                for tool in await super().list_tools()
            }
        return self._arguments.get(name)

    async def list_tools(self) -> list[MCPTool]:
        """The tools an agent may use here: with --read-only, those that change the cluster are not
        listed (an agent that calls one anyway is told why it is refused)."""
        return [tool for tool in await super().list_tools() if tool.name not in self.unlisted]

    async def publish(self, event: ServerEvent) -> None:
        await self.bus.publish(event)
        await self.legacy.publish(event)

    async def list_resources(self) -> list[Resource]:
        static = await super().list_resources()
        try:
            blueprints = await self.gateway.call(lambda c: c.list_blueprints())
            instances = await self.gateway.call(lambda c: c.list_slices())
        except ClusterError as error:
            log.info("listing resources: %s", error.message)
            return static
        found = [
            Resource(
                uri=blueprint_uri(b.name),
                name=f"blueprint {b.name}",
                description=f"Blueprint {b.name} as applied, and its status: desired vs actual per slice.",
                mime_type="application/json",
            )
            for b in blueprints
        ]
        found += [
            Resource(
                uri=slice_uri(artifact),
                name=f"slice {artifact}",
                description=f"Slice {artifact}: desired vs ACTIVE, and every instance with its node.",
                mime_type="application/json",
            )
            for artifact in known_slices(blueprints, instances)
        ]
        return static + found


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)


def register_resources(server: MCPServer, gateway: ClusterGateway) -> None:
    async def read(operation: Callable[[ApiClient], Any]) -> str:
        try:
            return _json(to_json(await gateway.call(operation)))
        except ClusterError as error:
            raise RESOURCE_ERROR_BY_KIND.get(error.kind, ResourceError)(error.message) from None

    @server.resource(
        CLUSTER_STATUS,
        name="cluster status",
        description="Leader, quorum, revision, health, nodes and instance counts.",
        mime_type="application/json",
    )
    async def cluster_status() -> str:
        return await read(lambda c: c.cluster_status())

    @server.resource(
        BLUEPRINT_TEMPLATE,
        name="blueprint",
        description="A blueprint as applied, and its status: desired vs actual per slice.",
        mime_type="application/json",
    )
    async def blueprint(name: str) -> str:
        return await read(lambda c: {"blueprint": c.get_blueprint(name), "status": c.blueprint_status(name)})

    @server.resource(
        SLICE_TEMPLATE,
        name="slice",
        description="One slice (group:artifact): desired vs ACTIVE, and every instance with its node.",
        mime_type="application/json",
    )
    async def slice_status(artifact: str) -> str:
        return await read(lambda c: c.slice_status(artifact))


def said(text: str, most: int) -> str:
    """What an agent says of itself, as the lease's holder shows it to the next agent and the operator:
    at most `most` characters (the node takes a holder of 200 at most: a longer name was refused with a
    message about the holder, and that agent never admitted), control characters as escapes."""
    text = visible(text, one_line=True)
    return text if len(text) <= most else text[: most - 1] + "…"


def identify(ctx: ServerRequestContext[Any, Any], transport: str) -> Agent:
    """Who is asking. stdio: the one process on the pipe. HTTP: an `Aether-Agent` header if the agent
    sends one, else its MCP session, else its client name and address."""
    params = ctx.session.client_params
    info: Any = params.client_info if params is not None else (ctx.meta or {}).get(CLIENT_INFO_META_KEY)
    if isinstance(info, dict):
        name = f"{info.get('name', '?')} {info.get('version', '')}".strip()
    elif info is not None:
        name = f"{info.name} {info.version}".strip()
    else:
        name = "an unnamed MCP client"
    name = said(name, 60)
    if transport == "stdio":
        return Agent("stdio", f"{name} over stdio")
    request = ctx.request
    headers = getattr(request, "headers", None) or {}
    client = getattr(request, "client", None)
    host = client.host if client else "?"
    chosen = headers.get("aether-agent")
    if chosen:
        chosen = said(chosen, 60)
        return Agent(f"agent:{chosen}", f"{name} ({chosen}) from {host}")
    session = headers.get("mcp-session-id")
    if session:
        return Agent(f"session:{session}", f"{name} from {host} (MCP session {session[:8]})")
    return Agent(f"client:{name}@{host}", f"{name} from {host}")


class OneAgentAtATime:
    """Server middleware: every request that reads or changes the cluster goes through the agent gate."""

    def __init__(self, gate: AgentGate, transport: str) -> None:
        self.gate = gate
        self.transport = transport

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method not in GATED or ctx.request_id is None:
            return await call_next(ctx)
        agent = identify(ctx, self.transport)
        try:
            async with self.gate.serving(agent):
                return await call_next(ctx)
        except (AgentBusyError, ClusterError) as error:  # busy, or the lease could not be asked for
            if ctx.method == "tools/call":
                return error_result(error.message)
            raise MCPError(
                AGENT_BUSY if isinstance(error, AgentBusyError) else CLUSTER_ERROR, error.message
            ) from None


def build_server(config: McpConfig, gateway: ClusterGateway, gate: AgentGate | None) -> AetherMcpServer:
    server = AetherMcpServer(
        gateway,
        config.transport,
        name="aether",
        title="Aether cluster",
        instructions=INSTRUCTIONS,
        version=_version(),
        middleware=[OneAgentAtATime(gate, config.transport)] if gate is not None else [],
        log_level="WARNING",
        unlisted=frozenset(spec.name for spec in TOOLS if spec.mutating) if config.read_only else frozenset(),
    )
    register_tools(server, gateway, read_only=config.read_only)
    register_resources(server, gateway)
    return server


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aether-mcp")
    except PackageNotFoundError:
        return "0"


# ---------------------------------------------------------------- HTTP


ASGIApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]


def guarded_app(app: ASGIApp, *, token: str | None, gate: AgentGate | None) -> ASGIApp:
    """The SDK's app behind a bearer-token check (when a token is set), and noticing the end of an MCP
    session (DELETE), which frees the agent lease at once."""

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if token is not None:
            scheme, _, given = headers.get("authorization", "").strip().partition(" ")
            # (the scheme's case is not the client's to get right: RFC 9110 makes it case-insensitive)
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                await _deny(send)
                return
        await app(scope, receive, send)
        session = headers.get("mcp-session-id")
        if gate is not None and scope.get("method") == "DELETE" and session:
            await gate.release(f"session:{session}")

    return guarded


async def _deny(send: Callable[[Any], Awaitable[None]]) -> None:
    body = json.dumps(
        {
            "error": {
                "kind": ErrorKind.UNAUTHENTICATED,
                "message": "this MCP endpoint needs Authorization: Bearer TOKEN",
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": HTTP_STATUS[ErrorKind.UNAUTHENTICATED],
            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def serve_mcp_http(
    server: AetherMcpServer,
    config: McpConfig,
    gate: AgentGate | None,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve Streamable HTTP at http://HOST:PORT/mcp until cancelled; reports that URL once listening."""
    app = server.streamable_http_app(
        host=config.host, session_idle_timeout=max(config.agent_idle_timeout, 60)
    )
    hyper = HypercornConfig()
    hyper.bind = [f"{config.host}:{config.port}"]
    hyper.accesslog = None
    hyper.loglevel = "WARNING"
    hyper.graceful_timeout = 1.0

    class _Status:
        def started(self, binds: list[str]) -> None:
            url = binds[0].replace("0.0.0.0", "127.0.0.1") + "/mcp"
            task_status.started(url)

    await serve(guarded_app(app, token=config.token, gate=gate), hyper, task_status=_Status())  # type: ignore[arg-type]


# ---------------------------------------------------------------- running


async def run_service(
    config: McpConfig, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the service until cancelled (HTTP) or until the stdio peer hangs up."""
    gateway = ClusterGateway(config.cluster, api_key=config.api_key, ca_cert=config.ca_cert)
    listen = f"{config.host}:{config.port}" if config.transport == "http" else None
    gate = (
        None
        if config.read_only
        else AgentGate(
            gateway,
            service=service_description(config.transport, listen),
            ttl=config.lease_ttl,
            idle_timeout=config.agent_idle_timeout if config.transport == "http" else math.inf,
        )
    )
    server = build_server(config, gateway, gate)
    pump = EventPump(gateway, server.publish)
    async with trio.open_nursery() as nursery:
        await nursery.start(pump.run)
        if gate is not None:
            await nursery.start(gate.keep)
        try:
            if config.transport == "http":
                url = await nursery.start(serve_mcp_http, server, config, gate)
                # (the port bound, where --port 0 said none: the lease's holder names it)
                if gate is not None:
                    bound = url.removeprefix("http://").removesuffix("/mcp")
                    gate.service = service_description(config.transport, bound)
                task_status.started(url)
                await trio.sleep_forever()
            else:
                task_status.started("stdio")
                lowlevel = server._lowlevel_server  # (MCPServer has no hook for an unreadable line)
                await serve_stdio(lowlevel, lowlevel.create_initialization_options())
        finally:
            if gate is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await gate.release()
            nursery.cancel_scope.cancel()
