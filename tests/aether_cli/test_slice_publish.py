"""`aether slice publish` (aether_cli._slice_publish) into a wheel directory: the checks on the wheel, and
the copy. (A built slice published and run on a node: tests/integration/test_slice_kit.py.)"""

from __future__ import annotations

import json
import platform
import zipfile
from pathlib import Path

import pytest
from packaging.tags import parse_tag

from aether_cli._slice_dependencies import target, unmet_in_directory
from aether_cli._slice_publish import (
    PublishError,
    check_wheel,
    publish_to_directory,
    publish_to_url,
    slice_publish,
)


def wheel(
    directory: Path,
    name: str = "org_example_hello-0.1.0-py3-none-any.whl",
    entry_points: str | None = None,
    metadata: str = "Metadata-Version: 2.1\n",
) -> Path:
    """A wheel (a zip) with a dist-info holding `entry_points` (default: the slice org.example:hello)."""
    if entry_points is None:
        entry_points = "[aether.slices]\norg.example:hello = org_example_hello\n"
    path = directory / name
    stem = "-".join(name.split("-")[:2])
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("org_example_hello/__init__.py", "")
        archive.writestr(f"{stem}.dist-info/METADATA", metadata)
        if entry_points:
            archive.writestr(f"{stem}.dist-info/entry_points.txt", entry_points)
    return path


def test_a_slice_wheel_is_read(tmp_path: Path) -> None:
    checked = check_wheel(wheel(tmp_path))
    assert (checked.distribution, checked.version, checked.artifact_id) == (
        "org_example_hello",
        "0.1.0",
        "org.example:hello",
    )


def test_the_requirements_of_a_slice_wheel_are_read_with_their_markers(tmp_path: Path) -> None:
    metadata = (
        "Metadata-Version: 2.1\nName: org.example.hello\nRequires-Dist: regex>=2024.1\n"
        'Requires-Dist: pytest; extra == "test"\n\nA description.\nRequires-Dist: not-a-header\n'
    )
    checked = check_wheel(wheel(tmp_path, metadata=metadata))
    assert checked.requirements == ("regex>=2024.1", 'pytest; extra == "test"')


@pytest.mark.parametrize(
    ("named", "complaint"),
    [
        ("aether-slice", "it depends on aether-slice, which every node provides"),
        ("aether_slice>=0.1", "it depends on aether-slice, which every node provides"),
        ("Aether.Slice ; python_version >= '3'", "it depends on aether-slice, which every node provides"),
        (
            "tool @ https://example.org/tool-1.0-py3-none-any.whl",
            "names a URL: a node installs from its index",
        ),
        ("tool @ git+https://example.org/tool", "names a URL"),
        ("--index-url=https://elsewhere/", "does not parse"),
        ("tool >=", "does not parse"),
    ],
)
def test_a_slice_wheel_with_a_dependency_no_node_could_install_is_refused(
    tmp_path: Path, named: str, complaint: str
) -> None:
    """aether-slice: every node provides its own; a URL: a node installs from its index alone; and
    what is no requirement at all (it would reach pip as an option)."""
    metadata = f"Metadata-Version: 2.1\nName: org.example.hello\nRequires-Dist: {named}\n"
    with pytest.raises(PublishError, match=complaint):
        check_wheel(wheel(tmp_path, metadata=metadata))


def test_aether_slice_for_an_extra_only_is_no_dependency_of_the_slice(tmp_path: Path) -> None:
    metadata = (
        'Metadata-Version: 2.1\nName: org.example.hello\nRequires-Dist: aether-slice; extra == "test"\n'
    )
    assert check_wheel(wheel(tmp_path, metadata=metadata)).requirements == ('aether-slice; extra == "test"',)


@pytest.mark.parametrize(
    ("entry_points", "complaint"),
    [
        ("", "declares exactly one entry point in group aether.slices.*declares 0 \\(none\\)"),
        ("[console_scripts]\nhello = x:y\n", "declares 0"),
        ("[aether.slices]\norg.example:hello = a\norg.example:other = b\n", "declares 2"),
        (
            "[aether.slices]\norg.example:goodbye = a\n",
            "'org.example:goodbye' does not match the distribution",
        ),
        ("[aether.slices]\norg.example.hello = a\n", "does not match"),
        ("[aether.slices\n", "does not parse"),
    ],
)
def test_a_wheel_that_is_no_slice_is_refused_saying_why(
    tmp_path: Path, entry_points: str, complaint: str
) -> None:
    with pytest.raises(PublishError, match=complaint):
        check_wheel(wheel(tmp_path, entry_points=entry_points))


def test_a_mismatched_entry_point_is_told_the_name_it_should_have(tmp_path: Path) -> None:
    """The distribution as its project names it (METADATA's Name, not the file name's escaped form), and
    the entry point name that would match it."""
    path = wheel(
        tmp_path,
        entry_points="[aether.slices]\norg.example:goodbye = org_example_hello\n",
        metadata="Metadata-Version: 2.1\nName: org.example.hello\n",
    )
    with pytest.raises(PublishError) as refused:
        check_wheel(path)
    message = refused.value.message
    assert "does not match the distribution org.example.hello:" in message, message
    assert "(for this distribution: 'org.example:hello')" in message, message


def test_an_entry_point_naming_a_module_the_wheel_does_not_hold_is_refused(tmp_path: Path) -> None:
    # (a typo there, or a package left out of the build: every instance's load failed on the cluster)
    typo = "[aether.slices]\norg.example:hello = org_example_helo\n"
    with pytest.raises(PublishError) as refused:
        check_wheel(wheel(tmp_path, entry_points=typo))
    assert "its entry point 'org.example:hello' names the module 'org_example_helo'" in refused.value.message
    assert "(it holds: org_example_hello)" in refused.value.message
    assert '[project.entry-points."aether.slices"]' in refused.value.message


@pytest.mark.parametrize(
    ("held", "reference"),
    [
        ("org_example_hello/__init__.py", "org_example_hello"),
        ("org_example_hello/__init__.py", "org_example_hello:plugin"),
        ("org_example_hello/plugins/hooks.py", "org_example_hello.plugins.hooks:Plugin"),
        ("org_example_hello.py", "org_example_hello"),
        ("org_example_hello.cpython-311-x86_64-linux-gnu.so", "org_example_hello"),
        ("org_example_hello-0.1.0.data/purelib/org_example_hello/__init__.py", "org_example_hello"),
    ],
)
def test_a_module_the_wheel_holds_is_found_however_it_is_laid_out(
    tmp_path: Path, held: str, reference: str
) -> None:
    path = tmp_path / "org_example_hello-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(held, "")
        archive.writestr(
            "org_example_hello-0.1.0.dist-info/entry_points.txt",
            f"[aether.slices]\norg.example:hello = {reference}\n",
        )
    assert check_wheel(path).artifact_id == "org.example:hello"


def test_what_is_not_a_wheel_is_refused(tmp_path: Path) -> None:
    (tmp_path / "hello.tar.gz").write_text("")
    with pytest.raises(PublishError, match="not a wheel file name"):
        check_wheel(tmp_path / "hello.tar.gz")
    with pytest.raises(PublishError, match=r"hello\.whl: no such file"):  # (missing says so first)
        check_wheel(tmp_path / "hello.whl")
    with pytest.raises(PublishError, match="no such file"):
        check_wheel(tmp_path / "org_example_hello-0.1.0-py3-none-any.whl")
    (tmp_path / "junk-1.0-py3-none-any.whl").write_text("not a zip")
    with pytest.raises(PublishError, match="cannot read it as a wheel"):
        check_wheel(tmp_path / "junk-1.0-py3-none-any.whl")


def test_published_once_then_the_same_wheel_again_is_a_no_op(tmp_path: Path) -> None:
    built = check_wheel(wheel(tmp_path))
    index = tmp_path / "index" / "deeper"
    with pytest.raises(PublishError, match=r"index does not exist \(a typo\?\)"):  # made only in one that is
        publish_to_directory(built, index)
    assert not (tmp_path / "index").exists()
    (tmp_path / "index").mkdir()
    assert publish_to_directory(built, index) is True
    assert (index / built.path.name).read_bytes() == built.path.read_bytes()
    assert publish_to_directory(built, index) is False
    assert [p.name for p in index.iterdir()] == [built.path.name]  # no staging file left


def test_another_wheel_of_a_published_version_is_refused_and_the_index_unchanged(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = check_wheel(wheel(tmp_path / "a"))
    changed = check_wheel(
        wheel(tmp_path / "b", entry_points="[aether.slices]\norg.example:hello = org_example_hello:other\n")
    )
    index = tmp_path / "index"
    publish_to_directory(first, index)
    with pytest.raises(PublishError, match="already published; publish the change as a new version"):
        publish_to_directory(changed, index)
    assert (index / first.path.name).read_bytes() == first.path.read_bytes()
    (tmp_path / "plain").write_text("")
    with pytest.raises(PublishError, match="not a directory"):
        publish_to_directory(first, tmp_path / "plain")


@pytest.mark.parametrize("url", ["ftp://x", "file:///tmp/index", "s3://bucket/index"])
def test_an_upload_url_that_is_not_http_is_refused_as_bad_input(tmp_path: Path, url: str) -> None:
    """Given to `uv publish` it failed with several lines of uv's own ("Missing credentials for: ftp://x/",
    exit 1): an index server takes uploads over HTTP(S), and a wheel directory is a path."""
    built = check_wheel(wheel(tmp_path))
    with pytest.raises(PublishError) as refused:
        publish_to_url(built, url)
    assert refused.value.code == 2
    scheme = url.partition("://")[0]
    assert refused.value.message == (
        f"--index {url}: an upload URL must be http:// or https:// (an index server's), not {scheme}://;"
        " a wheel directory is given as a path"
    )


@pytest.mark.parametrize(
    ("requirements", "held", "unmet"),
    [
        (["attrs>=25"], ["attrs-23.2.0-py3-none-any.whl"], ["attrs>=25"]),  # a version it does not accept
        (["attrs>=23"], ["attrs-23.2.0-py3-none-any.whl"], []),
        (
            ["Regex"],
            ["regex-2024.1.1-cp311-cp311-manylinux_2_17_x86_64.whl"],
            [],
        ),  # names compared canonically
        (["regex", "attrs"], ["notes.txt"], ["regex", "attrs"]),
        (['pytest; extra == "test"', 'tomli; python_version < "3.0"'], [], []),  # not for a node
        # a pre-release counts only where no final release is there (as pip and uv choose)
        (["attrs>=25"], ["attrs-23.2.0-py3-none-any.whl", "attrs-25.1rc1-py3-none-any.whl"], ["attrs>=25"]),
        (["attrs>=25"], ["attrs-25.1rc1-py3-none-any.whl"], []),
        (["attrs>=25.1rc1"], ["attrs-23.2.0-py3-none-any.whl", "attrs-25.1rc1-py3-none-any.whl"], []),
        # a wheel for another Python or platform is none (a node here could not install it)
        (["regex"], ["regex-2024.1.1-cp311-cp311-win_amd64.whl"], ["regex"]),
        (["regex"], ["regex-2024.1.1-cp312-cp312-manylinux_2_17_x86_64.whl"], ["regex"]),
        (["regex"], ["regex-2024.1.1-cp312-cp312-win_amd64.whl", "regex-2023.1.1-cp311-abi3-any.whl"], []),
    ],
)
def test_the_requirements_no_wheel_in_the_directory_meets(
    requirements: list[str], held: list[str], unmet: list[str]
) -> None:
    here = {*parse_tag("cp311-cp311-manylinux_2_17_x86_64"), *parse_tag("cp311-abi3-any")}
    here |= {*parse_tag("py3-none-any")}
    assert unmet_in_directory(requirements, held, here) == unmet


def test_publishing_a_slice_whose_dependency_the_directory_lacks_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It is published (the dependency may come later), but the author is told now: a slice author's
    wheel needing attrs>=25 was published without a word, then failed to install on every node."""
    index = tmp_path / "index"
    index.mkdir()
    (index / "attrs-23.2.0-py3-none-any.whl").write_bytes(b"")
    metadata = "Metadata-Version: 2.1\nName: org.example.hello\nRequires-Dist: attrs>=25\n"
    slice_publish(wheel(tmp_path, metadata=metadata), index=str(index))
    said = capsys.readouterr()
    assert "org.example:hello:0.1.0 published to" in said.out
    assert said.err == (
        f"aether: warning: {index} holds no wheel of attrs>=25 for {target()}, which the slice depends on:"
        " a node installs from its index alone, so the slice would fail to install there; publish them"
        " too: `aether slice publish WHEEL --index ... --with-dependencies`\n"
    )
    (index / "attrs-25.1.0-py3-none-any.whl").write_bytes(b"")
    slice_publish(wheel(tmp_path, metadata=metadata), index=str(index))  # (the same wheel: a no-op)
    assert capsys.readouterr().err == ""


def test_publishing_into_a_dev_clusters_index_it_does_not_read_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dev up --index DIR` nodes read DIR, not `.aether-dev/index/`: the wheel published there was never
    seen, and nothing said so."""
    dev, elsewhere = tmp_path / ".aether-dev", tmp_path / "wheels"
    dev.mkdir()
    elsewhere.mkdir()
    (dev / "plan.json").write_text(json.dumps({"index": str(elsewhere), "nodes": []}))
    slice_publish(wheel(tmp_path), index=str(dev / "index"))
    assert capsys.readouterr().err == (
        f"aether: warning: the dev cluster in {dev} reads its slices from {elsewhere} (it was started with"
        f" --index), not from {dev / 'index'}: publish there for its nodes to see the wheel\n"
    )
    (dev / "plan.json").write_text(json.dumps({"index": str(dev / "index"), "nodes": []}))
    slice_publish(wheel(tmp_path), index=str(dev / "index"))  # the index it builds: nothing to say
    assert capsys.readouterr().err == ""


def test_publishing_a_slice_for_another_python_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was published silently, then failed on every node with install_failed."""
    here = platform.python_version()
    index = tmp_path / "index"
    later = "Metadata-Version: 2.1\nName: org.example.hello\nRequires-Python: >=9.0\n"
    slice_publish(wheel(tmp_path, metadata=later), index=str(index))
    assert capsys.readouterr().err == (
        f"aether: warning: org.example:hello:0.1.0 requires Python >=9.0, and this one is {here} (a dev"
        " cluster's nodes run it): a node on a Python it excludes cannot install it\n"
    )
    (index / "org_example_hello-0.1.0-py3-none-any.whl").unlink()
    fits = "Metadata-Version: 2.1\nName: org.example.hello\nRequires-Python: >=3.8\n"
    slice_publish(wheel(tmp_path, metadata=fits), index=str(index))
    assert capsys.readouterr().err == ""
