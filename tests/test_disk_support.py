"""The small file systems of the disk-full tests (`disk_support`) skip, saying why, where they cannot be
mounted: the tests that use them run wherever the suite runs, and mount only as root (CI)."""

from __future__ import annotations

from pathlib import Path

import disk_support
import pytest
from disk_support import small_filesystem


def test_not_root_is_a_skip_that_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(disk_support.os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match="needs root"), small_filesystem(tmp_path / "d", mib=1):
        pass
    assert not (tmp_path / "d").exists()


def test_a_missing_tool_is_a_skip_that_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(disk_support.os, "geteuid", lambda: 0)
    monkeypatch.setattr(disk_support.shutil, "which", lambda tool: None if tool == "mkfs.ext4" else "/bin/x")
    with (
        pytest.raises(pytest.skip.Exception, match=r"needs mkfs\.ext4"),
        small_filesystem(tmp_path / "d", mib=1, kind="ext4"),
    ):
        pass
