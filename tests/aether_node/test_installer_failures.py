"""`classify_uv_failure` (pure) on uv's own words: a dependency that the node's index does not hold names
the way to put it there, for a wheel directory and for an index URL alike; the slice's own absence does
not. (The same with real uv on a node: tests/integration/test_node_slices.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from aether_node.core._coordinates import Coordinates
from aether_node.runtime._installer import classify_uv_failure, wheels_held

SLICE = Coordinates.parse("org.example:wordcount:0.1.0")
HINT = "`aether slice publish WHEEL --index ... --with-dependencies`"


@pytest.mark.parametrize("where", ["the provided package locations", "the package registry"])
def test_a_dependency_the_index_lacks_names_the_way_to_publish_it(where: str) -> None:
    output = (
        "error: No solution found when resolving dependencies:\n"
        f"  Because regex was not found in {where} and all versions of org-example-wordcount depend on"
        " regex>=2024.1, we can conclude that all versions of org-example-wordcount cannot be used.\n"
    )
    error = classify_uv_failure(SLICE, "/srv/wheels", output)
    assert error.kind == "install_failed"
    assert "the index /srv/wheels does not hold regex, which the slice depends on" in error.message
    assert HINT in error.message


@pytest.mark.parametrize(
    "reason",
    [
        "only attrs==23.2.0 is available and all versions of org-example-wordcount depend on attrs>=25",
        "only attrs<=23.2.0 is available and all versions of org-example-wordcount depend on attrs>=25",
        "there is no version of attrs>=25 and all versions of org-example-wordcount depend on attrs>=25",
        "only the following versions of attrs are available: attrs==22.1.0 attrs==23.2.0 and all versions"
        " of org-example-wordcount depend on attrs>=25",
    ],
)
def test_a_dependency_of_a_version_the_index_lacks_names_the_way_to_publish_it(reason: str) -> None:
    """The index holds the dependency, but no version the slice accepts: a slice author's wheel needing
    attrs>=25 met the attrs 23.2.0 the dev cluster's sample slices put there, and the message named no
    way out."""
    output = (
        f"error: No solution found when resolving dependencies:\n  Because {reason}, we can conclude ...\n"
    )
    error = classify_uv_failure(SLICE, "/srv/wheels", output)
    assert error.kind == "install_failed"
    assert "the index /srv/wheels holds no version of attrs that the slice accepts" in error.message
    assert HINT in error.message


def test_versions_of_the_slice_itself_listed_is_version_not_found() -> None:
    output = (
        "error: No solution found when resolving dependencies:\n  Because only the following versions of"
        " org-example-wordcount are available: org-example-wordcount==0.0.1 org-example-wordcount==0.0.2"
        " and you require org-example-wordcount==0.1.0, we can conclude ...\n"
    )
    error = classify_uv_failure(SLICE, "/srv/wheels", output)
    assert error.kind == "version_not_found" and HINT not in error.message


def test_the_slice_itself_missing_is_not_found_without_that_hint() -> None:
    output = (
        "error: No solution found when resolving dependencies:\n"
        "  Because org-example-wordcount was not found in the provided package locations and you require"
        " org-example-wordcount==0.1.0, we can conclude that your requirements are unsatisfiable.\n"
    )
    error = classify_uv_failure(SLICE, "/srv/wheels", output)
    assert error.kind == "not_found" and HINT not in error.message


def test_a_slice_not_in_a_wheel_directory_is_said_with_what_the_directory_holds(tmp_path: Path) -> None:
    """uv says only that there is no such version (or name): the versions of the slice there, or names
    like its own, are the likely fix (a typo in the blueprint)."""
    for name in (
        "org_example_wordcount-0.1.1-py3-none-any.whl",
        "org_example_wordcount-0.2.0-py3-none-any.whl",
        "org_example_words-1.0.0-py3-none-any.whl",
        "notes.txt",
    ):
        (tmp_path / name).write_bytes(b"")
    held = wheels_held(str(tmp_path))
    index = str(tmp_path)
    missing_version = (
        "error: No solution found when resolving dependencies\n  cause: Because there is no version of"
        " org-example-wordcount==0.1.0 and you require org-example-wordcount==0.1.0, we can conclude that"
        " your requirements are unsatisfiable.\n"
    )
    error = classify_uv_failure(SLICE, index, missing_version, held)
    assert (error.kind, error.message) == (
        "version_not_found",
        f"org.example:wordcount:0.1.0: version 0.1.0 of org-example-wordcount is not in the index {index}"
        " (it holds 0.1.1, 0.2.0)",
    )
    typo = Coordinates.parse("org.example:wordcont:0.1.0")
    missing_name = (
        "error: No solution found when resolving dependencies\n  cause: Because org-example-wordcont was not"
        " found in the provided package locations and you require org-example-wordcont==0.1.0, we can"
        " conclude that your requirements are unsatisfiable.\n"
    )
    error = classify_uv_failure(typo, index, missing_name, held)
    assert error.kind == "not_found"
    assert error.message.endswith("(did you mean org-example-wordcount or org-example-words?)"), error.message
    assert wheels_held("http://index.example/simple/") is None  # an index URL: nothing to list
    assert classify_uv_failure(typo, index, missing_name, None).message.endswith(f"in the index {index}")
