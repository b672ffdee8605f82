"""CLI start-up benchmark: wall time of `aether --help` and of `aether cluster status` against a running
3-node cluster on 127.0.0.1, with `python -c pass` (the same interpreter) as the baseline of the same run.

    uv run python benchmarks/cli_bench.py              # 15 runs of each command
    uv run python benchmarks/cli_bench.py --runs 31    # more runs
    uv run python benchmarks/cli_bench.py --no-cluster # only what needs no cluster
    uv run python benchmarks/cli_bench.py --compare ../other-worktree/.venv/bin/aether  # before/after

Each round runs every command once, in a rotating order (so drift in the machine's load hits all of them
alike); the figure is the median over the rounds, with the ratio to the baseline's median, and the median
CPU time (user + system) of the command, which a busy machine inflates less than wall time. Targets:
≤ 0.3 s for `aether --help` and for `aether cluster status`. When a target is missed, the imports of that
command are profiled with `python -X importtime` and the slowest are printed (cumulative and self time).

Bytecode. An operator's installation has its modules compiled: pip compiles them at install time, and
otherwise Python writes `__pycache__` on the first run. The commands are therefore timed with bytecode
cached, in a private `PYTHONPYCACHEPREFIX` under the temporary directory (written by a warm-up run, so
nothing is written into the environment or the sources, and `PYTHONDONTWRITEBYTECODE` of the calling shell
does not apply). The two targets are also timed with `PYTHONDONTWRITEBYTECODE=1` and no prefix: every
module without a `.pyc` beside its source is then compiled on every run, which is what an environment
installed without bytecode (`uv sync` does not compile by default) gives under that setting.

Figures and notes: benchmarks/README.md, section "CLI". Everything runs from one temporary directory
(removed at the end unless --keep); the cluster's processes are stopped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from aether_node.dev import LocalNodeCluster, build_sample_index, plan_cluster, wait_until_ready

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "blueprint.toml"
TARGET = 0.3  # seconds
BLUEPRINT = 'name = "bench"\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 3\n'


def aether_script() -> str:
    beside = Path(sys.executable).with_name("aether")
    if beside.exists():
        return str(beside)
    found = shutil.which("aether")
    if not found:
        sys.exit("cli_bench: no `aether` console script in this environment (run with `uv run`)")
    return found


NO_BYTECODE = ", PYTHONDONTWRITEBYTECODE=1"  # suffix of the names of commands timed without bytecode


def clean_env(pycache: Path | None) -> dict[str, str]:
    """The environment of a timed command: bytecode cached under `pycache`, or (None) never written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AETHER_")}
    env["COLUMNS"] = "200"
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def bytecode_beside_sources() -> str:
    """Whether the CLI's heaviest dependencies have `.pyc` files beside their sources (what the
    PYTHONDONTWRITEBYTECODE=1 rows then measure)."""
    import importlib.util

    found = []
    for name in ("cyclopts", "rich", "attr"):
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin) if spec and spec.origin else None
        cached = origin is not None and any((origin.parent / "__pycache__").glob("*.pyc"))
        found.append(f"{name} {'yes' if cached else 'no'}")
    return ", ".join(found)


def timed(command: list[str], cwd: Path, pycache: Path | None) -> tuple[float, float]:
    """Wall time of `command`, and its CPU time (user + system, the command and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        command,
        cwd=cwd,
        env=clean_env(pycache),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"cli_bench: {' '.join(command)} failed ({result.returncode}):\n{result.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


# ---------------------------------------------------------------- the cluster


def processes_under(directory: Path) -> list[int]:
    root = str(directory.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd.startswith(root) or any(a.startswith(root) or f"={root}" in a for a in args):
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def running_cluster(work: Path):  # type: ignore[no-untyped-def]
    index = work / "index"
    print("building the sample index ...", flush=True)
    build_sample_index(REPO / "sample-slices", index)
    cluster: LocalNodeCluster = plan_cluster(work / "cluster", 3, str(index))
    try:
        cluster.start_all()
        trio.run(lambda: wait_until_ready(cluster, timeout=90))
        yield cluster
    finally:
        cluster.stop_all(signal.SIGTERM, timeout=30)
        deadline = time.monotonic() + 10
        while (left := processes_under(cluster.directory)) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)


# ---------------------------------------------------------------- import profile


def import_profile(command: list[str], cwd: Path, pycache: Path | None, top: int) -> str:
    """The slowest imports of `command` (a Python console script and its arguments), by cumulative time
    among the top-level imports and by self time among all."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *command],
        cwd=cwd,
        env=clean_env(pycache),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, self_us, cumulative_us, name = (
            part.strip() for part in line.replace("import time:", "|").split("|")
        )
        depth = (len(name) - len(name.lstrip())) // 2
        rows.append((name.strip(), int(self_us), int(cumulative_us), depth))
    total = sum(r[1] for r in rows) / 1e6
    packages: dict[str, list[int]] = {}
    for name, self_us, _, _ in rows:
        packages.setdefault(name.split(".")[0], []).append(self_us)
    by_package = sorted(packages.items(), key=lambda item: -sum(item[1]))[:top]
    top_level = sorted((r for r in rows if r[3] == 0), key=lambda r: -r[2])[:top]
    lines = [f"  imports: {len(rows)} modules, {total:.3f} s in all (importtime's own overhead included)"]
    lines.append("  by distribution/package (self time of its modules, summed):")
    lines += [f"    {sum(us) / 1e6:7.3f} s  {name} ({len(us)} modules)" for name, us in by_package]
    lines.append("  slowest top-level imports (cumulative):")
    lines += [f"    {c / 1e6:7.3f} s  {name}" for name, _, c, _ in top_level]
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--no-cluster", action="store_true", help="skip `aether cluster status`")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--top", type=int, default=12, help="imports to show when a target is missed")
    parser.add_argument(
        "--compare",
        metavar="AETHER",
        help="another build's `aether` console script (e.g. another worktree's .venv/bin/aether): its\n"
        "--help and cluster status are timed in the same rounds, rows marked [compare]",
    )
    options = parser.parse_args()

    aether = aether_script()
    work = Path(tempfile.mkdtemp(prefix="aether-cli-bench-"))
    pycache = work / "pycache"

    def pycache_of(name: str) -> Path | None:
        return None if NO_BYTECODE in name else pycache

    print(f"cli_bench {dt.datetime.now().isoformat(timespec='seconds')}  {platform.platform()}")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
          f"{options.runs} runs")  # fmt: skip
    print(f"bytecode: cached under {pycache}; for the rows '{NO_BYTECODE[2:]}', .pyc files beside"
          f" the sources of: {bytecode_beside_sources()}")  # fmt: skip
    try:
        with contextlib.ExitStack() as stack:
            commands: dict[str, list[str]] = {
                "python -c pass (baseline)": [sys.executable, "-c", "pass"],
                "python -c 'import aether_cli._app'": [sys.executable, "-c", "import aether_cli._app"],
                "aether --help": [aether, "--help"],
                "aether blueprint validate": [aether, "blueprint", "validate", str(EXAMPLE)],
                "aether --help" + NO_BYTECODE: [aether, "--help"],
            }  # fmt: skip
            if not options.no_cluster:
                cluster = stack.enter_context(running_cluster(work))
                urls = ",".join(f"http://{n.management}" for n in cluster.nodes)
                (work / "bench.toml").write_text(BLUEPRINT)
                apply = [aether, "blueprint", "apply", "bench.toml", "--wait", "--cluster", urls]
                timed(apply, work, pycache)
                status = [aether, "cluster", "status", "--cluster", urls]
                commands["aether cluster status"] = status
                commands["aether cluster status --json"] = [*status, "--json"]
                commands["aether cluster status" + NO_BYTECODE] = status
            if options.compare:
                for name in [n for n in commands if n.startswith(("aether --help", "aether cluster status"))]:
                    if "--json" not in name:
                        commands[f"{name} [compare]"] = [options.compare, *commands[name][1:]]
            for name, command in commands.items():  # warm the page cache and write the .pyc files
                timed(command, work, pycache_of(name))
            times: dict[str, list[float]] = {name: [] for name in commands}
            cpu: dict[str, list[float]] = {name: [] for name in commands}
            names = list(commands)
            for round_ in range(options.runs):
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    wall, used = timed(commands[name], work, pycache_of(name))
                    times[name].append(wall)
                    cpu[name].append(used)

            # The API's own answer time, without any process start-up: the cluster status (KV status, one
            # barrier, then local reads), the blueprint list (one barrier, one read) and no KV at all.
            server: dict[str, list[float]] = {}
            if not options.no_cluster:
                import httpx

                base = f"http://{cluster.nodes[0].management}"
                with httpx.Client(timeout=30) as http:
                    for path in ("/api/v1/cluster", "/api/v1/blueprints", "/healthz"):
                        http.get(base + path).raise_for_status()
                        server[f"GET {path} (in-process)"] = samples = []
                        for _ in range(options.runs):
                            started = time.perf_counter()
                            http.get(base + path).raise_for_status()
                            samples.append(time.perf_counter() - started)

            baseline = statistics.median(times[names[0]])
            print(
                f"\n{'command (wall time, s)':60} {'median':>8} {'min':>8} {'max':>8} {'ratio':>7} {'cpu':>8}"
            )
            for name in names:
                median = statistics.median(times[name])
                print(
                    f"{name:60} {median:8.3f} {min(times[name]):8.3f} {max(times[name]):8.3f}"
                    f" {median / baseline:6.1f}x {statistics.median(cpu[name]):8.3f}"
                )
            for name, samples in server.items():
                median = statistics.median(samples)
                print(
                    f"{name:60} {median:8.3f} {min(samples):8.3f} {max(samples):8.3f}"
                    f" {median / baseline:6.1f}x"
                )
            compared = [n for n in names if f"{n} [compare]" in times]
            if compared:
                print("\nthis build / the compared build, same rounds (median wall; median CPU):")
            for name in compared:
                other = f"{name} [compare]"
                wall_ratio = statistics.median(times[name]) / statistics.median(times[other])
                cpu_ratio = statistics.median(cpu[name]) / statistics.median(cpu[other])
                print(f"  {name:58} {wall_ratio:6.2f}x {cpu_ratio:6.2f}x")
            print(f"\nload average now {os.getloadavg()[0]:.2f}; targets (≤ {TARGET} s, bytecode cached):")
            over = []
            for name in ("aether --help", "aether cluster status"):
                for variant in (
                    name,
                    name + NO_BYTECODE,
                    f"{name} [compare]",
                    f"{name}{NO_BYTECODE} [compare]",
                ):
                    if variant not in times:
                        continue
                    median = statistics.median(times[variant])
                    if variant == name:
                        verdict = "ok" if median <= TARGET else "MISSED"
                    else:
                        verdict = ("within" if median <= TARGET else "over") + " 0.3 s (for information)"
                    print(f"  {variant:60} {median:.3f} s  {verdict}")
                    if median > TARGET:
                        over.append(variant)
            for name in over:
                print(f"\nwhere `{name}` spends its start-up (python -X importtime):")
                print(import_profile(commands[name], work, pycache_of(name), options.top))
    finally:
        if options.keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
