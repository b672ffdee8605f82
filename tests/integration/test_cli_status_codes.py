"""The exit code of the status commands, for scripts and monitoring, on a real 1-node cluster: `cluster
status`, `blueprint status` and `slice status` print their answer and exit 0 when what they show is well,
4 when it is not (a blueprint that cannot converge makes the cluster unhealthy), in both output modes;
the listing commands (`cluster nodes`, `slice list`) pass no verdict and exit 0."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import cli_cluster, expect, wait_until

pytestmark = [pytest.mark.integration]

# a version the index does not have: its instance can never start
MISSING = 'name = "missing"\n\n[[slices]]\nartifact = "org.aether:echo:9.9.9"\ninstances = 1\n'


def test_status_commands_exit_4_while_what_they_show_is_not_well(tmp_path: Path, sample_index: Path) -> None:
    with cli_cluster(tmp_path, sample_index, nodes=1) as cluster:
        aether = cluster.aether
        healthy = wait_until(
            lambda: (run := aether("cluster", "status")).returncode == 0 and run,
            timeout=60,
            what="a healthy cluster (exit 0)",
        )
        assert "cluster healthy" in healthy.stdout, str(healthy)
        assert expect(aether("cluster", "status", "--json")).json()["healthy"] is True

        expect(aether("blueprint", "apply", "-", input=MISSING))
        unhealthy = expect(aether("cluster", "status"), 4)
        assert "cluster unhealthy" in unhealthy.stdout and unhealthy.stderr == "", str(unhealthy)
        answer = expect(aether("cluster", "status", "--json"), 4).json()
        assert answer["healthy"] is False and answer["unconverged"] == ["missing"], answer
        run = expect(aether("blueprint", "status", "missing"), 4)
        assert "blueprint missing: converging" in run.stdout, str(run)
        assert expect(aether("blueprint", "status", "missing", "-o", "json"), 4).json()["name"] == "missing"
        run = expect(aether("slice", "status", "org.aether:echo"), 4)
        assert run.stdout.startswith("org.aether:echo:9.9.9: 0/1 ACTIVE"), str(run)
        expect(aether("slice", "status", "org.aether:echo", "--json"), 4)
        expect(aether("cluster", "nodes"))  # a listing: no verdict
        expect(aether("slice", "list"))
        # a question that fails keeps its own code
        expect(aether("blueprint", "status", "nope"), 1)

        expect(aether("blueprint", "delete", "missing"))
        wait_until(
            lambda: aether("cluster", "status", "--json").returncode == 0,
            timeout=60,
            what="healthy again (exit 0) once the blueprint is gone",
        )
