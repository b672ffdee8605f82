"""Errors of aether-mcp.

    McpServiceError          base
    ├── ConfigError          the service's own options are unusable (the operator's fault); it does not start
    ├── ClusterError         the cluster refused or failed a request; the text is what the `aether` CLI shows
    └── AgentBusyError       another agent holds the cluster (one agent at a time)

The MCP SDK turns a ToolError into a tool result with `isError`; these are raised as ToolErrors at the
tool boundary (`_tools.py`), so the agent reads the same sentence an operator would.
"""

from __future__ import annotations


class McpServiceError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(McpServiceError):
    """Raised at start-up when an option is unusable: names the option and what to do."""


class ClusterError(McpServiceError):
    """Raised when the cluster answers with an error, or cannot be reached. `kind` is the management API's
    error kind (`unreachable` when no node could be reached, `no_answer` when a node got the request and
    gave no answer — it may have run there — `invalid` for bad input)."""

    def __init__(self, message: str, *, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


class AgentBusyError(McpServiceError):
    """Raised when an agent that does not hold the agent lease makes a request. Names the holder."""
