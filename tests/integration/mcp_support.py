"""Helpers for the MCP service tests (`test_mcp_*.py`) and `benchmarks/mcp_bench.py`.

- `mcp_service`: the real `aether-mcp` console script serving Streamable HTTP on a free loopback port;
  it is stopped with SIGTERM afterwards (SIGKILL if it does not go), whatever happened;
- `stdio_server`: the parameters that make `mcp.Client` start `aether-mcp` over stdio;
- `http_client` / `stdio_client`: an official `mcp.Client` that names itself (the agent's identity);
- `structured` / `text`: a tool result's JSON, the way `aether ... --json` prints it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import httpx2
import pytest
from cli_support import LineReader, cli_env, console_script
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, Implementation
from node_support import free_ports


def aether_mcp_command() -> list[str]:
    return console_script("aether-mcp", "aether_mcp._cli:main")


@attrs.frozen
class McpService:
    url: str
    process: subprocess.Popen[str]
    output: LineReader

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@contextlib.contextmanager
def mcp_service(cluster_urls: str, *args: str, timeout: float = 30.0) -> Iterator[McpService]:
    """`aether-mcp --transport http` on a free port of 127.0.0.1; yields once it is listening."""
    port = free_ports(1)[0]
    process = subprocess.Popen(
        [
            *aether_mcp_command(),
            "--cluster",
            cluster_urls,
            "--transport",
            "http",
            "--listen",
            f"127.0.0.1:{port}",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=cli_env(),
    )
    try:
        output = LineReader(process)
        line = output.wait_for(lambda s: "serving MCP at " in s, timeout=timeout, what="aether-mcp listening")
        yield McpService(line.split("serving MCP at ", 1)[1].strip(), process, output)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def stdio_server(cluster_urls: str, *args: str) -> StdioServerParameters:
    env = cli_env()
    return StdioServerParameters(
        command=aether_mcp_command()[0],
        args=[*aether_mcp_command()[1:], "--cluster", cluster_urls, *args],
        env={k: v for k, v in env.items() if k in ("PATH", "HOME", "TMPDIR", "LANG", "VIRTUAL_ENV")},
    )


def http_client(url: str, name: str, *, headers: dict[str, str] | None = None, **options: Any) -> Client:
    """`options`: more of `mcp.Client`'s (e.g. mode="legacy" for a pre-2026-07-28 agent)."""
    http = httpx2.AsyncClient(headers=headers or {}, timeout=120)
    transport = streamable_http_client(url, http_client=http)
    return Client(
        transport, client_info=Implementation(name=name, version="1.0"), read_timeout_seconds=120, **options
    )


def stdio_client(server: StdioServerParameters, name: str) -> Client:
    return Client(server, client_info=Implementation(name=name, version="1.0"), read_timeout_seconds=120)


def structured(result: CallToolResult) -> Any:
    """A tool's answer as `aether ... --json` prints it (a list comes wrapped as {"result": [...]})."""
    assert not result.is_error, f"the tool failed: {text(result)}"
    content = result.structured_content
    if content is None:
        return json.loads(text(result))
    if set(content) == {"result"}:
        return content["result"]
    return content


def text(result: CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def blueprint_toml(name: str, *slices: tuple[str, int]) -> str:
    body = f'name = "{name}"\n'
    for artifact, instances in slices:
        body += f'\n[[slices]]\nartifact = "{artifact}"\ninstances = {instances}\n'
    return body


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def fail_with(service: McpService, message: str) -> None:
    pytest.fail(f"{message}\n--- aether-mcp output\n" + "\n".join(service.output.lines))


def ids(items: Sequence[Any], attribute: str = "name") -> set[str]:
    return {str(getattr(item, attribute)) for item in items}
