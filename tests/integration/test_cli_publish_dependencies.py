"""`aether slice publish --with-dependencies`: a node installs a slice from its index alone, so what the
slice depends on goes there first, as wheels (resolved and downloaded with pip), from a wheel directory
given with `--dependencies-from` here (PyPI by default: not a test's to depend on). Real wheels built with
uv, the real CLI in a subprocess, and the install a node makes (uv, `--no-index --find-links`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import uv
from cli_support import CliRun, expect, run_aether
from node_support import build_wheel

from aether_cli._slice_dependencies import target


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A source of dependencies (tinydep 1.0, which needs tinybase 2.0) and two slices: one that needs
    tinydep, one that needs what no index has."""
    root = tmp_path_factory.mktemp("publish-dependencies")
    source = root / "source"
    built = root / "built"
    build_wheel(root / "tinybase", source, name="tinybase", version="2.0")
    build_wheel(root / "tinydep", source, name="tinydep", version="1.0", dependencies=("tinybase>=2",))
    slices = {
        kind: build_wheel(
            root / kind,
            built,
            name=f"org.example.{kind}dep",
            version="1.0.0",
            dependencies=(needs,),
            entry_point=f"org.example:{kind}dep",
        )
        for kind, needs in (("uses", "tinydep>=1"), ("lacks", "org-example-nosuchdep>=1"))
    }
    return {"source": source, **slices}


def _node_install(index: Path, requirement: str, venv: Path) -> subprocess.CompletedProcess[str]:
    """What a node does with its wheel directory: install from there alone."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    subprocess.run([uv.find_uv_bin(), "venv", "-q", str(venv)], check=True, env=env)
    return subprocess.run(
        [
            uv.find_uv_bin(),
            "pip",
            "install",
            "-q",
            "--python",
            str(venv / "bin" / "python"),
            "--no-index",
            "--find-links",
            str(index),
            requirement,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def _publish_with_dependencies(
    wheels: dict[str, Path], kind: str, index: Path, tmp_path: Path, code: int = 0
) -> CliRun:
    """`aether slice publish` of the `kind` slice into `index`, its dependencies from the test's source."""
    return expect(
        run_aether(
            "slice", "publish", str(wheels[kind]), "--index", str(index),
            "--with-dependencies", "--dependencies-from", str(wheels["source"]),
            cwd=tmp_path,
        ),
        code,
    )  # fmt: skip


def test_a_slice_goes_with_the_wheels_it_needs_and_a_node_can_install_it(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    index = tmp_path / "index"
    without = tmp_path / "without"
    expect(run_aether("slice", "publish", str(wheels["uses"]), "--index", str(without), cwd=tmp_path))
    refused = _node_install(without, "org.example.usesdep==1.0.0", tmp_path / "venv-without")
    assert refused.returncode != 0 and "tinydep" in refused.stderr, refused.stderr  # (what it was before)

    run = _publish_with_dependencies(wheels, "uses", index, tmp_path)
    published = sorted(path.name for path in index.iterdir())
    assert published == [
        "org_example_usesdep-1.0.0-py3-none-any.whl",
        "tinybase-2.0-py3-none-any.whl",
        "tinydep-1.0-py3-none-any.whl",
    ], published
    assert run.stdout.splitlines() == [
        f"resolving tinydep>=1 from {wheels['source']} for {target()}...",
        f"  tinybase-2.0-py3-none-any.whl published to {index}",
        f"  tinydep-1.0-py3-none-any.whl published to {index}",
        f"org.example:usesdep:1.0.0 published to {index}/{wheels['uses'].name}",
    ], str(run)
    installed = _node_install(index, "org.example.usesdep==1.0.0", tmp_path / "venv")
    assert installed.returncode == 0, installed.stderr

    again = _publish_with_dependencies(wheels, "uses", index, tmp_path)
    assert "  tinydep-1.0-py3-none-any.whl was there already" in again.stdout.splitlines(), str(again)


def test_dependencies_that_cannot_be_had_publish_nothing(wheels: dict[str, Path], tmp_path: Path) -> None:
    index = tmp_path / "index"
    run = _publish_with_dependencies(wheels, "lacks", index, tmp_path, code=1)
    assert run.stderr.startswith(
        "aether: error: the slice's dependencies (org-example-nosuchdep>=1) cannot all be had as wheels"
        f" from {wheels['source']} for {target()}; nothing was published:\n"
    ), str(run)
    assert "org-example-nosuchdep" in run.stderr.split("published:\n", 1)[1], str(run)  # (pip's reason)
    assert not index.exists() or not list(index.iterdir())


def test_a_source_of_dependencies_without_asking_for_them_is_refused(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    index = tmp_path / "index"
    run = expect(
        run_aether(
            "slice", "publish", str(wheels["uses"]), "--index", str(index),
            "--dependencies-from", str(wheels["source"]),
            cwd=tmp_path,
        ),
        2,
    )  # fmt: skip
    assert run.stderr == (
        "aether: error: --dependencies-from says where --with-dependencies gets them: give both\n"
    ), str(run)
    assert not index.exists()


def test_dependencies_go_only_into_a_wheel_directory_and_a_conflict_stops_them_before_any_download(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    """An index server is refused (its directory is where they go); a different wheel under the slice's
    name in the directory stops it all before pip runs (nothing is copied)."""
    source = ("--with-dependencies", "--dependencies-from", str(wheels["source"]))
    to_url = expect(
        run_aether(
            "slice", "publish", str(wheels["uses"]), "--index", "http://127.0.0.1:9/", *source, cwd=tmp_path
        ),
        2,
    )
    assert "--with-dependencies publishes into a wheel directory" in to_url.stderr, str(to_url)
    index = tmp_path / "index"
    index.mkdir()
    (index / wheels["uses"].name).write_bytes(b"another build")
    clash = expect(
        run_aether("slice", "publish", str(wheels["uses"]), "--index", str(index), *source, cwd=tmp_path), 2
    )
    assert "is already published; publish the change as a new version" in clash.stderr, str(clash)
    assert sorted(path.name for path in index.iterdir()) == [wheels["uses"].name]
