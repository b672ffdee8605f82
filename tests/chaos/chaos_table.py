"""The rows of docs/RELIABILITY.md from the nemesis suite's `results.jsonl` (one JSON line per run,
written with `--chaos-dir DIR`): one row per nemesis (the runs where it was injected) and one per
workload (every run). Usage: `python tests/chaos/chaos_table.py DIR/results.jsonl`."""

from __future__ import annotations

import collections
import json
import statistics
import sys
from pathlib import Path
from typing import Any

WORKLOAD_INVARIANTS = {
    "KV registers (put/get/cas, 4 clients)": ("kv_ops", "kv_unknown_or_unavailable", ("kv-linearizable",)),
    "acknowledged unique writes": ("write_attempts", None, ("no-acked-write-lost",)),
    "invocations (3 ingress callers + 1 API caller)": (
        "calls",
        "failed_calls",
        ("non-idempotent-once", "acked-call-executed"),
    ),
    "blueprint changes (apply/scale/upgrade/failing upgrade/delete)": (
        "blueprint_ops",
        "blueprint_failures",
        ("availability-floor",),
    ),
}


def _conv(times: list[float]) -> str:
    return f"{statistics.median(times):.1f} s / {max(times):.1f} s" if times else "-"


def _violations(runs: list[dict[str, Any]]) -> str:
    kinds = collections.Counter(v["invariant"] for run in runs for v in run["violations"])
    return ", ".join(f"{n} {k}" for k, n in kinds.most_common()) or "0"


def rows(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| nemesis | runs | operations | faults injected | invariant violations | convergence after heal "
        "(median / worst) | failed calls (all / outside a downed node's ingress) |",
        "|---|---|---|---|---|---|---|",
    ]
    by_label: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for run in runs:  # a run's label: its nemesis when alone, "combined" or "smoke"
        by_label[run["label"]].append(run)
    for label, group in sorted(by_label.items()):
        faults = [f for run in group for f in run["faults"]]
        ops = sum(r["counts"].get("kv_ops", 0) + r["counts"].get("calls", 0) for r in group)
        failed = sum(r["counts"].get("failed_calls", 0) for r in group)
        outside = sum(r["counts"].get("failed_calls_outside_killed_ingress", 0) for r in group)
        times = [f["converged"] for f in faults if f["converged"] >= 0]
        not_conv = sum(1 for f in faults if f["converged"] < 0)
        conv = _conv(times) + (f" ({not_conv} not within the bound)" if not_conv else "")
        if label == "combined":
            label = (
                "combined: 2 at random per round (" + ", ".join(sorted({f["nemesis"] for f in faults})) + ")"
            )
        elif label == "smoke":
            label = "smoke: " + " then ".join(dict.fromkeys(f["nemesis"] for f in faults))
        lines.append(
            f"| {label} | {len(group)} | {ops} | {len(faults)} | {_violations(group)} | {conv} "
            f"| {failed} / {outside} |"
        )
    lines += [
        "",
        "| workload | runs | operations | failed or unknown | invariant violations |",
        "|---|---|---|---|---|",
    ]
    for name, (ops_key, failed_key, invariants) in WORKLOAD_INVARIANTS.items():
        ops = sum(r["counts"].get(ops_key, 0) for r in runs)
        if failed_key:
            failed = str(sum(r["counts"].get(failed_key, 0) for r in runs))
        else:
            failed = str(
                sum(r["counts"].get("write_attempts", 0) - r["counts"].get("acked_writes", 0) for r in runs)
            )
        kinds = collections.Counter(
            v["invariant"] for r in runs for v in r["violations"] if v["invariant"] in invariants
        )
        found = ", ".join(f"{n} {k}" for k, n in kinds.most_common()) or "0"
        lines.append(f"| {name} | {len(runs)} | {ops} | {failed} | {found} |")
    other = collections.Counter(
        v["invariant"]
        for r in runs
        for v in r["violations"]
        if not any(v["invariant"] in inv for _, _, inv in WORKLOAD_INVARIANTS.values())
    )
    lines.append("")
    lines.append(
        "Cluster invariants over all runs: " + (", ".join(f"{n} {k}" for k, n in other.most_common()) or "0")
    )
    return lines


def main() -> None:
    runs = [json.loads(line) for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
    print("\n".join(rows(runs)))


if __name__ == "__main__":
    main()
