"""`cluster_error_in` (pure): the event pump tells the cluster's errors, alone or in a task group's
(nested) group, from anything else (a bug, the bus's), which it logs as unexpected and starts over on.
(The pump itself on a real cluster: tests/integration/test_mcp_service.py.)"""

from __future__ import annotations

from aether_mcp._errors import ClusterError
from aether_mcp._notifications import cluster_error_in


def test_the_cluster_errors_of_a_group_are_told_from_anything_else() -> None:
    unreachable, refused = ClusterError("no node answered"), ClusterError("refused")
    assert cluster_error_in(unreachable) is unreachable
    nested = ExceptionGroup("task group", [ExceptionGroup("inner", [unreachable]), refused])
    assert cluster_error_in(nested) is unreachable
    assert cluster_error_in(ExceptionGroup("task group", [unreachable, RuntimeError("a bug")])) is None
    assert cluster_error_in(RuntimeError("the bus could not take it")) is None
