"""Core vocabulary: the error kinds (`ErrorKind`, their HTTP statuses) and the error tree, the one
translation of KV errors for requests, coordinates, KV records and their JSON codec, the KV key layout,
blueprints and their TOML parser, the node's configuration and runtime policies, a watch-fed KV cache.

May import: the standard library, attrs, cattrs, packaging, `aether_node.client` (API models); `aether_kv`
in `_kv_errors.py` and `_kv_cache.py` only, trio in `_kv_cache.py` only; `_error_kinds.py` imports the
standard library alone (the client re-exports it). Never another layer of the node. Public names are
re-exported by `aether_node` itself; this package exports nothing of its own.
"""
