"""aether-node: the Aether node supervisor — KV replica, slice runtime (installer, slice hosts, store),
deployment managers, endpoint registry, peer calls, ingress and the management API.

The public names below are imported on first use (PEP 562), so that `aether_node.client` — the API
client and models the CLI and the MCP service use — imports nothing server-side.

The code is one subpackage per layer (`core`, `observe`, `control`, `runtime`, `routing`, `api`,
`node`, `dev`; docs/ARCHITECTURE.md, "The node: layers"), their modules private. Other public entry
points: `aether_node.client`, `aether_node.dev` (local clusters, the sample index), `aether_node.node`
(the `aether-node` command) and what `control`, `observe` and `routing` export for the benchmarks.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # configuration and running a node
    "NodeConfig": ".core._config",
    "KVSettings": ".core._config",
    "ConfigError": ".core._config",
    "load_config": ".core._config",
    "RestartPolicy": ".core._policies",
    "StepTimeouts": ".core._policies",
    "HealthChecks": ".core._policies",
    "NodeInfo": ".node._node",
    "serve_node": ".node._node",
    # coordinates, blueprints, records
    "Coordinates": ".core._coordinates",
    "Blueprint": ".core._blueprint",
    "SliceSpec": ".core._blueprint",
    "Resources": ".core._blueprint",
    "AutoscaleSpec": ".core._autoscale_spec",
    "UpdateSpec": ".core._update_spec",
    "UpdateStrategy": ".core._update_spec",
    "HealthSpec": ".core._health_spec",
    "Strategy": ".core._blueprint",
    "Balancing": ".core._blueprint",
    "parse_blueprint": ".core._blueprint_toml",
    "BlueprintError": ".core._blueprint_toml",
    "SliceRecord": ".core._records",
    "SliceState": ".core._records",
    "EndpointRecord": ".core._records",
    "NodeRecord": ".core._records",
    "encode_record": ".core._records",
    "decode_record": ".core._records",
    "InstanceKey": ".core._schema",
    "RolloutRecord": ".core._records",
    "rollout_key": ".core._schema",
    "config_digest": ".core._config_digest",
    # errors
    "NodeError": ".core._errors",
    "InvalidCoordinatesError": ".core._errors",
    "ResolutionError": ".core._errors",
    "SliceHostError": ".core._errors",
    "StepTimeoutError": ".core._errors",
    "RequestError": ".core._errors",
    "InvocationError": ".core._errors",
    "ErrorKind": ".core._error_kinds",
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
