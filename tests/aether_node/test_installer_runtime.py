"""The slice runtime a node gives every slice virtualenv (`runtime/_installer.py`): a virtualenv an
earlier node made (another version of aether-slice, or a checkout changed since) is pointed at this
node's runtime when this node first finds it, so that its template speaks this node's host protocol."""

from __future__ import annotations

import sys
from pathlib import Path

import aether_slice
from aether_node.core._coordinates import Coordinates
from aether_node.runtime._installer import READY_MARKER, RUNTIME_PTH, SliceInstaller, runtime_name

ECHO = Coordinates.parse("org.aether:echo:1.0.0")


def _venv_made_earlier(installer: SliceInstaller, runtime: str) -> Path:
    """The files of a slice virtualenv an earlier node made, its `.pth` naming `runtime`."""
    venv = installer.venv_path(ECHO)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    site.mkdir(parents=True)
    (site / RUNTIME_PTH).write_text(f"{runtime}\n")
    (venv / READY_MARKER).write_text(str(ECHO))
    return site / RUNTIME_PTH


def test_a_virtualenv_of_an_earlier_node_gets_this_node_s_runtime(tmp_path: Path) -> None:
    installer = SliceInstaller(str(tmp_path / "index"), tmp_path / "data")
    old = tmp_path / "data" / "runtime" / "aether-slice-0.0.9-pluggy-1.0.0"
    pth = _venv_made_earlier(installer, str(old))
    assert installer.installed(ECHO) is not None
    runtime = Path(pth.read_text().strip())
    assert runtime == tmp_path / "data" / "runtime" / runtime_name() != old
    copied = (runtime / "aether_slice" / "host.py").read_bytes()
    assert copied == (Path(aether_slice.__file__).parent / "host.py").read_bytes()
    assert (runtime / "pluggy").is_dir()


def test_the_runtime_is_named_by_its_version_and_its_code() -> None:
    name = runtime_name()
    assert name.startswith(f"aether-slice-{aether_slice.__version__}-")
    code = name.split("-")[3]
    assert len(code) == 12 and int(code, 16) >= 0  # a digest of aether_slice's sources


def test_a_virtualenv_that_has_this_node_s_runtime_is_left_as_it_is(tmp_path: Path) -> None:
    installer = SliceInstaller(str(tmp_path / "index"), tmp_path / "data")
    current = tmp_path / "data" / "runtime" / runtime_name()
    pth = _venv_made_earlier(installer, str(current))
    before = pth.stat().st_mtime_ns
    assert installer.installed(ECHO) is not None
    assert pth.stat().st_mtime_ns == before and not current.exists()  # nothing written, nothing copied
