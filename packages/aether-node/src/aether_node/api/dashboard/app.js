// The Aether dashboard: one static page, no build step, no dependencies.
//
// Data: GET /api/v1/overview (status, nodes, slices desired vs active, every instance, at revision R),
// then the event stream from R on (fetch-based server-sent events, so that the API key can go in an
// Authorization header: EventSource cannot send one) applied to the instances as they change, and
// GET /api/v1/calls every 2 s (every node's call counters; rates and latencies are the differences
// between two readings). The key is typed into the page, kept in this tab's sessionStorage only.
// Renders are batched to one per animation frame, so bursts of events (500 instances moving) stay cheap.
"use strict";

(() => {
  const KEY = "aether.apiKey";
  const CALLS_EVERY_MS = 2000;
  const EVENTS_KEPT = 200;
  const REFRESHING = new Set(["node_joined", "node_left", "node_lost", "leader_elected", "blueprint_applied", "blueprint_deleted"]);

  const state = {
    status: null, // ClusterStatus of the last overview
    revision: 0, // the overview's revision: instance events up to it are already in `instances`
    instances: new Map(), // "node/artifact/instance" → InstanceInfo
    slices: [],
    lost: new Map(), // node id → the node_lost / node_left event, until the node is back
    events: [],
    calls: null,
    previousCalls: null,
    filter: "",
  };
  // For tests and benchmarks: when the first data was on screen, how many renders, events applied.
  const probe = (window.aetherDashboard = { firstRenderAt: null, renders: 0, eventsApplied: 0 });

  class Unauthorized extends Error {}

  const $ = (id) => document.getElementById(id);
  const esc = (value) =>
    String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const instanceKey = (node, artifact, instance) => `${node}/${artifact}/${instance}`;
  const clock = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleTimeString([], { hour12: false }) : "");

  function headers() {
    const key = sessionStorage.getItem(KEY);
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  async function failure(response) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error.message;
    } catch (_) {
      /* not our JSON error */
    }
    return response.status === 401 || response.status === 403 ? new Unauthorized(message) : new Error(message);
  }

  async function getJSON(path) {
    const response = await fetch(path, { headers: headers(), cache: "no-store" });
    if (!response.ok) throw await failure(response);
    return response.json();
  }

  function setConnection(kind, text) {
    const element = $("connection");
    element.dataset.state = kind;
    element.textContent = text;
  }

  // ------------------------------------------------------------------ data

  async function loadOverview() {
    const overview = await getJSON("/api/v1/overview");
    state.status = overview.status;
    state.revision = overview.revision;
    state.slices = overview.slices;
    state.instances = new Map(overview.instances.map((i) => [instanceKey(i.node_id, i.artifact, i.instance), i]));
    for (const node of overview.status.nodes) state.lost.delete(node.node_id);
    schedule();
  }

  let refreshTimer = null;
  function refreshSoon() {
    // Node and leader changes change the node table: re-read it (debounced), the stream goes on.
    if (refreshTimer) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      try {
        const since = state.revision;
        await loadOverview();
        if (state.revision < since) state.revision = since;
      } catch (error) {
        if (error instanceof Unauthorized) askForKey(error.message);
      }
    }, 300);
  }

  function apply(event) {
    state.events.unshift(event);
    if (state.events.length > EVENTS_KEPT) state.events.length = EVENTS_KEPT;
    if (event.revision > state.revision && event.artifact) {
      const key = instanceKey(event.node_id, event.artifact, event.instance);
      if (event.kind === "instance_state") {
        state.instances.set(key, {
          node_id: event.node_id,
          artifact: event.artifact,
          instance: event.instance,
          state: event.state,
          reason: event.reason,
          timestamp: event.timestamp,
        });
      } else if (event.kind === "instance_removed") {
        state.instances.delete(key);
      }
      probe.eventsApplied += 1;
    }
    if (event.kind === "node_lost" || event.kind === "node_left") state.lost.set(event.node_id, event);
    // health (expected nodes, convergence, failures) is the server's verdict: re-read it when it may change
    const outcome = event.kind === "instance_state" && (event.state === "ACTIVE" || event.state === "FAILED");
    if (REFRESHING.has(event.kind) || outcome || event.kind === "instance_removed") refreshSoon();
    schedule();
  }

  async function follow() {
    let backoff = 500;
    for (;;) {
      try {
        await loadOverview();
        const recent = await getJSON("/api/v1/events?limit=100");
        state.events = recent.filter((e) => e.revision <= state.revision).reverse();
        const response = await fetch(`/api/v1/events/stream?since=${state.revision}`, {
          headers: headers(),
          cache: "no-store",
        });
        if (!response.ok) throw await failure(response);
        setConnection("live", "live");
        backoff = 500;
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            for (const line of block.split("\n")) {
              if (line.startsWith("data: ")) apply(JSON.parse(line.slice(6)));
            }
          }
        }
        setConnection("error", "stream ended: reconnecting");
      } catch (error) {
        if (error instanceof Unauthorized) {
          askForKey(error.message);
          return;
        }
        setConnection("error", `${error.message || error}: retrying`);
      }
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 10000);
    }
  }

  async function pollCalls() {
    for (;;) {
      try {
        const reading = await getJSON("/api/v1/calls");
        state.previousCalls = state.calls;
        state.calls = reading;
        schedule();
      } catch (error) {
        if (error instanceof Unauthorized) return; // follow() asks for the key
      }
      await sleep(CALLS_EVERY_MS);
    }
  }

  // ------------------------------------------------------------------ rendering

  let scheduled = false;
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      render();
    });
  }

  function render() {
    if (!state.status) return;
    const instances = [...state.instances.values()];
    renderSummary(instances);
    renderNodes(instances);
    renderSlices(instances);
    renderInstances(instances);
    renderCalls();
    renderEvents();
    probe.renders += 1;
    if (probe.firstRenderAt === null) {
      probe.firstRenderAt = performance.now();
      document.body.dataset.ready = "true";
    }
  }

  function renderSummary(instances) {
    const s = state.status;
    const failed = instances.filter((i) => i.state === "FAILED").length;
    const active = instances.filter((i) => i.state === "ACTIVE").length;
    const healthy = (s.healthy ?? s.has_quorum) && failed === 0;
    const reasons = healthy ? [] : s.reasons ?? [];
    $("summary").innerHTML =
      `<b id="health" class="${healthy ? "health-up" : "health-lost"}" title="${esc(reasons.join("\n"))}">` +
      `${healthy ? "healthy" : "unhealthy"}</b> · ` +
      `leader <b class="leader" id="leader">${esc(s.leader ?? "none")}</b> · term ${esc(s.term)} · ` +
      `revision ${esc(Math.max(s.revision, state.revision))} · ${s.has_quorum ? "quorum" : "<b class='health-lost'>no quorum</b>"} · ` +
      `${s.nodes.length}${s.expected_nodes?.length ? ` of ${s.expected_nodes.length} expected` : ""} nodes · ` +
      `${instances.length} instances, ${active} active, ${failed} failed` +
      (reasons.length ? `<ul id="health-reasons">${reasons.map((r) => `<li class="health-lost">${esc(r)}</li>`).join("")}</ul>` : "");
  }

  function renderNodes(instances) {
    const perNode = new Map();
    for (const i of instances) {
      const counts = perNode.get(i.node_id) ?? { all: 0, active: 0 };
      counts.all += 1;
      if (i.state === "ACTIVE") counts.active += 1;
      perNode.set(i.node_id, counts);
    }
    const rows = state.status.nodes.map((n) => {
      const counts = perNode.get(n.node_id) ?? { all: 0, active: 0 };
      const role = n.leader ? `<span class="leader">leader</span>` : esc(n.role);
      return (
        `<tr data-node-id="${esc(n.node_id)}" data-health="up"><td>${esc(n.node_id)}</td><td class="health-up">up</td>` +
        `<td>${role}</td><td>${counts.all}</td><td>${counts.active}</td><td>${esc(n.management)}</td><td>${esc(n.ingress)}</td></tr>`
      );
    });
    for (const [nodeId, event] of state.lost) {
      if (state.status.nodes.some((n) => n.node_id === nodeId)) continue;
      const health = event.kind === "node_left" ? "left" : "lost";
      rows.push(
        `<tr class="lost" data-node-id="${esc(nodeId)}" data-health="${health}"><td>${esc(nodeId)}</td>` +
          `<td class="health-lost" title="${esc(event.reason)}">${health} ${esc(clock(event.timestamp))}</td>` +
          `<td colspan="5">${esc(event.reason)}</td></tr>`,
      );
    }
    $("nodes").tBodies[0].innerHTML = rows.join("");
    $("nodes-count").textContent = `(${state.status.nodes.length} up)`;
  }

  function renderSlices(instances) {
    const active = new Map();
    for (const i of instances) if (i.state === "ACTIVE") active.set(i.artifact, (active.get(i.artifact) ?? 0) + 1);
    $("slices").tBodies[0].innerHTML = state.slices
      .map((s) => {
        const actual = active.get(s.artifact) ?? 0;
        return (
          `<tr data-slice="${esc(s.artifact)}" class="${actual < s.desired ? "short" : ""}"><td>${esc(s.blueprint)}</td>` +
          `<td>${esc(s.artifact)}</td><td>${s.desired}</td><td>${actual}</td><td class="reason">${esc(s.problem)}</td></tr>`
        );
      })
      .join("");
  }

  function renderInstances(instances) {
    const counts = new Map();
    for (const i of instances) counts.set(i.state, (counts.get(i.state) ?? 0) + 1);
    $("state-counts").innerHTML = [...counts.entries()]
      .sort()
      .map(([s, n]) => `<span class="state state-${esc(s)}">${esc(s)} ${n}</span>`)
      .join(" · ");
    const filter = state.filter.trim().toLowerCase();
    const shown = instances
      .filter((i) => !filter || `${i.node_id} ${i.artifact} ${i.state} ${i.reason}`.toLowerCase().includes(filter))
      .sort((a, b) => (a.node_id < b.node_id ? -1 : a.node_id > b.node_id ? 1 : a.artifact < b.artifact ? -1 : a.artifact > b.artifact ? 1 : a.instance - b.instance));
    $("instances").tBodies[0].innerHTML = shown
      .map(
        (i) =>
          `<tr data-node="${esc(i.node_id)}" data-artifact="${esc(i.artifact)}" data-instance="${i.instance}" data-state="${esc(i.state)}">` +
          `<td>${esc(i.node_id)}</td><td>${esc(i.artifact)}</td><td>${i.instance}</td>` +
          `<td class="state state-${esc(i.state)}">${esc(i.state)}</td><td class="reason">${esc(i.reason)}</td><td>${esc(clock(i.timestamp))}</td></tr>`,
      )
      .join("");
    $("instances-count").textContent = filter ? `(${shown.length} of ${instances.length})` : `(${instances.length})`;
  }

  function renderCalls() {
    const now = state.calls;
    if (!now) return;
    const before = new Map((state.previousCalls?.slices ?? []).map((s) => [`${s.artifact}/${s.entry}`, s]));
    const interval = state.previousCalls ? now.at - state.previousCalls.at : 0;
    $("calls").tBodies[0].innerHTML = now.slices
      .map((s) => {
        const old = before.get(`${s.artifact}/${s.entry}`);
        const calls = old ? s.calls - old.calls : -1;
        let rate = "…", errors = "…", mean = "…", p99 = "…";
        if (old && interval > 0 && calls >= 0) {
          rate = (calls / interval).toFixed(1);
          errors = String(s.errors - old.errors);
          mean = calls > 0 ? `${(((s.seconds - old.seconds) / calls) * 1000).toFixed(1)} ms` : "–";
          p99 = calls > 0 ? quantile(s.buckets, old.buckets, calls, 0.99) : "–";
        }
        return (
          `<tr data-calls="${esc(s.artifact)}/${esc(s.entry)}"><td>${esc(s.artifact)}</td><td>${esc(s.entry)}</td>` +
          `<td>${rate}</td><td>${errors}</td><td>${mean}</td><td>${p99}</td><td>${s.calls}</td></tr>`
        );
      })
      .join("");
    const missing = Object.entries(now.nodes).filter(([, outcome]) => outcome !== "ok");
    $("calls-note").textContent = missing.length
      ? `not counted: ${missing.map(([node, outcome]) => `${node} (${outcome})`).join(", ")}`
      : "";
  }

  function quantile(buckets, oldBuckets, calls, q) {
    // The smallest bucket bound under which q of the interval's calls fell.
    const old = new Map(oldBuckets.map(([le, n]) => [le, n]));
    for (const [le, n] of buckets) {
      if (n - (old.get(le) ?? 0) >= q * calls) return le < 1 ? `${le * 1000} ms` : `${le} s`;
    }
    return "> 30 s";
  }

  function renderEvents() {
    $("events").innerHTML = state.events
      .slice(0, 100)
      .map((e) => {
        const bad = e.kind === "node_lost" || (e.kind === "instance_state" && e.state === "FAILED");
        return (
          `<li class="${bad ? "bad" : ""}" data-kind="${esc(e.kind)}" data-revision="${e.revision}">` +
          `<span class="time">${esc(clock(e.timestamp))}</span><span class="kind">${esc(e.kind)}</span>${esc(e.message)}</li>`
        );
      })
      .join("");
  }

  // ------------------------------------------------------------------ the key

  function askForKey(message) {
    setConnection("error", "needs an API key");
    $("key-message").textContent = `${message}. Enter an API key (role viewer or more).`;
    $("key-form").hidden = false;
    $("key-input").focus();
  }

  function start() {
    $("forget-key").hidden = !sessionStorage.getItem(KEY);
    follow();
    pollCalls();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY, $("key-input").value.trim());
      $("key-input").value = "";
      $("key-form").hidden = true;
      start();
    });
    $("forget-key").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      location.reload();
    });
    $("instance-filter").addEventListener("input", (event) => {
      state.filter = event.target.value;
      schedule();
    });
    start();
  });
})();
