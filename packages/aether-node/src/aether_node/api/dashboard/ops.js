// The dashboard's operations: every control calls the management API endpoint the `aether` CLI calls
// (no second code path), with the key typed into the page; the answer, or the API's refusal in its own
// words (what and where), is shown in #action, and a refused form field is marked. Nothing is checked
// here that the API checks: what is typed is sent as typed (a number if it reads as one).
//
// - buttons anywhere with data-op="POST PATH" (node cordon/uncordon/drain/stop/restart, slice
//   pause/resume/promote/abort, blueprint rollback) run on click; those with data-confirm run on a second
//   click within 5 s (the first one asks);
// - scale: a slice and a count (POST /api/v1/slices/ARTIFACT/scale);
// - the reconciliation policy: what is in force (GET /api/v1/cluster/policy), a form to set it (preset,
//   rebalance delay, move limit) and `cluster rebalance`;
// - blueprints: a blueprint's revisions (history) with a rollback to each, and a pasted blueprint's diff
//   (what applying it would change, per slice and node) and its apply.
// Every change goes "as of" the revision the page shows (app.js tells it, `revisionShown`: its last
// overview's), in the header the CLI sends (Aether-Since-Revision): the API refuses one whose key changed
// after that revision to something else (409, "... was changed at revision N, after revision R that this
// request was made from ..."), so a page that had not shown the latest change changes nothing. A page
// that has not read the cluster yet sends no change (it has shown nothing to act on) and says so.
// A refusal the same request with ?force=1 overrides (the API names it, `override`: a node stop or
// restart refused for the KV store's majority) gets a second action under it, asking first like the
// others; nothing is ever forced without it.
// After an operation, done or refused, the page's data is re-read (the event "aether:answered": a
// refusal may be for a change the page did not show yet); app.js sends each cluster event as
// "aether:event", on which the policy, and the history shown, are re-read when they may have changed.
"use strict";

(() => {
  const KEY = "aether.apiKey";
  const SINCE = "Aether-Since-Revision"; // aether_node.client.SINCE_HEADER
  const ARMED_MS = 5000;
  const POLICY_EVENTS = new Set([
    "reconcile_policy_set", "rebalance_requested", "rebalance_delayed", "rebalance_delay_ended",
    "node_lost", "node_joined", "node_restarted", "blueprint_applied", "blueprint_deleted",
  ]);
  const BLUEPRINT_EVENTS = new Set(["blueprint_applied", "blueprint_deleted"]); // (subject: its name)
  const POLICY_FIELDS = { preset: "policy-preset", rebalance_delay_s: "policy-delay", max_moves: "policy-moves" };

  const $ = (id) => document.getElementById(id);
  const esc = (value) =>
    String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const clock = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleTimeString([], { hour12: false }) : "");
  const path = (...parts) => parts.map(encodeURIComponent).join("/");

  // An answer that is not a success, in the API's words; `override`: the query parameter that makes the
  // same request go through anyway, if the API names one.
  class Refused extends Error {
    constructor(message, override = "") {
      super(message);
      this.override = override;
    }
  }

  // The revision the page shows (its last overview's, from app.js), which changes are made as of; null
  // until the page has read the cluster.
  let shown = null;
  const revisionShown = (revision) => {
    shown = revision;
  };

  async function request(method, url, body, contentType = "application/json", extra = {}) {
    const key = sessionStorage.getItem(KEY);
    const headers = key ? { Authorization: `Bearer ${key}`, ...extra } : { ...extra };
    if (body !== undefined) headers["Content-Type"] = contentType;
    let response;
    try {
      response = await fetch(url, { method, headers, body, cache: "no-store" });
    } catch (error) {
      throw new Refused(`the node serving this page does not answer (${error.message})`);
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      /* not JSON */
    }
    if (!response.ok)
      throw new Refused(data?.error?.message ?? `${response.status} ${response.statusText}`, data?.error?.override ?? "");
    return data;
  }

  // What an operation did or why it was refused, in one line at the top of the page.
  function show(what, outcome, text) {
    const box = $("action");
    box.hidden = false;
    box.dataset.outcome = outcome;
    box.dataset.what = what;
    box.textContent = outcome === "ok" ? `${what}: ${text}` : `${what} refused: ${text}`;
  }

  // A change, sent as of the revision the page shows; its answer in #action; the page's data re-read.
  async function operate(what, method, url, body, contentType) {
    if (shown === null) {
      show(what, "error", "this page has not read the cluster's state yet: wait until it shows it, then try again");
      return null;
    }
    show(what, "running", "…");
    $("action").textContent = `${what}…`;
    try {
      const result = await request(method, url, body, contentType, { [SINCE]: String(shown) });
      show(what, "ok", summary(result));
      return result;
    } catch (error) {
      show(what, "error", error.message);
      if (error.override) offer(what, method, url, error.override);
      return null;
    } finally {
      document.dispatchEvent(new CustomEvent("aether:answered"));
    }
  }

  // Under a refusal that `parameter`=1 overrides: the same request with it, as a button that asks first.
  function offer(what, method, url, parameter) {
    const forced = `${url}${url.includes("?") ? "&" : "?"}${encodeURIComponent(parameter)}=1`;
    const label = `${what} anyway (${parameter})`;
    $("action").insertAdjacentHTML("beforeend", ` ${button(label, `${method} ${forced}`, label, `${parameter} it?`)}`);
  }

  // A few words on an API answer (the types the operations return).
  function summary(result) {
    if (!result || typeof result !== "object") return "done";
    if (result.state !== undefined && result.node_id !== undefined)
      return `node ${result.node_id} is ${result.state}${result.waiting ? ` (${result.waiting})` : ""}`;
    if (result.blueprint_revision !== undefined)
      return `blueprint ${result.name} is at revision ${result.blueprint_revision}${result.change ? ` (${result.change})` : ""}`;
    if (result.paused !== undefined)
      return result.paused ? `${result.artifact} paused${result.status ? `: ${result.status}` : ""}` : `${result.artifact} resumed`;
    if (result.phase !== undefined) return `${result.artifact}: ${result.phase}${result.reason ? ` (${result.reason})` : ""}`;
    if (result.rebalance_delay_s !== undefined) return `in force: ${policyWords(result)}`;
    return "done";
  }

  // ------------------------------------------------------------------ buttons with data-op

  // The operation armed by a first click (its data-op) and until when: kept here, not on the button, since
  // the tables are drawn again as the cluster changes (`button` draws an armed one as armed).
  let armed = { op: "", until: 0 };

  // A button for an operation (app.js draws its tables' buttons with it); `confirm`: the question that a
  // first click shows, a second one within 5 s runs it.
  function button(label, op, what, confirm = "") {
    const on = confirm && armed.op === op && armed.until > Date.now();
    return (
      `<button type="button" data-op="${esc(op)}" data-what="${esc(what)}"${confirm ? ` data-confirm="${esc(confirm)}"` : ""}` +
      ` data-label="${esc(label)}" data-armed="${on}">${esc(on ? confirm : label)}</button>`
    );
  }

  async function clicked(button) {
    const op = button.dataset.op;
    if (button.dataset.confirm && !(armed.op === op && armed.until > Date.now())) {
      armed = { op, until: Date.now() + ARMED_MS };
      button.dataset.armed = "true";
      button.textContent = button.dataset.confirm;
      setTimeout(() => {
        if (armed.op === op && armed.until <= Date.now()) armed = { op: "", until: 0 };
        for (const b of document.querySelectorAll("button[data-armed=true]")) {
          if (b.dataset.op !== armed.op) {
            b.dataset.armed = "false";
            b.textContent = b.dataset.label ?? b.textContent;
          }
        }
      }, ARMED_MS + 50);
      return;
    }
    armed = { op: "", until: 0 };
    button.dataset.armed = "false";
    if (button.dataset.label) button.textContent = button.dataset.label;
    const [method, url] = op.split(" ");
    button.disabled = true;
    try {
      await operate(button.dataset.what || `${method} ${url}`, method, url);
    } finally {
      button.disabled = false;
    }
    if (button.dataset.after === "history") loadHistory();
  }

  // A typed value as sent: a number if it reads as one, else the text (the API says what is wrong).
  const typed = (text) => (text.trim() === "" ? null : /^-?\d+(\.\d+)?$/.test(text.trim()) ? Number(text) : text.trim());

  async function scale() {
    const artifact = $("scale-artifact").value;
    const field = $("scale-instances");
    const instances = typed(field.value);
    if (instances === null) {
      show(`scale ${artifact}`, "error", "instances: type the number of instances to run");
      field.setAttribute("aria-invalid", "true");
      return;
    }
    const result = await operate(
      `scale ${artifact}`, "POST", `/api/v1/slices/${path(artifact)}/scale`, JSON.stringify({ instances }),
    );
    field.setAttribute("aria-invalid", result === null ? "true" : "false");
    if (result !== null) field.value = "";
  }

  // ------------------------------------------------------------------ the reconciliation policy

  function policyWords(p) {
    const delay = p.rebalance_delay_s > 0 ? `rebalance delay ${p.rebalance_delay_s} s` : "no rebalance delay";
    const moves = p.max_moves > 0 ? `at most ${p.max_moves} moves at a time` : "no limit on moves";
    return `${delay}, ${moves}`;
  }

  // One read at a time; one asked for while a read runs is made after it (that read may have been
  // answered before the change that asked for the next one: its policy would stay on the page).
  let policyLoading = null;
  let policyAgain = false;
  async function loadPolicy() {
    if (policyLoading) {
      policyAgain = true;
      return policyLoading;
    }
    policyLoading = (async () => {
      do {
        policyAgain = false;
        try {
          renderPolicy(await request("GET", "/api/v1/cluster/policy"));
          $("policy-error").hidden = true;
        } catch (error) {
          $("policy-error").hidden = false;
          $("policy-error").textContent = `The policy cannot be read: ${error.message}`;
        }
      } while (policyAgain);
      policyLoading = null;
    })();
    return policyLoading;
  }

  function renderPolicy(p) {
    const set = Object.entries(p.settings ?? {}).map(([k, v]) => `${k} = ${v}`);
    $("policy-in-force").innerHTML =
      `<span id="policy-words" data-delay="${esc(p.rebalance_delay_s)}" data-moves="${esc(p.max_moves)}" data-preset="${esc(p.preset)}">` +
      `${esc(policyWords(p))}</span>` +
      ` <span class="muted">(${p.preset ? `preset ${esc(p.preset)}` : "no preset"}${set.length ? `; set: ${esc(set.join(", "))}` : ""})</span>`;
    $("policy-blueprints").innerHTML = (p.blueprints ?? [])
      .map(
        (b) =>
          `<li data-blueprint="${esc(b.name)}">blueprint <b>${esc(b.name)}</b> overrides it: ` +
          `${esc(policyWords(b))}${b.preset ? ` (preset ${esc(b.preset)})` : ""}</li>`,
      )
      .join("");
    $("policy-lost").innerHTML = (p.lost ?? [])
      .map(
        (n) =>
          `<li data-lost="${esc(n.node_id)}" data-awaited="${n.awaited}">node <b>${esc(n.node_id)}</b> lost at ${esc(clock(n.since))}` +
          ` with ${n.instances} instance record(s): ${n.awaited ? `awaited for up to ${n.delay_s} s (its instances stay in place)` : "no longer awaited"}</li>`,
      )
      .join("");
  }

  async function setPolicy(event) {
    event.preventDefault();
    const body = {};
    const preset = $("policy-preset").value;
    if (preset) body.preset = preset;
    const delay = typed($("policy-delay").value);
    if (delay !== null) body.rebalance_delay_s = delay;
    const moves = typed($("policy-moves").value);
    if (moves !== null) body.max_moves = moves;
    for (const id of Object.values(POLICY_FIELDS)) $(id).setAttribute("aria-invalid", "false");
    const result = await operate("set the reconciliation policy", "POST", "/api/v1/cluster/policy", JSON.stringify(body));
    if (result === null) {
      // the API names the field it refuses ("policy.max_moves: ..."): mark that one
      const message = $("action").textContent;
      for (const [name, id] of Object.entries(POLICY_FIELDS))
        if (message.includes(`policy.${name}`)) $(id).setAttribute("aria-invalid", "true");
      return;
    }
    renderPolicy(result);
    $("policy-form").reset();
  }

  // ------------------------------------------------------------------ blueprints: history and diff

  // A select's options, replaced only when the names change (what is chosen stays chosen); whether they did.
  function options(select, names) {
    const chosen = select.value;
    const wanted = [...new Set(names)].sort();
    if (wanted.join("\n") === [...select.options].map((o) => o.value).join("\n")) return false;
    select.innerHTML = wanted.map((n) => `<option value="${esc(n)}">${esc(n)}</option>`).join("");
    if (wanted.includes(chosen)) select.value = chosen;
    return true;
  }

  // The overview's slices (app.js, on each overview): the blueprints for their history, the slices to scale.
  function slicesRead(slices) {
    options($("scale-artifact"), slices.map((s) => s.artifact.split(":").slice(0, 2).join(":")));
    if (options($("history-blueprint"), slices.map((s) => s.blueprint)) && !$("history").hidden) loadHistory();
  }

  async function loadHistory() {
    const name = $("history-blueprint").value;
    if (!name) return;
    try {
      const revisions = await request("GET", `/api/v1/blueprints/${path(name)}/history`);
      renderHistory(name, revisions);
    } catch (error) {
      show(`history of ${name}`, "error", error.message);
    }
  }

  function renderHistory(name, revisions) {
    $("history").hidden = false;
    $("history").dataset.blueprint = name;
    $("history").tBodies[0].innerHTML = [...revisions]
      .reverse()
      .map((r) => {
        const slices = r.slices.map((s) => `${s.artifact} ×${s.instances}`).join(", ");
        const action = r.current
          ? `<span class="muted">current</span>`
          : `<button type="button" data-op="POST /api/v1/blueprints/${esc(path(name))}/rollback?to=${r.revision}"` +
            ` data-what="roll ${esc(name)} back to revision ${r.revision}" data-confirm="roll back?" data-after="history">roll back to ${r.revision}</button>`;
        return (
          `<tr data-revision="${r.revision}" data-current="${r.current}"><td class="num">${r.revision}</td>` +
          `<td>${esc(clock(r.timestamp))}</td><td class="wrap">${esc(r.change)}</td><td class="wrap">${esc(slices)}</td><td>${action}</td></tr>`
        );
      })
      .join("");
  }

  async function diff(apply) {
    const text = $("diff-text").value;
    const source = "?source=dashboard.toml";
    if (apply) {
      const result = await operate("apply the blueprint", "POST", `/api/v1/blueprints${source}`, text, "text/plain");
      if (result !== null) loadHistory();
      $("diff-text").setAttribute("aria-invalid", result === null ? "true" : "false");
      return;
    }
    try {
      const result = await request("POST", `/api/v1/blueprints/diff${source}`, text, "text/plain");
      renderDiff(result);
      $("diff-text").setAttribute("aria-invalid", "false");
      show(`diff of ${result.name}`, "ok", result.changed ? "see the changes below" : "applying it would change nothing");
    } catch (error) {
      $("diff-result").hidden = true;
      $("diff-text").setAttribute("aria-invalid", "true");
      show("diff", "error", error.message);
    }
  }

  function renderDiff(d) {
    const where = d.exists ? `revision ${d.revision}` : "a new blueprint";
    $("diff-summary").textContent = `blueprint ${d.name} (${where}): ${d.changed ? "changes" : "no change"}`;
    $("diff-result").hidden = false;
    $("diff-slices").tBodies[0].innerHTML = d.slices
      .map((c) => {
        const nodes = c.nodes
          .filter((n) => n.before !== n.after || n.awaited || (n.later !== null && n.later !== n.after))
          .map((n) => {
            const later = n.later !== null && n.later !== n.after ? `, ${n.later} after the delay` : "";
            return `<span class="placement" data-node="${esc(n.node_id)}" data-awaited="${n.awaited}">${esc(n.node_id)}: ${n.before} → ${n.after}` +
              `${n.awaited ? " (lost, awaited: kept in place)" : ""}${esc(later)}</span>`;
          })
          .join("<br>");
        const notes = [
          c.config && `config: ${c.config}`,
          c.awaiting && `waiting: ${c.awaiting.replace(/^waiting: /, "")}`,
          c.rollout && `in flight: ${c.rollout}`,
          c.update && `how: ${c.update}`,
          c.health && `health checks: ${c.health} (none restarted)`,
          c.problem && `problem: ${c.problem}`,
        ].filter(Boolean);
        return (
          `<tr data-artifact="${esc(c.artifact)}" data-change="${esc(c.change)}"><td>${esc(c.artifact)}</td><td>${esc(c.change)}${c.unplaced ? `, ${c.unplaced} cannot be placed` : ""}</td>` +
          `<td class="num">${c.instances_before} → ${c.instances_after}</td>` +
          `<td>${esc(c.versions_before.join(", ") || "-")} → ${esc(c.version_after || "-")}</td>` +
          `<td>+${c.added} / ${c.moved} moved / -${c.removed} / ${c.replaced} replaced</td>` +
          `<td class="wrap">${nodes}</td><td class="wrap">${notes.map(esc).join("<br>")}</td></tr>`
        );
      })
      .join("");
  }

  // ------------------------------------------------------------------ wiring

  document.addEventListener("DOMContentLoaded", () => {
    document.addEventListener("click", (event) => {
      const button = event.target.closest("button");
      if (!button) return;
      if (button.dataset.op) clicked(button);
    });
    $("scale-form").addEventListener("submit", (event) => {
      event.preventDefault();
      scale();
    });
    $("policy-form").addEventListener("submit", setPolicy);
    $("history-show").addEventListener("click", loadHistory);
    $("diff-run").addEventListener("click", () => diff(false));
    $("diff-apply").addEventListener("click", () => diff(true));
    document.addEventListener("aether:event", (event) => {
      const { kind, subject } = event.detail;
      if (POLICY_EVENTS.has(kind)) loadPolicy();
      if (BLUEPRINT_EVENTS.has(kind) && !$("history").hidden && $("history").dataset.blueprint === subject) loadHistory();
    });
    document.addEventListener("aether:answered", () => loadPolicy());
  });

  window.AetherOps = { loadPolicy, slicesRead, revisionShown, button };
})();
