"""APIs: command handlers (protocol-agnostic), the management API's routes, keys and roles, event stream
and `/metrics`, the agent lease, and the dashboard's static files (`dashboard/`).

May import: core, observe, the control plane, the slice runtime, routing. Never the node wiring or dev
tooling. Exports nothing: the node mounts it.
"""
