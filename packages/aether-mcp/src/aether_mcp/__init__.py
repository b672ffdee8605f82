"""aether-mcp: the standalone MCP service that lets an AI agent operate an Aether cluster.

Run it with the `aether-mcp` console script; embed it with `run_service(make_config(...))`.
"""

from __future__ import annotations

from ._config import McpConfig as McpConfig
from ._config import make_config as make_config
from ._errors import AgentBusyError as AgentBusyError
from ._errors import ClusterError as ClusterError
from ._errors import ConfigError as ConfigError
from ._errors import McpServiceError as McpServiceError
from ._tools import TOOLS as TOOLS

__all__ = [
    "TOOLS",
    "AgentBusyError",
    "ClusterError",
    "ConfigError",
    "McpConfig",
    "McpServiceError",
    "make_config",
]


def __getattr__(name: str) -> object:
    if name == "run_service":
        from ._server import run_service

        return run_service
    raise AttributeError(name)
