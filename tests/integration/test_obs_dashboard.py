"""The web dashboard in a real headless browser (Debian's chromium, driven by playwright) against a live
3-node cluster that runs with API keys: the page asks for a key, shows the nodes, the leader, the slices
desired vs actual and every instance; a SIGKILLed node's instances move to the survivors on the page
without a reload; calls show up with a rate. Screenshots go to test-artifacts/ (gitignored).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cli_support
import httpx
import pytest
from cli_support import CliCluster, cli_cluster, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

sample_index = cli_support.sample_index
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
KEYS = {"viewer": "viewer-key-0123456789abcdef", "operator": "operator-key-0123456789abcdef"}
BLUEPRINT = 'name = "demo"\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 4\n'
ECHO = "org.aether:echo:1.0.0"

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (Debian package `chromium`)"
)


@pytest.fixture
def secured(tmp_path: Path, sample_index: Path) -> Iterator[CliCluster]:
    keys = ",".join(f"{role}:{key}" for role, key in KEYS.items())
    with cli_cluster(tmp_path, sample_index, dev_mode=False, node_env={"AETHER_API_KEYS": keys}) as cluster:
        yield cluster


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def api(cluster: CliCluster, node: int = 0) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://{cluster.local.nodes[node].management}",
        headers={"Authorization": f"Bearer {KEYS['operator']}"},
        timeout=30,
    )


def wait(page: Any, condition: str, what: str) -> None:
    """Wait for a JS condition on the page; on timeout fail with what the page shows (and a screenshot)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(condition)
    except PlaywrightTimeout:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-failure.png"), full_page=True)
        shown = {part: page.inner_text(part) for part in ("#summary", "#nodes", "#instances", "#events")}
        pytest.fail(f"the dashboard never showed {what}; it shows: {shown}")


def rows(page: Any, selector: str, attribute: str) -> list[str]:
    return page.eval_on_selector_all(selector, f"rows => rows.map(r => r.getAttribute('{attribute}'))")


@needs_chromium
def test_the_dashboard_shows_the_cluster_and_follows_a_killed_node(secured: CliCluster, browser: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    local = secured.local
    with api(secured) as http:
        assert http.post("/api/v1/blueprints", content=BLUEPRINT.encode()).is_success

        def converged() -> bool:
            return http.get("/api/v1/blueprints/demo/status").json()["slices"][0]["active"] == 4

        wait_until(converged, timeout=90, what="4 ACTIVE echo instances")
        leader = http.get("/api/v1/cluster").json()["leader"]
        placed = {i["node_id"] for i in http.get("/api/v1/slices").json()}

    # the page is served by a node that will survive: not the victim
    victim = next(n.node_id for n in local.nodes if n.node_id != leader and n.node_id in placed)
    host = next(n for n in local.nodes if n.node_id != victim)
    # bypass_csp: playwright evaluates its wait conditions as strings, which the page's CSP forbids
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
    page.set_default_timeout(60_000)
    page.goto(f"http://{host.management}/dashboard")

    # the files need no key; the data does: the page asks for one
    page.wait_for_selector("#key-form:not([hidden])")
    assert "needs an API key" in page.inner_text("#connection")
    page.fill("#key-input", KEYS["viewer"])
    page.click("#key-form button[type=submit]")
    wait(page, "document.querySelectorAll('#instances tbody tr[data-state=ACTIVE]').length === 4", "4 ACTIVE")
    page.wait_for_selector("#connection[data-state=live]")

    assert sorted(rows(page, "#nodes tbody tr", "data-node-id")) == ["node-1", "node-2", "node-3"]
    assert page.inner_text("#leader") == leader
    assert page.inner_text(f"#nodes tr[data-node-id='{leader}'] td:nth-child(3)") == "leader"
    assert page.inner_text(f"#slices tr[data-slice='{ECHO}']").split("\t")[1:4] == [ECHO, "4", "4"]
    assert set(rows(page, "#instances tbody tr", "data-artifact")) == {ECHO}
    assert victim in rows(page, "#instances tbody tr", "data-node")
    assert page.evaluate("sessionStorage.getItem('aether.apiKey')") == KEYS["viewer"]

    # calls through the ingress show up in the calls table
    with httpx.Client(timeout=30) as http:
        for n in range(30):
            answer = http.post(f"http://{local.nodes[0].ingress}/invoke/org.aether:echo/echo", json={"n": n})
            assert answer.status_code == 200, answer.text
    wait(
        page,
        "(() => { const row = document.querySelector(\"#calls tr[data-calls='org.aether:echo/echo']\");"
        " return row && Number(row.lastElementChild.textContent) >= 30; })()",
        "30 calls of echo",
    )
    page.screenshot(path=str(ARTIFACTS / "dashboard-before-sigkill.png"), full_page=True)

    # SIGKILL a node: its instances leave the page and come back ACTIVE on the survivors, no reload
    page.evaluate("window.__notReloaded = true")
    local.kill(victim)
    wait(
        page,
        f"""(() => {{
            const instances = [...document.querySelectorAll('#instances tbody tr')];
            return instances.length === 4
                && instances.every(r => r.dataset.state === 'ACTIVE' && r.dataset.node !== '{victim}')
                && document.querySelector("#nodes tr[data-node-id='{victim}']")?.dataset.health === 'lost';
        }})()""",
        f"the instances of {victim} ACTIVE elsewhere and {victim} lost",
    )
    assert page.evaluate("window.__notReloaded") is True
    assert page.evaluate("window.aetherDashboard.eventsApplied") > 0
    lost_row = page.inner_text(f"#nodes tr[data-node-id='{victim}']")
    assert "lost" in lost_row and "lease expired" in lost_row, lost_row
    feed = page.inner_text("#events")
    assert f"node {victim} lost: its lease expired" in feed, feed
    page.screenshot(path=str(ARTIFACTS / "dashboard-after-sigkill.png"), full_page=True)
    assert (ARTIFACTS / "dashboard-after-sigkill.png").stat().st_size > 10_000


def test_the_dashboard_files_need_no_key_and_nothing_else_is_served(secured: CliCluster) -> None:
    base = f"http://{secured.local.nodes[0].management}"
    with httpx.Client(base_url=base, timeout=10) as http:
        root = http.get("/")
        assert (root.status_code, root.headers["location"]) == (302, "/dashboard")
        page = http.get("/dashboard")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
            answer = http.get(f"/dashboard/{name}")
            assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind), name
        for path in ("/dashboard/_dashboard.py", "/dashboard/..%2F_node.py", "/dashboard/index.html.bak"):
            answer = http.get(path)
            assert answer.status_code == 404, path
        assert http.get("/api/v1/overview").status_code == 401
        viewer = {"Authorization": f"Bearer {KEYS['viewer']}"}
        overview = http.get("/api/v1/overview", headers=viewer).json()
        assert overview["revision"] > 0 and len(overview["status"]["nodes"]) == 3
        calls = http.get("/api/v1/calls", headers=viewer).json()
        assert calls["nodes"] == {"node-1": "ok", "node-2": "ok", "node-3": "ok"}, calls
        bad = http.get("/api/v1/events/stream", params={"since": "yesterday"}, headers=viewer)
        assert (bad.status_code, bad.json()["error"]["message"]) == (
            400,
            "since: expected a revision number, got 'yesterday'",
        )
