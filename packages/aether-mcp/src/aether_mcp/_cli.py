"""`aether-mcp`: the standalone MCP service. Parses options once, then runs the service on trio."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import trio
from cyclopts import App, Parameter

from ._config import make_config
from ._errors import ConfigError

app = App(
    name="aether-mcp",
    help="Serve an Aether cluster to AI agents over MCP (stdio or Streamable HTTP), with the `aether` "
    "CLI's powers: one tool per CLI command, resources for cluster, blueprint and slice status, and "
    "notifications when they change. One agent at a time.",
    help_format="plaintext",
)


def _default_cluster(api_key: str | None) -> tuple[str, str | None, str | None]:
    """(URLs, API key, CA certificate) of the current context (or AETHER_CONTEXT's), else of the dev
    cluster recorded in ./.aether-dev/; a given API key wins over the context's."""
    from aether_node import contexts

    try:
        found = contexts.default_target(os.environ)
    except contexts.ConfigError as error:
        raise ConfigError(str(error)) from None
    if found is None:
        raise ConfigError(
            "no cluster given: pass --cluster URL[,URL...] (or AETHER_CLUSTER), make a context current"
            " (`aether context use NAME`), or start it where `aether dev up` ran"
        )
    return ",".join(found.urls), api_key or found.api_key, found.ca_cert


def _read_ca_file(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        why = getattr(error, "strerror", None) or error
        raise ConfigError(f"--ca-file {path}: cannot read it ({why})") from None


@app.default
def main_command(
    *,
    cluster: Annotated[
        str | None,
        Parameter(env_var="AETHER_CLUSTER", help="Management URL(s) of any node(s), comma-separated."),
    ] = None,
    api_key: Annotated[
        str | None, Parameter(env_var="AETHER_API_KEY", help="API key for the cluster (operator, or viewer).")
    ] = None,
    ca_file: Annotated[
        Path | None,
        Parameter(
            env_var="AETHER_CA_FILE",
            help="The cluster CA certificate (PEM) to check the nodes' HTTPS with (else the context's).",
        ),
    ] = None,
    transport: Annotated[Literal["stdio", "http"], Parameter(help="stdio, or Streamable HTTP.")] = "stdio",
    listen: Annotated[str, Parameter(help="HOST:PORT for --transport http (port 0: any free port).")] = (
        "127.0.0.1:8765"
    ),
    read_only: Annotated[
        bool, Parameter(negative=(), help="List no tool that changes the cluster, and refuse one called.")
    ] = False,
    token: Annotated[
        str | None,
        Parameter(
            env_var="AETHER_MCP_TOKEN",
            help="Bearer token MCP clients must send (required off loopback; at least 16 characters).",
        ),
    ] = None,
    agent_idle_timeout: Annotated[
        float, Parameter(help="HTTP: seconds without a request after which an agent counts as gone.")
    ] = 120.0,
    lease_ttl: Annotated[
        float,
        Parameter(help="Seconds the cluster keeps the agent lease after this service stops renewing it."),
    ] = 15.0,
) -> None:
    try:
        ca_cert = _read_ca_file(ca_file) if ca_file is not None else None
        if not cluster:  # as the `aether` CLI does: the current context, else the dev cluster here
            cluster, api_key, context_ca = _default_cluster(api_key)
            ca_cert = ca_cert or context_ca
        config = make_config(
            cluster=cluster,
            api_key=api_key,
            ca_cert=ca_cert,
            transport=transport,
            listen=listen,
            read_only=read_only,
            token=token,
            agent_idle_timeout=agent_idle_timeout,
            lease_ttl=lease_ttl,
        )
    except ConfigError as error:
        print(f"aether-mcp: error: {error.message}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="aether-mcp: %(message)s")
    from ._server import run_service

    async def run() -> None:
        # SIGTERM and SIGINT end the service cleanly: the agent lease is given back at once.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:

                async def serve(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                    await run_service(config, task_status=task_status)
                    nursery.cancel_scope.cancel()  # the stdio peer hung up: the signal watcher goes too

                nursery.start_soon(_stop_on_signal, signals, nursery.cancel_scope)
                where = await nursery.start(serve)
                if config.transport == "http":
                    print(f"aether-mcp: serving MCP at {where}", file=sys.stderr, flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass


async def _stop_on_signal(signals: Any, scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


def main() -> None:
    app()
