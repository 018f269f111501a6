// The console's page: everything comes from the API's own routes, called
// with the session cookie; requests that change something carry the
// console's header (CSRF defence beside the SameSite cookie). Nothing the
// API returns is parsed as HTML: every value becomes a text node.
"use strict";

const CSRF = { "X-Gatewatch-Console": "1" };
const SAMPLE_MS = 5000;
const FEED_ROWS = 50;
const PAGE_ROWS = 50;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(3);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

async function getJson(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (r.status === 401) { location.href = "/ui/login"; throw new Error("signed out"); }
  const j = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(url.split("?")[0] + ": " + (j.error || r.status));
  return j;
}

function setStatus(text, ok) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = ok ? "muted" : "error";
}

function entityHref(type, entity) {
  return "#entity/" + encodeURIComponent(type) + "/" + encodeURIComponent(entity);
}

function entityLink(type, entity) {
  return el("a", { class: "entity", href: entityHref(type, entity), "data-type": type, "data-entity": entity }, type + " " + entity);
}

function plotInto(box, opts, data) {
  box.replaceChildren();
  if (!window.uPlot) return null;
  return new uPlot({ width: Math.max(box.clientWidth, 400), height: 220, ...opts }, data, box);
}

// ---------- Now: rates, the live feed, top entities ----------

let ratesPlot = null;

async function sampleRates() {
  const s = await getJson("/ui/api/rates");
  const data = [s.t, s.events, s.decisions, s.dead_letters];
  if (!ratesPlot) {
    ratesPlot = plotInto(document.getElementById("rates"), {
      scales: { x: { range: (u, min, max) => [max - 3600, max] } },
      series: [{}, { label: "requests/s", stroke: "#0b57d0" }, { label: "decisions/s", stroke: "#b3261e" },
               { label: "dead letters/s", stroke: "#9a5b00" }],
      axes: [{}, { label: "per second" }],
    }, data);
  } else {
    ratesPlot.setData(data);
  }
}

// The newest decisions, kept current by the change stream: one event per
// decision created, changed, lifted or expired, from the cursor the first
// page was read at, so nothing between the two is missed.
const feed = { rows: [], source: null };

function feedKey(d) { return d.entity_type + "\u001f" + d.entity; }

function renderFeed() {
  const body = document.querySelector("#feed tbody");
  body.replaceChildren(...feed.rows.map(d => el("tr", { "data-decision": String(d.decision_id) },
    el("td", {}, d.created_at), el("td", {}, entityLink(d.entity_type, d.entity)), el("td", { class: d.action }, d.action),
    el("td", {}, d.reason), el("td", {}, d.source), el("td", {}, d.expires_at))));
}

function applyChange(kind, d) {
  feed.rows = feed.rows.filter(r => feedKey(r) !== feedKey(d));
  if (kind === "created" || kind === "changed") {
    feed.rows.unshift(d);
    feed.rows.sort((a, b) => (b.created_at > a.created_at ? 1 : b.created_at < a.created_at ? -1 : b.decision_id - a.decision_id));
    feed.rows.length = Math.min(feed.rows.length, FEED_ROWS);
  }
  renderFeed();
}

async function startFeed() {
  const first = await getJson("/ui/api/decisions?sort=newest&limit=" + FEED_ROWS);
  feed.rows = first.rows;
  renderFeed();
  document.getElementById("in-force").textContent = "(" + first.total + " in force)";
  if (feed.source) feed.source.close();
  const es = new EventSource("/v1/decisions/stream?cursor=" + encodeURIComponent(first.cursor));
  feed.source = es;
  const live = document.getElementById("live");
  es.onopen = () => { live.textContent = "· live"; };
  es.onerror = () => { live.textContent = "· reconnecting"; };
  for (const kind of ["created", "changed", "deleted", "expired"]) {
    es.addEventListener(kind, ev => applyChange(kind, JSON.parse(ev.data)));
  }
  // The cursor fell out of what the store keeps: start again from a page.
  es.addEventListener("snapshot", () => { es.close(); startFeed().catch(e => setStatus("feed: " + e.message, false)); });
}

async function refreshTop() {
  const [top, counts] = await Promise.all([getJson("/ui/api/top?n=10"), getJson("/ui/api/decisions?limit=1")]);
  document.getElementById("in-force").textContent = "(" + counts.total + " in force)";
  const list = (rows, what) => rows.length
    ? el("ol", {}, ...rows.map(d => el("li", {}, entityLink(d.entity_type, d.entity), " " + what(d))))
    : el("p", { class: "muted" }, "none");
  document.getElementById("top").replaceChildren(...Object.keys(top).sort().map(t => el("div", { class: "top-type" },
    el("h3", {}, t),
    el("h4", {}, "by score"), list(top[t].by_score, d => d.action + " " + fmt(d.score)),
    el("h4", {}, "by requests refused"), list(top[t].by_refused, d => d.refused + " refused, " + d.users + " users"))));
}

async function act(body, lift) {
  let r;
  if (lift) {
    const q = new URLSearchParams({ entity_type: body.entity_type, entity: body.entity });
    r = await fetch("/v1/admin/decisions?" + q, { method: "DELETE", headers: CSRF, credentials: "same-origin" });
  } else {
    r = await fetch("/v1/admin/decisions", {
      method: "POST", credentials: "same-origin",
      headers: { ...CSRF, "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
  }
  const j = await r.json().catch(() => ({}));
  return { ok: r.ok, text: r.ok ? "done: " + JSON.stringify(j) : "refused (" + r.status + "): " + (j.error || "") };
}

async function actForm(ev) {
  ev.preventDefault();
  const f = ev.target;
  const out = document.getElementById("act-result");
  const body = { entity_type: f.entity_type.value, entity: f.entity.value.trim(), action: f.action.value,
                 ttl: f.ttl.value.trim(), reason: f.reason.value.trim() };
  const res = await act(body, f.action.value === "lift");
  out.textContent = res.text;
  out.className = res.ok ? "" : "error";
}

// ---------- Decisions and their collateral: paged on the server ----------

const pager = { offset: 0, sort: "newest", total: 0 };

async function refreshDecisions() {
  const f = document.getElementById("dec-filter");
  const q = new URLSearchParams({ sort: pager.sort, offset: pager.offset, limit: PAGE_ROWS });
  for (const k of ["entity_type", "action", "q"]) if (f[k].value.trim()) q.set(k, f[k].value.trim());
  const p = await getJson("/ui/api/decisions?" + q);
  pager.total = p.matched;
  document.getElementById("dec-count").textContent = "(" + p.matched + " of " + p.total + " in force; " +
    Object.entries(p.by_action).map(([a, n]) => n + " " + a).join(", ") + ")";
  document.getElementById("dec-page").textContent = p.matched
    ? (p.offset + 1) + "–" + (p.offset + p.rows.length) + " of " + p.matched + ", by " + p.sort : "nothing matches";
  for (const th of document.querySelectorAll("#dec-table th[data-sort]")) th.classList.toggle("sorted", th.dataset.sort === p.sort);
  document.querySelector("#dec-table tbody").replaceChildren(...p.rows.map(d => el("tr", { "data-decision": String(d.decision_id) },
    el("td", {}, d.created_at), el("td", {}, entityLink(d.entity_type, d.entity)), el("td", { class: d.action }, d.action),
    el("td", {}, d.source), el("td", { class: "num" }, fmt(d.score)), el("td", { class: "num" }, fmt(d.requests)),
    el("td", { class: "num" }, fmt(d.refused)), el("td", { class: "num" }, fmt(d.users)),
    el("td", { class: "num" }, fmt(d.sessions)), el("td", {}, d.expires_at))));
}

// ---------- Entity page ----------

let entityShown = null;

function trafficTable(name, t) {
  if (!t) return null;
  return el("tr", {}, el("th", {}, name), el("td", { class: "num" }, fmt(t.requests)), el("td", {}, t.first || ""),
    el("td", {}, t.last || ""), el("td", {}, `${t.status.s2xx} / ${t.status.s3xx} / ${t.status.s4xx} / ${t.status.s5xx}`),
    el("td", { class: "num" }, fmt(t.distinct_paths)),
    el("td", {}, t.top_paths.map(p => p.value + " (" + p.requests + ")").join(", ")));
}

// Every minute from ten before the first to ten after the last, quiet ones
// as zeros: a line through the minutes with traffic alone would draw
// requests where there were none, and one minute alone spans no time.
function dense(tl) {
  if (!tl.t.length) return tl;
  const at = new Map(tl.t.map((t, i) => [t, i]));
  const out = { t: [], requests: [], errors: [], decisions: [] };
  const first = tl.t[0] - 600, last = tl.t[tl.t.length - 1] + 600;
  if ((last - first) / 60 > 3000) return tl; // days apart: plot the minutes as they are
  for (let m = first; m <= last; m += 60) {
    const i = at.get(m);
    out.t.push(m);
    out.requests.push(i === undefined ? 0 : tl.requests[i]);
    out.errors.push(i === undefined ? 0 : tl.errors[i]);
    out.decisions.push(i === undefined || !tl.decisions[i] ? null : tl.decisions[i]);
  }
  return out;
}

async function showEntity(type, entity) {
  // Another entity: what was done to the last one is no longer news.
  if (!entityShown || entityShown.type !== type || entityShown.entity !== entity) {
    document.getElementById("ent-act-result").textContent = "";
  }
  entityShown = { type, entity };
  document.getElementById("ent-name").textContent = type + " " + entity;
  const wait = el("p", { class: "muted" }, "reading the tables…");
  document.getElementById("ent-traffic").replaceChildren(wait);
  const q = new URLSearchParams({ entity_type: type, entity });
  const e = await getJson("/ui/api/entity?" + q);
  if (!entityShown || entityShown.type !== type || entityShown.entity !== entity) return;
  const d = e.in_force;
  document.getElementById("ent-in-force").replaceChildren(d
    ? el("p", { id: "ent-decision" }, el("strong", { class: d.action }, d.action), " until " + d.expires_at + " by " + d.source +
        ": " + d.reason + " — met " + d.requests + " requests, refused " + d.refused + ", " + d.users + " users, " +
        d.sessions + " sessions")
    : el("p", { id: "ent-decision", class: "muted" }, "nothing in force: allowed"));
  document.getElementById("ent-tables").textContent = e.tables || "";
  const tl = dense(e.timeline);
  plotInto(document.getElementById("ent-plot"), {
    series: [{}, { label: "requests", stroke: "#0b57d0" }, { label: "errors (4xx, 5xx)", stroke: "#9a5b00" },
             { label: "decisions", stroke: "#b3261e", width: 0, points: { show: true, size: 8 } }],
    axes: [{}, { label: "per minute" }],
  }, [tl.t, tl.requests, tl.errors, tl.decisions]);
  const s = e.story;
  if (!s) {
    for (const id of ["ent-traffic", "ent-decisions", "ent-related"]) document.getElementById(id).replaceChildren(el("p", { class: "muted" }, "no tables yet"));
    return;
  }
  document.getElementById("ent-traffic").replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, ...["", "requests", "first", "last", "2xx / 3xx / 4xx / 5xx", "paths", "top paths"].map(h => el("th", {}, h)))),
    el("tbody", {}, trafficTable("all", s.traffic), trafficTable("before the first decision", s.before_first_decision),
      trafficTable("since the first decision", s.since_first_decision))));
  document.getElementById("ent-decisions").replaceChildren(s.decisions.length
    ? el("table", {}, el("thead", {}, el("tr", {}, ...["when", "action", "source", "score", "reason", "features"].map(h => el("th", {}, h)))),
        el("tbody", {}, ...s.decisions.map(x => el("tr", {}, el("td", {}, x.ts), el("td", { class: x.action }, x.action),
          el("td", {}, x.source), el("td", { class: "num" }, fmt(x.score)), el("td", {}, x.reason),
          el("td", { class: "features" }, x.features.map(([k, v]) => k + "=" + fmt(v)).join(", "))))))
    : el("p", { class: "muted" }, "no decisions in the tables"));
  const groups = [...s.related, ...(s.neighbours ? [{ ...s.neighbours, neighbours: true }] : [])];
  const decided = new Map(s.related_decisions.map(r => [r.entity_type + "\u001f" + r.entity, r]));
  document.getElementById("ent-related").replaceChildren(...(groups.length ? groups.map(g => el("div", { class: "top-type" },
    el("h3", {}, (g.neighbours ? "neighbours: " : "") + g.entity_type + " (" + g.distinct + ")"),
    el("ol", {}, ...g.top.map(c => {
      const r = decided.get(g.entity_type + "\u001f" + c.value);
      return el("li", {}, entityLink(g.entity_type, c.value), " " + c.requests + " requests" + (r ? " · " + r.action + " (" + r.source + ")" : ""));
    })))) : [el("p", { class: "muted" }, "none")]));
}

async function entityAct(ev) {
  ev.preventDefault();
  if (!entityShown) return;
  const f = ev.target, action = ev.submitter ? ev.submitter.value : "deny";
  const out = document.getElementById("ent-act-result");
  const res = await act({ entity_type: entityShown.type, entity: entityShown.entity, action,
                          ttl: f.ttl.value.trim(), reason: f.reason.value.trim() }, action === "lift");
  out.textContent = res.text;
  out.className = res.ok ? "" : "error";
  if (res.ok) showEntity(entityShown.type, entityShown.entity).catch(e => setStatus(e.message, false));
}

// ---------- Rules and models ----------

async function refreshRules() {
  const f = await getJson("/ui/api/fired");
  document.getElementById("fired-day").textContent = "(" + f.day + ", UTC)";
  const rows = new Map();
  const inPipeline = new Map([...f.rules.map(r => [r.source, "rule on " + r.entity + (r.shadow ? ", shadow" : "")]),
                              ...f.models.map(m => [m.source, "model on " + m.entity + (m.shadow ? ", shadow" : "") + ", challenge at " + m.challenge_at])]);
  for (const c of f.counts) {
    const k = c.source + "\u001f" + c.action;
    const r = rows.get(k) || { source: c.source, action: c.action, enforced: 0, shadow: 0 };
    r[c.shadow ? "shadow" : "enforced"] += c.decisions;
    rows.set(k, r);
  }
  document.querySelector("#fired tbody").replaceChildren(...[...rows.values()].map(r => el("tr", {},
    el("td", {}, r.source), el("td", { class: r.action }, r.action), el("td", { class: "num" }, String(r.enforced)),
    el("td", { class: "num" }, String(r.shadow)), el("td", {}, inPipeline.get(r.source) || (r.source.startsWith("manual:") ? "by hand" : "not in the pipeline now")))));
  const box = document.getElementById("histograms");
  box.replaceChildren(...(f.histograms.length ? [] : [el("p", { class: "muted" }, "no model has scored an entity today (a model scores only what its `when` guard lets through)")]));
  for (const h of f.histograms) {
    const m = f.models.find(x => x.source === h.source);
    const cuts = m ? "; challenge at " + fmt(m.challenge_at) + (m.deny_at !== null && m.deny_at !== undefined ? ", deny at " + fmt(m.deny_at) : "") : "";
    const div = el("div", { class: "histogram" }, el("h3", {}, h.source + (h.shadow ? " (shadow)" : "")),
      el("p", { class: "muted" }, h.scored + " scored, " + h.decisions + " decided today" + cuts));
    const plot = el("div", { class: "plot" });
    div.append(plot);
    box.append(div);
    const mids = h.counts.map((_, i) => (h.edges[i] + h.edges[i + 1]) / 2);
    plotInto(plot, {
      height: 180, scales: { x: { time: false } },
      series: [{ label: "score" }, { label: "entities scored", stroke: "#0b57d0", fill: "#0b57d033", points: { show: false },
        paths: window.uPlot && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.9] }) : undefined }],
      axes: [{ label: "score" }, { label: "entities scored" }],
    }, [mids, h.counts]);
  }
}

// ---------- Query ----------

function paramFields(sql) {
  const names = [...new Set([...sql.matchAll(/\$([A-Za-z_][A-Za-z0-9_]*)/g)].map(m => m[1]))];
  const box = document.getElementById("sql-params");
  const old = Object.fromEntries([...box.querySelectorAll("input")].map(i => [i.name, i.value]));
  box.replaceChildren(...names.map(n => el("label", {}, "$" + n + " ", (() => {
    const i = el("input", { name: n, size: "24" });
    i.value = old[n] || "";
    return i;
  })())));
}

async function loadInvestigations() {
  const { investigations } = await getJson("/ui/api/investigations");
  const form = document.getElementById("sql-form");
  document.getElementById("investigations").replaceChildren(el("ul", {}, ...investigations.map(inv => {
    const b = el("button", { type: "button", class: "link", "data-investigation": inv.name }, inv.name);
    b.addEventListener("click", () => { form.sql.value = inv.sql; paramFields(inv.sql); });
    return el("li", {}, b, " — " + inv.question);
  })));
}

function chartResult(columns, rows) {
  const box = document.getElementById("sql-chart");
  box.replaceChildren();
  if (rows.length < 2 || columns.length < 2) return;
  const numeric = c => rows.every(r => r[c.name] === null || typeof r[c.name] === "number");
  const temporal = c => c.type.startsWith("Timestamp") || c.type.startsWith("Date");
  const first = columns[0];
  const ys = columns.slice(1).filter(numeric);
  if (!ys.length) return;
  // Times and numbers are an axis; anything else is a category, one bar
  // group per row in the result's order, labelled with its value.
  let x, time = false;
  const categories = !temporal(first) && !numeric(first);
  if (temporal(first)) { x = rows.map(r => Date.parse(r[first.name]) / 1000); time = true; }
  else if (numeric(first)) x = rows.map(r => r[first.name]);
  else x = rows.map((_, i) => i);
  const order = x.map((_, i) => i).sort((a, b) => x[a] - x[b]);
  const colours = ["#0b57d0", "#b3261e", "#1b6e3a", "#9a5b00", "#6a1b9a", "#00695c"];
  // One measure per category reads best as bars; several as points on lines.
  const bars = categories && ys.length === 1 && window.uPlot && uPlot.paths.bars;
  const labels = rows.map(r => fmt(r[first.name]));
  plotInto(box, {
    scales: { x: categories ? { time: false, range: [-0.5, rows.length - 0.5] } : { time } },
    series: [{ label: first.name, value: (u, v) => categories ? (labels[v] ?? "") : v },
             ...ys.map((c, i) => ({ label: c.name, stroke: colours[i % colours.length],
               ...(bars ? { fill: colours[i % colours.length] + "55", paths: uPlot.paths.bars({ size: [0.6] }) } : {}),
               ...(categories ? { points: { show: true, size: 7 } } : {}) }))],
    axes: [categories ? { label: first.name, incrs: [1], values: (u, splits) => splits.map(v => Number.isInteger(v) ? (labels[v] ?? "") : "") }
                      : { label: first.name }, {}],
  }, [order.map(i => x[i]), ...ys.map(c => order.map(i => rows[i][c.name]))]);
}

async function runQuery(ev) {
  ev.preventDefault();
  const form = ev.target;
  const status = document.getElementById("sql-status");
  const params = Object.fromEntries([...document.querySelectorAll("#sql-params input")].map(i => [i.name, i.value]));
  status.textContent = "running…";
  status.className = "muted";
  const r = await fetch("/v1/admin/query", {
    method: "POST", credentials: "same-origin", headers: { ...CSRF, "Content-Type": "application/json" },
    body: JSON.stringify({ sql: form.sql.value, params, max_rows: 1000 }),
  });
  const j = await r.json().catch(() => ({}));
  if (!r.ok) { status.textContent = "refused (" + r.status + "): " + (j.error || ""); status.className = "error"; return; }
  status.textContent = j.row_count + " rows" + (j.truncated ? " (cut)" : "") + " in " + j.elapsed_ms + " ms";
  const table = document.getElementById("sql-result");
  table.tHead.replaceChildren(el("tr", {}, ...j.columns.map(c => el("th", { title: c.type }, c.name))));
  table.tBodies[0].replaceChildren(...j.rows.map(row => el("tr", {}, ...j.columns.map(c => {
    const v = row[c.name];
    return el("td", { class: typeof v === "number" ? "num" : "" }, fmt(v));
  }))));
  chartResult(j.columns, j.rows);
}

// ---------- Views ----------

let view = null;

async function refreshView() {
  if (view === "now") await Promise.all([sampleRates(), refreshTop()]);
  else if (view === "decisions") await refreshDecisions();
  else if (view === "rules") await refreshRules();
}

function route() {
  const h = decodeURIComponent(location.hash.slice(1)) || "now";
  let name = h.split("/")[0];
  if (!["now", "decisions", "entity", "rules", "query"].includes(name)) name = "now";
  view = name;
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + name;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.dataset.view === name);
  let work;
  if (name === "entity") {
    const [, type, ...rest] = location.hash.slice(1).split("/");
    work = showEntity(decodeURIComponent(type || ""), decodeURIComponent(rest.join("/")));
  } else {
    entityShown = null;
    work = refreshView();
  }
  work.then(() => setStatus("updated " + new Date().toLocaleTimeString(), true), e => setStatus(e.message, false));
}

document.getElementById("act").addEventListener("submit", ev => actForm(ev).catch(e => setStatus(e.message, false)));
document.getElementById("ent-act").addEventListener("submit", ev => entityAct(ev).catch(e => setStatus(e.message, false)));
document.getElementById("dec-filter").addEventListener("submit", ev => { ev.preventDefault(); pager.offset = 0; route(); });
document.getElementById("dec-prev").addEventListener("click", () => { pager.offset = Math.max(0, pager.offset - PAGE_ROWS); route(); });
document.getElementById("dec-next").addEventListener("click", () => { if (pager.offset + PAGE_ROWS < pager.total) pager.offset += PAGE_ROWS; route(); });
for (const th of document.querySelectorAll("#dec-table th[data-sort]")) {
  th.addEventListener("click", () => { pager.sort = th.dataset.sort; pager.offset = 0; route(); });
}
document.getElementById("sql-form").addEventListener("submit", ev => runQuery(ev).catch(e => setStatus(e.message, false)));
document.querySelector("#sql-form textarea").addEventListener("input", ev => paramFields(ev.target.value));
window.addEventListener("hashchange", route);

startFeed().catch(e => setStatus("feed: " + e.message, false));
loadInvestigations().catch(e => setStatus(e.message, false));
route();
setInterval(() => {
  if (view !== "entity" && view !== "query") {
    refreshView().then(() => setStatus("updated " + new Date().toLocaleTimeString(), true), e => setStatus(e.message, false));
  }
}, SAMPLE_MS);
