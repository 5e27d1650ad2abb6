// fieldnode's page: Fleet, Node, Commands and Rejections views over /api, live through /api/events.
// Every name and value from the database reaches the DOM as text (textContent, text nodes): a node
// named "<img src=x onerror=...>" shows those characters, never an element.
"use strict";

const state = { config: null, offset: 0, nodes: new Map(), view: null, nodeView: null, names: new Map() };
window.fieldnodeCharts = {};  // reading name -> the points the chart drew (read by the tests)

// -- small helpers ----------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = String(v);
    else node.setAttribute(k, String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function byId(id) { return document.getElementById(id); }

function serverNow() { return Date.now() / 1000 + state.offset; }

function ago(t) {
  if (t === null || t === undefined) return "-";
  const s = Math.max(0, serverNow() - t);
  if (s < 120) return `${s.toFixed(0)} s ago`;
  if (s < 7200) return `${(s / 60).toFixed(0)} min ago`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h ago`;
  return new Date(t * 1000).toLocaleString();
}

function when(t) { return t ? new Date(t * 1000).toLocaleString() : "-"; }

function fmt(v) {
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(4).replace(/\.?0+$/, "");
  if (typeof v === "boolean") return v ? "on" : "off";
  return v === null || v === undefined ? "-" : String(v);
}

function sampleText(s) {
  if ("v" in s) return fmt(s.v);
  if ("s" in s) return s.s;
  if ("b" in s) return fmt(s.b);
  return `error: ${s.err}`;
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  if (typeof body.now === "number") state.offset = body.now - Date.now() / 1000;
  return body;
}

function label(device) { return state.names.get(device) || device; }

function online(node) { return serverNow() - node.last_seen <= state.config.offline_after; }

function trendSvg(values) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "trend");
  svg.setAttribute("viewBox", "0 0 60 16");
  if (values.length > 1) {
    const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
    const points = values.map((v, i) => `${(i * 60 / (values.length - 1)).toFixed(1)},${(15 - (v - lo) / span * 14).toFixed(1)}`);
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points.join(" "));
    svg.append(line);
  }
  return svg;
}

// -- fleet ------------------------------------------------------------------------------------

// The node's last reported heap: free now and the lowest since boot (health and boot frames).
function heapText(h) {
  if (!h || h.free === undefined || h.free === null) return "-";
  const kb = v => (v / 1024).toFixed(1) + " KB";
  return kb(h.free) + (h.low === undefined || h.low === null ? "" : ` (low ${kb(h.low)})`);
}

function fleetRow(n) {
  const readings = Object.entries(n.readings).map(([name, s]) =>
    el("span", { class: "reading", "data-name": name },
      el("span", { class: "rname", text: name }),
      el("span", { class: "value" + ("err" in s ? " err" : ""), text: sampleText(s) }),
      el("span", { class: "unit", text: s.u || "" }),
      trendSvg(s.trend)));
  const rejected = Object.entries(n.rejected).map(([r, c]) => `${r} ${c}`).join(", ") || "-";
  const status = online(n) ? "online" : "offline";
  return el("tr", { "data-device": n.device },
    el("td", {}, el("a", { href: `#/node/${n.device}`, class: "name", text: n.name || n.device })),
    el("td", { class: "device muted", text: n.device }),
    el("td", { class: "site", text: n.site }),
    el("td", { class: "board", text: n.board || "-" }),
    el("td", { class: `status ${status}`, text: status }),
    el("td", { class: "seen", "data-t": n.last_seen, text: ago(n.last_seen) }),
    el("td", { class: "fw", text: n.fw || "-" }),
    el("td", { class: "num heap", text: heapText(n.heap) }),
    el("td", { class: "num counter", text: n.counter }),
    el("td", { class: "num rate", text: n.per_minute === null ? "-" : n.per_minute.toFixed(1) }),
    el("td", { class: "rejected", text: rejected }),
    el("td", { class: "readings" }, readings));
}

async function showFleet(main) {
  const body = await api("/api/fleet");
  for (const n of body.nodes) { state.nodes.set(n.device, n); state.names.set(n.device, n.name); }
  const tbody = el("tbody", { id: "fleet-rows" }, body.nodes.map(fleetRow));
  main.replaceChildren(el("section", {},
    el("h2", { text: `${body.nodes.length} nodes` }),
    el("table", { id: "fleet" },
      el("thead", {}, el("tr", {}, ["node", "device", "site", "board", "state", "last seen", "firmware",
        "heap free (lowest)", "counter", "frames/min", "rejected", "latest readings (trend)"].map(h => el("th", { text: h })))),
      tbody)));
}

// A live update carries each reading's latest value only (partial): it extends the trend the page has.
function mergeTrends(n) {
  const before = state.nodes.get(n.device);
  for (const [name, s] of Object.entries(n.readings)) {
    const old = before && before.readings[name];
    if (!old) continue;
    s.trend = s.t > old.t ? old.trend.concat(s.trend).slice(-20) : old.trend;
  }
}

function updateFleet(nodes) {
  const tbody = document.getElementById("fleet-rows");
  for (const n of nodes) {
    if (n.partial) mergeTrends(n);
    state.nodes.set(n.device, n);
    state.names.set(n.device, n.name);
    if (!tbody) continue;
    const row = fleetRow(n);
    const old = tbody.querySelector(`tr[data-device="${n.device}"]`);
    if (old) old.replaceWith(row); else tbody.append(row);
  }
}

function tickFleet() {
  for (const row of document.querySelectorAll("#fleet-rows tr")) {
    const n = state.nodes.get(row.dataset.device);
    if (!n) continue;
    const status = online(n) ? "online" : "offline";
    const cell = row.querySelector(".status");
    cell.className = `status ${status}`;
    cell.textContent = status;
    row.querySelector(".seen").textContent = ago(n.last_seen);
  }
}

// -- node -------------------------------------------------------------------------------------

const RANGES = { hour: 3600, day: 86400, week: 7 * 86400 };

async function showNode(main, device, fromTo) {
  const body = await api(`/api/node/${device}`);
  const n = body.node;
  state.nodes.set(n.device, n);
  // #/node/<device>?from=<unix s>&to=<unix s> is a link to a fixed range.
  const view = state.nodeView = fromTo ? { device, range: "custom", from: fromTo[0], to: fromTo[1], pending: false }
    : { device, range: "hour", from: null, to: null, pending: false };
  const fromInput = el("input", { type: "datetime-local", id: "range-from" });
  const toInput = el("input", { type: "datetime-local", id: "range-to" });
  const buttons = Object.keys(RANGES).map(r => {
    const b = el("button", { type: "button", "data-range": r, text: `last ${r}` });
    b.addEventListener("click", () => { view.range = r; drawCharts(view); });
    return b;
  });
  const apply = el("button", { type: "button", id: "range-apply", text: "show from–to" });
  apply.addEventListener("click", () => {
    const a = Date.parse(fromInput.value) / 1000, b = Date.parse(toInput.value) / 1000;
    if (!(a < b)) { document.getElementById("range-error").textContent = "from must be before to"; return; }
    document.getElementById("range-error").textContent = "";
    view.range = "custom"; view.from = a; view.to = b; drawCharts(view);
  });
  const numeric = body.series.filter(s => s.chart);
  main.replaceChildren(
    el("section", {},
      el("h2", {}, el("span", { id: "node-name", text: n.name || n.device }), " ",
        el("span", { class: "muted", text: `${n.device} · ${n.site} · ${n.board || "board ?"} · firmware ${n.fw || "?"}` })),
      el("div", { id: "node-summary", class: "muted", text: `last seen ${ago(n.last_seen)} from ${n.source} · counter ${n.counter} · ${n.frames} frames` })),
    el("div", { class: "ranges" }, buttons, el("label", {}, "from ", fromInput), el("label", {}, "to ", toInput), apply,
      el("span", { id: "range-error", class: "error" })),
    el("div", { class: "charts", id: "charts" }, numeric.map(s =>
      el("div", { class: "chart", "data-name": s.name }, el("h3", {}, s.name, " ", el("span", { class: "muted", text: s.unit ? `(${s.unit})` : "" })),
        el("div", { class: "plot" }), el("div", { class: "muted info" })))),
    el("section", {}, el("h2", { text: "events" }), el("table", { id: "events" }, el("tbody"))),
    el("section", {}, el("h2", { text: "actuators" }), actuatorTable(body.actuators)),
    el("section", {}, el("h2", { text: "last boot frame" }), bootTable(body.boot)));
  await drawCharts(view);
}

function actuatorTable(rows) {
  if (!rows.length) return el("p", { class: "muted", text: "no actuator state known (no command applied, no interlock event)" });
  return el("table", { id: "actuators" }, el("thead", {}, el("tr", {}, ["actuator", "state", "since", "set by"].map(h => el("th", { text: h })))),
    el("tbody", {}, rows.map(a => el("tr", {}, el("td", { text: a.actuator }),
      el("td", { text: a.by === "failsafe" ? "failsafe state" : fmt(a.value) }), el("td", { text: when(a.time) }), el("td", { text: a.by })))));
}

function bootTable(boot) {
  if (!boot) return el("p", { class: "muted", text: "no boot frame stored" });
  return el("div", {}, el("p", { class: "muted", text: `at ${when(boot.time)}` }),
    el("table", { id: "boot" }, el("tbody", {}, boot.records.map(r =>
      el("tr", {}, el("td", { text: r.name }), el("td", { text: r.err ? `error: ${r.err}` : `${fmt(r.value)} ${r.unit || ""}` }))))));
}

function currentRange(view) {
  if (view.range === "custom") return [view.from, view.to];
  const end = serverNow();
  return [end - RANGES[view.range], end];
}

async function drawCharts(view) {
  if (view.pending) return;
  view.pending = true;
  try {
    const [from, to] = currentRange(view);
    for (const b of document.querySelectorAll("[data-range]")) b.classList.toggle("active", b.dataset.range === view.range);
    const evs = await api(`/api/node/${view.device}/events?from=${from}&to=${to}`);
    fillEvents(evs.events);
    for (const box of document.querySelectorAll(".chart")) {
      const name = box.dataset.name;
      const width = Math.max(300, box.clientWidth || 560);
      const data = await api(`/api/node/${view.device}/series/${encodeURIComponent(name)}?from=${from}&to=${to}&buckets=${Math.floor(width / 2)}`);
      if (state.nodeView !== view) return;
      drawChart(box, name, data, evs.events, width);
    }
  } catch (e) {
    document.getElementById("range-error").textContent = e.message;
  } finally {
    view.pending = false;
  }
}

function fillEvents(events) {
  const tbody = document.querySelector("#events tbody");
  if (!tbody) return;
  tbody.replaceChildren(...(events.length ? events.slice().reverse().map(e => el("tr", {},
    el("td", { text: when(e.time) }), el("td", { class: "what", text: e.what }),
    el("td", { class: "muted", text: e.records.filter(r => r.name !== "event").map(r => `${r.name}=${fmt(r.value)}${r.unit ? " " + r.unit : ""}`).join(", ") })))
    : [el("tr", {}, el("td", { class: "muted", text: "no events in this range" }))]));
}

const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumSignificantDigits: 4 });

function axisLabel(v) { return v === null ? "" : Math.abs(v) >= 10000 ? compact.format(v) : String(+v.toPrecision(6)); }

function drawChart(box, name, data, events, width) {
  const plot = box.querySelector(".plot");
  plot.replaceChildren();
  window.fieldnodeCharts[name] = { t: data.t, mean: data.mean, min: data.min, max: data.max, n: data.n, bucket_s: data.bucket_s };
  box.dataset.points = String(data.t.length);
  box.querySelector(".info").textContent = data.n > data.t.length
    ? `${data.n} samples drawn as ${data.t.length} buckets of ${data.bucket_s.toFixed(0)} s (min / mean / max)`
    : `${data.n} ${data.n === 1 ? "sample" : "samples"}`;
  const marks = events.map(e => e.time);
  const opts = {
    width, height: 220,
    scales: { x: { time: true, range: () => [data.from, data.to] } },
    axes: [{}, { size: 64, values: (u, vals) => vals.map(axisLabel) }],
    series: [{}, { label: "min", stroke: "#9db7d5", width: 1 }, { label: "mean", stroke: "#3b6ea5", width: 1.5 },
      { label: "max", stroke: "#9db7d5", width: 1 }],
    bands: [{ series: [3, 1], fill: "rgba(59,110,165,0.12)" }],
    hooks: { draw: [u => {
      const ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = "#b42318";
      ctx.setLineDash([4, 3]);
      for (const t of marks) {
        const x = Math.round(u.valToPos(t, "x", true));
        if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
        ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
      }
      ctx.restore();
    }] },
  };
  new uPlot(opts, [data.t, data.min, data.mean, data.max], plot);
}

function updateNode(nodes) {
  const view = state.nodeView;
  if (!view || state.view !== "node") return;
  const n = nodes.find(x => x.device === view.device);
  if (!n) return;
  const summary = document.getElementById("node-summary");
  if (summary) summary.textContent = `last seen ${ago(n.last_seen)} from ${n.source} · counter ${n.counter} · ${n.frames} frames`;
  if (view.range !== "custom" && (!view.last || Date.now() - view.last > 3000)) {
    view.last = Date.now();
    drawCharts(view);
  }
}

// -- commands ---------------------------------------------------------------------------------

async function showCommands(main) {
  if (!state.nodes.size) await api("/api/fleet").then(b => b.nodes.forEach(n => { state.nodes.set(n.device, n); state.names.set(n.device, n.name); }));
  const parts = [];
  if (state.config.allow_commands) parts.push(commandForm());
  parts.push(el("table", { id: "commands" }, el("thead", {}, el("tr", {}, ["#", "node", "sets", "state", "attempts", "queued", "expires", "answer"].map(h => el("th", { text: h })))),
    el("tbody")));
  main.replaceChildren(el("section", {}, el("h2", { text: "commands" }), ...parts));
  await refreshCommands();
}

function commandForm() {
  const node = el("select", { name: "node", id: "cmd-node" }, [...state.nodes.values()].map(n => el("option", { value: n.device, text: n.name || n.device })));
  const form = el("form", { class: "queue", id: "queue-form" },
    el("label", {}, "node", node),
    el("label", {}, "actuator", el("input", { name: "actuator", id: "cmd-actuator", required: true, size: 12 })),
    el("label", {}, "value", el("input", { name: "value", id: "cmd-value", required: true, size: 6, placeholder: "on/off or 0..1" })),
    el("label", {}, "expires after (s)", el("input", { name: "ttl", id: "cmd-ttl", type: "number", value: 30, min: 1, size: 5 })),
    el("button", { type: "submit", id: "cmd-send", text: "sign and queue" }),
    el("span", { id: "cmd-result" }));
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const result = document.getElementById("cmd-result");
    try {
      const body = await api("/api/commands", { method: "POST", headers: { "content-type": "application/json", "x-fieldnode-csrf": state.config.csrf },
        body: JSON.stringify({ node: byId("cmd-node").value, actuator: byId("cmd-actuator").value, value: byId("cmd-value").value,
          ttl: Number(byId("cmd-ttl").value) }) });
      result.className = "";
      result.textContent = `queued command #${body.id}`;
      await refreshCommands();
    } catch (e) {
      result.className = "error";
      result.textContent = e.message;
    }
  });
  return form;
}

async function refreshCommands() {
  const tbody = document.querySelector("#commands tbody");
  if (!tbody) return;
  const body = await api("/api/commands");
  tbody.replaceChildren(...body.commands.map(c => el("tr", { "data-id": c.id },
    el("td", { text: c.id }), el("td", { text: label(c.device) }),
    el("td", { text: c.sets.map(s => `${s.actuator}=${fmt(s.value)}`).join(", ") }),
    el("td", { class: `state ${c.state}`, text: c.state }), el("td", { class: "num", text: c.attempts }),
    el("td", { text: when(c.created) }), el("td", { text: when(c.expires) }),
    el("td", { class: "answer", text: c.result_at ? `${c.state}${c.reason ? ` (${c.reason})` : ""} at ${when(c.result_at)}` : "-" }))));
}

// -- rejections -------------------------------------------------------------------------------

async function showRejections(main) {
  main.replaceChildren(el("section", {}, el("h2", { text: "rejected datagrams by reason (since the database was created)" }),
    el("table", { id: "by-reason" }, el("tbody"))),
  el("section", {}, el("h2", { text: "most recent" }),
    el("table", { id: "rejections" }, el("thead", {}, el("tr", {}, ["time", "source", "reason", "node", "detail"].map(h => el("th", { text: h })))), el("tbody"))));
  await refreshRejections();
}

async function refreshRejections() {
  const tbody = document.querySelector("#rejections tbody");
  if (!tbody) return;
  const body = await api("/api/rejections");
  document.querySelector("#by-reason tbody").replaceChildren(...Object.entries(body.by_reason).map(([r, c]) =>
    el("tr", {}, el("td", { text: r }), el("td", { class: "num", text: c }))));
  tbody.replaceChildren(...body.rejections.map(r => el("tr", {},
    el("td", { text: when(r.time) }), el("td", { text: r.source }), el("td", { class: "reason", text: r.reason }),
    el("td", { text: r.device ? label(r.device) : "-" }), el("td", { class: "muted", text: r.detail }))));
}

// -- routing and the live feed ----------------------------------------------------------------

async function route() {
  const main = document.getElementById("main");
  const hash = location.hash || "#/";
  const nodeMatch = hash.match(/^#\/node\/([0-9a-f]{12})(?:\?from=([0-9.]+)&to=([0-9.]+))?$/);
  state.view = nodeMatch ? "node" : hash === "#/commands" ? "commands" : hash === "#/rejections" ? "rejections" : "fleet";
  if (!nodeMatch) state.nodeView = null;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === state.view);
  try {
    if (nodeMatch) await showNode(main, nodeMatch[1], nodeMatch[2] && [Number(nodeMatch[2]), Number(nodeMatch[3])]);
    else if (state.view === "commands") await showCommands(main);
    else if (state.view === "rejections") await showRejections(main);
    else await showFleet(main);
  } catch (e) {
    main.replaceChildren(el("p", { class: "error", text: e.message }));
  }
}

async function catchUp() {
  try {
    if (state.view === "fleet" && document.getElementById("fleet-rows")) updateFleet((await api("/api/fleet")).nodes);
    else if (state.view === "commands") await refreshCommands();
    else if (state.view === "rejections") await refreshRejections();
  } catch (e) {
    document.getElementById("live").textContent = e.message;
  }
}

function listen() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => { live.textContent = "live"; live.className = "live on"; });
  source.addEventListener("error", () => { live.textContent = "reconnecting"; live.className = "live"; });
  source.addEventListener("hello", ev => {
    state.offset = JSON.parse(ev.data).now - Date.now() / 1000;
    // What changed before this (re)connection reached no message: read the view again.
    if (state.config) catchUp();
  });
  source.addEventListener("nodes", ev => {
    const body = JSON.parse(ev.data);
    state.offset = body.now - Date.now() / 1000;
    updateFleet(body.nodes);
    updateNode(body.nodes);
  });
  source.addEventListener("commands", () => { if (state.view === "commands") refreshCommands(); });
  source.addEventListener("rejections", () => { if (state.view === "rejections") refreshRejections(); });
  source.addEventListener("reload", () => route());
}

async function start() {
  state.config = await api("/api/config");
  window.addEventListener("hashchange", route);
  setInterval(tickFleet, 1000);
  listen();
  await route();
  document.body.dataset.ready = "1";
}

start();
