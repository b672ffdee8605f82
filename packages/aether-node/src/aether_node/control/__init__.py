"""Control plane: placement strategies and the reconciliation plan (pure), the leader's loop that observes,
plans and writes fenced transactions, the expected nodes, event time stamps.

May import: core, observe; `aether_kv`. Never the slice runtime, routing or the APIs. Exports the pure
planner, which the benchmarks time.
"""

from ._allocation import NodeCapacity as NodeCapacity
from ._allocation import allocate_all as allocate_all
from ._reconcile import ObservedInstance as ObservedInstance
from ._reconcile import plan as plan
