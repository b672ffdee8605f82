"""The embedded sample index: real `uv build`s of `sample-slices/` into a wheel directory that installs
offline. Slowish (a few seconds cold); needs the network the first time (hatchling, attrs 23.2.0)."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import uv
from packaging.utils import parse_wheel_filename
from packaging.version import Version

from aether_node.dev._sample_index import build_sample_index

pytestmark = pytest.mark.slow

SAMPLE_SLICES = Path(__file__).resolve().parents[2] / "sample-slices"

# canonical distribution name → (aether.slices entry point name, versions in the index)
EXPECTED_SLICES = {
    "org-aether-echo": ("org.aether:echo", {"1.0.0", "1.1.0"}),
    "org-aether-counter": ("org.aether:counter", {"1.0.0"}),
    "org-aether-greeter": ("org.aether:greeter", {"1.0.0"}),
    "org-aether-faulty": ("org.aether:faulty", {"1.0.0"}),
    "org-aether-busy": ("org.aether:busy", {"1.0.0"}),
    "org-aether-pinned": ("org.aether:pinned", {"1.0.0"}),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], list[str]]:
    out = tmp_path_factory.mktemp("index")
    messages: list[str] = []
    wheels = build_sample_index(SAMPLE_SLICES, out, progress=messages.append)
    return out, wheels, messages


def _wheels_by_name(wheels: list[Path]) -> dict[tuple[str, str], Path]:
    found = {}
    for wheel in wheels:
        name, version, _, _ = parse_wheel_filename(wheel.name)
        found[(str(name), str(version))] = wheel
    return found


def test_every_expected_wheel_is_built_and_returned(built: tuple[Path, list[Path], list[str]]) -> None:
    out, wheels, messages = built
    expected = {(name, version) for name, (_, versions) in EXPECTED_SLICES.items() for version in versions}
    expected.add(("attrs", "23.2.0"))
    returned = _wheels_by_name(wheels)
    assert set(returned) == expected
    assert all(wheel.parent == out and wheel.is_file() for wheel in wheels)
    assert set(_wheels_by_name(list(out.glob("*.whl")))) == expected
    assert not [p for p in out.iterdir() if p.name.startswith(".staging-")], "staging dirs left behind"
    assert any("building" in message for message in messages)


def test_each_slice_wheel_declares_its_aether_slices_entry_point(
    built: tuple[Path, list[Path], list[str]],
) -> None:
    _, wheels, _ = built
    for (name, version), wheel in _wheels_by_name(wheels).items():
        if name not in EXPECTED_SLICES:
            continue
        with zipfile.ZipFile(wheel) as archive:
            dist_info = f"{wheel.name.split('-')[0]}-{version}.dist-info"
            metadata = archive.read(f"{dist_info}/METADATA").decode()
            entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        assert f"Version: {version}\n" in metadata
        parser = configparser.ConfigParser(delimiters=("=",))
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep names as written
        parser.read_string(entry_points)
        declared = dict(parser["aether.slices"])
        assert declared == {EXPECTED_SLICES[name][0]: name.replace("-", "_")}, wheel.name


def test_a_second_build_rewrites_nothing(built: tuple[Path, list[Path], list[str]]) -> None:
    out, wheels, _ = built
    before = {wheel: wheel.stat().st_mtime_ns for wheel in out.glob("*.whl")}
    messages: list[str] = []
    again = build_sample_index(SAMPLE_SLICES, out, progress=messages.append)
    assert sorted(again) == sorted(wheels)
    assert {wheel: wheel.stat().st_mtime_ns for wheel in out.glob("*.whl")} == before
    assert not [m for m in messages if "building" in m or "downloading" in m], messages


def test_a_changed_source_is_rebuilt(tmp_path: Path) -> None:
    source = tmp_path / "slices"
    (source / "tiny" / "tiny_slice").mkdir(parents=True)
    (source / "tiny" / "pyproject.toml").write_text(
        '[project]\nname = "org.example.tiny"\nversion = "0.1.0"\n'
        '[project.entry-points."aether.slices"]\n"org.example:tiny" = "tiny_slice"\n'
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["tiny_slice"]\n'
    )
    module = source / "tiny" / "tiny_slice" / "__init__.py"
    module.write_text("")
    index = tmp_path / "index"
    [first] = build_sample_index(source, index)
    old = first.stat().st_mtime_ns
    os.utime(module, ns=(old + 1_000_000_000, old + 1_000_000_000))
    [second] = build_sample_index(source, index)
    assert second == first and second.stat().st_mtime_ns > old


def test_a_failed_build_names_the_slice_and_quotes_uv(tmp_path: Path) -> None:
    broken = tmp_path / "slices" / "broken"
    broken.mkdir(parents=True)
    (broken / "pyproject.toml").write_text(
        '[project]\nname = "org.example.broken"\nversion = "0.1.0"\n'
        '[build-system]\nrequires = []\nbuild-backend = "no_such_build_backend"\n'
    )
    with pytest.raises(RuntimeError, match=r"org\.example\.broken 0\.1\.0") as raised:
        build_sample_index(tmp_path / "slices", tmp_path / "index")
    assert "no_such_build_backend" in str(raised.value)


def test_pinned_installs_offline_with_its_old_attrs(
    built: tuple[Path, list[Path], list[str]], tmp_path: Path
) -> None:
    out, _, _ = built
    uv_bin = uv.find_uv_bin()
    venv = tmp_path / "venv"
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    subprocess.run([uv_bin, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, env=env)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            uv_bin, "pip", "install", "--python", str(python), "--offline",
            "--no-index", "--find-links", str(out), "org.aether.pinned==1.0.0",
        ],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    version = subprocess.run(
        [
            str(python), "-c",
            "import attrs, importlib.metadata as m; print(attrs.__version__, m.version('org.aether.pinned'))",
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert version.stdout.split() == ["23.2.0", "1.0.0"]
    assert Version(version.stdout.split()[0]) < Version("24")
