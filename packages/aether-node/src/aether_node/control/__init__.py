"""Control plane: placement strategies and the reconciliation plan (pure), the leader's loop that observes,
plans and writes fenced transactions, the expected nodes, event time stamps.

May import: core, observe; `aether_kv`. Never the slice runtime, routing or the APIs. Exports the pure
planner and the leader's instance index, which the benchmarks time, and the autoscaling controller with
its records (the end-to-end test drives it like the leader will).
"""

from ._allocation import NodeCapacity as NodeCapacity
from ._allocation import allocate_all as allocate_all
from ._autoscale import Action as Action
from ._autoscale import Decision as Decision
from ._autoscale import NodeSample as NodeSample
from ._autoscale import Reading as Reading
from ._autoscale import decide as decide
from ._autoscale import reading_for as reading_for
from ._autoscale import trim as trim
from ._instance_index import InstanceIndex as InstanceIndex
from ._rebalance import node_delays as node_delays
from ._reconcile import ObservedInstance as ObservedInstance
from ._reconcile import plan as plan
from ._strategies import rollouts as rollouts
