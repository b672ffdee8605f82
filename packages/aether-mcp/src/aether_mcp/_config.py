"""The service's configuration: one frozen record, checked once at start-up. Pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Literal

import attrs

from aether_node.client import parse_urls

from ._errors import ConfigError

Transport = Literal["stdio", "http"]


@attrs.frozen(kw_only=True)
class McpConfig:
    cluster: tuple[str, ...]
    api_key: str | None = None
    ca_cert: str | None = None  # PEM of the cluster CA: the nodes' HTTPS certificates are checked with it
    transport: Transport = "stdio"
    host: str = "127.0.0.1"
    port: int = 8765
    read_only: bool = False
    token: str | None = None  # bearer token the MCP HTTP endpoint requires (required off loopback)
    agent_idle_timeout: float = 120.0  # HTTP: an agent silent this long has left
    lease_ttl: float = 15.0  # the cluster drops the agent lease this long after the service's last renewal


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8765")
    return host, int(port)


def make_config(
    *,
    cluster: str | Sequence[str] | None,
    api_key: str | None,
    transport: str,
    listen: str,
    read_only: bool,
    token: str | None,
    agent_idle_timeout: float,
    lease_ttl: float,
    ca_cert: str | None = None,
) -> McpConfig:
    if not cluster:
        raise ConfigError("no cluster given: pass --cluster URL[,URL...] (or AETHER_CLUSTER)")
    urls = parse_urls(cluster)
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--cluster {url!r}: expected an http:// or https:// URL")
    if ca_cert is not None and "-----BEGIN CERTIFICATE-----" not in ca_cert:
        raise ConfigError("--ca-file: not a PEM certificate (no -----BEGIN CERTIFICATE-----)")
    if transport not in ("stdio", "http"):
        raise ConfigError(f"--transport {transport!r}: expected stdio or http")
    host, port = parse_listen(listen)
    if transport == "http" and not is_loopback(host) and not token:
        raise ConfigError(
            f"--listen {listen}: listening beyond loopback needs a bearer token: pass --token"
            " (or AETHER_MCP_TOKEN), which every MCP client must then send"
        )
    if token is not None and len(token) < 16:
        raise ConfigError("--token: use at least 16 characters")
    if not 2 <= lease_ttl <= 300:
        raise ConfigError(f"--lease-ttl {lease_ttl:g}: expected 2 to 300 seconds")
    if agent_idle_timeout <= 0:
        raise ConfigError(
            f"--agent-idle-timeout {agent_idle_timeout:g}: expected a positive number of seconds"
        )
    return McpConfig(
        cluster=tuple(urls),
        api_key=api_key or None,
        ca_cert=ca_cert,
        transport=transport,  # type: ignore[arg-type]
        host=host,
        port=port,
        read_only=read_only,
        token=token or None,
        agent_idle_timeout=agent_idle_timeout,
        lease_ttl=lease_ttl,
    )
