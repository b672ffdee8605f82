"""The fast ingress's direct path, pure parts: the retry rule the invoker and the worker share, and the
worker's reading of the node's routing table (a bad entry is left out: its calls go to the node)."""

from __future__ import annotations

from aether_node.core._blueprint import Balancing
from aether_node.routing._endpoints import may_retry
from aether_node.routing._ingress_direct import DirectRouter


def test_a_call_that_never_ran_may_always_go_elsewhere_one_that_may_have_run_only_if_idempotent() -> None:
    assert may_retry(reached=False, idempotent=False)
    assert may_retry(reached=False, idempotent=True)
    assert may_retry(reached=True, idempotent=True)
    assert not may_retry(reached=True, idempotent=False)


def router() -> DirectRouter:
    return DirectRouter(None, lambda reply: b"")  # type: ignore[arg-type]


def test_the_worker_reads_the_nodes_table() -> None:
    direct = router()
    direct.update(
        {
            "node": "n1",
            "timeout": 7.5,
            "routes": [
                ["org.aether:echo", "echo", "power_of_two", [["org.aether:echo:1.0.0", 2, True, "echo#2"]]],
            ],
            "tokens": {"secret": ["org.aether:echo:1.0.0", 2]},
        }
    )
    route = direct.routes[("org.aether:echo", "echo")]
    assert route.strategy is Balancing.POWER_OF_TWO
    (endpoint,) = route.endpoints
    assert (endpoint.node_id, endpoint.target, endpoint.idempotent) == (
        "n1",
        ("org.aether:echo:1.0.0", 2),
        True,
    )
    assert route.labels == {("org.aether:echo:1.0.0", 2): "echo#2"}
    assert direct.tokens == {"secret": ("org.aether:echo:1.0.0", 2)}
    assert direct.timeout == 7.5


def test_a_bad_route_in_the_table_is_left_out_and_the_others_kept() -> None:
    direct = router()
    good = ["org.aether:echo", "echo", "round_robin", [["org.aether:echo:1.0.0", 1, True, "echo#1"]]]
    direct.update(
        {
            "node": "n1",
            "routes": [
                ["org.aether:echo", "info", "no_such_strategy", [["org.aether:echo:1.0.0", 1, True, "x"]]],
                ["org.aether:echo", "other", "round_robin", [["not coordinates", 1, True, "x"]]],
                ["too", "short"],
                good,
            ],
        }
    )
    assert list(direct.routes) == [("org.aether:echo", "echo")]
    assert direct.tokens == {}
    assert direct.timeout == 30.0
