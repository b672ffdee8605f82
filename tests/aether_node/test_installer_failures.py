"""`classify_uv_failure` (pure) on uv's own words: a dependency that the node's index does not hold names
the way to put it there, for a wheel directory and for an index URL alike; the slice's own absence does
not. (The same with real uv on a node: tests/integration/test_node_slices.py.)"""

from __future__ import annotations

import pytest

from aether_node.core._coordinates import Coordinates
from aether_node.runtime._installer import classify_uv_failure

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
