"""A name with '/' on the `aether` command line (a node, blueprint, slice, entry point or key): no such
thing exists, and the server reads the "%2F" sent for it as "/", so it answered a bare 404, which the CLI
takes for another server's: "... answers (HTTP 404 'Not Found') but is not an Aether management API (is
it the ingress port?)". The name itself is now the error (exit 2), and nothing is sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import run_aether, stub_api

pytestmark = [pytest.mark.integration]

COMMANDS = [
    ("node", "drain", "node/1"),
    ("blueprint", "get", "demo/status"),
    ("slice", "status", "org.aether:echo/x"),
    ("slice", "invoke", "org.aether:echo", "echo/x"),
    ("key", "revoke", "ci/x"),
]


def test_a_name_with_a_slash_is_refused_as_the_name_it_is(tmp_path: Path) -> None:
    with stub_api({}) as stub:
        for args in COMMANDS:
            run = run_aether(*args, "-c", stub.url, cwd=tmp_path)
            assert run.returncode == 2, run
            assert f"error: {args[-1]!r}: a name cannot hold '/'" in run.stderr, run
            assert "management API" not in run.stderr, run
        assert stub.requests == []


@pytest.mark.parametrize("name", [".", ".."])
def test_a_name_of_dots_is_refused_as_the_name_it_is(tmp_path: Path, name: str) -> None:
    """A URL's path reads "." and ".." as "here" and "up": the request would reach another route, or none
    (a bare 404). No node, blueprint, slice or key is named so: the name is the error, nothing is sent."""
    with stub_api({}) as stub:
        for command in (("node", "drain"), ("blueprint", "get"), ("slice", "status"), ("key", "revoke")):
            run = run_aether(*command, name, "-c", stub.url, cwd=tmp_path)
            assert run.returncode == 2, run
            assert f"error: {name!r} is not a name" in run.stderr, run
        assert stub.requests == []
