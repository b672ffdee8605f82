"""Two builds of the node's parser of request bodies (`aether_node.routing.parse_json`: both ingresses
and the management API) side by side, in alternating blocks under the same load (A/B), on bodies of a
few shapes.

    uv run python benchmarks/parse_json_ab.py --baseline /tmp/base/packages/aether-node/src
    # the baseline tree, e.g.: git archive main packages/aether-node | tar -x -C /tmp/base

Prints, per body, the median time of one parse for each build and their ratio (this / baseline), with
the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1] / "packages" / "aether-node" / "src"

BODIES = {
    "an echo call (20 B)": b'{"hello": "aether"}',
    "an object of 60 keys (1 KiB)": json.dumps({f"k{i}": "v" * 10 for i in range(60)}).encode(),
    "a list of 10,000 strings (1 MiB)": json.dumps(["x" * 100] * 10_000).encode(),
    "the same, an escaped emoji in each": json.dumps(["x" * 98 + "\U0001f600"] * 10_000).encode(),
    "the same, non-ASCII text in each": json.dumps(["é" * 100] * 10_000, ensure_ascii=False).encode(),
}


def parser_of(source: Path) -> Callable[[bytes], Any]:
    """The body parser as the tree at `source` defines it (each import afresh): `aether_node.routing.
    parse_json`; in a tree that does not export it (before 2026-12-06), what it did: the body decoded,
    then `parse_strict_json`."""
    for name in [m for m in sys.modules if m == "aether_node" or m.startswith("aether_node.")]:
        del sys.modules[name]
    sys.path.insert(0, str(source))
    try:
        from aether_node import client, routing
    finally:
        sys.path.pop(0)
    exported: Callable[[bytes], Any] | None = getattr(routing, "parse_json", None)
    if exported is not None:
        return exported

    def parse(body: bytes) -> Any:
        return client.parse_strict_json(body.decode(json.detect_encoding(body), "surrogatepass"))

    return parse


def per_parse(parse: Callable[[bytes], Any], body: bytes, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        parse(body)
    return (time.perf_counter() - start) / count


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument(
        "--baseline", type=Path, required=True, help="packages/aether-node/src of the baseline"
    )
    options.add_argument("--blocks", type=int, default=7, help="alternating blocks per build and body")
    args = options.parse_args()
    baseline, this = parser_of(args.baseline), parser_of(HERE)
    print(f"load average {os.getloadavg()[0]:.2f}; {args.blocks} alternating blocks per body")
    for name, body in BODIES.items():
        count = max(3, 200_000 // max(1, len(body) // 50))
        times: dict[str, list[float]] = {"baseline": [], "this": []}
        for _ in range(args.blocks):
            times["baseline"].append(per_parse(baseline, body, count))
            times["this"].append(per_parse(this, body, count))
        old, new = statistics.median(times["baseline"]), statistics.median(times["this"])
        print(
            f"{name}: baseline {old * 1e6:,.1f} µs, this {new * 1e6:,.1f} µs, this/baseline {new / old:.2f}"
        )
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
