"""The dashboard's operations (`api/dashboard/ops.js`) in a real headless browser (Debian's chromium,
driven by playwright) against a live 3-node cluster with API keys: each control calls the management API
endpoint the CLI calls, and the cluster (read back through the API, not the page) does what was asked.

- the reconciliation policy: shown as in force; a bad value is refused with the API's words naming the
  field, the field is marked and nothing changes; a preset and a delay are set; `rebalance now` (two
  clicks) is recorded in the event log;
- a slice: scaled (a bad count refused, nothing changed), its rolling update paused and resumed;
- nodes: the state column, cordon and uncordon, drain (two clicks) to DRAINED;
- blueprints: the history with the scale's revision, a rollback to the first revision (two clicks), a
  pasted blueprint's diff (a TOML error refused with its file and line) and its apply;
- a canary waiting for an operator: aborted from the Rollouts table; a node restarted (it comes back as
  itself, a new run) and stopped (it leaves) from the Nodes table;
- a viewer key: every operation refused with the API's reason, nothing changed;
- every change goes "as of" the revision the page shows: from a page whose event stream is held (its
  revision stays its first overview's), a scale over a later one made through the API is refused with the
  API's words naming that revision, nothing changes, and the page reads the cluster again, so the same
  scale from it then lands; with the stream let go, a scale, a cordon and a policy set made through the API
  reach the page (its history, its Nodes table, its policy and its revision), and its uncordon and policy
  set then land; a page that has not read the cluster yet sends no change;
- a node stop refused for the KV store's majority (3 nodes, one stopped already) is shown with a second
  action, `stop NODE anyway (force)`, which asks first and then stops the node;
- an instance's events that come while the page reads the cluster again, newer than what it reads, are
  kept (a scale's new instance stays ACTIVE on the page when an older overview lands after it); a policy
  change made while the page reads the policy is shown once that read lands.
Screenshots go to test-artifacts/ (gitignored).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from cli_support import CliCluster, wait_until
from dashboard_support import ARTIFACTS, BLUEPRINT, ECHO, KEYS, OVERFLOW, api, needs_chromium, new_page, wait

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ECHO_ID = "org.aether:echo"
CANARY = """name = "web"

[[slices]]
artifact = "org.aether:echo:{version}"
instances = 2

[slices.update]
strategy = "canary"
steps = [50, 100]
step_window_s = 1
"""


def open_page(browser: Any, cluster: CliCluster, key: str, *, held: list[Any] | None = None) -> Any:
    """The dashboard of the first node with `key`, once live; with `held`, the requests for its event stream
    are held (never answered; their routes appended to `held`, `route.continue_()` lets one go) and the page
    is returned once it shows its first overview: it learns of no change but those it reads again itself."""
    page = new_page(browser)
    if held is not None:
        page.route("**/api/v1/events/stream*", lambda route: held.append(route))
    page.goto(f"http://{cluster.local.nodes[0].management}/dashboard")
    page.wait_for_selector("#key-form:not([hidden])")
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#connection[data-state=live]" if held is None else "body[data-ready=true]")
    return page


SHOWN = "+document.getElementById('revision').dataset.revision"  # (in a wait's condition)


def shown_revision(page: Any) -> int:
    """The revision the page shows (in its header), which its changes are made as of."""
    return int(page.get_attribute("#revision", "data-revision"))


def outcome(page: Any, what: str) -> str:
    """Wait for the answer to the operation `what` (shown in #action) and return its text."""
    wait(
        page,
        f"(() => {{ const a = document.getElementById('action');"
        f" return !a.hidden && a.dataset.what === {what!r} && a.dataset.outcome !== 'running'; }})()",
        f"the answer to {what!r}",
    )
    return page.inner_text("#action")


def confirmed(page: Any, selector: str) -> None:
    """An operation that asks first: the first click arms it (the button asks), the second runs it."""
    page.click(selector)
    page.wait_for_selector(f"{selector}[data-armed=true]")
    page.click(selector)


def echo_slice(http: httpx.Client) -> dict[str, Any]:
    return next(s for s in http.get("/api/v1/overview").json()["slices"] if s["artifact"].startswith(ECHO_ID))


def current_revision(http: httpx.Client) -> int:
    return next(r["revision"] for r in http.get("/api/v1/blueprints/demo/history").json() if r["current"])


GREETER_TOO_BIG = (
    '\n[[slices]]\nartifact = "org.aether:greeter:1.0.0"\ninstances = 2\n\n[slices.resources]\ncpu = 64\n'
)


def listed_nodes(http: httpx.Client) -> dict[str, Any] | None:
    """The nodes the management API lists, by id; None while it answers an error (a node restarting or
    stopping may take the KV's leader with it: a 503 for a moment)."""
    answer = http.get("/api/v1/nodes")
    return {n["node_id"]: n for n in answer.json()} if answer.status_code == 200 else None


def node_state(http: httpx.Client, node_id: str) -> str:
    return next(n["state"] for n in http.get("/api/v1/nodes").json() if n["node_id"] == node_id)


@needs_chromium
@pytest.mark.long
def test_the_dashboard_operates_the_policy_slices_nodes_and_blueprints(
    secured: CliCluster, browser: Any
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with api(secured) as http:
        assert http.post("/api/v1/blueprints", content=BLUEPRINT.encode()).is_success
        wait_until(lambda: echo_slice(http)["active"] == 4, timeout=90, what="4 ACTIVE echo instances")
        page = open_page(browser, secured, KEYS["operator"])
        active = "document.querySelectorAll('#instances tbody tr[data-state=ACTIVE]').length === 4"
        wait(page, active, "4 ACTIVE")

        # ------------------------------------------------------------ the reconciliation policy
        wait(page, "!!document.getElementById('policy-words')", "the policy in force")
        assert page.inner_text("#policy-words") == "no rebalance delay, no limit on moves"
        before = http.get("/api/v1/cluster/policy").json()
        page.fill("#policy-delay", "30")
        page.fill("#policy-moves", "lots")
        page.click("#policy-set")
        refused = outcome(page, "set the reconciliation policy")
        assert refused.startswith("set the reconciliation policy refused: policy.max_moves: must be a whole")
        assert '"lots"' in refused, refused
        assert page.get_attribute("#policy-moves", "aria-invalid") == "true"
        assert page.get_attribute("#policy-delay", "aria-invalid") == "false"
        assert http.get("/api/v1/cluster/policy").json() == before  # nothing changed, the delay neither
        page.select_option("#policy-preset", "conservative")
        page.fill("#policy-delay", "30")
        page.fill("#policy-moves", "")
        page.click("#policy-set")
        assert outcome(page, "set the reconciliation policy").endswith(
            "in force: rebalance delay 30 s, at most 2 moves at a time"
        )
        policy = http.get("/api/v1/cluster/policy").json()
        assert (policy["preset"], policy["rebalance_delay_s"], policy["max_moves"]) == ("conservative", 30, 2)
        wait(page, "document.getElementById('policy-words').dataset.delay === '30'", "the new policy")
        confirmed(page, "#rebalance")
        assert outcome(page, "rebalance now").startswith("rebalance now: in force:")
        event = "!!document.querySelector('#events li[data-kind=rebalance_requested]')"
        wait(page, event, "the rebalance event")

        # ------------------------------------------------------------ scale, pause and resume
        page.select_option("#scale-artifact", ECHO_ID)
        page.fill("#scale-instances", "-1")
        page.click("#scale-run")
        refused = outcome(page, f"scale {ECHO_ID}")
        assert refused == f"scale {ECHO_ID} refused: instances: must be between 0 and 10000, got -1", refused
        assert page.get_attribute("#scale-instances", "aria-invalid") == "true"
        assert echo_slice(http)["desired"] == 4
        page.fill("#scale-instances", "2")
        page.click("#scale-run")
        assert outcome(page, f"scale {ECHO_ID}") == (
            f"scale {ECHO_ID}: blueprint demo is at revision 2 (scaled {ECHO_ID} from 4 to 2)"
        )
        wait_until(lambda: echo_slice(http)["active"] == 2, timeout=90, what="echo scaled to 2")
        row = f"#slices tr[data-slice='{ECHO}']"
        wait(page, f"document.querySelector(\"{row}\").children[2].textContent === '2'", "desired 2")
        page.click(f"{row} button[data-op$='/pause']")
        assert outcome(page, f"pause {ECHO_ID}").startswith(f"pause {ECHO_ID}: {ECHO_ID} paused")
        assert echo_slice(http)["paused"] is True
        wait(page, f"document.querySelector(\"{row}\").dataset.paused === 'true'", "echo paused")
        page.click(f"{row} button[data-op$='/resume']")
        assert outcome(page, f"resume {ECHO_ID}") == f"resume {ECHO_ID}: {ECHO_ID} resumed"
        assert echo_slice(http)["paused"] is False

        # ------------------------------------------------------------ nodes
        nodes = http.get("/api/v1/nodes").json()
        assert {n["state"] for n in nodes} == {"ON_DUTY"}
        target = sorted(n["node_id"] for n in nodes)[-1]
        node_row = f"#nodes tr[data-node-id='{target}']"
        assert page.get_attribute(node_row, "data-state") == "ON_DUTY"
        page.click(f"{node_row} button[data-op$='/cordon']")
        assert outcome(page, f"cordon {target}") == f"cordon {target}: node {target} is CORDONED"
        assert node_state(http, target) == "CORDONED"
        wait(page, f"document.querySelector(\"{node_row}\").dataset.state === 'CORDONED'", "CORDONED")
        page.click(f"{node_row} button[data-op$='/uncordon']")
        outcome(page, f"uncordon {target}")
        assert node_state(http, target) == "ON_DUTY"
        wait(page, f"document.querySelector(\"{node_row}\").dataset.state === 'ON_DUTY'", "ON_DUTY again")
        confirmed(page, f"{node_row} button[data-op$='/drain']")
        assert outcome(page, f"drain {target}").startswith(f"drain {target}: node {target} is DRAIN")
        wait(page, f"document.querySelector(\"{node_row}\").dataset.state === 'DRAINED'", f"{target} DRAINED")
        assert node_state(http, target) == "DRAINED"
        page.click(f"{node_row} button[data-op$='/uncordon']")
        outcome(page, f"uncordon {target}")
        assert node_state(http, target) == "ON_DUTY"

        # ------------------------------------------------------------ history, rollback, diff, apply
        page.select_option("#history-blueprint", "demo")
        page.click("#history-show")
        wait(page, "document.querySelectorAll('#history tbody tr').length === 2", "2 revisions of demo")
        assert page.get_attribute("#history tr[data-revision='2']", "data-current") == "true"
        assert "scaled org.aether:echo from 4 to 2" in page.inner_text("#history tr[data-revision='2']")
        confirmed(page, "#history tr[data-revision='1'] button")
        assert outcome(page, "roll demo back to revision 1") == (
            "roll demo back to revision 1: blueprint demo is at revision 3 (rolled back to revision 1)"
        )
        current = "document.querySelector('#history tr[data-revision=\"3\"]')?.dataset.current === 'true'"
        wait(page, current, "revision 3 current")
        wait_until(lambda: echo_slice(http)["active"] == 4, timeout=90, what="echo back at 4")

        page.fill("#diff-text", BLUEPRINT.replace("instances = 4", 'instances = "three"'))
        page.click("#diff-run")
        refused = outcome(page, "diff")
        assert refused.startswith("diff refused: dashboard.toml:5:"), refused
        assert page.get_attribute("#diff-text", "aria-invalid") == "true"
        too_big = BLUEPRINT + GREETER_TOO_BIG  # a slice no node can hold: added, but not placed, and why
        page.fill("#diff-text", too_big)
        page.click("#diff-run")
        assert outcome(page, "diff of demo") == "diff of demo: see the changes below"
        greeter_row = "#diff-slices tr[data-artifact='org.aether:greeter']"
        assert page.get_attribute(greeter_row, "data-change") == "added"
        assert "added, 2 cannot be placed" in page.inner_text(greeter_row)
        assert "needs cpu 64 each" in page.inner_text(greeter_row), page.inner_text(greeter_row)
        three = BLUEPRINT.replace("instances = 4", "instances = 3")
        page.fill("#diff-text", three)
        page.click("#diff-run")
        assert outcome(page, "diff of demo") == "diff of demo: see the changes below"
        diff_row = f"#diff-slices tr[data-artifact='{ECHO_ID}']"  # (the diff before had it unchanged)
        wait(page, f'document.querySelector("{diff_row}")?.dataset.change === "changed"', "the new diff")
        assert "4 → 3" in page.inner_text(diff_row)
        assert current_revision(http) == 3  # a diff changes nothing
        page.click("#diff-apply")
        assert (
            outcome(page, "apply the blueprint")
            == "apply the blueprint: blueprint demo is at revision 4 (applied)"
        )
        assert echo_slice(http)["desired"] == 3 and current_revision(http) == 4

        for width in (1400, 700):  # the controls fit a wide and a narrow window
            page.set_viewport_size({"width": width, "height": 1000})
            wait(page, f"window.innerWidth === {width}", f"a {width}px window")
            overflowing = page.evaluate(OVERFLOW)
            assert overflowing == [], (width, overflowing)
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.screenshot(path=str(ARTIFACTS / "dashboard-operations.png"), full_page=True)


@needs_chromium
@pytest.mark.long
def test_the_dashboard_aborts_a_canary_and_a_viewer_key_is_refused(secured: CliCluster, browser: Any) -> None:
    with api(secured) as http:
        assert http.post("/api/v1/blueprints", content=CANARY.format(version="1.0.0").encode()).is_success
        wait_until(lambda: echo_slice(http)["active"] == 2, timeout=90, what="2 ACTIVE echo 1.0.0")
        assert http.post("/api/v1/blueprints", content=CANARY.format(version="1.1.0").encode()).is_success

        def waiting() -> bool:
            rollout = echo_slice(http)["rollout"]
            return bool(rollout) and "aether slice promote" in rollout["reason"]

        # no calls to echo: the canary's first step waits for an operator after its window
        wait_until(waiting, timeout=90, what="the canary waiting for an operator")

        viewer = open_page(browser, secured, KEYS["viewer"])
        row = f"#rollouts tr[data-rollout='{ECHO_ID}']"
        wait(viewer, f'!!document.querySelector("{row} button")', "the rollout's buttons")
        confirmed(viewer, f"{row} button[data-op$='/abort']")
        refused = outcome(viewer, f"abort {ECHO_ID}")
        assert refused.startswith(f"abort {ECHO_ID} refused: ") and "operator" in refused, refused
        assert echo_slice(http)["rollout"]["phase"] == "OBSERVING"
        node_id = http.get("/api/v1/nodes").json()[0]["node_id"]
        viewer.click(f"#nodes tr[data-node-id='{node_id}'] button[data-op$='/cordon']")
        assert "refused: " in outcome(viewer, f"cordon {node_id}")
        assert node_state(http, node_id) == "ON_DUTY"

        page = open_page(browser, secured, KEYS["operator"])
        wait(page, f'!!document.querySelector("{row} button")', "the rollout's buttons")
        confirmed(page, f"{row} button[data-op$='/abort']")
        assert outcome(page, f"abort {ECHO_ID}").startswith(f"abort {ECHO_ID}: {ECHO_ID}: ABORTED")
        assert echo_slice(http)["rollout"]["phase"] == "ABORTED"
        wait(page, f"document.querySelector(\"{row}\")?.dataset.phase === 'ABORTED'", "ABORTED on the page")
        assert page.query_selector(f"{row} button") is None  # nothing more to promote or abort

        # a node restarted from the page comes back as itself; one stopped from it leaves
        target = secured.local.nodes[-1].node_id  # (the page's node is the first)
        started = next(n["started_at"] for n in http.get("/api/v1/nodes").json() if n["node_id"] == target)
        node_row = f"#nodes tr[data-node-id='{target}']"
        confirmed(page, f"{node_row} button[data-op$='/restart']")
        assert outcome(page, f"restart {target}") == f"restart {target}: node {target} is LEAVING"

        def back() -> bool:
            nodes = listed_nodes(http)
            return (
                nodes is not None
                and target in nodes
                and nodes[target]["started_at"] > started
                and nodes[target]["state"] == "ON_DUTY"
            )

        wait_until(back, timeout=90, what=f"{target} registered again, a new run")
        wait(page, f"document.querySelector(\"{node_row}\")?.dataset.state === 'ON_DUTY'", f"{target} back")
        confirmed(page, f"{node_row} button[data-op$='/stop']")
        assert outcome(page, f"stop {target}") == f"stop {target}: node {target} is LEAVING"
        wait_until(
            lambda: (nodes := listed_nodes(http)) is not None and target not in nodes,
            timeout=60,
            what=f"{target} gone",
        )
        wait(page, f"document.querySelector(\"{node_row}\")?.dataset.health === 'left'", f"{target} left")


@needs_chromium
@pytest.mark.long
def test_the_dashboards_changes_go_as_of_the_revision_it_shows(secured: CliCluster, browser: Any) -> None:
    with api(secured) as http:
        assert http.post("/api/v1/blueprints", content=BLUEPRINT.encode()).is_success
        held: list[Any] = []
        page = open_page(browser, secured, KEYS["operator"], held=held)
        wait(page, f"document.getElementById('scale-artifact').value === {ECHO_ID!r}", "echo to scale")
        shown = shown_revision(page)
        # (the page asks for its stream once it has read the recent events, after the page is ready:
        # route handlers run while playwright is called, so the wait goes through the page)
        deadline = time.monotonic() + 30
        while not held and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        assert held and page.get_attribute("#connection", "data-state") != "live"  # no event comes

        # a later change of the same key, through the API: the page does not learn of it
        later = http.post(f"/api/v1/slices/{ECHO_ID}/scale", json={"instances": 2})
        assert later.is_success, later.text
        changed_at = later.json()["revision"]
        assert changed_at > shown and shown_revision(page) == shown

        page.fill("#scale-instances", "3")
        page.click("#scale-run")
        refused = outcome(page, f"scale {ECHO_ID}")
        # (the revision the node names is the page's: the header reached it)
        assert refused.startswith(
            f"scale {ECHO_ID} refused: blueprint 'demo' was changed at revision {changed_at}, after revision"
            f" {shown} that this request was made from: another change came after it"
        ), refused
        assert refused.endswith("this request changed nothing; read the state again and decide"), refused
        assert page.get_attribute("#action", "data-outcome") == "error"
        assert page.get_attribute("#scale-instances", "aria-invalid") == "true"
        assert echo_slice(http)["desired"] == 2 and current_revision(http) == 2  # unchanged
        audit = http.get("/api/v1/events", params={"kind": "audit", "limit": 10}).json()
        assert [(e["subject"], e["status"]) for e in audit][-1] == (ECHO_ID, 409), audit

        # the refusal made the page read the cluster again (its stream is still held): it shows the later
        # change, and its revision; the same scale from it now lands
        row = f"#slices tr[data-slice='{ECHO}']"
        wait(page, f"document.querySelector(\"{row}\").children[2].textContent === '2'", "desired 2")
        assert shown_revision(page) >= changed_at
        page.fill("#scale-instances", "3")
        page.click("#scale-run")
        assert outcome(page, f"scale {ECHO_ID}") == (
            f"scale {ECHO_ID}: blueprint demo is at revision 3 (scaled {ECHO_ID} from 2 to 3)"
        )
        assert echo_slice(http)["desired"] == 3

        # the stream let go: a scale through the API reaches the page's history of demo
        for route in held:
            route.continue_()
        page.wait_for_selector("#connection[data-state=live]")
        page.select_option("#history-blueprint", "demo")
        page.click("#history-show")
        wait(page, "document.querySelectorAll('#history tbody tr').length === 3", "3 revisions of demo")
        assert http.post(f"/api/v1/slices/{ECHO_ID}/scale", json={"instances": 1}).is_success
        current = "document.querySelector('#history tr[data-revision=\"4\"]')?.dataset.current === 'true'"
        wait(page, current, "the API's scale in the history")
        wait_until(lambda: echo_slice(http)["active"] == 1, timeout=90, what="echo scaled to 1")
        wait(page, "document.querySelectorAll('#instances tbody tr').length === 1", "1 echo instance")

        # a cordon through the API reaches the page, whose uncordon then lands
        target = secured.local.nodes[-1].node_id
        node_row = f"#nodes tr[data-node-id='{target}']"
        assert http.post(f"/api/v1/nodes/{target}/cordon").is_success
        wait(page, f"document.querySelector(\"{node_row}\").dataset.state === 'CORDONED'", "CORDONED")
        page.click(f"{node_row} button[data-op$='/uncordon']")
        assert outcome(page, f"uncordon {target}") == f"uncordon {target}: node {target} is ON_DUTY"
        assert node_state(http, target) == "ON_DUTY"

        # so does a policy set through the API: its event makes the page read the cluster again (none else
        # is waiting: the uncordon's are done), so that the page's own policy set then lands
        uncordoned = "!!document.querySelector('#events li[data-kind=node_uncordoned]')"
        wait(page, f"{uncordoned} && !window.aetherDashboard.rereading", "the uncordon read back")
        assert http.post("/api/v1/cluster/policy", json={"rebalance_delay_s": 10}).is_success
        event = "document.querySelector('#events li[data-kind=reconcile_policy_set]')"
        wait(page, f"{event} && {SHOWN} >= +{event}.dataset.revision", "the policy's revision")
        wait(page, "document.getElementById('policy-words').dataset.delay === '10'", "the API's policy")
        page.fill("#policy-delay", "20")
        page.click("#policy-set")
        assert outcome(page, "set the reconciliation policy").endswith(
            "in force: rebalance delay 20 s, no limit on moves"
        )

        # a page that has not read the cluster yet (its overview held) sends no change
        unread = new_page(browser)
        sent: list[str] = []
        unread.on("request", lambda request: sent.append(request.method) if request.method != "GET" else None)
        unread.goto(f"http://{secured.local.nodes[0].management}/dashboard")
        unread.wait_for_selector("#key-form:not([hidden])")  # (the overview answered 401)
        unread.route("**/api/v1/overview", lambda route: None)
        unread.fill("#key-input", KEYS["operator"])
        unread.click("#key-form button[type=submit]")
        wait(unread, "!!document.getElementById('policy-words')", "the policy in force")
        unread.fill("#policy-delay", "5")  # (20 in force)
        unread.click("#policy-set")
        assert outcome(unread, "set the reconciliation policy") == (
            "set the reconciliation policy refused: this page has not read the cluster's state yet:"
            " wait until it shows it, then try again"
        )
        assert sent == [] and http.get("/api/v1/cluster/policy").json()["rebalance_delay_s"] == 20


@needs_chromium
@pytest.mark.long
def test_a_node_stop_refused_for_the_majority_can_be_forced_from_the_dashboard(
    secured: CliCluster, browser: Any
) -> None:
    _, second, third = secured.local.nodes
    with api(secured) as http:
        assert http.post(f"/api/v1/nodes/{third.node_id}/stop").is_success  # 2 of 3 replicas stay up
        assert secured.local.processes[third.node_id].wait(timeout=60) == 0
        raft = secured.local.plan(third.node_id).raft
        wait_until(
            lambda: raft in http.get("/api/v1/cluster").json()["disconnected_replicas"],
            timeout=30,
            what=f"{third.node_id}'s KV replica seen as down",
        )
        page = open_page(browser, secured, KEYS["operator"])
        node_row = f"#nodes tr[data-node-id='{second.node_id}']"
        wait(page, f'!!document.querySelector("{node_row}")', f"{second.node_id} in the Nodes table")
        confirmed(page, f"{node_row} button[data-op$='/stop']")
        what = f"stop {second.node_id}"
        refused = outcome(page, what)
        assert (
            refused.startswith(f"{what} refused: a stop of node {second.node_id} (KV replica")
            and "would leave 1 of the KV store's 3 replicas up, fewer than the 2 it needs" in refused
        ), refused
        force = "#action button[data-op$='/stop?force=1']"
        assert page.inner_text(force) == f"{what} anyway (force)"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(
            path=str(ARTIFACTS / "dashboard-stop-refused.png"), clip=page.locator("#action").bounding_box()
        )
        assert secured.local.processes[second.node_id].poll() is None  # nothing was forced
        assert node_state(http, second.node_id) == "ON_DUTY"

        confirmed(page, force)  # (the first click only asks)
        answer = outcome(page, f"{what} anyway (force)")
        assert secured.local.processes[second.node_id].wait(timeout=60) == 0, answer  # it stopped
        assert answer == f"{what} anyway (force): node {second.node_id} is LEAVING", answer


@needs_chromium
def test_instance_events_that_come_while_the_page_reads_the_cluster_again_are_kept(
    secured: CliCluster, browser: Any
) -> None:
    """The page reads the cluster again (an overview) on many events; an instance's events that came
    while it did, newer than the overview, were lost with the table the overview replaced (the instance
    showed its old state until its next event). Here the overview is read before a scale and answered
    after the scale's new instance is shown ACTIVE: the page keeps showing it."""
    active = "document.querySelectorAll('#instances tbody tr[data-state=ACTIVE]').length"
    with api(secured) as http:
        assert http.post("/api/v1/blueprints", content=BLUEPRINT.encode()).is_success
        page = open_page(browser, secured, KEYS["operator"])
        wait(page, f"{active} === 4", "4 ACTIVE")
        stale: list[tuple[Any, Any]] = []  # (the route, the answer read before the scale)
        later: list[Any] = []
        released: list[bool] = []  # (once the test is done: every read goes through as it comes)

        def hold(route: Any) -> None:
            if released:
                route.continue_()
            elif stale:
                later.append(route)
            else:
                stale.append((route, route.fetch()))

        page.route("**/api/v1/overview", hold)
        policy = http.get("/api/v1/cluster/policy").json()
        same = {"rebalance_delay_s": policy["rebalance_delay_s"]}
        assert http.post("/api/v1/cluster/policy", json=same).is_success  # (an event the page re-reads on)
        wait_until(
            lambda: page.wait_for_timeout(50) or stale, timeout=30, what="the page to read an overview"
        )

        scaled = http.post(f"/api/v1/slices/{ECHO_ID}/scale", json={"instances": 5})
        assert scaled.is_success, scaled.text
        wait(page, f"{active} === 5", "the new instance ACTIVE, from the stream")
        route, answer = stale[0]
        # counted now: every read since the route is held, and one begun before it has long ended (counted
        # before the route, such a read ended after and made it two, once in my CI)
        before = page.evaluate("window.aetherDashboard.overviews")
        route.fulfill(response=answer)  # an overview older than the new instance's events
        wait(page, f"window.aetherDashboard.overviews === {before + 1}", "the old overview taken in")
        page.wait_for_function("new Promise((done) => requestAnimationFrame(() => done(true)))")
        assert page.evaluate(active) == 5, page.inner_text("#instances")
        # the reads held go on before the route goes (unrouting handles those still held itself, and a
        # continue after it failed: "Route is already handled")
        released.append(True)
        for route in later:
            route.continue_()
        page.unroute("**/api/v1/overview")


@needs_chromium
def test_a_policy_change_during_the_pages_read_of_the_policy_is_shown(
    secured: CliCluster, browser: Any
) -> None:
    """The page reads the policy again on its events, one read at a time: one asked for while a read ran
    was dropped, and that read, answered before the change, left the old policy on the page."""
    with api(secured) as http:
        page = open_page(browser, secured, KEYS["operator"])
        wait(page, "!!document.getElementById('policy-words')", "the policy in force")
        stale: list[tuple[Any, Any]] = []

        def hold(route: Any) -> None:
            if stale:
                route.continue_()
            else:
                stale.append((route, route.fetch()))

        page.route("**/api/v1/cluster/policy", hold)
        page.evaluate("() => { window.AetherOps.loadPolicy(); }")  # a read: answered now, held
        wait_until(lambda: page.wait_for_timeout(50) or stale, timeout=30, what="the page to read the policy")
        changed = http.post("/api/v1/cluster/policy", json={"rebalance_delay_s": 42})
        assert changed.is_success, changed.text
        policy_set = "[...document.querySelectorAll('#events li')].some((e) => e.dataset.kind === '{}')"
        policy_set = policy_set.format("reconcile_policy_set")
        wait(page, policy_set, "the policy's event")
        route, answer = stale[0]
        route.fulfill(response=answer)  # the policy as it was before the change
        wait(page, "document.getElementById('policy-words').dataset.delay === '42'", "the new policy")
        page.unroute("**/api/v1/cluster/policy")
