"""`aether blueprint apply --wait` into a pipe (no terminal: no bar is drawn) shows its progress as lines,
one whenever the ACTIVE counts change, on a real one-node cluster. Its index is empty, so the slice never
installs: the first status is not converged, whatever the machine's speed, and the wait ends saying why."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cli_support import CliCluster, cli_cluster, expect

pytestmark = [pytest.mark.integration]

BLUEPRINT = 'name = "waits"\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 1\n'


@pytest.fixture
def one_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliCluster]:
    directory = tmp_path_factory.mktemp("apply-progress")
    index = directory / "index"
    index.mkdir()
    with cli_cluster(directory, index, nodes=1, dev_mode=True, node_env={"AETHER_API_KEYS": None}) as running:
        yield running


def test_apply_wait_into_a_pipe_prints_each_change_of_progress(one_node: CliCluster) -> None:
    (one_node.cwd / "waits.toml").write_text(BLUEPRINT)
    run = expect(one_node.aether("blueprint", "apply", "waits.toml", "--wait", "--timeout", "60"), 1)
    lines = run.stdout.splitlines()
    assert lines[0] == "blueprint 'waits' created; waiting for it to converge...", str(run)
    assert "converging: org.aether:echo:1.0.0 0/1 ACTIVE" in lines, str(run)
    assert "blueprint 'waits' cannot converge" in run.stderr, str(run)
