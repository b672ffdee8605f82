"""The old set a blue-green rollout keeps for a fast rollback once SWITCHED, and until when, on a live
3-node cluster with API keys: `aether slice status` said it, `aether cluster status` and the dashboard
did not (found in review). Now the cluster status carries it (`ClusterStatus.kept_for_rollback`, built
from the same `SliceStatus.kept_for_rollback` as the slice's status), `aether cluster status` prints the
same line as `aether slice status` (one function, `rollback_note`), and the dashboard (Debian's chromium,
driven by playwright) shows it in the rollout's row; none of them says it once the rollout is promoted.
"""

from __future__ import annotations

from typing import Any

import pytest
from cli_support import CliCluster, expect, wait_until
from dashboard_support import KEYS, api, needs_chromium, new_page, wait

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BLUE_GREEN = """name = "web"

[[slices]]
artifact = "org.aether:echo:{echo}"
instances = 2

[slices.update]
strategy = "blue_green"
grace_s = 3600
"""
ROW = "#rollouts tr[data-rollout='org.aether:echo']"


def notes(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().endswith("for rollback")]


@needs_chromium
def test_the_cluster_status_and_the_dashboard_say_until_when_the_old_set_is_kept_for_rollback(
    secured: CliCluster, browser: Any
) -> None:
    with api(secured) as http:
        assert http.post("/api/v1/blueprints", content=BLUE_GREEN.format(echo="1.0.0").encode()).is_success

        def active() -> int:
            return http.get("/api/v1/blueprints/web/status").json()["slices"][0]["active"]

        wait_until(lambda: active() == 2, timeout=90, what="2 ACTIVE echo 1.0.0")
        assert http.post("/api/v1/blueprints", content=BLUE_GREEN.format(echo="1.1.0").encode()).is_success

        def kept() -> list[dict[str, Any]]:
            return http.get("/api/v1/cluster").json().get("kept_for_rollback", [])

        (held,) = wait_until(kept, timeout=90, what="the blue-green rollout SWITCHED, its old set kept")
        assert (held["artifact"], held["stable"]) == ("org.aether:echo", "1.0.0") and held["until"] > 0

    viewer = KEYS["viewer"]
    slice_status = expect(secured.aether("slice", "status", "org.aether:echo", api_key=viewer))
    in_slice_status = notes(slice_status.stdout)
    assert len(in_slice_status) == 1 and in_slice_status[0].startswith(
        "org.aether:echo: old set (1.0.0) kept until "
    ), in_slice_status
    assert notes(expect(secured.aether("cluster", "status", api_key=viewer)).stdout) == in_slice_status

    page = new_page(browser)
    page.goto(f"http://{secured.local.nodes[0].management}/dashboard")
    page.wait_for_selector("#key-form:not([hidden])")
    page.fill("#key-input", viewer)
    page.click("#key-form button[type=submit]")
    wait(page, f'!!document.querySelector("{ROW} .kept-for-rollback")', "the old set kept for rollback")
    assert page.inner_text(f"{ROW} .kept-for-rollback").strip() == in_slice_status[0]
    assert page.inner_text(f"{ROW} .phase").strip() == "SWITCHED"

    # Promoted (the grace period ended by hand): the old set goes, and nothing says it is kept.
    expect(secured.aether("slice", "promote", "org.aether:echo", api_key=KEYS["operator"]))
    wait(page, f'!document.querySelector("{ROW} .kept-for-rollback")', "the note gone once promoted")
    # (converging while the old set goes: exit 4, "unhealthy", is an answer too)
    assert notes(expect(secured.aether("cluster", "status", api_key=viewer), (0, 4)).stdout) == []
