"""What a build of a slice virtualenv or of the runtime leaves when its node is killed or loses power
midway (`runtime/_installer.py`): its temporary directory, removed when a node starts on that data
directory once it is older than an install may take (a younger one may be another build still running);
anything else there is left alone."""

from __future__ import annotations

import os
import time
from pathlib import Path

from aether_node.runtime._installer import SliceInstaller


def _made(path: Path, age: float) -> Path:
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").write_text("")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_a_build_a_crash_left_is_removed_when_a_node_starts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stale = _made(data / "slices" / "org.aether.echo-1.0.0.tmp-0123abcd", age=400)
    stale_runtime = _made(data / "runtime" / "aether-slice-1.0.0.tmp-89abcdef", age=400)
    running = _made(data / "slices" / "org.aether.echo-1.0.0.tmp-fedcba98", age=5)  # another build
    installed = _made(data / "slices" / "org.aether.echo-1.0.0", age=400)
    odd = _made(data / "slices" / "notes.tmp-old", age=400)  # not a name a build takes
    SliceInstaller(str(tmp_path / "index"), data, timeout=300)
    assert not stale.exists() and not stale_runtime.exists()
    assert running.is_dir() and installed.is_dir() and odd.is_dir()


def test_a_node_on_a_new_data_directory_starts(tmp_path: Path) -> None:
    installer = SliceInstaller(str(tmp_path / "index"), tmp_path / "new")
    assert not installer.slices_dir.exists()
