"""The service's options: checked once, with errors that name the option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import aether_mcp
from aether_mcp import ConfigError, make_config

GOOD: dict[str, Any] = dict(
    cluster="127.0.0.1:8001,http://127.0.0.1:8002",
    api_key=None,
    transport="http",
    listen="127.0.0.1:0",
    read_only=False,
    token=None,
    agent_idle_timeout=120.0,
    lease_ttl=15.0,
)


def test_a_good_configuration() -> None:
    config = make_config(**GOOD)
    assert config.cluster == ("http://127.0.0.1:8001", "http://127.0.0.1:8002")
    assert (config.host, config.port, config.token) == ("127.0.0.1", 0, None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cluster": None}, "no cluster given: pass --cluster"),
        ({"cluster": "ftp://x"}, "--cluster 'ftp://x': expected an http:// or https:// URL"),
        ({"listen": "nowhere"}, "--listen 'nowhere': expected HOST:PORT"),
        ({"listen": "127.0.0.1:99999"}, "expected HOST:PORT"),
        ({"listen": "0.0.0.0:8765"}, "listening beyond loopback needs a bearer token: pass --token"),
        ({"listen": "0.0.0.0:8765", "token": "short"}, "--token: use at least 16 characters"),
        ({"lease_ttl": 1}, "--lease-ttl 1: expected 2 to 300 seconds"),
        ({"agent_idle_timeout": 0}, "--agent-idle-timeout 0: expected a positive number"),
    ],
)
def test_bad_options_are_refused_by_name(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        make_config(**(GOOD | change))
    assert message in raised.value.message


def test_listening_beyond_loopback_with_a_token_is_fine() -> None:
    config = make_config(**(GOOD | {"listen": "0.0.0.0:8765", "token": "t" * 16}))
    assert (config.host, config.token) == ("0.0.0.0", "t" * 16)


def test_the_exported_surface() -> None:
    assert sorted(aether_mcp.__all__) == [
        "AgentBusyError",
        "ClusterError",
        "ConfigError",
        "McpConfig",
        "McpServiceError",
        "TOOLS",
        "make_config",
    ]
    assert callable(aether_mcp.run_service)


def test_without_a_cluster_the_service_takes_the_current_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aether_mcp._cli import _default_cluster
    from aether_node.contexts import Config, Context, config_path, save

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("AETHER_CONTEXT", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no cluster given"):
        _default_cluster(None)
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    context = Context(name="prod", cluster=("http://a:1", "http://b:2"), api_key="k", ca_cert=pem)
    save(config_path({"XDG_CONFIG_HOME": str(tmp_path)}), Config(contexts=(context,), current="prod"))
    assert _default_cluster(None) == ("http://a:1,http://b:2", "k", pem)  # the context's CA comes along
    assert _default_cluster("mine") == ("http://a:1,http://b:2", "mine", pem)
