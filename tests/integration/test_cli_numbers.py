"""Numbers on the `aether` command line: a count, a revision or a limit is digits alone, a target or a
delay a finite number (a timeout says its own range). cyclopts read `1.5` as 2 and `0x3` as 3 for an
int: `aether blueprint rollback demo --to 2.5` rolled a blueprint back to revision 2 and `aether slice
scale X 1.5` scaled to 2. Each such value is now bad input (exit 2, naming the parameter and the value)
and nothing is sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import run_aether, stub_api

pytestmark = [pytest.mark.integration]

SLICE = "org.aether:echo"
BAD = [
    (("slice", "scale", SLICE, "1.5"), "INSTANCES", "1.5"),
    (("slice", "scale", SLICE, "0x3"), "INSTANCES", "0x3"),
    (("blueprint", "rollback", "demo", "--to", "2.5"), "--to", "2.5"),
    (("slice", "autoscale", "set", SLICE, "--min", "1e1"), "--min", "1e1"),
    (("cluster", "policy", "set", "--max-moves", "2.0"), "--max-moves", "2.0"),
    (("cluster", "events", "-n", "0b11"), "-n", "0b11"),
    (("slice", "logs", SLICE, "--lines", "2.7"), "--lines", "2.7"),
    (("slice", "logs", SLICE, "--instance", "1.2"), "--instance", "1.2"),
    (("describe", "slice", SLICE, "--events", "0o7"), "--events", "0o7"),
    (("slice", "autoscale", "set", SLICE, "--cpu", "nan"), "--cpu", "nan"),
    (("cluster", "policy", "set", "--rebalance-delay", "inf"), "--rebalance-delay", "inf"),
]


def test_a_number_that_is_not_one_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    with stub_api({}) as stub:
        for args, name, value in BAD:
            run = run_aether(*args, "-c", stub.url, cwd=tmp_path)
            assert run.returncode == 2, run
            assert f'Invalid value for {name}: unable to convert "{value}"' in run.stderr, run
        assert stub.requests == []


def test_whole_numbers_still_go(tmp_path: Path) -> None:
    scaled = {"name": "demo", "created": False, "revision": 4, "slices": 1, "change": "scaled"}
    path = "/api/v1/slices/org.aether%3Aecho/scale"
    with stub_api(
        {("POST", path): (200, scaled), ("GET", "/api/v1/revision"): (200, {"revision": 3})}
    ) as stub:
        for count in ("3", "+3"):
            run = run_aether("slice", "scale", SLICE, count, "-c", stub.url, "-o", "json", cwd=tmp_path)
            assert run.returncode == 0, run
        assert [request for request in stub.requests if request[0] == "POST"] == [("POST", path)] * 2
