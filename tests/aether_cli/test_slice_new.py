"""`aether slice new` (aether_cli._slice_new): the files of a new slice project, the names it accepts,
and writing them all or nothing. (The project built, tested and run on a node:
tests/integration/test_slice_kit.py.)"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from aether_cli._slice_new import NewSliceError, project_files, write_project


def test_the_project_is_a_complete_slice_distribution() -> None:
    files = project_files("order-book", "com.acme", None)
    assert set(files) == {
        "pyproject.toml",
        "README.md",
        ".gitignore",
        "src/com_acme_order_book/__init__.py",
        "tests/test_com_acme_order_book.py",
    }
    pyproject = tomllib.loads(files["pyproject.toml"])
    assert pyproject["project"]["name"] == "com.acme.order-book"
    assert pyproject["project"]["dependencies"] == []  # the node provides aether-slice
    assert pyproject["project"]["entry-points"]["aether.slices"] == {
        "com.acme:order-book": "com_acme_order_book"
    }
    assert pyproject["build-system"]["build-backend"] == "hatchling.build"
    assert pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/com_acme_order_book"]
    assert "aether-slice" in pyproject["dependency-groups"]["dev"]
    assert "sources" not in pyproject["tool"].get("uv", {})
    for name in ("src/com_acme_order_book/__init__.py", "tests/test_com_acme_order_book.py"):
        ast.parse(files[name])
    assert 'ARTIFACT = "com.acme:order-book"' in files["tests/test_com_acme_order_book.py"]
    assert 'artifact = "com.acme:order-book:0.1.0"' in files["README.md"]


def test_a_local_aether_slice_becomes_the_projects_source_for_it() -> None:
    pyproject = tomllib.loads(
        project_files("hello", "org.example", '/src/a "b"/aether-slice')["pyproject.toml"]
    )
    assert pyproject["tool"]["uv"]["sources"] == {
        "aether-slice": {"path": '/src/a "b"/aether-slice', "editable": True}
    }


@pytest.mark.parametrize("name", ["", "9lives", "-x", "x-", "a.b", "a:b", "hé", "with space", "x_"])
def test_a_bad_name_says_what_is_allowed(name: str) -> None:
    with pytest.raises(NewSliceError, match="use letters, digits, '-' or '_', starting with a letter"):
        project_files(name, "org.example", None)


@pytest.mark.parametrize("group", ["", "org.", ".org", "org..example", "org:example", "1org"])
def test_a_bad_group_says_what_is_allowed(group: str) -> None:
    with pytest.raises(NewSliceError, match=r"--group .*dot-separated parts"):
        project_files("hello", group, None)


def test_written_into_a_new_or_an_empty_directory(tmp_path: Path) -> None:
    files = project_files("hello", "org.example", None)
    write_project(tmp_path / "new" / "hello", files)
    (tmp_path / "empty").mkdir()
    write_project(tmp_path / "empty", files)
    for root in (tmp_path / "new" / "hello", tmp_path / "empty"):
        assert {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} == set(files)
        assert (root / "pyproject.toml").read_text() == files["pyproject.toml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "new"]  # no staging left behind


def test_a_non_empty_directory_or_a_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep me")
    (tmp_path / "file").write_text("a file")
    with pytest.raises(NewSliceError, match=r"exists and is not empty.*nothing was written"):
        write_project(tmp_path / "taken", project_files("hello", "org.example", None))
    with pytest.raises(NewSliceError, match="exists and is not a directory"):
        write_project(tmp_path / "file", project_files("hello", "org.example", None))
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["mine.txt"]
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep me"
    assert (tmp_path / "file").read_text() == "a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "taken"]
