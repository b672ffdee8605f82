"""The web dashboard in a real headless browser (Debian's chromium, driven by playwright) against a live
3-node cluster that runs with API keys: the page asks for a key, shows the nodes, the leader, the slices
desired vs actual and every instance (one whose process was killed: restarted, and how it ended); a
SIGKILLed node's instances move to the survivors on the page
without a reload; calls show up with a rate. A second test holds the layout against a 300-character
problem (nothing wider than the window at 1400, 1000 and 700 px), checks that the history charts draw
lines from real calls, that the nodes × slices view is the cluster's instances, that calls to unknown
slices are labelled so, and that with a node down and then the store without a quorum the page says what
the API answered, keeps its data and recovers by itself once the nodes are back. Two more (long) check
the Autoscaling table, and the signal charts (each target of an autoscaled slice against its signal)
with the Rollouts table of a canary in progress, the layout holding at 1400 and 700 px. Screenshots go to
test-artifacts/ (gitignored); with AETHER_UPDATE_SCREENSHOTS=1 the one of the docs too
(docs/images/dashboard.png).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cli_support
import httpx
import pytest
from cli_support import CliCluster, wait_until
from dashboard_support import ARTIFACTS, BLUEPRINT, ECHO, KEYS, OVERFLOW, api, needs_chromium, new_page, wait
from node_support import host_of, kill_pid

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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
    page = new_page(browser)
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

    # SIGKILL one echo process of the page's node: the node starts it again, and its row says so
    number = rows(page, f"#instances tbody tr[data-node='{host.node_id}']", "data-instance")[0]
    process = host_of(Path(local.plan(host.node_id).data_dir), ECHO, int(number))
    assert process is not None
    kill_pid(process.pid)
    wait(
        page,
        f"""document.querySelector("#instances tr[data-node='{host.node_id}'][data-instance='{number}']")
            ?.textContent.includes('restarted 1×; last exit: killed by SIGKILL')""",
        f"{ECHO}#{number} restarted, and how its process ended",
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
        for name, kind in (
            ("app.js", "text/javascript"),
            ("charts.js", "text/javascript"),
            ("app.css", "text/css"),
        ):
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
            'since: expected a revision number, got "yesterday"',
        )


# ---------------------------------------------------------------- layout, history, nodes × slices, errors

# A slice that cannot be installed (its version is in no index): every node fails it, and the leader's
# problem names each node's install failure: a long sentence, as real ones are.
BROKEN_SLICE = "org.aether:echo-with-a-rather-long-name-for-the-layout:9.9.9"
BROKEN = f'name = "broken"\n\n[[slices]]\nartifact = "{BROKEN_SLICE}"\ninstances = 4\n'
LONG = 300
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
DRAWN = """([name, series]) => [...document.querySelectorAll(`#${name} path.series`)]
    .filter(p => p.dataset.series === series && (p.getAttribute('d').match(/L/g) || []).length >= 2).length"""


def samples(page: Any) -> int:
    return int(page.evaluate("window.aetherDashboard.samples"))


def call_echo(local: Any, count: int) -> None:
    with httpx.Client(timeout=30) as http:
        for n in range(count):
            answer = http.post(f"http://{local.nodes[0].ingress}/invoke/org.aether:echo/echo", json={"n": n})
            assert answer.status_code == 200, answer.text
        typo = http.post(f"http://{local.nodes[0].ingress}/invoke/org.aether:ecco/echo", json={})
        assert typo.status_code == 404, typo.text


def matrix(page: Any) -> dict[str, list[tuple[str, int, str]]]:
    """node → [(artifact, instance, state)] as the nodes × slices view shows it."""
    return page.evaluate(
        """Object.fromEntries([...document.querySelectorAll('#matrix tbody tr')].map(r => [r.dataset.node,
            [...r.querySelectorAll('td[data-artifact] .chip')].map(c =>
                [c.closest('td').dataset.artifact, Number(c.dataset.instance), c.dataset.state])]))"""
    )


@needs_chromium
@pytest.mark.long
def test_the_dashboard_holds_long_texts_charts_history_and_rides_out_api_errors(
    secured: CliCluster, browser: Any
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    local = secured.local
    with api(secured) as http:
        assert http.post("/api/v1/blueprints", content=BLUEPRINT.encode()).is_success
        assert http.post("/api/v1/blueprints", content=BROKEN.encode()).is_success

        def settled() -> str:
            slices = {s["artifact"]: s for s in http.get("/api/v1/overview").json()["slices"]}
            problem = next((s["problem"] for a, s in slices.items() if "9.9.9" in a), "")
            return problem if slices[ECHO]["active"] == 4 and len(problem) >= LONG else ""

        wait_until(settled, timeout=90, what=f"4 ACTIVE echo and a {LONG}-character problem")
        leader = http.get("/api/v1/cluster").json()["leader"]

    host = next(n for n in local.nodes if n.node_id == leader)  # the page's node stays up throughout
    others = [n.node_id for n in local.nodes if n.node_id != leader]
    page = new_page(browser)
    page.goto(f"http://{host.management}/dashboard")
    page.wait_for_selector("#key-form:not([hidden])")
    page.fill("#key-input", KEYS["viewer"])
    page.click("#key-form button[type=submit]")
    wait(page, "document.querySelectorAll('#instances tbody tr[data-state=ACTIVE]').length === 4", "4 ACTIVE")

    # calls over several readings: the charts draw a line per slice and the instance states
    for _ in range(4):
        seen = samples(page)
        call_echo(local, 10)
        wait(page, f"window.aetherDashboard.samples > {seen}", "one more calls reading")
    for chart, series in (
        ("chart-calls", "org.aether:echo/echo"),
        ("chart-calls", "errors/s"),
        ("chart-p99", "org.aether:echo/echo"),
        ("chart-instances", "ACTIVE"),
        ("chart-instances", "FAILED"),
    ):
        assert page.evaluate(DRAWN, [chart, series]) == 1, (chart, series, page.inner_html(f"#{chart}"))
    # errors are a rate like the calls; the typo'd slice is labelled, not `_unknown`
    assert page.inner_text("#calls thead").split("\t")[2:4] == ["calls/s", "errors/s"]
    unknown = page.inner_text("#calls tr[data-calls='_unknown/_unknown']")
    assert unknown.startswith("calls to unknown slices") and "_unknown" not in unknown, unknown
    assert "_unknown" not in page.inner_text("main")

    # the long problem wraps within its column (cut to three lines, whole on hover) and nothing is wider
    # than the window: not on a wide screen, not on a narrow one
    cell = page.locator(f"#slices tr[data-slice='{BROKEN_SLICE}'] .clamp")
    with api(secured) as http:  # the whole problem is on hover (the leader rewrites it as nodes fail it)

        def whole() -> bool:
            slices = http.get("/api/v1/overview").json()["slices"]
            now = next(s["problem"] for s in slices if s["artifact"] == BROKEN_SLICE)
            return len(now) >= LONG and cell.get_attribute("title") == now

        wait_until(whole, timeout=30, what="the whole problem in the cell's title")
    for width in (1400, 1000, 700):
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_function("true")  # a frame for the new layout
        overflowing = page.evaluate(OVERFLOW)
        assert overflowing == [], (width, overflowing)
        box = cell.bounding_box()
        assert box is not None and box["height"] < 4 * 20, box  # three lines of a 14px/1.4 font, no more
    page.set_viewport_size({"width": 1400, "height": 1000})
    assert page.locator("#calls-section").bounding_box()["y"] < 1000  # above the fold

    # the nodes × slices view is the cluster's instances, node by node
    with api(secured) as http:

        def listed() -> dict[str, list[tuple[str, int, str]]]:
            found: dict[str, list[tuple[str, int, str]]] = {n.node_id: [] for n in local.nodes}
            for i in http.get("/api/v1/slices").json():
                found[i["node_id"]].append((i["artifact"], i["instance"], i["state"]))
            return {node: sorted(items) for node, items in found.items()}

        def same() -> bool:  # the failed slice is retried now and then: compare until both agree
            shown = {node: sorted(tuple(i) for i in items) for node, items in matrix(page).items()}
            return shown == listed()

        wait_until(same, timeout=30, what="the nodes × slices view equal to /api/v1/slices")
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"))
    if os.environ.get("AETHER_UPDATE_SCREENSHOTS"):
        DOCS_IMAGES.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS_IMAGES / "dashboard.png"))

    # a node down: marked lost in the nodes × slices view and in the nodes table (its calls are no longer
    # asked for once its lease expired: the calls table goes on with the others)
    local.kill(others[0])
    wait(
        page,
        f"document.querySelector(\"#matrix tr[data-node='{others[0]}']\")?.dataset.health === 'lost'"
        f" && document.querySelector(\"#nodes tr[data-node-id='{others[0]}']\")?.dataset.health === 'lost'",
        f"{others[0]} lost in the nodes × slices view and the nodes table",
    )
    # the store without a quorum: the API answers errors; the page says so, keeps what it had, retries
    local.kill(others[1])
    wait(
        page,
        "!document.querySelector('#alert').hidden"
        " && /cannot be read: .+Retrying/.test(document.querySelector('#alert').textContent)",
        "the alert that the API answers errors",
    )
    alert = page.inner_text("#alert")
    assert "Showing the data from" in alert, alert
    assert page.locator("#matrix tbody tr").count() == 3
    assert page.locator("#chart-calls path.series").count() >= 1
    page.screenshot(path=str(ARTIFACTS / "dashboard-api-errors.png"))
    with cli_support._environment({"AETHER_API_KEYS": ",".join(f"{r}:{k}" for r, k in KEYS.items())}):
        for node in others:
            local.start(node)
    seen = samples(page)
    wait(
        page,
        f"document.querySelector('#alert').hidden && window.aetherDashboard.samples > {seen + 1}"
        " && document.querySelector('#connection').dataset.state === 'live'",
        "the page back to live by itself after the nodes came back",
    )
    # the node serving the page gone: the page says that nothing answers (and keeps its data)
    local.kill(host.node_id)
    wait(
        page,
        "/the node serving this page does not answer/.test(document.querySelector('#alert').textContent)"
        " && !document.querySelector('#alert').hidden",
        "the alert that the page's node does not answer",
    )
    assert page.locator("#matrix tbody tr").count() == 3


@needs_chromium
@pytest.mark.long
def test_the_dashboard_shows_autoscaled_slices_and_the_last_decisions(
    secured: CliCluster, browser: Any
) -> None:
    """Per autoscaled slice: on or paused, the count, min and max in force, the targets, and the leader's
    last decisions, as the operator changes them with `slice autoscale set|pause`."""
    autoscaled = (
        'name = "scaled"\n\n[[slices]]\nartifact = "org.aether:busy:1.0.0"\ninstances = 1\n'
        "min_available = 1\n\n[slices.autoscale]\nmin = 1\nmax = 3\ncpu = 0.7\np99_ms = 250\n"
    )
    with api(secured) as http:
        assert http.post("/api/v1/blueprints", content=autoscaled.encode()).is_success
        wait_until(
            lambda: http.get("/api/v1/autoscale/org.aether:busy").json()["decisions"],
            timeout=90,
            what="a first autoscale decision",
        )
        assert http.post("/api/v1/autoscale/org.aether:busy/set", json={"max": 4}).is_success
        assert http.post("/api/v1/autoscale/org.aether:busy/pause").is_success
    page = new_page(browser)
    page.goto(f"http://{secured.local.nodes[0].management}/dashboard")
    page.wait_for_selector("#key-form:not([hidden])")
    page.fill("#key-input", KEYS["viewer"])
    page.click("#key-form button[type=submit]")
    row = "#autoscale tr[data-slice='org.aether:busy']"
    wait(page, f'!!document.querySelector("{row} .decision")', "a decision of busy")
    cells = page.inner_text(row).split("\t")
    targets = "cpu 0.7 cores, p99_ms 250 ms"
    assert cells[:7] == ["org.aether:busy", "paused", "1", cells[3], "1", "4", targets], cells
    wait(page, f"document.querySelector(\"{row}\").innerText.includes('paused by an operator')", "the pause")
    # the charts: the count asked for against max, and the p99 target beside the p99 lines
    for _ in range(3):
        seen = samples(page)
        wait(page, f"window.aetherDashboard.samples > {seen}", "one more calls reading")
    for chart, series in (
        ("chart-autoscale", "org.aether:busy asked"),
        ("chart-autoscale", "org.aether:busy max"),
        ("chart-p99", "target org.aether:busy"),
    ):
        assert page.evaluate(DRAWN, [chart, series]) == 1, (chart, series, page.inner_html(f"#{chart}"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-autoscale.png"), full_page=True)


# ---------------------------------------------------------------- signals against targets, rollouts

SIGNALS_AND_ROLLOUT = """name = "web"

[[slices]]
artifact = "org.aether:echo:{echo}"
instances = 2

[slices.update]
strategy = "canary"
steps = [50, 100]
step_window_s = 1

[[slices]]
artifact = "org.aether:busy:1.0.0"
instances = 1
min_available = 1

[slices.autoscale]
min = 1
max = 2
cpu = 0.9
calls_per_second = 400
in_flight = 20
"""
SIGNAL_DRAWN = """([slice, signal, series]) => [...document.querySelectorAll(
    `#signal-charts figure.signal[data-slice="${slice}"][data-signal="${signal}"] path.series`)]
    .filter(p => p.dataset.series === series && (p.getAttribute('d').match(/L/g) || []).length >= 2).length"""


def call_busy(local: Any, count: int) -> None:
    with httpx.Client(timeout=30) as http:
        for _ in range(count):
            answer = http.post(f"http://{local.nodes[0].ingress}/invoke/org.aether:busy/burn", json={"ms": 2})
            assert answer.status_code == 200, answer.text


@needs_chromium
@pytest.mark.long
def test_the_dashboard_charts_each_signal_against_its_target_and_shows_a_rollout(
    secured: CliCluster, browser: Any
) -> None:
    """Per autoscaled slice and target, a small chart of the signal (as the controller measures it)
    with the target dashed; a canary in progress with its versions, phase, step, share and ACTIVE
    instances per version; the layout holds at a wide and a narrow width."""
    local = secured.local
    with api(secured) as http:
        first = SIGNALS_AND_ROLLOUT.format(echo="1.0.0")
        assert http.post("/api/v1/blueprints", content=first.encode()).is_success

        def ready() -> bool:
            slices = {s["artifact"]: s for s in http.get("/api/v1/overview").json()["slices"]}
            return slices[ECHO]["active"] == 2 and slices["org.aether:busy:1.0.0"]["active"] == 1

        wait_until(ready, timeout=90, what="2 ACTIVE echo 1.0.0 and 1 ACTIVE busy")
        # no calls to echo: the canary's first step (50 %) waits for an operator after its window
        second = SIGNALS_AND_ROLLOUT.format(echo="1.1.0")
        assert http.post("/api/v1/blueprints", content=second.encode()).is_success

        def waiting() -> dict[str, Any] | None:
            rollout = next(
                s["rollout"] for s in http.get("/api/v1/overview").json()["slices"] if "echo" in s["artifact"]
            )
            return rollout if rollout and "aether slice promote" in rollout["reason"] else None

        rollout = wait_until(waiting, timeout=90, what="the canary waiting for an operator")
        assert (rollout["phase"], rollout["share"], rollout["stable"], rollout["candidate"]) == (
            "OBSERVING",
            50,
            "1.0.0",
            "1.1.0",
        )
        # the signals are measured between two readings of the answering node, at least 1.5 s apart
        assert http.get("/api/v1/autoscale/org.aether:busy?signals=1").json()["signals"] == {}

        def measured() -> float:
            call_busy(local, 5)
            answer = http.get("/api/v1/autoscale/org.aether:busy?signals=1").json()
            return answer["signals"].get("calls_per_second", 0) * (answer["signals_s"] >= 1.5)

        wait_until(measured, timeout=30, what="a calls_per_second signal", interval=0.5)
        assert http.get("/api/v1/autoscale/org.aether:busy").json()["signals"] == {}  # only when asked

    page = new_page(browser)
    page.goto(f"http://{local.nodes[0].management}/dashboard")
    page.wait_for_selector("#key-form:not([hidden])")
    page.fill("#key-input", KEYS["viewer"])
    page.click("#key-form button[type=submit]")
    row = "#rollouts tr[data-rollout='org.aether:echo']"
    wait(page, f'!!document.querySelector("{row}")', "the rollout of echo")
    cells = [cell.strip() for cell in page.inner_text(row).split("\t")]  # (the share bar is a line)
    assert cells[:6] == [
        "org.aether:echo",
        "canary",
        "1.0.0 → 1.1.0",
        "OBSERVING · step 1",
        "50 %",
        "2 / 1",
    ], cells
    assert "aether slice promote" in cells[7], cells
    assert page.evaluate(f'document.querySelector("{row} .share > span").style.width') == "50%"
    # calls to busy over several readings: each target's chart draws the signal and the target
    for _ in range(4):
        seen = samples(page)
        call_busy(local, 10)
        wait(page, f"window.aetherDashboard.samples > {seen}", "one more calls reading")
    charts = rows(page, "#signal-charts figure.signal", "data-signal")
    assert charts == ["calls_per_second", "cpu", "in_flight"], charts
    for signal in ("calls_per_second", "cpu", "in_flight"):
        for series in ("signal", "target"):
            drawn = page.evaluate(SIGNAL_DRAWN, ["org.aether:busy", signal, series])
            assert drawn == 1, (signal, series, page.inner_html("#signal-charts"))
    # nothing wider than the window, wide or narrow
    for width in (1400, 700):
        page.set_viewport_size({"width": width, "height": 1000})
        wait(page, f"window.innerWidth === {width}", f"a {width}px window")
        overflowing = page.evaluate(OVERFLOW)
        assert overflowing == [], (width, overflowing)
    page.set_viewport_size({"width": 1400, "height": 1000})
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-signals-rollouts.png"), full_page=True)
