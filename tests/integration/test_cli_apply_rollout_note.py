"""`aether blueprint apply --wait` says where a slice's canary or blue-green rollout stands and what it waits
for, each time that changes: a canary step with too few calls on the new version to judge waits for
`aether slice promote` or `abort`, and the ACTIVE counts alone never said so (the wait ran to its timeout
showing "1/2 ACTIVE"). Against a stub management API answering one such status."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import expect, run_aether, stub_api

pytestmark = [pytest.mark.integration]

WAITING = (
    "step 1 (50%) ran its window; 0 calls on the new version in the window, fewer than 20: waiting for"
    " `aether slice promote` or `abort`"
)
ROLLOUT = {
    "artifact": "org.example:hello",
    "strategy": "canary",
    "stable": "0.1.0",
    "candidate": "0.2.0",
    "phase": "OBSERVING",
    "share": 50,
    "reason": WAITING,
}
STATUS = {
    "name": "hello",
    "slices": [
        {
            "artifact": "org.example:hello:0.2.0",
            "desired": 2,
            "active": 1,
            "instances": [],
            "rollout": ROLLOUT,
            "update": "canary",
        }
    ],
}
APPLIED = {"name": "hello", "created": False, "revision": 7, "slices": 1, "blueprint_revision": 2}


def test_apply_wait_says_what_a_canary_rollout_waits_for(tmp_path: Path) -> None:
    (tmp_path / "hello.toml").write_text(
        'name = "hello"\n[[slices]]\nartifact = "org.example:hello:0.2.0"\ninstances = 2\n'
    )
    routes = {
        ("POST", "/api/v1/blueprints"): (200, APPLIED),
        ("GET", "/api/v1/blueprints/hello/status"): (200, STATUS),
    }
    with stub_api(routes) as stub:
        run = expect(
            run_aether(
                "blueprint", "apply", "hello.toml", "--wait", "--timeout", "1", "-c", stub.url, cwd=tmp_path
            ),
            1,
        )
    lines = run.stdout.splitlines()
    note = f"canary rollout of org.example:hello OBSERVING: {WAITING}"
    assert lines.count(note) == 1, str(run)  # once, though the status was read again and again
    assert "converging: org.example:hello:0.2.0 1/2 ACTIVE" in lines, str(run)
    assert "did not converge within 1 s" in run.stderr, str(run)
