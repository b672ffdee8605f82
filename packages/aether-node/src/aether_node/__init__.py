"""aether-node: the Aether node supervisor — KV replica, slice runtime (installer, slice hosts, store),
deployment managers, endpoint registry, peer calls, ingress and the management API.

The public names below are imported on first use (PEP 562), so that `aether_node.client` — the API
client and models the CLI and the MCP service use — imports nothing server-side.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # configuration and running a node
    "NodeConfig": "._config",
    "KVSettings": "._config",
    "ConfigError": "._config",
    "load_config": "._config",
    "NodeInfo": "._node",
    "serve_node": "._node",
    # coordinates, blueprints, records
    "Coordinates": "._coordinates",
    "Blueprint": "._blueprint",
    "SliceSpec": "._blueprint",
    "Resources": "._blueprint",
    "Strategy": "._blueprint",
    "Balancing": "._blueprint",
    "parse_blueprint": "._blueprint_toml",
    "BlueprintError": "._blueprint_toml",
    "SliceRecord": "._records",
    "SliceState": "._records",
    "EndpointRecord": "._records",
    "NodeRecord": "._records",
    "encode_record": "._records",
    "decode_record": "._records",
    "InstanceKey": "._schema",
    # errors
    "NodeError": "._errors",
    "InvalidCoordinatesError": "._errors",
    "ResolutionError": "._errors",
    "SliceHostError": "._errors",
    "StepTimeoutError": "._errors",
    "InvocationError": "._errors",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aether_node' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
