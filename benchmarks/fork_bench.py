"""What one slice instance costs to start, and where (issue 12 target 4: the instances' share of a
blueprint's convergence).

    uv run python benchmarks/fork_bench.py                      # 3 rounds of 100 instances
    uv run python benchmarks/fork_bench.py --rounds 5 --instances 200

No node: a real template (`python -m aether_slice.host --preload org.aether:echo`, in a virtualenv of
aether-slice and the echo sample) is driven as a node drives it (tests/aether_slice/template_support.py):
the FORKs of a round are sent together, as a node sends those of a blueprint's instances, then each
instance is loaded and started. Per instance, from /proc: its CPU to
the nanosecond (schedstat), its minor page faults (nearly all copies of pages it shares with the
template: CPython writes a reference count or a counter into every object it touches) and its PSS once
started; per fork, the template's own CPU and faults. The baseline, in the same round: a fresh
interpreter that imports the runtime and the slice (`python -c "import aether_slice.host,
org_aether_echo"`), what each instance would cost without a template. Figures are medians over the
instances of a round, then the median of the rounds, with the load average before each round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # support.py
sys.path.insert(0, str(REPO / "tests" / "aether_slice"))  # template_support.py

from template_support import Connection, TemplateProcess  # noqa: E402

from aether_slice.protocol import Kind  # noqa: E402
from support import slice_venv  # noqa: E402

ECHO = "org.aether:echo"
ECHO_OBJECT = "org_aether_echo"


def cpu_ms(pid: int) -> float:
    """The CPU time (user + system) of `pid` so far, in ms, to the nanosecond."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e6


def minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def template_round(python: str, directory: Path, count: int) -> dict[str, float]:
    """Fork `count` echo instances from one template, the FORKs sent together as a node sends those of
    a blueprint's instances, then load and start each; medians per instance."""
    env = dict(os.environ, AETHER_SLICE_CONFIG="{}")
    log = directory / "template.log"
    template = TemplateProcess(python, log, env=env, preload=ECHO, reference=ECHO_OBJECT)
    output = os.open(directory / "instances.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        start(template.fork({}, output, name="echo#0"), 0)  # the template is ready once it forked one
        parent = template.process.pid
        cpu_before, faults_before = cpu_ms(parent), minor_faults(parent)
        connections = [template.fork({}, output, name=f"echo#{number}") for number in range(1, count + 1)]
        pids = [start(connection, number) for number, connection in enumerate(connections, 1)]
        template_cpu, template_faults = cpu_ms(parent) - cpu_before, minor_faults(parent) - faults_before
        return {
            "cpu_ms": statistics.median(cpu_ms(pid) for pid in pids),
            "faults": statistics.median(minor_faults(pid) for pid in pids),
            "pss_kib": statistics.median(pss_kib(pid) for pid in pids),
            "template_cpu_ms": template_cpu / count,
            "template_faults": template_faults / count,
        }
    finally:
        os.close(output)
        template.close()


def start(connection: Connection, number: int) -> int:
    """LOAD and START instance `number` on its connection, as a node does; its pid."""
    loaded = connection.request(
        Kind.LOAD, entry_point=ECHO, coordinates=f"{ECHO}:1.0.0", instance=number, config={}
    )
    if "ok" not in loaded:
        raise SystemExit(f"fork_bench: the load of instance {number} failed: {loaded}")
    started = connection.request(Kind.START)
    if "ok" not in started:
        raise SystemExit(f"fork_bench: the start of instance {number} failed: {started}")
    return int(loaded["ok"]["pid"])


def fresh_round(python: str, count: int) -> dict[str, float]:
    """`count` fresh interpreters importing the runtime and the slice; medians per interpreter."""
    script = (
        "import json, resource, aether_slice.host, org_aether_echo;"
        "u = resource.getrusage(resource.RUSAGE_SELF);"
        "print(json.dumps([(u.ru_utime + u.ru_stime) * 1000, u.ru_minflt]))"
    )
    cpu, faults = [], []
    for _ in range(count):
        result = subprocess.run([python, "-c", script], capture_output=True, text=True, check=True)
        spent, faulted = json.loads(result.stdout)
        cpu.append(spent)
        faults.append(faulted)
    return {"cpu_ms": statistics.median(cpu), "faults": statistics.median(faults)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instances", type=int, default=100, help="instances forked per round")
    parser.add_argument("--fresh", type=int, default=10, help="fresh interpreters started per round")
    opts = parser.parse_args(argv)
    rounds: list[tuple[float, dict[str, float], dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="aether-fork-bench-") as place:
        root = Path(place)
        print(f"building a virtualenv of aether-slice and the echo sample in {root}", flush=True)
        python = slice_venv(root, ("echo",))
        for number in range(opts.rounds):
            load = os.getloadavg()[0]
            directory = root / f"round-{number}"
            directory.mkdir()
            forked = template_round(python, directory, opts.instances)
            fresh = fresh_round(python, opts.fresh)
            rounds.append((load, forked, fresh))
            print(
                f"round {number + 1} (load average {load:.2f}): an instance {forked['cpu_ms']:.2f} ms CPU,"
                f" {forked['faults']:.0f} faults, PSS {forked['pss_kib'] / 1024:.2f} MiB; the template"
                f" {forked['template_cpu_ms']:.2f} ms, {forked['template_faults']:.0f} faults per fork;"
                f" a fresh interpreter {fresh['cpu_ms']:.1f} ms CPU, {fresh['faults']:.0f} faults",
                flush=True,
            )
    print(report(rounds, opts))
    return 0


def report(rounds: list[tuple[float, dict[str, float], dict[str, float]]], opts: argparse.Namespace) -> str:
    def median(side: int, key: str) -> float:
        return statistics.median(round_[side][key] for round_ in rounds)  # type: ignore[index]

    instance = median(1, "cpu_ms") + median(1, "template_cpu_ms")
    fresh = median(2, "cpu_ms")
    loads = ", ".join(f"{load:.2f}" for load, _, _ in rounds)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return "\n".join(
        [
            "",
            f"uv run python benchmarks/fork_bench.py --rounds {opts.rounds} --instances {opts.instances}"
            f"  ({when}; load averages {loads})",
            "",
            "| per instance (median of rounds) | figure |",
            "| --- | --- |",
            f"| the instance's CPU, fork to started | {median(1, 'cpu_ms'):.2f} ms |",
            f"| its minor page faults | {median(1, 'faults'):.0f} |",
            f"| its PSS once started | {median(1, 'pss_kib') / 1024:.2f} MiB |",
            f"| the template's CPU per fork | {median(1, 'template_cpu_ms'):.2f} ms |",
            f"| the template's faults per fork | {median(1, 'template_faults'):.0f} |",
            f"| a fresh interpreter importing the runtime and the slice | {fresh:.1f} ms,"
            f" {median(2, 'faults'):.0f} faults |",
            f"| instance + template against a fresh interpreter | {instance:.2f} ms"
            f" = {instance / fresh:.3f}x |",
        ]
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
