"""Errors of aether-mcp.

    McpServiceError          base
    ├── ConfigError          the service's own options are unusable (the operator's fault); it does not start
    ├── ClusterError         the cluster refused or failed a request; the text is what the `aether` CLI shows
    └── AgentBusyError       another agent holds the cluster (one agent at a time)

A tool answers every ClusterError with a result marked `isError` that holds the sentence the `aether` CLI
prints (`_tools.py`), so the agent reads what an operator would; a resource read raises the MCP SDK's
error that `RESOURCE_ERROR_BY_KIND` gives for the error's kind (`_server.py`).
"""

from __future__ import annotations

from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from aether_node.client import ErrorKind

# The MCP error a resource read raises for each error kind (a test checks every ErrorKind is here):
# "no such resource" (JSON-RPC -32602) for what does not exist, a failed read for the rest.
RESOURCE_ERROR_BY_KIND: dict[ErrorKind, type[ResourceError]] = {
    kind: ResourceNotFoundError if kind is ErrorKind.NOT_FOUND else ResourceError for kind in ErrorKind
}


class McpServiceError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(McpServiceError):
    """Raised at start-up when an option is unusable: names the option and what to do."""


class ClusterError(McpServiceError):
    """Raised when the cluster answers with an error, or cannot be reached. `kind` is an ErrorKind: the
    management API's (or the wire name of one a node of another version sent), or the client's own
    (`unreachable` when no node could be reached, `no_answer` when a node got the request and gave no
    answer — it may have run there), or `bad_request` for a malformed name or URL."""

    def __init__(self, message: str, *, kind: ErrorKind | str = ErrorKind.ERROR) -> None:
        super().__init__(message)
        self.kind = kind


class AgentBusyError(McpServiceError):
    """Raised when an agent that does not hold the agent lease makes a request. Names the holder."""
