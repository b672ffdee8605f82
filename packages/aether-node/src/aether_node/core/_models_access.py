"""The API's models of who may operate the cluster: the named API keys (`aether key ...`) and the agent
lease (the MCP service's one agent). Records only: no I/O; public through `aether_node.client`."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class ApiKeyInfo:
    """A named API key (`aether key list`): never its secret, which is shown once, at creation."""

    name: str
    role: str  # viewer, operator or admin
    created_at: float
    created_by: str  # who created it (a key's name, `config-key`, `node:ID`)
    last_used: float = 0.0  # when a node last accepted it, to a minute (0.0: never)


@attrs.frozen(kw_only=True)
class CreatedApiKey:
    """A key just created: `secret` is what a client sends (Authorization: Bearer SECRET); the cluster
    keeps only its hash, so this is the one time it can be read."""

    name: str
    role: str
    created_at: float
    created_by: str
    secret: str


@attrs.frozen(kw_only=True)
class AgentLease:
    """Who operates the cluster as its one agent (the MCP service takes this lease for its agent)."""

    holder: str
    since: float
    ttl: float
