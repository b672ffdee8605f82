"""The nemesis suite's smoke, part of the default test run: a 3-node cluster in network namespaces,
every workload, and two faults (the Raft leader's node SIGKILLed, then the leader isolated by a
partition; without nftables, a node paused instead), each healed and followed by convergence. Every
invariant is checked. Skipped with the reason where namespaces cannot be made (not root)."""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos_harness import assert_no_violations, run_once
from chaos_net import have_nft

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos_smoke]


def test_smoke_two_faults_every_invariant(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    second = "partition-leader" if have_nft() else "pause-node"
    report = run_once(
        request,
        tmp_path,
        "smoke",
        nemeses=("kill-leader", second),
        rounds=2,
        in_order=True,
        hold=(4.0, 6.0),
        quiet=1.0,
        converge_bound=60.0,
    )
    assert [f.nemesis for f in report.faults] == ["kill-leader", second]
    assert_no_violations(report)
