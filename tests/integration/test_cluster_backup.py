"""`aether cluster backup FILE` then `aether cluster restore FILE` into a fresh cluster gives back the same
blueprints, the same revision history and the same named API keys (their secrets keep working); a restore
into a cluster that has state, or of a file that is not a backup, is refused and changes nothing."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cli_support import CliCluster, cli_cluster, expect

pytestmark = [pytest.mark.integration, pytest.mark.long]


ADMIN = "admin-key-0123456789abcdef"
KEYS = {"AETHER_API_KEYS": f"admin:{ADMIN}"}


def blueprint(instances: int) -> str:
    return f'name = "kept"\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = {instances}\n'


def state(cluster: CliCluster) -> tuple[object, object, object]:
    """The blueprints, the history of `kept` and the named keys (but when each was last used), as the CLI
    shows them."""

    def read(*args: str) -> object:
        return expect(cluster.aether(*args, "--json", api_key=ADMIN)).json()

    keys = [{k: v for k, v in key.items() if k != "last_used"} for key in read("key", "list")]  # type: ignore[attr-defined]
    return read("blueprint", "list"), read("blueprint", "history", "kept"), keys


def test_backup_then_restore_on_a_fresh_cluster_gives_back_blueprints_history_and_keys(
    tmp_path: Path, sample_index: Path
) -> None:
    backup = tmp_path / "backup.json"
    with cli_cluster(tmp_path / "a", sample_index, nodes=1, dev_mode=False, node_env=KEYS) as first:
        for instances in (0, 1, 0):  # three revisions (the second one runs an instance for a while)
            (first.cwd / "kept.toml").write_text(blueprint(instances))
            expect(first.aether("blueprint", "apply", "kept.toml", api_key=ADMIN))
        run = expect(first.aether("key", "create", "ci", "--role", "viewer", api_key=ADMIN))
        secret = run.stdout.splitlines()[1]
        before = state(first)
        run = expect(first.aether("cluster", "backup", str(backup), api_key=ADMIN))
        assert run.stdout.startswith(f"{backup}: 5 keys at revision "), str(run)  # 1 + 3 revisions + 1 key
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    data = json.loads(backup.read_text())
    assert data["format"] == "aether-backup" and secret not in backup.read_text()
    assert len(before[1]) == 3  # type: ignore[arg-type]

    with cli_cluster(tmp_path / "b", sample_index, nodes=1, dev_mode=False, node_env=KEYS) as second:
        assert expect(second.aether("blueprint", "list", "--json", api_key=ADMIN)).json() == []
        # not a backup: refused, nothing written
        (second.cwd / "bad.json").write_text('{"format": "something-else"}')
        run = expect(second.aether("cluster", "restore", "bad.json", api_key=ADMIN), 2)
        assert "backup: not an Aether backup" in run.stderr, str(run)
        run = expect(second.aether("cluster", "restore", str(backup), api_key=ADMIN))
        assert run.stdout == (
            f"restored 5 records from {backup} (1 blueprint, 3 kept revisions, 1 named API key)\n"
        ), str(run)
        assert "note: 1 named API key restored: the cluster now asks every request for a key" in run.stderr
        assert state(second) == before
        # the restored key's secret works; a second restore is refused and changes nothing
        run = expect(second.aether("blueprint", "list", "--json", api_key=secret))
        assert [b["name"] for b in run.json()] == ["kept"]
        run = expect(second.aether("cluster", "restore", str(backup), api_key=ADMIN), 1)
        assert "this cluster already has state under blueprints/ (blueprints/kept)" in run.stderr, str(run)
        assert state(second) == before
        # restore needs the admin role
        run = expect(second.aether("cluster", "backup", "-", api_key=secret), 1)
        assert "needs the admin role; your key has viewer" in run.stderr, str(run)
