"""The nemesis suite's smoke, part of the default test run: a 3-node cluster in network namespaces,
every workload, and two faults (the Raft leader's node SIGKILLed, then the leader isolated by a
partition; without nftables, a node paused instead), each healed and followed by convergence. Every
invariant is checked. And a run that gets SIGTERM removes every namespace, mount and process it made.
Skipped with the reason where namespaces cannot be made (not root)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from chaos_cluster import processes_under
from chaos_harness import assert_no_violations, require_namespaces, run_once
from chaos_net import PREFIX, STATE_DIR, have_nft

from support import wait_until_sync

HERE = Path(__file__).resolve().parent

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos_smoke]


def test_smoke_two_faults_every_invariant(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    nemeses = ("kill-leader", "partition-leader" if have_nft() else "pause-node")
    report = run_once(
        request,
        tmp_path,
        "smoke",
        nemeses=nemeses,
        rounds=2,
        in_order=True,
        hold=(4.0, 6.0),
        quiet=1.0,
        converge_bound=60.0,
    )
    if not request.config.getoption(
        "--chaos-nemesis"
    ):  # (the options of `nox -s chaos -- ...` apply here too)
        rounds = request.config.getoption("--chaos-rounds") or 2
        assert [f.nemesis for f in report.faults] == [nemeses[n % 2] for n in range(rounds)]
    assert_no_violations(report)


def test_sigterm_ends_a_run_and_removes_everything_it_made(tmp_path: Path) -> None:
    require_namespaces()
    script = (
        "import sys, trio\n"
        f"sys.path[:0] = [{str(HERE)!r}, {str(HERE.parent / 'integration')!r}, {str(HERE.parent)!r}]\n"
        "from pathlib import Path\n"
        "from chaos_runner import RunConfig, run_chaos\n"
        f"trio.run(run_chaos, RunConfig(directory=Path({str(tmp_path / 'run')!r}), seed=1,"
        " nemeses=('kill-node',), rounds=100))\n"
    )
    runner = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)

    def running_run() -> str | None:
        """The run's id once it has made its namespaces and started its cluster's processes."""
        assert runner.poll() is None, runner.stderr.read() if runner.stderr else ""
        owned = [p.name for p in STATE_DIR.glob("*") if p.read_text().split()[0] == str(runner.pid)]
        return owned[0] if owned and processes_under(tmp_path / "run" / "cluster") else None

    try:
        run_id = wait_until_sync(running_run, timeout=180, what="the run's namespaces and cluster processes")
        runner.send_signal(signal.SIGTERM)
        _, stderr = runner.communicate(timeout=90)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert "KeyboardInterrupt" in stderr
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{PREFIX}{run_id}" not in names
    assert f"aether-chaos-{run_id}" not in Path("/proc/mounts").read_text()
    assert not processes_under(tmp_path / "run")
    assert not (STATE_DIR / run_id).exists()
