"""The node: `serve_node` builds and wires every layer, keeps the registration and its lease, and stops
gracefully; `supervise` restarts a service that failed unexpectedly (trio only); the `aether-node`
command (`run`, `build-index`).

May import: every layer but dev tooling (`aether-node build-index` uses `aether_node.dev`). Exports the
command as functions: `main` (the console script) and `run` (`aether-node run`'s options are its keyword
parameters).
"""

from ._cli import main as main
from ._cli import run as run
