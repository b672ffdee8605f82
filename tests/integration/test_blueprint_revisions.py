"""Blueprint revisions on a real 3-node cluster, through the `aether` CLI (and the API client for the
checks): every applied blueprint is a numbered revision; `blueprint history`, `blueprint rollback`
(restores what an earlier revision asked for, as a new revision), `blueprint diff` (what the planner
will do, without doing it) and `slice scale` (a new revision of the blueprint that holds the slice) —
and bad input (unknown blueprint, revision or slice; N < 0 or below min_available) gets a clear error
and changes nothing.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_support import CliCluster, cli_cluster, expect, wait_until

from aether_node.client import ApiClient

pytestmark = [pytest.mark.integration]


def echo_blueprint(version: str, instances: int, *, name: str = "web", comment: str = "") -> str:
    return (
        f'name = "{name}"{comment}\n\n[[slices]]\nartifact = "org.aether:echo:{version}"\n'
        f"instances = {instances}  # how many\nmin_available = 1\n"
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, sample_index: Path) -> Iterator[CliCluster]:
    with cli_cluster(tmp_path_factory.mktemp("revisions"), sample_index) as running:
        yield running


@pytest.fixture
def api(cluster: CliCluster) -> Iterator[ApiClient]:
    with ApiClient(cluster.urls.split(",")) as client:
        yield client


def apply(cluster: CliCluster, tmp_path: Path, text: str) -> dict[str, Any]:
    path = tmp_path / "blueprint.toml"
    path.write_text(text)
    return expect(cluster.aether("blueprint", "apply", str(path), "--json")).json()


def instances_of(api: ApiClient, artifact_id: str) -> list[Any]:
    """Every instance of the slice, whatever its version and state."""
    return [i for i in api.list_slices() if i.artifact.rsplit(":", 1)[0] == artifact_id]


def running(api: ApiClient, artifact_id: str) -> dict[str, Any]:
    """{coordinates: ACTIVE count} and per-node counts, once nothing of the slice is in transition."""
    mine = instances_of(api, artifact_id)
    if any(i.state != "ACTIVE" for i in mine):
        return {}
    return {
        "versions": dict(collections.Counter(i.artifact for i in mine)),
        "nodes": dict(collections.Counter(i.node_id for i in mine)),
    }


def settled(api: ApiClient, artifact_id: str, versions: dict[str, int]) -> dict[str, Any]:
    return wait_until(
        lambda: (now := running(api, artifact_id)) and now["versions"] == versions and now,
        timeout=90,
        what=f"{artifact_id} running exactly {versions}",
    )


@pytest.mark.long
def test_history_and_rollback(cluster: CliCluster, api: ApiClient, tmp_path: Path) -> None:
    first = apply(cluster, tmp_path, echo_blueprint("1.0.0", 2))
    assert (first["blueprint_revision"], first["change"], first["created"]) == (1, "applied", True)
    again = apply(cluster, tmp_path, echo_blueprint("1.0.0", 2))  # the same again: no new revision
    assert again["blueprint_revision"] == 1
    settled(api, "org.aether:echo", {"org.aether:echo:1.0.0": 2})
    second = apply(cluster, tmp_path, echo_blueprint("1.1.0", 3))
    assert second["blueprint_revision"] == 2
    settled(api, "org.aether:echo", {"org.aether:echo:1.1.0": 3})

    history = expect(cluster.aether("blueprint", "history", "web", "--json")).json()
    assert [(r["revision"], r["change"], r["current"]) for r in history] == [
        (1, "applied", False),
        (2, "applied", True),
    ]
    assert history[0]["slices"] == [
        {"artifact": "org.aether:echo:1.0.0", "instances": 2, "strategy": "round_robin", "health": ""}
    ]
    human = expect(cluster.aether("blueprint", "history", "web")).stdout
    assert "REVISION" in human and "applied" in human

    # rollback (to the previous revision): revision 1's blueprint again, as revision 3
    rolled = expect(cluster.aether("blueprint", "rollback", "web", "--json")).json()
    assert (rolled["blueprint_revision"], rolled["change"]) == (3, "rolled back to revision 1")
    settled(api, "org.aether:echo", {"org.aether:echo:1.0.0": 2})
    assert api.get_blueprint("web").source == echo_blueprint("1.0.0", 2)
    said = expect(cluster.aether("blueprint", "rollback", "web", "--to", "2")).stdout
    assert said.strip() == "blueprint 'web' at revision 4 (rolled back to revision 2)"
    settled(api, "org.aether:echo", {"org.aether:echo:1.1.0": 3})
    assert [r.revision for r in api.blueprint_history("web")] == [1, 2, 3, 4]

    events = expect(cluster.aether("cluster", "events", "--kind", "blueprint_applied", "--json")).json_lines()
    assert events[-1]["message"] == "blueprint web applied (revision 4: rolled back to revision 2)"

    # bad input: a clear error, nothing changed
    for args, code, message in (
        (("blueprint", "rollback", "nope"), 1, "no blueprint named 'nope'"),
        (("blueprint", "history", "nope"), 1, "no blueprint named 'nope'"),
        (
            ("blueprint", "rollback", "web", "--to", "9"),
            1,
            "blueprint 'web' has no revision 9 (revisions kept: 1, 2, 3, 4)",
        ),
    ):
        run = expect(cluster.aether(*args), code)
        assert run.stderr.strip() == f"aether: error: {message}", str(run)
    assert [r.revision for r in api.blueprint_history("web")] == [1, 2, 3, 4]
    assert api.get_blueprint("web").source == echo_blueprint("1.1.0", 3)
    expect(cluster.aether("blueprint", "delete", "web"))
    # the history outlives the blueprint: a deleted blueprint can be brought back
    back = api.rollback_blueprint("web", 1)
    assert (back.blueprint_revision, back.created) == (5, True)
    settled(api, "org.aether:echo", {"org.aether:echo:1.0.0": 2})
    expect(cluster.aether("blueprint", "delete", "web"))
    wait_until(lambda: not instances_of(api, "org.aether:echo"), timeout=60, what="echo removed")


@pytest.mark.long
def test_history_is_bounded(cluster: CliCluster, api: ApiClient, tmp_path: Path) -> None:
    """Twenty revisions are kept (the node's `blueprint_history`); the oldest go first."""
    for n in range(23):  # a different comment each time: a new revision that asks for the same
        text = (
            f'name = "churn"  # take {n}\n\n[[slices]]\nartifact = "org.aether:pinned:1.0.0"\ninstances = 0\n'
        )
        apply(cluster, tmp_path, text)
    kept = [r.revision for r in api.blueprint_history("churn")]
    assert kept == list(range(4, 24))
    expect(cluster.aether("blueprint", "delete", "churn"))


def test_scale_and_diff_agree_with_what_happens(cluster: CliCluster, api: ApiClient, tmp_path: Path) -> None:
    text = echo_blueprint("1.0.0", 1, name="scaled")
    apply(cluster, tmp_path, text)
    settled(api, "org.aether:echo", {"org.aether:echo:1.0.0": 1})

    path = tmp_path / "same.toml"
    path.write_text(text)
    same = expect(cluster.aether("blueprint", "diff", str(path), "--json")).json()
    assert same["changed"] is False and same["revision"] == 1
    assert [s["change"] for s in same["slices"]] == ["unchanged"]

    path.write_text(text.replace("instances = 1 ", "instances = 5 "))
    diff = expect(cluster.aether("blueprint", "diff", str(path), "--json")).json()
    (echo,) = diff["slices"]
    assert (echo["change"], echo["instances_before"], echo["instances_after"]) == ("changed", 1, 5)
    assert (echo["added"], echo["moved"], echo["removed"], echo["replaced"]) == (4, 0, 0, 0)
    predicted = {n["node_id"]: n["after"] for n in echo["nodes"] if n["after"]}
    human = expect(cluster.aether("blueprint", "diff", str(path))).stdout
    assert "org.aether:echo: changed; instances 1 → 5" in human
    assert api.blueprint_history("scaled")[-1].revision == 1  # a diff writes nothing

    scaled = expect(cluster.aether("slice", "scale", "org.aether:echo", "5", "--json")).json()
    assert (scaled["blueprint_revision"], scaled["change"]) == (2, "scaled org.aether:echo from 1 to 5")
    now = settled(api, "org.aether:echo", {"org.aether:echo:1.0.0": 5})
    assert now["nodes"] == predicted
    stored = api.get_blueprint("scaled")
    assert stored.source == text.replace("instances = 1 ", "instances = 5 ")  # the comment is kept
    assert [s.instances for s in stored.slices] == [5]
    same = expect(cluster.aether("slice", "scale", "org.aether:echo", "5"))  # the count it has
    assert same.stdout.strip() == "blueprint 'scaled' at revision 2 (unchanged)", same
    assert "note: org.aether:echo has 5 instances already: nothing changed" in same.stderr, same

    # a version change: the diff says every running instance is replaced
    path.write_text(stored.source.replace("1.0.0", "1.1.0"))
    upgrade = expect(cluster.aether("blueprint", "diff", str(path), "--json")).json()["slices"][0]
    assert (upgrade["versions_before"], upgrade["version_after"], upgrade["replaced"]) == (
        ["1.0.0"],
        "1.1.0",
        5,
    )

    # bad input: a clear error, nothing changed
    for args, code, message in (
        (
            ("slice", "scale", "org.aether:echo", "0"),
            2,
            "org.aether:echo: cannot scale to 0: below its"
            " min_available of 1 (lower min_available in blueprint 'scaled' first)",
        ),
        (
            ("slice", "scale", "org.aether:counter", "2"),
            1,
            "no blueprint deploys org.aether:counter: apply one that does first",
        ),
        (("slice", "scale", "no-colon", "2"), 2, None),
        (("slice", "scale", "org.aether:echo", "--", "-1"), 2, "instances: must be ≥ 0, got -1"),
    ):
        run = expect(cluster.aether(*args), code)
        if message is not None:
            assert run.stderr.strip() == f"aether: error: {message}", str(run)
    assert [r.revision for r in api.blueprint_history("scaled")] == [1, 2]
    expect(cluster.aether("blueprint", "delete", "scaled"))
    wait_until(lambda: not instances_of(api, "org.aether:echo"), timeout=60, what="echo removed")
