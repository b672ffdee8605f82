"""What the dashboard's browser tests share (test_obs_dashboard.py, test_dashboard_operations.py):
Debian's chromium driven by playwright, the API keys of their cluster, a page, and waits that say what
the page shows when they fail. Screenshots go to test-artifacts/ (gitignored). Their fixtures, `secured`
(the cluster) and `browser`, are in conftest.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import CliCluster

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
BLUEPRINT = 'name = "demo"\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 4\n'
ECHO = "org.aether:echo:1.0.0"
KEYS = {"viewer": "viewer-key-0123456789abcdef", "operator": "operator-key-0123456789abcdef"}

# What overflows: the page wider than the window, an element past its right edge, a section that scrolls
# sideways (its content cut), each named with its box.
OVERFLOW = """(() => {
    const width = window.innerWidth, found = [];
    const page = document.documentElement.scrollWidth;
    if (page > width) found.push(`page ${page} > ${width}`);
    for (const e of document.querySelectorAll('body *')) {
        const box = e.getBoundingClientRect();
        if (box.width && box.right > width + 0.5 && !e.closest('[hidden]'))
            found.push(`${e.tagName}#${e.id}.${e.className.baseVal ?? e.className} right ${box.right}`);
    }
    for (const s of document.querySelectorAll('section'))
        if (s.scrollWidth > s.clientWidth + 1)
            found.push(`${s.id} scrolls: ${s.scrollWidth} > ${s.clientWidth}`);
    return found;
})()"""

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (Debian package `chromium`)"
)


def new_page(browser: Any) -> Any:
    """A page 1400 × 1000 that waits up to 60 s. bypass_csp: playwright evaluates its wait conditions as
    strings, which the page's CSP forbids."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
    page.set_default_timeout(60_000)
    return page


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
