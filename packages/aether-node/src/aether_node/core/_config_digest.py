"""A slice config's identity by value. Pure: canonical JSON and its digest, no I/O.

Two configs are the same when their canonical JSON is: keys sorted, tuples as lists, and a float with an
integral value written as the int (TOML's `1` and a JSON round trip's `1.0` are one value; a bool stays a
bool). So a config read back from the KV, decoded by another node or after a restart, compares equal to
the blueprint's it came from, whatever the key order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

DIGEST_CHARS = 16  # of the SHA-256, hex: enough to tell a slice's configs apart


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _json(value: Any) -> str:
    """`value` (canonical already) as JSON with sorted keys, compactly."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_config(config: Mapping[str, Any]) -> str:
    """The config as canonical JSON (see the module)."""
    return _json(_canonical(config))


def _digest(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_config(config).encode()).hexdigest()[:DIGEST_CHARS]


_EMPTY = _digest({})  # most slices have no config: their records' digests cost nothing


def config_digest(config: Mapping[str, Any]) -> str:
    """A short digest of the canonical JSON: equal for equal configs, whatever their key order."""
    return _digest(config) if config else _EMPTY


def config_change(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """The top-level keys a config change touches, in words (`greeting changed; level added`); "" when
    the two are the same by value."""
    old, new = _canonical(before), _canonical(after)
    if _json(old) == _json(new):  # (not `old == new`: Python's 1 == True, JSON's 1 != true)
        return ""
    parts = []
    for verb, keys in (
        ("changed", [k for k in sorted(old.keys() & new.keys()) if _json(old[k]) != _json(new[k])]),
        ("added", sorted(new.keys() - old.keys())),
        ("removed", sorted(old.keys() - new.keys())),
    ):
        if keys:
            parts.append(f"{', '.join(keys)} {verb}")
    return "; ".join(parts)
