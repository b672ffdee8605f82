// The Aether dashboard: one static page, no build step, no dependencies.
//
// Data: GET /api/v1/overview (status, nodes, slices desired vs active, every instance, at revision R),
// then the event stream from R on (fetch-based server-sent events, so that the API key can go in an
// Authorization header: EventSource cannot send one) applied to the instances as they change, and
// GET /api/v1/calls every 2 s (every node's call counters; rates and latencies are the differences
// between two readings). The key is typed into the page, kept in this tab's sessionStorage only.
// Renders are batched to one per animation frame, so bursts of events (500 instances moving) stay cheap.
// History: each calls reading adds a sample (calls/s, errors/s and p99 per slice, instances per state)
// to a 5-minute history kept in this tab (charts.js draws it); nothing is stored on the node for it.
// GET /api/v1/autoscale?signals=1 every 2 s too: each autoscaled slice's count, bounds, targets, last
// decisions, and its signals (CPU, p99, calls/s and in flight per instance, as the controller compares
// them with the targets), charted per slice and target. Rollouts (canary, blue-green) come with the
// overview's slices, re-read on every rollout event. Operations (ops.js): each node's state and the
// operations it takes, a rolling update's pause or resume, a rollout's promote or abort, all through the
// management API with the page's key, "as of" the revision the page shows (in the header): the last
// overview's. Every event that changes what an operation acts on (a node's, a blueprint's, a rollout's,
// the policy's) makes the page read the overview again, and with it that revision; an operation, done or
// refused, too.
// When the API answers an error or cannot be reached, the alert says so and the page keeps the last data
// it had (with its time) and retries; it recovers by itself.
"use strict";

(() => {
  const KEY = "aether.apiKey";
  const CALLS_EVERY_MS = 2000;
  const EVENTS_KEPT = 200;
  const HISTORY_SECONDS = 300;
  const UNKNOWN = "_unknown"; // the metrics' label for calls to no deployed slice or entry (typos)
  const UNKNOWN_LABEL = "calls to unknown slices";
  const STATE_COLOURS = {
    ACTIVE: "#1a7f37",
    FAILED: "#cf222e",
    LOADED: "#0969da",
    LOADING: "#9a6700",
    ACTIVATING: "#bf8700",
    DEACTIVATING: "#8250df",
    UNLOADING: "#6e7781",
  };
  const { History, Colours, draw } = window.AetherCharts;
  const ops = window.AetherOps; // ops.js: the operations' buttons and forms
  const REFRESHING = new Set([
    "node_joined", "node_left", "node_lost", "node_restarted", "leader_elected", "blueprint_applied", "blueprint_deleted",
    "rollout_started", "rollout_step", "rollout_switched", "rollout_promoted", "rollout_aborted", "rollout_done",
    "rollout_paused", "rollout_resumed", "node_cordoned", "node_uncordoned", "node_draining",
    "reconcile_policy_set", "rebalance_requested", "rebalance_delayed", "rebalance_delay_ended",
  ]);
  // The operations each node state takes (`aether node ...`); those that take capacity away ask first.
  const NODE_OPERATIONS = {
    ON_DUTY: ["cordon", "drain", "stop", "restart"],
    CORDONED: ["uncordon", "drain", "stop", "restart"],
    DRAINING: ["uncordon", "stop", "restart"],
    DRAINED: ["uncordon", "stop", "restart"],
    LEAVING: [],
  };
  const CONFIRM = { drain: "drain it?", stop: "stop it?", restart: "restart it?" };
  const SIGNALS = { cpu: "CPU", p99_ms: "p99", calls_per_second: "calls/s", in_flight: "in flight" };

  const state = {
    status: null, // ClusterStatus of the last overview
    // the last overview's revision (never lowered): instance events up to it are already in `instances`;
    // the revision the page shows, which its changes are made as of (ops.js)
    revision: 0,
    instances: new Map(), // "node/artifact/instance" → InstanceInfo
    slices: [],
    lost: new Map(), // node id → the node_lost / node_left event, until the node is back
    events: [],
    calls: null,
    previousCalls: null,
    autoscale: [], // AutoscaleStatus of every autoscaled slice
    filter: "",
    history: new History(HISTORY_SECONDS),
    errors: { overview: null, stream: null, calls: null, autoscale: null }, // what the API last answered wrong, per reader
    lastGood: null, // when the page last had fresh data (Date)
  };
  const sliceColours = new Colours();
  const stateColours = new Colours(STATE_COLOURS);
  // For tests and benchmarks: when the first data was on screen, how many renders, events applied, and
  // whether a re-read of the overview is waiting or running.
  const probe = (window.aetherDashboard = { firstRenderAt: null, renders: 0, eventsApplied: 0, samples: 0, rereading: false, overviews: 0 });

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
    element.title = text;
  }

  // What went wrong, in words for the operator: the API's own message, or that nothing answered.
  function describe(error) {
    // fetch rejects with a TypeError when no answer came at all (connection refused, reset, offline)
    if (error instanceof TypeError && /fetch|network/i.test(error.message))
      return `the node serving this page does not answer (${error.message})`;
    return error.message || String(error);
  }

  function reportError(reader, error) {
    state.errors[reader] = error === null ? null : describe(error);
    if (error === null) state.lastGood = new Date();
    schedule();
  }

  // ------------------------------------------------------------------ data

  async function loadOverview() {
    const overview = await getJSON("/api/v1/overview");
    state.status = overview.status;
    state.revision = Math.max(state.revision, overview.revision);
    ops.revisionShown(state.revision);
    state.slices = overview.slices;
    const instances = new Map(overview.instances.map((i) => [instanceKey(i.node_id, i.artifact, i.instance), i]));
    // Events that came while it was read and are newer than it are not in it: applied again, oldest first
    // (the stream applied them to the table this one replaces).
    for (const event of [...state.events].reverse()) if (event.revision > overview.revision) applyInstance(instances, event);
    state.instances = instances;
    for (const node of overview.status.nodes) state.lost.delete(node.node_id);
    ops.slicesRead(overview.slices);
    probe.overviews += 1;
    reportError("overview", null);
  }

  let refreshTimer = null;
  function refreshSoon() {
    // Node and leader changes change the node table: re-read it (debounced), the stream goes on.
    if (refreshTimer) return;
    probe.rereading = true;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      try {
        await loadOverview();
      } catch (error) {
        if (error instanceof Unauthorized) askForKey(error.message);
        else reportError("overview", error);
      } finally {
        probe.rereading = refreshTimer !== null; // (another was asked for meanwhile)
      }
    }, 300);
  }

  // An instance's event onto a table of instances (by node, artifact and instance).
  function applyInstance(instances, event) {
    if (!event.artifact) return;
    const key = instanceKey(event.node_id, event.artifact, event.instance);
    if (event.kind === "instance_state") {
      instances.set(key, {
        node_id: event.node_id,
        artifact: event.artifact,
        instance: event.instance,
        state: event.state,
        reason: event.reason,
        timestamp: event.timestamp,
        restarts: event.restarts ?? 0,
        last_exit: event.last_exit ?? "",
      });
    } else if (event.kind === "instance_removed") {
      instances.delete(key);
    }
  }

  function apply(event) {
    state.events.unshift(event);
    if (state.events.length > EVENTS_KEPT) state.events.length = EVENTS_KEPT;
    if (event.revision > state.revision && event.artifact) {
      applyInstance(state.instances, event);
      probe.eventsApplied += 1;
    }
    if (event.kind === "node_lost" || event.kind === "node_left") state.lost.set(event.node_id, event);
    // health (expected nodes, convergence, failures) is the server's verdict: re-read it when it may change
    const outcome = event.kind === "instance_state" && (event.state === "ACTIVE" || event.state === "FAILED");
    if (REFRESHING.has(event.kind) || outcome || event.kind === "instance_removed") refreshSoon();
    document.dispatchEvent(new CustomEvent("aether:event", { detail: event }));
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
        reportError("stream", null);
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
        setConnection("error", "retrying");
        reportError("stream", error);
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
        sample();
        reportError("calls", null);
      } catch (error) {
        if (error instanceof Unauthorized) return; // follow() asks for the key
        reportError("calls", error);
      }
      await sleep(CALLS_EVERY_MS);
    }
  }

  async function pollAutoscale() {
    for (;;) {
      try {
        state.autoscale = await getJSON("/api/v1/autoscale?signals=1");
        reportError("autoscale", null);
      } catch (error) {
        if (error instanceof Unauthorized) return; // follow() asks for the key
        reportError("autoscale", error);
      }
      await sleep(CALLS_EVERY_MS);
    }
  }

  // ------------------------------------------------------------------ rates and history

  // Per slice entry between the two last readings: calls/s, errors/s, mean and p99 (seconds); null
  // before there are two readings of it (or after a node's counters went back, e.g. on a restart).
  function rates() {
    const now = state.calls;
    const found = new Map();
    if (!now || !state.previousCalls) return found;
    const before = new Map(state.previousCalls.slices.map((s) => [`${s.artifact}/${s.entry}`, s]));
    const interval = now.at - state.previousCalls.at;
    for (const s of now.slices) {
      const old = before.get(`${s.artifact}/${s.entry}`);
      const calls = old ? s.calls - old.calls : -1;
      const errors = old ? s.errors - old.errors : -1;
      if (!(interval > 0) || calls < 0 || errors < 0) continue;
      found.set(`${s.artifact}/${s.entry}`, {
        rate: calls / interval,
        errors: errors / interval,
        mean: calls > 0 ? (s.seconds - old.seconds) / calls : null,
        p99: calls > 0 ? quantile(s.buckets, old.buckets, calls, 0.99) : null,
      });
    }
    return found;
  }

  function quantile(buckets, oldBuckets, calls, q) {
    // The smallest bucket bound (seconds) under which q of the interval's calls fell; Infinity above all.
    const old = new Map(oldBuckets.map(([le, n]) => [le, n]));
    for (const [le, n] of buckets) if (n - (old.get(le) ?? 0) >= q * calls) return le;
    return Infinity;
  }

  const seconds = (value) => (value === Infinity ? "> 30 s" : value < 1 ? `${+(value * 1000).toFixed(1)} ms` : `${value} s`);

  function sample() {
    const found = rates();
    if (!found.size && !state.previousCalls) return;
    const calls = new Map();
    const p99 = new Map();
    let errors = 0;
    for (const [key, r] of found) {
      errors += r.errors;
      if (key === `${UNKNOWN}/${UNKNOWN}`) continue; // in errors/s; never a slice's line
      calls.set(key, r.rate);
      if (r.p99 !== null) p99.set(key, Math.min(r.p99, 30) * 1000);
    }
    calls.set("errors/s", errors);
    // autoscaled slices: the p99 target as a dashed line beside the p99 lines; the count asked for and
    // ACTIVE, against max (dashed)
    const autoscale = new Map();
    for (const s of state.autoscale) {
      if (s.targets.p99_ms !== undefined) p99.set(`target ${s.artifact}`, s.targets.p99_ms);
      autoscale.set(`${s.artifact} asked`, s.instances);
      autoscale.set(`${s.artifact} active`, s.active);
      autoscale.set(`${s.artifact} max`, s.max);
    }
    const states = new Map();
    for (const i of state.instances.values()) states.set(i.state, (states.get(i.state) ?? 0) + 1);
    const charts = { calls, p99, states, autoscale };
    // each target of each autoscaled slice: its signal (a gap while it cannot be measured) and the target
    for (const s of state.autoscale) {
      for (const [name, target] of Object.entries(s.targets)) {
        const line = new Map([["target", target]]);
        if (s.signals?.[name] !== undefined) line.set("signal", s.signals[name]);
        charts[signalChart(s.artifact, name)] = line;
      }
    }
    state.history.add({ at: state.calls.at, charts });
    probe.samples += 1;
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
    renderAutoscale();
    renderRollouts(instances);
    renderInstances(instances);
    renderCalls();
    renderMatrix(instances);
    renderCharts();
    renderEvents();
    renderAlert();
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
      `<span id="revision" data-revision="${state.revision}" title="the revision this page shows: its changes are made as of it` +
      ` (refused if what they change changed after it)">revision ${state.revision}</span> · ${s.has_quorum ? "quorum" : "<b class='health-lost'>no quorum</b>"} · ` +
      `${s.nodes.length}${s.expected_nodes?.length ? ` of ${s.expected_nodes.length} expected` : ""} nodes · ` +
      `${instances.length} instances, ${active} active, ${failed} failed` +
      (reasons.length
        ? `<ul id="health-reasons">${reasons.map((r) => `<li class="health-lost"><span class="clamp two" title="${esc(r)}">${esc(r)}</span></li>`).join("")}</ul>`
        : "");
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
      const operations = (NODE_OPERATIONS[n.state] ?? [])
        .map((op) => ops.button(op, `POST /api/v1/nodes/${encodeURIComponent(n.node_id)}/${op}`, `${op} ${n.node_id}`, CONFIRM[op]))
        .join(" ");
      return (
        `<tr data-node-id="${esc(n.node_id)}" data-health="up" data-state="${esc(n.state)}">${cell(n.node_id)}<td class="health-up">up</td>` +
        `<td>${role}</td><td class="num">${counts.all}</td><td class="num">${counts.active}</td>${cell(n.management)}${cell(n.ingress)}` +
        `<td class="node-state node-${esc(n.state)}" title="${esc(n.waiting)}">${esc(n.state)}${n.waiting ? ` <span class="muted">(waiting)</span>` : ""}</td>` +
        `<td class="operations">${operations}</td></tr>`
      );
    });
    for (const [nodeId, event] of state.lost) {
      if (state.status.nodes.some((n) => n.node_id === nodeId)) continue;
      const health = event.kind === "node_left" ? "left" : "lost";
      rows.push(
        `<tr class="lost" data-node-id="${esc(nodeId)}" data-health="${health}">${cell(nodeId)}` +
          `<td class="health-lost" title="${esc(event.reason)}">${health} ${esc(clock(event.timestamp))}</td>` +
          reason(event.reason, 7) +
          "</tr>",
      );
    }
    setRows($("nodes"), rows.join(""));
    $("nodes-count").textContent = `(${state.status.nodes.length} up)`;
  }

  function renderSlices(instances) {
    const active = new Map();
    for (const i of instances) if (i.state === "ACTIVE") active.set(i.artifact, (active.get(i.artifact) ?? 0) + 1);
    const html = state.slices
      .map((s) => {
        const actual = active.get(s.artifact) ?? 0;
        const id = s.artifact.split(":").slice(0, 2).join(":");
        const slice = encodeURIComponent(id);
        const update =
          s.update !== "rolling"
            ? esc(s.update.replace("_", "-"))
            : s.paused
              ? `rolling, <b class="paused">paused</b> ${ops.button("resume", `POST /api/v1/slices/${slice}/resume`, `resume ${id}`)}`
              : `rolling ${ops.button("pause", `POST /api/v1/slices/${slice}/pause`, `pause ${id}`)}`;
        return (
          `<tr data-slice="${esc(s.artifact)}" data-paused="${s.paused}" class="${actual < s.desired ? "short" : ""}">${cell(s.blueprint)}` +
          `${cell(s.artifact)}<td class="num">${s.desired}</td><td class="num">${actual}</td>${reason(s.problem)}` +
          `<td class="update">${update}</td></tr>`
        );
      })
      .join("");
    setRows($("slices"), html);
  }

  const TARGET_UNITS = { cpu: " cores", p99_ms: " ms", calls_per_second: "/s", in_flight: " in flight" };

  function renderAutoscale() {
    const rows = state.autoscale.map((s) => {
      const targets = Object.entries(s.targets)
        .map(([name, value]) => `${name} ${value}${TARGET_UNITS[name] ?? ""}`)
        .join(", ");
      const last = s.decisions
        .slice(-3)
        .reverse()
        .map((d) => `<div class="decision" data-action="${esc(d.action)}"><span class="time">${esc(clock(d.at))}</span> ${esc(d.message)}</div>`)
        .join("");
      return (
        `<tr data-slice="${esc(s.artifact)}">${cell(s.artifact)}${cell(s.paused ? "paused" : "on")}` +
        `<td class="num">${s.instances}</td><td class="num">${s.active}</td><td class="num">${s.min}</td>` +
        `<td class="num">${s.max}</td><td class="targets">${esc(targets)}</td><td class="wrap">${last}</td></tr>`
      );
    });
    $("autoscale").tBodies[0].innerHTML = rows.join("") || `<tr><td colspan="8" class="muted">no slice is autoscaled</td></tr>`;
  }

  const signalChart = (artifact, name) => `signal ${artifact} ${name}`;
  const signalFigures = new Map(); // chart name → its <figure> in #signal-charts

  // One small chart per autoscaled slice and target: the signal against the target (dashed).
  function renderSignals(options) {
    const wanted = new Map();
    for (const s of state.autoscale) for (const name of Object.keys(s.targets)) wanted.set(signalChart(s.artifact, name), [s.artifact, name]);
    const box = $("signal-charts");
    for (const [chart, figure] of signalFigures) {
      if (!wanted.has(chart)) {
        figure.remove();
        signalFigures.delete(chart);
      }
    }
    $("signals").hidden = !wanted.size;
    for (const [chart, [artifact, name]] of [...wanted].sort()) {
      let figure = signalFigures.get(chart);
      if (!figure) {
        figure = document.createElement("figure");
        figure.className = "chart signal";
        figure.dataset.slice = artifact;
        figure.dataset.signal = name;
        figure.innerHTML = `<figcaption><span class="clip" title="${esc(artifact)}">${esc(artifact)}</span> ${esc(SIGNALS[name] ?? name)} <span class="muted">(dashed: target)</span></figcaption>`;
        box.append(figure);
        signalFigures.set(chart, figure);
      }
      const unit = TARGET_UNITS[name] ?? "";
      const format = (v) => (v === undefined ? "–" : `${+v.toFixed(name === "p99_ms" ? 0 : 2)}${unit}`);
      const colours = { of: (line) => (line === "target" ? "#cf222e" : "#0969da") };
      draw(figure, state.history.series(chart), { ...options, colours, dashed: new Set(["target"]), format, floor: 0.1 });
    }
  }

  // A blue-green rollout SWITCHED keeps its old set for a fast rollback until its grace period ends: the
  // cluster status says so (`kept_for_rollback`), as `aether cluster status` and `slice status` print it.
  const rollbackNote = (kept) =>
    `${kept.artifact}: old set (${kept.stable}) kept until ${kept.until ? clock(kept.until) : "its grace period ends"} for rollback`;

  // Canary and blue-green rollouts (the overview's slices carry them): versions, phase, the candidate's
  // share of the calls, ACTIVE instances of each version, since when, and why (and, for an old set kept
  // for a rollback, until when).
  function renderRollouts(instances) {
    const kept = new Map((state.status.kept_for_rollback ?? []).map((k) => [k.artifact, k]));
    const rows = state.slices
      .filter((s) => s.rollout)
      .map((s) => {
        const r = s.rollout;
        // (a config change: the candidate's instances are those with its config, the stable's the others)
        const config = (i, candidate) => !r.config_changed || !r.candidate_config || (i.config_digest === r.candidate_config) === candidate;
        const active = (version, candidate) =>
          instances.filter((i) => i.artifact === `${r.artifact}:${version}` && i.state === "ACTIVE" && config(i, candidate)).length;
        const share =
          r.share === null || r.share === undefined
            ? `<span class="muted">by instance count</span>`
            : `<span class="share" title="${r.share} % of the calls"><span data-share="${Math.max(0, Math.min(100, r.share))}"></span></span>${r.share} %`;
        const step = r.strategy === "canary" && r.phase !== "PROMOTED" && r.phase !== "ABORTED" ? ` · step ${r.step + 1}` : "";
        const note = kept.has(r.artifact) ? `<div class="kept-for-rollback">${esc(rollbackNote(kept.get(r.artifact)))}</div>` : "";
        return (
          `<tr data-rollout="${esc(r.artifact)}" data-phase="${esc(r.phase)}">${cell(r.artifact)}${cell(r.strategy.replace("_", "-"))}` +
          `<td class="versions">${esc(r.stable)} → ${esc(r.candidate)}${r.config_changed ? " (config changed)" : ""}</td><td class="phase">${esc(r.phase)}${step}</td><td class="share-cell">${share}</td>` +
          `<td class="num">${active(r.stable, false)} / ${active(r.candidate, true)}</td><td>${esc(clock(r.since))}</td>` +
          `<td class="reason"><span class="clamp" title="${esc(r.reason)}">${esc(r.reason)}</span>${note}${rolloutButtons(r)}</td></tr>`
        );
      });
    $("rollouts-section").hidden = !rows.length;
    setRows($("rollouts"), rows.join(""));
    // widths through the CSSOM: the page's policy allows no inline style attribute
    for (const bar of $("rollouts").querySelectorAll("[data-share]")) bar.style.width = `${bar.dataset.share}%`;
  }

  // promote and abort while a rollout is in progress, under its "why" (the API says why when its phase
  // cannot take one)
  function rolloutButtons(r) {
    if (r.phase === "PROMOTED" || r.phase === "ABORTED") return "";
    const slice = encodeURIComponent(r.artifact);
    return (
      `<div class="operations">` +
      ops.button("promote", `POST /api/v1/slices/${slice}/promote`, `promote ${r.artifact}`, "promote it?") +
      " " +
      ops.button("abort", `POST /api/v1/slices/${slice}/abort`, `abort ${r.artifact}`, "abort it?") +
      "</div>"
    );
  }

  // A table body drawn again only when it changes: a button under the pointer stays the same element.
  const drawn = new WeakMap(); // tbody → the HTML it was last given
  function setRows(table, html) {
    const body = table.tBodies[0];
    if (drawn.get(body) === html) return;
    drawn.set(body, html);
    body.innerHTML = html;
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
          `${cell(i.node_id)}${cell(i.artifact)}<td class="num">${i.instance}</td>` +
          `<td class="state state-${esc(i.state)}">${esc(i.state)}</td>${reason(instanceReason(i))}<td>${esc(clock(i.timestamp))}</td></tr>`,
      )
      .join("");
    $("instances-count").textContent = filter ? `(${shown.length} of ${instances.length})` : `(${instances.length})`;
  }

  // Why an instance is in its state; for one its node started again after its process died (and that
  // has no reason of its own now), how many times and how the last process ended.
  function instanceReason(i) {
    if (i.reason || !i.restarts) return i.reason;
    return `restarted ${i.restarts}×; last exit: ${i.last_exit || "unknown"}`;
  }

  function renderCalls() {
    const now = state.calls;
    if (!now) return;
    const found = rates();
    const figure = (value, format) => (value === undefined ? "…" : value === null ? "–" : format(value));
    const row = (s) => {
      const r = found.get(`${s.artifact}/${s.entry}`) ?? {};
      const unknown = s.artifact === UNKNOWN;
      const names = unknown
        ? `<td colspan="2" class="unknown" title="calls whose URL named no deployed slice or entry (a typo, a removed slice), counted together">${UNKNOWN_LABEL}</td>`
        : `${cell(s.artifact)}${cell(s.entry)}`;
      return (
        `<tr data-calls="${esc(s.artifact)}/${esc(s.entry)}" class="${unknown ? "unknown" : ""}">${names}` +
        `<td class="num">${figure(r.rate, (v) => v.toFixed(1))}</td>` +
        `<td class="num ${r.errors > 0 ? "health-lost" : ""}">${figure(r.errors, (v) => v.toFixed(1))}</td>` +
        `<td class="num">${figure(r.mean, (v) => `${(v * 1000).toFixed(1)} ms`)}</td>` +
        `<td class="num">${figure(r.p99, seconds)}</td><td class="num">${s.calls}</td></tr>`
      );
    };
    const known = now.slices.filter((s) => s.artifact !== UNKNOWN);
    const unknown = now.slices.filter((s) => s.artifact === UNKNOWN);
    $("calls").tBodies[0].innerHTML = [...known, ...unknown].map(row).join("");
    const missing = Object.entries(now.nodes).filter(([, outcome]) => outcome !== "ok");
    $("calls-note").textContent = missing.length
      ? `not counted: ${missing.map(([node, outcome]) => `${node} (${outcome})`).join(", ")}`
      : "";
  }

  // One row per node (lost ones too), one column per slice: each instance a chip coloured by its state.
  function renderMatrix(instances) {
    const nodes = [...state.status.nodes.map((n) => n.node_id), ...state.lost.keys()];
    for (const i of instances) nodes.push(i.node_id);
    const nodeIds = [...new Set(nodes)].sort();
    const artifacts = [...new Set([...state.slices.map((s) => s.artifact), ...instances.map((i) => i.artifact)])].sort();
    const cells = new Map();
    for (const i of instances) {
      const key = `${i.node_id} ${i.artifact}`;
      if (!cells.has(key)) cells.set(key, []);
      cells.get(key).push(i);
    }
    const up = new Set(state.status.nodes.map((n) => n.node_id));
    $("matrix").tHead.innerHTML = `<tr><th>node</th>${artifacts.map((a) => `<th><span class="clip" title="${esc(a)}">${esc(a)}</span></th>`).join("")}</tr>`;
    $("matrix").tBodies[0].innerHTML = nodeIds
      .map((node) => {
        const health = up.has(node) ? "up" : state.lost.get(node)?.kind === "node_left" ? "left" : "lost";
        const chips = (artifact) =>
          (cells.get(`${node} ${artifact}`) ?? [])
            .sort((a, b) => a.instance - b.instance)
            .map(
              (i) =>
                `<span class="chip bg-${esc(i.state)}" data-instance="${i.instance}" data-state="${esc(i.state)}"` +
                ` title="${esc(`${i.artifact} #${i.instance} on ${node}: ${i.state}${i.reason ? ` (${i.reason})` : ""}`)}">${i.instance}</span>`,
            )
            .join("");
        return (
          `<tr data-node="${esc(node)}" data-health="${health}" class="${health === "up" ? "" : "lost"}">` +
          `<td><span class="clip" title="${esc(`${node}: ${health}`)}">${esc(node)}${health === "up" ? "" : ` (${health})`}</span></td>` +
          artifacts.map((a) => `<td data-artifact="${esc(a)}">${chips(a)}</td>`).join("") +
          "</tr>"
        );
      })
      .join("");
    const states = [...new Set([...Object.keys(STATE_COLOURS), ...instances.map((i) => i.state)])];
    $("matrix-legend").innerHTML = states.map((s) => `<span class="item"><span class="chip bg-${esc(s)}">&nbsp;</span>${esc(s)}</span>`).join(" ");
  }

  function renderCharts() {
    const history = state.history;
    const options = { from: history.first, to: history.last, seconds: HISTORY_SECONDS };
    const rate = (v) => (v === undefined ? "–" : `${+v.toFixed(1)}/s`);
    const ms = (v) => (v === undefined ? "–" : `${+v.toFixed(1)} ms`);
    const count = (v) => (v === undefined ? "–" : String(v));
    const callsColours = { of: (name) => (name === "errors/s" ? "#cf222e" : sliceColours.of(name)) };
    draw($("chart-calls"), history.series("calls"), { ...options, colours: callsColours, dashed: new Set(["errors/s"]), format: rate });
    const p99 = history.series("p99");
    const targets = new Set([...p99.keys()].filter((name) => name.startsWith("target ")));
    draw($("chart-p99"), p99, { ...options, colours: sliceColours, dashed: targets, format: ms });
    const scaled = history.series("autoscale");
    const bounds = new Set([...scaled.keys()].filter((name) => name.endsWith(" max")));
    draw($("chart-autoscale"), scaled, { ...options, colours: sliceColours, dashed: bounds, format: count, floor: 2 });
    draw($("chart-instances"), history.series("states"), { ...options, colours: stateColours, format: count, floor: 4 });
    renderSignals(options);
  }

  function renderAlert() {
    const problems = Object.values(state.errors).filter((e) => e !== null);
    const alert = $("alert");
    alert.hidden = !problems.length;
    if (!problems.length) return;
    const since = state.lastGood ? ` Showing the data from ${state.lastGood.toLocaleTimeString([], { hour12: false })}.` : "";
    alert.textContent = `The cluster's API cannot be read: ${[...new Set(problems)].join("; ")}.${since} Retrying.`;
  }

  // A table cell for a name that may be long: one line, cut with an ellipsis, the whole text on hover.
  const cell = (text) => `<td><span class="clip" title="${esc(text)}">${esc(text)}</span></td>`;
  // A cell for a sentence (a problem, a reason): wrapped, at most three lines, the whole text on hover.
  const reason = (text, span = 1) =>
    `<td class="reason"${span > 1 ? ` colspan="${span}"` : ""}><span class="clamp" title="${esc(text)}">${esc(text)}</span></td>`;

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
    ops.loadPolicy();
    follow();
    pollCalls();
    pollAutoscale();
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
    document.addEventListener("aether:answered", refreshSoon); // an operation was answered: re-read now
    $("instance-filter").addEventListener("input", (event) => {
      state.filter = event.target.value;
      schedule();
    });
    start();
  });
})();
