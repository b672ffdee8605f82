"""The slice kit end to end, as a slice author uses it: `aether slice new` → the project's own tests (the
`slice_host` fixture, `uv run pytest`) → `uv build` → `aether slice publish` into a wheel directory → a
blueprint applied on a real cluster → `aether slice invoke` answers; then an upgrade to a new version.
An upload to an index server (pypiserver). And the CLI's refusals: a non-empty directory, a bad name, a
wheel that is no slice, an upload without credentials."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uv
from cli_support import cli_cluster, expect, processes_of, run_aether, wait_until
from node_support import build_wheel, die_with_parent, free_ports, port_open

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BLUEPRINT = """name = "kit"

[[slices]]
artifact = "org.kit:hello:{version}"
instances = 2
config = {{ greeting = "hi" }}
"""


# A test of the project that runs it on a real cluster: the `local_cluster` fixture of aether-slice.
# (its index also holds the sample slices, which a slice may call: the guide's greet calls echo)
CLUSTER_TEST = """
def test_greet_on_a_cluster(local_cluster):
    local_cluster.apply(
        'name = "kit"\\n[[slices]]\\nartifact = "org.kit:hello:0.1.0"\\ninstances = 1\\n'
        '[[slices]]\\nartifact = "org.aether:echo:1.0.0"\\ninstances = 1\\n'
    )
    assert local_cluster.invoke("org.kit:hello", "greet", {"name": "you"}) == {"greeting": "hello, you"}
    assert local_cluster.invoke("org.aether:echo", "echo", {"x": 1}) == {"x": 1}
"""


def uv_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """uv as the author runs it in the project: not inside this test run's virtualenv."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    result = subprocess.run(
        [uv.find_uv_bin(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"uv {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def build(project: Path) -> Path:
    built = uv_run("build", "--wheel", "--out-dir", "dist", cwd=project)
    assert "setuptools" not in built.stderr and "warning" not in built.stderr.lower(), built.stderr
    version = re.search(r'(?m)^version = "(.+)"$', (project / "pyproject.toml").read_text())
    assert version is not None
    wheel = project / "dist" / f"org_kit_hello-{version.group(1)}-py3-none-any.whl"
    assert wheel.is_file(), list((project / "dist").iterdir())
    return wheel


@pytest.mark.long
def test_a_new_slice_is_tested_built_published_applied_invoked_and_upgraded(tmp_path: Path) -> None:
    project = tmp_path / "hello"
    expect(run_aether("slice", "new", "hello", "--group", "org.kit", "--dir", str(project), cwd=tmp_path))

    (project / "tests" / "test_cluster.py").write_text(CLUSTER_TEST)
    tested = uv_run("run", "pytest", "-q", "-rs", cwd=project)  # the project's own tests, in its own venv
    assert re.search(r"(?m)^3 passed, 1 skipped", tested.stdout), tested.stdout
    assert "local_cluster needs the aether CLI" in tested.stdout  # aether-cli is not in the project's venv

    index = tmp_path / "index"
    wheel = build(project)
    published = expect(run_aether("slice", "publish", str(wheel), "--index", str(index), cwd=tmp_path))
    assert "org.kit:hello:0.1.0 published" in published.stdout
    assert [p.name for p in index.iterdir()] == [wheel.name]

    with cli_cluster(tmp_path / "cluster", index, nodes=1) as cluster:
        (cluster.cwd / "kit.toml").write_text(BLUEPRINT.format(version="0.1.0"))
        expect(cluster.aether("blueprint", "apply", "kit.toml", "--wait", "--timeout", "120", timeout=180))
        answer = expect(
            cluster.aether("slice", "invoke", "org.kit:hello", "greet", "--data", '{"name": "you"}')
        )
        assert answer.json() == {"greeting": "hi, you"}
        refused = expect(cluster.aether("slice", "invoke", "org.kit:hello", "greet", "--data", "{}"), 1)
        assert 'greet takes {"name": <string>}' in refused.stderr, str(refused)

        # the upgrade of the guide: a new version, published beside the old one, applied
        module = next((project / "src").glob("*/__init__.py"))
        module.write_text(module.read_text().replace('f"{greeting}, ', 'f"{greeting}!! '))
        pyproject = project / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', 'version = "0.2.0"'))
        expect(run_aether("slice", "publish", str(build(project)), "--index", str(index), cwd=tmp_path))
        (cluster.cwd / "kit.toml").write_text(BLUEPRINT.format(version="0.2.0"))
        expect(cluster.aether("blueprint", "apply", "kit.toml", "--wait", "--timeout", "120", timeout=180))
        answer = expect(
            cluster.aether("slice", "invoke", "org.kit:hello", "greet", "--data", '{"name": "you"}')
        )
        assert answer.json() == {"greeting": "hi!! you"}
        status = expect(cluster.aether("slice", "status", "org.kit:hello", "--json")).json()
        active = [i["artifact"] for i in status["instances"] if i["state"] == "ACTIVE"]
        assert active == ["org.kit:hello:0.2.0"] * 2, status


@pytest.mark.long
def test_local_cluster_runs_the_project_on_a_dev_cluster(tmp_path: Path) -> None:
    """The project's cluster test, where aether-cli is installed beside it: `aether dev up` builds the
    project into the index, the blueprint is applied, the call answers, and `dev down` leaves nothing."""
    project = tmp_path / "hello"
    expect(run_aether("slice", "new", "hello", "--group", "org.kit", "--dir", str(project), cwd=tmp_path))
    (project / "tests" / "test_cluster.py").write_text(CLUSTER_TEST)
    packages = Path(__file__).resolve().parents[2] / "packages"
    with_cli = [f"--with={packages / name}" for name in ("aether-cli", "aether-node", "aether-kv")]
    basetemp = f"--basetemp={tmp_path / 'inner'}"  # the cluster's directory, under this test's
    tested = uv_run("run", *with_cli, "pytest", "-q", basetemp, "tests/test_cluster.py", cwd=project)
    assert re.search(r"(?m)^1 passed", tested.stdout), tested.stdout
    assert processes_of(tmp_path) == [], "the dev cluster left processes behind"


def test_the_guides_example_slice_passes_the_guides_example_test(tmp_path: Path) -> None:
    """docs/SLICES.md's slice (section 2) and its test (section 3), in a project `slice new` wrote."""
    guide = (Path(__file__).resolve().parents[2] / "docs" / "SLICES.md").read_text()
    module, test = re.findall(r"```python\n(.*?)```", guide, re.S)[:2]
    project = tmp_path / "hello"
    expect(run_aether("slice", "new", "hello", "--dir", str(project), cwd=tmp_path))
    (project / "src" / "org_example_hello" / "__init__.py").write_text(module)
    (project / "tests" / "test_org_example_hello.py").write_text(test)
    tested = uv_run("run", "pytest", "-q", cwd=project)
    assert re.search(r"(?m)^2 passed", tested.stdout), tested.stdout


def test_slice_new_refuses_a_non_empty_directory_and_a_bad_name_and_changes_nothing(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    run = expect(run_aether("slice", "new", "hello", "--dir", str(taken), cwd=tmp_path), 2)
    assert f"{taken}: exists and is not empty" in run.stderr and "nothing was written" in run.stderr
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]

    run = expect(run_aether("slice", "new", "9-lives", cwd=tmp_path), 2)
    assert "slice name '9-lives': use letters, digits, '-' or '_', starting with a letter" in run.stderr
    run = expect(run_aether("slice", "new", "hello", "--group", "org..kit", cwd=tmp_path), 2)
    assert "--group 'org..kit'" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_slice_publish_refuses_a_wheel_that_is_no_slice(tmp_path: Path) -> None:
    project = tmp_path / "plain"
    (project / "src" / "plain").mkdir(parents=True)
    (project / "src" / "plain" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(
        '[project]\nname = "plain"\nversion = "1.0"\n\n[build-system]\nrequires = ["hatchling"]\n'
        'build-backend = "hatchling.build"\n\n[tool.hatch.build.targets.wheel]\npackages = ["src/plain"]\n'
    )
    uv_run("build", "--wheel", "--out-dir", "dist", cwd=project)
    index = tmp_path / "index"
    (wheel,) = (project / "dist").glob("*.whl")
    run = expect(run_aether("slice", "publish", str(wheel), "--index", str(index), cwd=tmp_path), 2)
    assert "declares exactly one entry point in group aether.slices" in run.stderr, str(run)
    assert not index.exists()


@pytest.fixture
def upload_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """pypiserver on loopback taking uploads (any credentials: `-a . -P .`) into a directory it serves."""
    (port,) = free_ports(1)
    packages = tmp_path / "served"
    packages.mkdir()
    with open(tmp_path / "pypiserver.log", "wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "pypi-server"), "run", "-p", str(port), "-i", "127.0.0.1",
             "-a", ".", "-P", ".", "--disable-fallback", str(packages)],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
        )  # fmt: skip
    try:
        wait_until(lambda: process.poll() is not None or port_open(port), timeout=15, what="pypiserver")
        assert process.poll() is None, (tmp_path / "pypiserver.log").read_text()
        yield f"http://127.0.0.1:{port}", packages
    finally:
        process.kill()
        process.wait()


def test_slice_publish_uploads_to_an_index_server(upload_server: tuple[str, Path], tmp_path: Path) -> None:
    url, served = upload_server
    wheel = build_wheel(
        tmp_path / "project", tmp_path / "dist", name="org.kit.up", version="1.0.0", entry_point="org.kit:up"
    )
    anonymous = expect(run_aether("slice", "publish", str(wheel), "--index", f"{url}/", cwd=tmp_path), 1)
    assert "UV_PUBLISH_USERNAME and UV_PUBLISH_PASSWORD" in anonymous.stderr, str(anonymous)
    assert list(served.iterdir()) == []

    credentials = {"UV_PUBLISH_USERNAME": "author", "UV_PUBLISH_PASSWORD": "secret"}
    run = expect(
        run_aether("slice", "publish", str(wheel), "--index", f"{url}/", cwd=tmp_path, env=credentials)
    )
    assert f"org.kit:up:1.0.0 uploaded to {url}/" in run.stdout
    assert [p.name for p in served.iterdir()] == [wheel.name]
    page = httpx.get(f"{url}/simple/org-kit-up/")  # what a node with --index URL/simple/ reads
    assert wheel.name in page.text
