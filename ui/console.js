// The console's page: everything comes from the API's own routes, called
// with the session cookie; requests that change something carry the
// console's header (CSRF defence beside the SameSite cookie).
"use strict";

const CSRF = { "X-Gatewatch-Console": "1" };
const SAMPLE_MS = 5000;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c); // text nodes: nothing from the API is parsed as HTML
  return e;
}

async function getJson(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (r.status === 401 || r.status === 403) { location.href = "/ui/login"; throw new Error("signed out"); }
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}

// Requests, decisions and dead letters per second over the last hour, as the
// server sampled them (so the plot is full as soon as the page opens).
let plot = null;

async function sample() {
  const s = await getJson("/ui/api/rates");
  const data = [s.t, s.events, s.decisions, s.dead_letters];
  if (!plot && window.uPlot) {
    const box = document.getElementById("rates");
    plot = new uPlot({
      width: Math.max(box.clientWidth, 400), height: 220,
      series: [{}, { label: "requests/s", stroke: "#0b57d0" }, { label: "decisions/s", stroke: "#b3261e" },
               { label: "dead letters/s", stroke: "#9a5b00" }],
      axes: [{}, { label: "per second" }],
    }, data, box);
  } else if (plot) {
    plot.setData(data);
  }
}

function entityLink(d) {
  const a = el("a", { class: "entity", "data-type": d.entity_type, "data-entity": d.entity }, d.entity_type + " " + d.entity);
  a.addEventListener("click", () => {
    const f = document.getElementById("act");
    f.entity_type.value = d.entity_type;
    f.entity.value = d.entity;
    f.entity.focus();
  });
  return a;
}

async function refresh() {
  const { decisions } = await getJson("/v1/admin/decisions");
  document.getElementById("in-force").textContent = "(" + decisions.length + " in force)";
  decisions.sort((a, b) => (b.created_at > a.created_at ? 1 : b.created_at < a.created_at ? -1 : b.decision_id - a.decision_id));
  const body = document.querySelector("#feed tbody");
  body.replaceChildren(...decisions.slice(0, 50).map(d => el("tr", { "data-decision": String(d.decision_id) },
    el("td", {}, d.created_at), el("td", {}, entityLink(d)), el("td", { class: d.action }, d.action),
    el("td", {}, d.reason), el("td", {}, d.source), el("td", {}, d.expires_at))));
  const byType = {};
  for (const d of decisions) (byType[d.entity_type] ||= []).push(d);
  const top = document.getElementById("top");
  top.replaceChildren(...Object.keys(byType).sort().map(t => {
    const list = byType[t].sort((a, b) => (b.score || 0) - (a.score || 0)).slice(0, 10);
    return el("div", { class: "top-type" }, el("h3", {}, t),
      el("ol", {}, ...list.map(d => el("li", {}, entityLink(d), " " + (d.score || 0).toFixed(2) + " " + d.action))));
  }));
}

async function act(ev) {
  ev.preventDefault();
  const f = ev.target;
  const out = document.getElementById("act-result");
  const entity_type = f.entity_type.value, entity = f.entity.value.trim();
  let r;
  if (f.action.value === "lift") {
    const q = new URLSearchParams({ entity_type, entity });
    r = await fetch("/v1/admin/decisions?" + q, { method: "DELETE", headers: CSRF, credentials: "same-origin" });
  } else {
    const body = { entity_type, entity, action: f.action.value, ttl: f.ttl.value.trim(), reason: f.reason.value.trim() };
    r = await fetch("/v1/admin/decisions", {
      method: "POST", credentials: "same-origin",
      headers: { ...CSRF, "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
  }
  const j = await r.json().catch(() => ({}));
  out.textContent = r.ok ? "done: " + JSON.stringify(j) : "refused (" + r.status + "): " + (j.error || "");
  out.className = r.ok ? "" : "error";
  refresh().catch(() => {});
}

async function tick() {
  const status = document.getElementById("status");
  try {
    await Promise.all([sample(), refresh()]);
    status.textContent = "updated " + new Date().toLocaleTimeString();
    status.className = "muted";
  } catch (e) {
    status.textContent = "not updated: " + e.message;
    status.className = "error";
  }
}

document.getElementById("act").addEventListener("submit", act);
tick();
setInterval(tick, SAMPLE_MS);
