"""Testing a slice: the `slice_host` pytest fixture (no cluster), and `local_cluster` (a real one).

A pytest plugin, registered through the `pytest11` entry point of aether-slice, so any environment with
aether-slice and pytest has the fixture. It imports pytest, so the slice runtime never imports it.

    def test_greet(slice_host):
        hello = slice_host("org.example:hello", config={"greeting": "hi"})
        assert hello.invoke("greet", {"name": "you"}) == {"greeting": "hi, you"}

Each instance runs in a real slice host process, the runner a node uses (`aether_slice.host`), from this
interpreter's environment, where the slice must be installed. See `SliceInstance` for what a test can
do with it, and `SliceHostError` for the kinds of failure.

`local_cluster` (once per session) starts a dev cluster of real nodes (`aether dev up`) whose index holds
the project under test (pytest's rootdir), built with uv; it is skipped where aether-cli is not installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ._dev_cluster import ClusterCommandError as ClusterCommandError
from ._dev_cluster import DevCluster as DevCluster
from ._host_client import SliceHostError as SliceHostError
from ._host_client import SliceInstance as SliceInstance


@pytest.fixture
def slice_host(tmp_path: Path) -> Iterator[Callable[..., SliceInstance]]:
    """A factory: `slice_host("group:artifact", config=None, calls=None, start=True, timeout=10.0,
    version=None, instance=1)` loads the slice in its own host process and runs `aether_start` (unless
    `start=False`), then returns the running `SliceInstance`. `calls` answers the slice's calls to other
    slices: {"group:artifact/entry": function(payload)}. Raises SliceHostError when the slice cannot be
    loaded or started. At the end of the test every instance is stopped (`aether_stop`) and its
    processes ended; the instance logs stay in the test's tmp_path (`instance.log` reads them)."""
    instances: list[SliceInstance] = []

    def factory(artifact: str, **options: Any) -> SliceInstance:
        instance = SliceInstance(artifact, log_dir=tmp_path / "slice-logs", **options)
        instances.append(instance)
        return instance

    yield factory
    failures: list[SliceHostError] = []
    for instance in reversed(instances):
        try:
            instance.close()
        except SliceHostError as error:
            failures.append(error)
    if failures:
        raise failures[0]


@pytest.fixture(scope="session")
def local_cluster(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[DevCluster]:
    """A one-node dev cluster (`aether dev up`) serving the slice project at pytest's rootdir, built into
    its wheel index: `apply(blueprint_toml)` (waits until ACTIVE), `invoke(artifact, entry, payload)`,
    `aether(*args)`. Skipped unless aether-cli is installed in the test environment. Stopped (`aether dev
    down`) at the end of the session."""
    if importlib.util.find_spec("aether_cli") is None:
        pytest.skip(
            "local_cluster needs the aether CLI in the test environment: run pytest with Aether's"
            " aether-cli, aether-node and aether-kv, e.g. `uv run --with PATH/aether_cli-*.whl --with"
            " PATH/aether_node-*.whl --with PATH/aether_kv-*.whl pytest` with the wheels `uv build"
            " --all-packages` made in an Aether checkout, or --with that checkout's packages/aether-cli,"
            " packages/aether-node and packages/aether-kv (PyPI's aether-cli is another project's)"
        )
    project = pytestconfig.rootpath
    if not (project / "pyproject.toml").is_file():
        raise pytest.UsageError(
            f"local_cluster builds the slice project at pytest's rootdir; {project} has none"
        )
    cluster = DevCluster(project, tmp_path_factory.mktemp("local-cluster"))
    try:
        yield cluster
    finally:
        cluster.close()
