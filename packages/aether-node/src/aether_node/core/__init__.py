"""Core vocabulary: the error tree, coordinates, KV records and their JSON codec, the KV key layout,
blueprints and their TOML parser, the node's configuration and runtime policies, a watch-fed KV cache.

May import: the standard library, attrs, cattrs, packaging, `aether_node.client` (API models); `aether_kv`
and trio in `_kv_cache.py` only. Never another layer of the node. Public names are re-exported by
`aether_node` itself; this package exports nothing of its own.
"""
