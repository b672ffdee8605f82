"""Testing a slice without a cluster: the `slice_host` pytest fixture.

A pytest plugin, registered through the `pytest11` entry point of aether-slice, so any environment with
aether-slice and pytest has the fixture. It imports pytest, so the slice runtime never imports it.

    def test_greet(slice_host):
        hello = slice_host("org.example:hello", config={"greeting": "hi"})
        assert hello.invoke("greet", {"name": "you"}) == {"greeting": "hi, you"}

Each instance runs in a real slice host process, the runner a node uses (`aether_slice.host`), from this
interpreter's environment, where the slice must be installed. See `SliceInstance` for what a test can
do with it, and `SliceHostError` for the kinds of failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

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
