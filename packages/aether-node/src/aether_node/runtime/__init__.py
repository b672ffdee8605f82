"""Slice runtime: the lifecycle plan (pure), this node's deployment manager, the SliceStore, the one module
that talks to slice host processes, uv installs, spawning children, the KV replica child.

May import: core, observe; `aether_kv`, `aether_slice` (the host protocol; and to copy it), uv. Never
the control plane, routing or the APIs. Exports nothing: the node wires it.
"""
