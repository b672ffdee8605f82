"""What the two autoscaling benchmarks share: a one-node dev cluster running `org.aether:busy`, the
`[slices.autoscale]` table they apply, the load generator's command line, and the decisions that moved
the instance count in a time window. Imported by `autoscale_bench.py` and `autoscale_ramp_bench.py`
(run as scripts, so this folder is on `sys.path`)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aether_node.dev import build_sample_index, plan_cluster, wait_until_ready

REPO = Path(__file__).resolve().parents[1]
BUSY_ID = "org.aether:busy"


@asynccontextmanager
async def one_busy_node(root: Path) -> AsyncIterator[Any]:
    """A one-node dev cluster on the sample index, ready for a blueprint; its node; stopped on exit."""
    index = root / "index"
    build_sample_index(REPO / "sample-slices", index)
    cluster = plan_cluster(root / "cluster", 1, str(index))
    cluster.start_all()
    try:
        await wait_until_ready(cluster, timeout=90)
        yield cluster.nodes[0]
    finally:
        cluster.stop_all()


def busy_blueprint(name: str, autoscale: dict[str, float] | None) -> str:
    """`org.aether:busy` x1 with a floor of 1 and, given `autoscale`, its `[slices.autoscale]` table (the
    keys in the given order, after min = 1; scaling down is slow: 30 s below half the target)."""
    text = f'name = "{name}"\n\n[[slices]]\nartifact = "{BUSY_ID}:1.0.0"\ninstances = 1\nmin_available = 1\n'
    if autoscale is None:
        return text
    table = {**autoscale, "down_after_s": 30, "down_cooldown_s": 30, "down_below": 0.5}
    return text + "\n[slices.autoscale]\nmin = 1\n" + "".join(f"{k} = {v}\n" for k, v in table.items())


def load_command(ingress: str, burn_ms: int, shape: list[str], seconds: float) -> list[str]:
    """`benchmarks/load_gen.py` calling busy's `burn` (`burn_ms` ms of CPU a call) through `ingress`
    with the load `shape` (its flags) for `seconds`, one JSON line a second and a summary."""
    return [
        sys.executable, str(REPO / "benchmarks" / "load_gen.py"), f"http://{ingress}", BUSY_ID, "burn",
        "--data", json.dumps({"ms": burn_ms}), *shape, "--duration", str(seconds), "--json",
        "--timeout", "30",
    ]  # fmt: skip


def moves(decisions: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    """The decisions that changed the instance count (not `hold`) taken between `start` and `end`."""
    return [d for d in decisions if d["action"] != "hold" and start <= d["at"] <= end]
