"""Dev tooling, public: a local cluster of real `aether-node` processes (for `aether dev`, tests and
benchmarks) and the sample slices built into a wheel index.

May import: core; `aether_kv`, httpx, trio, uv, packaging. Never the node's other layers: a dev cluster
talks to its nodes as processes, over the KV and HTTP.
"""

from ._local_cluster import LocalNodeCluster as LocalNodeCluster
from ._local_cluster import NodePlan as NodePlan
from ._local_cluster import free_port as free_port
from ._local_cluster import plan_cluster as plan_cluster
from ._local_cluster import wait_until_ready as wait_until_ready
from ._sample_index import build_sample_index as build_sample_index

__all__ = [
    "LocalNodeCluster",
    "NodePlan",
    "build_sample_index",
    "free_port",
    "plan_cluster",
    "wait_until_ready",
]
