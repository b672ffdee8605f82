"""Where `aether dev up` gets its slices (`_slice_source.choose`) and which example blueprint
`--example` applies: real directories under tmp_path, every bad input refused with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from aether_cli._slice_source import (
    BUNDLED,
    CHECKOUT,
    SliceSource,
    SliceSourceError,
    choose,
    example_blueprint,
)


def _wheel_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "org_aether_echo-1.0.0-py3-none-any.whl").write_bytes(b"")
    return path


def test_the_repository_root_builds_its_own_sample_slices(tmp_path: Path) -> None:
    (tmp_path / "sample-slices").mkdir()
    assert choose(source=None, index=None, cwd=tmp_path) == SliceSource(source=Path("sample-slices"))


def test_anywhere_else_builds_the_bundled_or_checkout_slices(tmp_path: Path) -> None:
    chosen = choose(source=None, index=None, cwd=tmp_path)
    # this test runs from the workspace (an editable install): the checkout's sample-slices/
    expected = BUNDLED / "slices" if (BUNDLED / "slices").is_dir() else CHECKOUT / "sample-slices"
    assert chosen == SliceSource(source=expected)
    assert chosen.source is not None and (chosen.source / "echo" / "pyproject.toml").is_file()


def test_a_given_source_directory_is_built(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    assert choose(source=Path("mine"), index=None, cwd=tmp_path) == SliceSource(source=Path("mine"))


def test_an_index_directory_is_used_as_it_is_made_absolute(tmp_path: Path) -> None:
    wheels = _wheel_dir(tmp_path / "wheels")
    assert choose(source=None, index="wheels", cwd=tmp_path) == SliceSource(index=str(wheels.resolve()))


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/simple/", "https://pypi.example/simple", "file:///srv/simple"]
)
def test_an_index_url_is_passed_on_unchanged(tmp_path: Path, url: str) -> None:
    assert choose(source=None, index=url, cwd=tmp_path) == SliceSource(index=url)


@pytest.mark.parametrize(
    ("source", "index", "message"),
    [
        ("missing", None, "--source missing is not a directory of slice projects"),
        (None, "missing", "--index missing is neither a directory of wheels nor an http(s):// or file:// "
                          "index URL"),
        (None, "empty", "--index empty holds no wheel (*.whl): nothing could be installed from it"),
        (None, "ftp://host/simple", "--index ftp://host/simple: a package index URL must start with http://, "
                                    "https:// or file://"),
        ("mine", "wheels", "give --source (slice projects to build) or --index (wheels), not both"),
    ],
)  # fmt: skip
def test_bad_options_say_what_is_wrong(
    tmp_path: Path, source: str | None, index: str | None, message: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "mine").mkdir()
    _wheel_dir(tmp_path / "wheels")
    with pytest.raises(SliceSourceError) as raised:
        choose(source=None if source is None else Path(source), index=index, cwd=tmp_path)
    assert str(raised.value) == message


def test_the_example_blueprint_here_comes_first_relative(tmp_path: Path) -> None:
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "blueprint.toml").write_text('name = "here"\n')
    assert example_blueprint(tmp_path) == Path("examples", "blueprint.toml")


def test_the_example_blueprint_elsewhere_is_the_shipped_one(tmp_path: Path) -> None:
    found = example_blueprint(tmp_path)
    assert found is not None and found.is_absolute()
    assert found.read_text() == (CHECKOUT / "examples" / "blueprint.toml").read_text()
