"""Observe: the node's Prometheus registry (`_metrics.py`, the one module that owns one) and KV history →
typed cluster events and their filters (`_events.py`, pure).

May import: core, `aether_node.client`; `aether_kv`, prometheus_client. Exports what the benchmarks read.
"""

from ._metrics import NodeMetrics as NodeMetrics
from ._metrics import read_process_usage as read_process_usage
