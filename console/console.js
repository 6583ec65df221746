// bundle-edge console (DESIGN §11): a single page that talks only to the admin API of the
// node that serves it. No framework and no build step; charts are plain SVG. Every value
// from the API goes into the page as text (never as HTML).
"use strict";

const TOKEN_KEY = "bundle-edge-token";  // sessionStorage: gone when the browser session ends
const STALE_SECONDS = 60;                // a node not heard from for this long is marked stale
const PALETTE = ["#2458d6", "#1f8a4c", "#c62f2f", "#b86e00", "#7b3fc4", "#0f8b8d", "#d6457a",
                 "#5a6b8c", "#8a9a1f", "#e07b39", "#3f7fbf", "#9c4f2f"];

const state = { me: null, app: null, pending: 0, timer: null };

// ---------------------------------------------------------------------------------------
// DOM helpers

/** h("div", {class: "x", onclick: fn}, "text", child) -> element; strings become text. */
function h(tag, attrs, ...children) {
  const svg = ["svg", "g", "path", "line", "rect", "text", "polyline", "circle"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag)
                 : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}
function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const $ = (sel, root) => (root || document).querySelector(sel);

function fmtInt(n) { return n === null || n === undefined ? "-" : Number(n).toLocaleString("en-US"); }
function fmtBytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0; let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
}
function count(n, noun) { return fmtInt(n) + " " + noun + (n === 1 ? "" : "s"); }
function fmtPct(bps) { return bps === null || bps === undefined ? "-" : (bps / 100).toFixed(2) + "%"; }
function fmtTime(ms) {
  if (!ms) return "-";
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}
function short(hex) { return hex ? hex.slice(0, 12) + "…" : "-"; }
function enc(s) { return encodeURIComponent(s); }

function notice(text, kind) {
  const n = $("#notice");
  n.textContent = text;
  n.className = "notice " + (kind || "error");
  n.hidden = !text;
  if (text) window.scrollTo({ top: 0 });
}
function emptyState(text, hint) {
  return h("div", { class: "empty" }, text, hint ? [h("br"), h("code", {}, hint)] : null);
}
function badge(text, kind) { return h("span", { class: "badge " + (kind || "") }, text); }

// ---------------------------------------------------------------------------------------
// The admin API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function busy(delta) {
  state.pending += delta;
  $("#busy").hidden = state.pending === 0;
}

/** A call to the admin API with the session's token; throws ApiError with the API's message. */
async function api(method, path, body) {
  const token = sessionStorage.getItem(TOKEN_KEY) || "";
  const opts = { method, headers: { Authorization: "Bearer " + token } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  busy(1);
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new ApiError(0, "network", "the node did not answer (" + e.message + ")");
  } finally {
    busy(-1);
  }
  const text = await res.text();
  let doc = null;
  try { doc = text ? JSON.parse(text) : null; } catch (e) { doc = null; }
  if (!res.ok) {
    const code = doc && doc.error ? doc.error : "http_" + res.status;
    const message = doc && doc.message ? doc.message : text.slice(0, 300) || res.statusText;
    throw new ApiError(res.status, code, res.status + " " + code + ": " + message);
  }
  return doc;
}

/** Runs an action from a button: disables it with a progress label, reports the outcome. */
async function act(button, label, fn, done) {
  const old = button.textContent;
  button.disabled = true;
  button.textContent = label;
  try {
    const result = await fn();
    if (done) notice(typeof done === "function" ? done(result) : done, "ok");
    await render();
  } catch (e) {
    handleError(e);
  } finally {
    button.disabled = false;
    button.textContent = old;
  }
}

function handleError(e) {
  if (e instanceof ApiError && e.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.me = null;
    go("#/login");
  }
  notice(e.message || String(e), "error");
}

// ---------------------------------------------------------------------------------------
// Routing: #/login, #/fleet, #/app/<app>/<page>[/<item>][?query]

function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}
function route() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query || "") };
}
function appLink(page, item) {
  return "#/app/" + enc(state.app) + "/" + page + (item !== undefined ? "/" + enc(item) : "");
}

async function render() {
  clearInterval(state.timer);
  state.timer = null;
  const r = route();
  const view = $("#view");
  if (!sessionStorage.getItem(TOKEN_KEY) || r.parts[0] === "login") {
    $("#top").hidden = true;
    view.replaceChildren(loginView());
    return;
  }
  if (!state.me) {
    try {
      state.me = await api("GET", "/v1/admin/whoami");
    } catch (e) {
      handleError(e);
      return;
    }
  }
  const me = state.me;
  if (r.parts[0] === "app" && r.parts[1]) state.app = r.parts[1];
  if (!state.app || !me.visible_apps.includes(state.app)) state.app = me.visible_apps[0] || null;
  header(r);
  let page;
  try {
    if (r.parts[0] === "fleet") page = await fleetView();
    else if (!state.app) page = noAppView();
    else {
      const what = r.parts[0] === "app" ? r.parts[2] || "dashboard" : "dashboard";
      const item = r.parts[3];
      if (what === "releases") page = item ? await releaseView(item) : await releasesView();
      else if (what === "channels") page = item ? await channelView(item) : await channelsView();
      else if (what === "devices") page = item ? await deviceView(item) : await devicesView(r.query);
      else if (what === "settings") page = await settingsView();
      else page = await dashboardView(r.query);
    }
  } catch (e) {
    handleError(e);
    page = h("div", { class: "empty" }, "This page could not be loaded. ", e.message || "");
  }
  view.replaceChildren(page);
}

function header(r) {
  const me = state.me;
  $("#top").hidden = false;
  $("#who").textContent = me.name + " (" + me.role + (me.node_role === "edge" ? ", edge node" : "") + ")";
  const select = $("#app-select");
  select.replaceChildren(...me.visible_apps.map((a) => h("option", { value: a }, a)));
  select.value = state.app || "";
  select.disabled = me.visible_apps.length === 0;
  const page = r.parts[0] === "fleet" ? "fleet" : r.parts[0] === "app" ? r.parts[2] || "dashboard" : "dashboard";
  const links = [["dashboard", "Dashboard"], ["releases", "Releases"], ["channels", "Channels"],
                 ["devices", "Devices"], ["settings", "Settings"]];
  const nav = $("#nav");
  nav.replaceChildren(
    ...(state.app ? links.map(([p, label]) => h("a", { href: appLink(p), class: p === page ? "active" : "" }, label)) : []),
    h("a", { href: "#/fleet", class: page === "fleet" ? "active" : "" }, "Fleet"));
}

// ---------------------------------------------------------------------------------------
// Sign-in

function loginView() {
  const input = h("input", { id: "token", type: "password", autocomplete: "off", placeholder: "bet_… or the admin token",
                             "aria-label": "Token" });
  const button = h("button", { class: "primary", type: "submit", id: "sign-in" }, "Sign in");
  const form = h("form", {
    class: "panel login", onsubmit: async (ev) => {
      ev.preventDefault();
      const token = input.value.trim();
      if (!token) { notice("Enter a token: the admin token (var/admin.token) or one from `bundle-edge-ctl token create`."); return; }
      sessionStorage.setItem(TOKEN_KEY, token);
      state.me = null;
      button.disabled = true;
      button.textContent = "Signing in…";
      try {
        state.me = await api("GET", "/v1/admin/whoami");
        notice("");
        go("#/");
      } catch (e) {
        sessionStorage.removeItem(TOKEN_KEY);
        notice(e.message, "error");
      } finally {
        button.disabled = false;
        button.textContent = "Sign in";
      }
    },
  },
  h("h1", {}, "Sign in to bundle-edge"),
  h("p", { class: "muted" }, "Paste an admin API token. It is kept for this browser session only."),
  h("div", { class: "row" }, input, button));
  return form;
}

function noAppView() {
  return emptyState(state.me.role === "admin"
    ? "No apps yet. Create one and publish a bundle:"
    : "This token may not read any app that exists on this node.",
  state.me.role === "admin" ? "bundle-edge-ctl publish --app com.example.app --version 1.0.0 --zip bundle.zip --channel production --public" : null);
}

// ---------------------------------------------------------------------------------------
// Charts (plain SVG)

const W = 640, H = 220, PAD = { l: 44, r: 10, t: 10, b: 26 };

/** The largest of `values` and `floor`, by a loop: spreading a long array into Math.max's
 * arguments overflows the call stack (the analytics answer can hold thousands of values). */
function maxOf(values, floor) {
  let m = floor;
  for (const v of values) if (v > m) m = v;
  return m;
}

/** Series to draw: the `limit` largest by total; the rest (and any series named "other")
 * summed into one "other" series, named with how many it holds. Keeps charts, legends and
 * figure tables small whatever the answer holds. */
const MAX_SERIES = 20;
function topSeries(series, limit) {
  limit = limit || MAX_SERIES;
  const sum = (s) => s.values.reduce((a, b) => a + (b || 0), 0);
  const named = series.filter((s) => s.name !== "other");
  if (named.length <= limit) return series;
  const ranked = named.map((s) => [sum(s), s]).sort((a, b) => b[0] - a[0]);
  const kept = ranked.slice(0, limit).map(([, s]) => s);
  const rest = ranked.slice(limit).map(([, s]) => s).concat(series.filter((s) => s.name === "other"));
  const values = kept.length ? kept[0].values.map(() => 0) : [];
  for (const s of rest) s.values.forEach((v, i) => { values[i] = (values[i] || 0) + (v || 0); });
  return kept.concat([{ name: `other (${fmtInt(ranked.length - limit)} more)`, values }]);
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/**
 * A chart of series over labels. kind "stack": stacked bars; "line": one line per series.
 * series: [{name, values[]}]; fmt formats a value. Returns a box with the SVG, a legend, a
 * hover read-out and a table of every figure (data-series / data-label on each cell).
 */
function chart(id, labels, series, kind, fmt) {
  fmt = fmt || fmtInt;
  const n = labels.length;
  const totals = labels.map((_, i) => series.reduce((s, x) => s + (x.values[i] || 0), 0));
  const max = niceMax(kind === "stack" ? maxOf(totals, 0)
                                       : series.reduce((m, s) => maxOf(s.values, m), 0));
  const iw = W - PAD.l - PAD.r, ih = H - PAD.t - PAD.b;
  const x = (i) => PAD.l + (n <= 1 ? iw / 2 : (i * iw) / (n - 1));
  const bw = Math.max(1, iw / Math.max(n, 1) - 1);
  const xb = (i) => PAD.l + (i * iw) / Math.max(n, 1);
  const y = (v) => PAD.t + ih - (v / max) * ih;
  const svg = h("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", id,
                         "aria-label": series.map((s) => s.name).join(", ") });
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    svg.append(h("line", { class: "grid-line", x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v) }),
               h("text", { x: PAD.l - 4, y: y(v) + 3, "text-anchor": "end" }, fmt(v)));
  }
  const step = Math.max(1, Math.ceil(n / 8));
  for (let i = 0; i < n; i += step) {
    svg.append(h("text", { x: kind === "stack" ? xb(i) + bw / 2 : x(i), y: H - 8, "text-anchor": "middle" },
                 labels[i].length > 10 ? labels[i].slice(5) : labels[i]));
  }
  svg.append(h("line", { class: "axis", x1: PAD.l, x2: W - PAD.r, y1: y(0), y2: y(0) }));
  const base = labels.map(() => 0);  // stack: the height below the next series
  series.forEach((s, si) => {
    const color = s.color || PALETTE[si % PALETTE.length];
    s.color = color;
    if (kind === "stack") {
      // One path per series (a rectangle per bucket): 720 hourly buckets stay 3 elements.
      let d = "";
      s.values.forEach((v, i) => {
        if (!v) return;
        const top = y(base[i] + v), height = Math.max(0.5, y(base[i]) - top);
        d += `M${xb(i).toFixed(1)} ${top.toFixed(1)}h${bw.toFixed(2)}v${height.toFixed(1)}h${(-bw).toFixed(2)}z`;
        base[i] += v;
      });
      svg.append(h("path", { d, fill: color }));
    } else {
      const pts = s.values.map((v, i) => x(i).toFixed(1) + "," + y(v || 0).toFixed(1)).join(" ");
      svg.append(h("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 1.6 }));
      if (n === 1) svg.append(h("circle", { cx: x(0), cy: y(s.values[0] || 0), r: 3, fill: color }));
    }
  });
  // Hover: one read-out for the bucket under the pointer (no per-point elements).
  const cursor = h("line", { class: "cursor", y1: PAD.t, y2: PAD.t + ih, visibility: "hidden" });
  svg.append(cursor);
  const tip = h("div", { class: "tip", hidden: true });
  const box = h("div", { class: "chart-box" }, svg, tip);
  svg.addEventListener("mousemove", (ev) => {
    if (!n) return;
    const rect = svg.getBoundingClientRect();
    const px = ((ev.clientX - rect.left) / rect.width) * W;
    const i = Math.min(n - 1, Math.max(0, kind === "stack" ? Math.floor(((px - PAD.l) / iw) * n)
                                                           : Math.round(((px - PAD.l) / iw) * (n - 1))));
    const cx = kind === "stack" ? xb(i) + bw / 2 : x(i);
    cursor.setAttribute("x1", cx); cursor.setAttribute("x2", cx);
    cursor.setAttribute("visibility", "visible");
    const rows = series.filter((s) => s.values[i]).slice(0, 12).map((s) => s.name + ": " + fmt(s.values[i]));
    tip.replaceChildren(h("b", {}, labels[i]), ...rows.map((t) => [h("br"), t]));
    tip.hidden = false;
    tip.style.left = Math.min(rect.width - 160, (cx / W) * rect.width + 8) + "px";
    tip.style.top = "4px";
  });
  svg.addEventListener("mouseleave", () => { tip.hidden = true; cursor.setAttribute("visibility", "hidden"); });
  const legend = h("div", { class: "legend" }, series.map((s) => {
    const sw = h("span", { class: "sw" });
    sw.style.background = s.color;
    return h("span", {}, sw, s.name);
  }));
  return h("div", {}, box, legend, figures(id, labels, series, fmt));
}

/**
 * The numbers behind a chart, as a table built when it is first opened (30 days of hourly
 * buckets for 50 releases is 36,000 cells: too many to build for every render). Cells
 * carry data-series / data-label.
 */
function figures(id, labels, series, fmt) {
  const box = h("div", { class: "table-wrap" });
  const details = h("details", { class: "figures", id: id + "-figures" }, h("summary", {}, "Figures"), box);
  details.addEventListener("toggle", () => {
    if (!details.open || box.firstChild) return;
    const rows = labels.map((l, i) => h("tr", {}, h("td", {}, l),
      series.map((s) => h("td", { class: "num", dataset: { series: s.name, label: l } }, fmt(s.values[i] || 0)))));
    box.append(h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "bucket"), series.map((s) => h("th", { class: "num" }, s.name)))),
      h("tbody", {}, rows)));
  });
  return details;
}

// ---------------------------------------------------------------------------------------
// Dashboard

const FAILURE = (a) => a.endsWith("_fail") || a === "checksum_required" || a === "session_key_required";

/** Every bucket key from `from` to `to` (UTC): "YYYY-MM-DD" by day, "YYYY-MM-DDTHH" by hour. */
function bucketKeys(fromMs, toMs, hourly) {
  const keys = [];
  const step = hourly ? 3600e3 : 86400e3;
  let t = Math.floor(fromMs / step) * step;
  for (; t <= toMs && keys.length < 10000; t += step) {
    const iso = new Date(t).toISOString();
    keys.push(hourly ? iso.slice(0, 13) : iso.slice(0, 10));
  }
  return keys;
}

const RANGES = {
  "24h": { label: "Last 24 hours, by hour", hourly: true, ms: 24 * 3600e3 },
  "7d": { label: "Last 7 days, by hour", hourly: true, ms: 7 * 86400e3 },
  "30d": { label: "Last 30 days, by day", hourly: false, ms: 30 * 86400e3 },
  "30dh": { label: "Last 30 days, by hour", hourly: true, ms: 30 * 86400e3 },
  "90d": { label: "Last 90 days, by day", hourly: false, ms: 90 * 86400e3 },
};

async function dashboardView(query) {
  const key = RANGES[query.get("range")] ? query.get("range") : "30d";
  const range = RANGES[key];
  const now = Date.now();
  const params = new URLSearchParams({ from: String(now - range.ms + 1), to: String(now),
                                       resolution: range.hourly ? "hour" : "day" });
  const [stats, channels] = await Promise.all([
    api("GET", `/v1/admin/apps/${enc(state.app)}/stats?${params}`),
    api("GET", `/v1/admin/apps/${enc(state.app)}/channels`),
  ]);
  const picker = h("select", { id: "range", "aria-label": "Time range", onchange: (ev) => go(appLink("dashboard") + "?range=" + ev.target.value) },
    Object.entries(RANGES).map(([k, r]) => h("option", { value: k, selected: k === key }, r.label)));
  const buckets = range.hourly ? stats.hours : stats.days;
  const byKey = new Map(buckets.map((b) => [range.hourly ? b.hour : b.day, b]));
  const labels = bucketKeys(stats.from_ms, stats.to_ms, range.hourly);
  const get = (b, f) => (b ? f(b) : 0);
  const sumActions = (b, pred) => Object.entries(b.actions || {}).filter(([a]) => pred(a)).reduce((s, [, v]) => s + v, 0);
  const actionSeries = [
    { name: "get", values: labels.map((l) => get(byKey.get(l), (b) => (b.actions || {}).updates || 0)) },
    { name: "installed", values: labels.map((l) => get(byKey.get(l), (b) => (b.actions || {}).set || 0)) },
    { name: "failed", values: labels.map((l) => get(byKey.get(l), (b) => sumActions(b, FAILURE))) },
  ];
  const dayKeys = bucketKeys(stats.from_ms, stats.to_ms, false);
  const dayMap = new Map(stats.days.map((d) => [d.day, d]));
  const releaseNames = [...new Set(stats.days.flatMap((d) => Object.keys(d.devices_by_release || {})))].sort();
  const deviceSeries = topSeries(releaseNames.map((r) => ({ name: r, values: dayKeys.map((d) => ((dayMap.get(d) || {}).devices_by_release || {})[r] || 0) })));
  const runningNames = [...new Set(buckets.flatMap((b) => Object.keys(b.releases || {})))].sort();
  const runningSeries = topSeries(runningNames.map((r) => ({ name: r, values: labels.map((l) => ((byKey.get(l) || {}).releases || {})[r] || 0) })));

  const total = (s) => s.values.reduce((a, b) => a + b, 0);
  const devicesToday = stats.days.length ? stats.days[stats.days.length - 1].devices : 0;
  const summary = h("div", { class: "stats", id: "summary" },
    stat("Check-ins", fmtInt(buckets.reduce((s, b) => s + (b.checkins || 0), 0)), "sum-checkins"),
    stat("Update checks (get)", fmtInt(total(actionSeries[0])), "sum-get"),
    stat("Installed", fmtInt(total(actionSeries[1])), "sum-installed"),
    stat("Failed", fmtInt(total(actionSeries[2])), "sum-failed"),
    stat("Devices on the last day", fmtInt(devicesToday), "sum-devices"));

  const failRows = stats.releases.filter((r) => r.installs + r.failures + r.downloads_started > 0);
  const failChart = failRows.length
    ? barList("failure-rate", failRows.map((r) => ({ name: r.release, value: r.failure_rate_bps || 0,
      note: `${fmtInt(r.failures)} failed / ${fmtInt(r.installs)} installed, ${fmtInt(r.downloads_started)} downloads started` })), fmtPct)
    : emptyState("No installs or failures reported in this range.");

  const rollouts = stats.rollouts.length
    ? stats.rollouts.map((ro) => rolloutProgress(ro, dayKeys))
    : [emptyState("No rollout is running. Start one on a channel's page.")];

  return h("div", {},
    h("div", { class: "row" }, h("h1", {}, state.app, " · dashboard"), h("span", { class: "muted" }, " "), picker),
    summary,
    buckets.length === 0 && stats.days.length === 0
      ? emptyState("No check-ins in this range yet. Point a device's updateUrl at an edge of this network, or try a longer range.")
      : null,
    h("div", { class: "grid" },
      h("section", { class: "panel" }, h("h2", {}, "Check-ins by action"),
        h("p", { class: "muted small" }, "get: update checks (/updates); installed: set events; failed: *_fail, checksum_required, session_key_required"),
        actionSeries.some((sr) => total(sr) > 0)
          ? chart("chart-actions", labels, actionSeries, "stack")
          : emptyState("No check-ins in this range.")),
      h("section", { class: "panel" }, h("h2", {}, "Active devices by release (per day)"),
        deviceSeries.length ? chart("chart-devices", dayKeys, deviceSeries, "line") : emptyState("No devices seen in this range.")),
      h("section", { class: "panel" }, h("h2", {}, "Failure rate per release"),
        h("p", { class: "muted small" }, "failures / (installs + failures) over the range"), failChart),
      h("section", { class: "panel" }, h("h2", {}, "Rollouts"), rollouts),
      pluginsPanel(),
      h("section", { class: "panel" }, h("h2", {}, "Check-ins by running release"),
        runningSeries.length ? chart("chart-running", labels, runningSeries, "line") : emptyState("No check-ins in this range."))),
    channels.channels.length === 0
      ? h("div", { class: "panel" }, emptyState("This app has no channel yet: devices get no_channel until one is public.",
        "bundle-edge-ctl channel set " + state.app + " production --release 1.0.0 --public"))
      : null);
}

function stat(label, value, id) {
  return h("div", { class: "stat", id }, h("div", { class: "n" }, value), h("div", { class: "l" }, label));
}

/** Horizontal bars: [{name, value, note}], the `MAX_BARS` largest values, then a row saying
 * how many more there are. */
const MAX_BARS = 20;
function barList(id, rows, fmt) {
  const more = Math.max(0, rows.length - MAX_BARS);
  if (more) rows = rows.slice().sort((a, b) => b.value - a.value).slice(0, MAX_BARS);
  const max = maxOf(rows.map((r) => r.value), 1);
  return h("div", { class: "table-wrap" }, h("table", { id }, h("tbody", {}, rows.map((r) => {
    const bar = h("div");
    bar.style.width = ((r.value / max) * 100).toFixed(1) + "%";
    return h("tr", { dataset: { release: r.name } }, h("td", {}, r.name),
      h("td", { class: "num", dataset: { value: String(r.value) } }, fmt(r.value)),
      h("td", { class: "bar-cell" }, h("div", { class: "progress" + (r.value > 500 ? " paused" : "") }, bar)),
      h("td", { class: "muted small" }, r.note));
  }), more ? h("tr", { class: "more" }, h("td", { colspan: 4, class: "muted small" },
    `${fmtInt(more)} more not shown`)) : null)));
}

function rolloutProgress(ro, dayKeys) {
  const map = new Map(ro.days.map((d) => [d.day, d]));
  const bar = h("div");
  bar.style.width = Math.min(100, ro.percent) + "%";
  return h("div", { class: "rollout", dataset: { channel: ro.channel } },
    h("h3", {}, h("a", { href: appLink("channels", ro.channel) }, ro.channel), ": ", ro.release, " to ",
      ro.percent + "%", " of devices ", ro.paused ? badge("paused", "warn") : badge("running", "ok")),
    ro.paused && ro.pause_reason ? h("p", { class: "muted small" }, ro.pause_reason) : null,
    h("div", { class: "progress" + (ro.paused ? " paused" : "") }, bar),
    chart("chart-rollout-" + ro.channel.replace(/[^A-Za-z0-9_-]/g, "_"), dayKeys, [
      { name: "on " + ro.release, values: dayKeys.map((d) => (map.get(d) || {}).rollout_release_devices || 0) },
      { name: "on " + (ro.channel_release || "builtin"), values: dayKeys.map((d) => (map.get(d) || {}).channel_release_devices || 0) },
    ], "line"));
}

// ---------------------------------------------------------------------------------------
// Plugins and reach (GET /v1/admin/apps/<app>/plugins and /reach): panels that fill
// themselves when their answer comes, so the page around them does not wait for a pass
// over the device index.

/** A panel that shows `fill(doc)` once `path` answers (or why it could not). */
function lazyPanel(id, title, path, fill) {
  const body = h("div", { class: "muted small" }, "Loading…");
  const panel = h("section", { class: "panel", id }, h("h2", {}, title), body);
  api("GET", path).then((doc) => body.replaceWith(fill(doc)), (e) => {
    body.textContent = "Not available: " + (e.message || String(e));
  });
  return panel;
}

/** What the figures stand on when the node read only part of the device index (it bounds the pass). */
function scanNote(doc) {
  return doc.complete ? "" : ` (the first ${fmtInt(doc.devices)} by device id: the node reads at most that many per request)`;
}

/** The channels a rule names: the node lists the first few and counts them all. */
function ruleChannels(r) {
  const more = (r.channel_count || r.channels.length) - r.channels.length;
  return r.channels.join(", ") + (more > 0 ? ` and ${fmtInt(more)} more` : "");
}
const RULE_TEXT = {
  manifest: (r) => `delta-only channel${r.channel_count > 1 ? "s" : ""} ${ruleChannels(r)} send${r.channel_count > 1 ? "" : "s"} manifests only: plugins before ${r.needs.replace(" or later", "")} get nothing they can download`,
  session_key: (r) => `channel${r.channel_count > 1 ? "s" : ""} ${ruleChannels(r)} serve${r.channel_count > 1 ? "" : "s"} an encrypted release: plugins need session keys (${r.needs})`,
};

function pluginsPanel() {
  return lazyPanel("plugins-panel", "Plugins", `/v1/admin/apps/${enc(state.app)}/plugins`, (doc) => {
    if (!doc.devices) return emptyState("No device has checked in yet.");
    const rows = doc.versions;  // bounded by the node: top 20, "other", "invalid", "unknown"
    const labels = rows.map((v) => v.version);
    const flaggedAny = rows.some((v) => v.flagged > 0);
    const series = [{ name: "meets the channels' needs", values: rows.map((v) => v.devices - (v.flagged || 0)), color: PALETTE[0] }];
    if (flaggedAny) series.push({ name: "flagged", values: rows.map((v) => v.flagged || 0), color: "#c62f2f" });
    const max = maxOf(rows.map((v) => v.devices), 1);
    const table = h("table", { id: "plugins" },
      h("thead", {}, h("tr", {}, ["plugin", "devices", "", "flags"].map((t) => h("th", { class: t === "devices" ? "num" : null }, t)))),
      h("tbody", {}, rows.map((v) => {
        const bar = h("div");
        bar.style.width = ((v.devices / max) * 100).toFixed(1) + "%";
        return h("tr", { class: v.flagged ? "flagged" : null, dataset: { version: v.version, devices: String(v.devices), flagged: String(v.flagged || 0) } },
          h("td", {}, v.version),
          h("td", { class: "num" }, fmtInt(v.devices)),
          h("td", { class: "bar-cell" }, h("div", { class: "progress" + (v.flagged ? " flagged" : "") }, bar)),
          h("td", { class: "flags" }, v.flags.length
            ? v.flags.map((f) => h("span", { class: "badge bad", dataset: { rule: f.rule }, title: RULE_TEXT[f.rule] ? RULE_TEXT[f.rule](f) : f.rule },
                `${f.rule}: ${fmtInt(f.devices)} below ${f.needs.replace(" or later", "")} (${ruleChannels(f)})`))
            : h("span", { class: "muted" }, "-")));
      })));
    return h("div", {},
      h("p", { class: "muted small", id: "plugins-summary" }, `${fmtInt(doc.devices)} devices by the plugin version they last sent${scanNote(doc)}.`),
      doc.rules.length
        ? h("ul", { class: "rules small", id: "plugin-rules" }, doc.rules.map((r) => h("li", { dataset: { rule: r.rule } }, h("b", {}, r.rule), ": ", RULE_TEXT[r.rule] ? RULE_TEXT[r.rule](r) : r.needs)))
        : h("p", { class: "muted small" }, "No channel needs more than any supported plugin has."),
      chart("chart-plugins", labels, series, "stack"),
      h("div", { class: "table-wrap" }, table));
  });
}

/** Reach of a release ({release}) or of a channel's releases ({channel}). */
function reachPanel(what) {
  return lazyPanel("reach-panel", "Reach", `/v1/admin/apps/${enc(state.app)}/reach`, (doc) => {
    const rel = new Map(doc.releases.map((r) => [r.release, r]));
    const events = (name) => {
      const r = rel.get(name) || { running: 0, checked_in_today: 0, downloads: 0, installs: 0, failures: 0 };
      return h("p", { class: "muted small reach-events", dataset: { release: name } },
        `${name}: ${count(r.checked_in_today, "device")} checked in running it today; over 30 days ${count(r.downloads, "download")}, ${count(r.installs, "install")}, ${count(r.failures, "failure")} reported.`);
    };
    const line = (id, n, of, text) => {
      const bar = h("div");
      bar.style.width = (of ? Math.min(100, (n / of) * 100) : 0).toFixed(1) + "%";
      return h("div", { class: "reach-line" }, h("p", { id }, text), h("div", { class: "progress" }, bar));
    };
    const note = scanNote(doc) ? h("p", { class: "muted small" }, "Device figures from the device index" + scanNote(doc) + ".") : null;
    if (what.channel !== undefined) {
      const c = doc.channels.find((x) => x.channel === what.channel);
      if (!c) return emptyState("No figures for this channel yet.");
      return h("div", {},
        line("channel-reach", c.on_release, c.devices, `${fmtInt(c.on_release)} of ${fmtInt(c.devices)} devices on ${c.channel} run ${c.release}`),
        c.rollout_release !== undefined
          ? line("channel-rollout-reach", c.on_rollout_release, c.devices, `${fmtInt(c.on_rollout_release)} of ${fmtInt(c.devices)} run the rollout's ${c.rollout_release}`)
          : null,
        events(c.release), c.rollout_release !== undefined ? events(c.rollout_release) : null, note);
    }
    const r = rel.get(what.release) || { running: 0 };
    const on = doc.channels.filter((c) => c.release === what.release || c.rollout_release === what.release);
    return h("div", {},
      line("release-reach", r.running, doc.devices, `${fmtInt(r.running)} of ${fmtInt(doc.devices)} devices of the app run ${what.release}`),
      on.map((c) => {
        const n = c.release === what.release ? c.on_release : c.on_rollout_release;
        return h("p", { class: "small", dataset: { channel: c.channel } },
          `${fmtInt(n)} of ${fmtInt(c.devices)} devices on `, h("a", { href: appLink("channels", c.channel) }, c.channel),
          c.release === what.release ? " run it" : " run it (its rollout)");
      }),
      events(what.release), note);
  });
}

// ---------------------------------------------------------------------------------------
// Releases

async function releasesView() {
  const base = `/v1/admin/apps/${enc(state.app)}`;
  const [rel, ch, stats] = await Promise.all([api("GET", base + "/releases"), api("GET", base + "/channels"),
    api("GET", base + "/stats").catch(() => ({ releases: [] }))]);
  const rates = new Map(stats.releases.map((r) => [r.release, r]));
  const usedBy = (name) => ch.channels.filter((c) => c.release === name || (c.rollout && c.rollout.release === name)).map((c) => c.name);
  const list = rel.releases.filter((r) => !r.deleted).sort((a, b) => cmpVersion(b.name, a.name));
  if (!list.length) {
    return h("div", {}, h("h1", {}, "Releases"),
      emptyState("No releases yet. Publish one:", `bundle-edge-ctl publish --app ${state.app} --version 1.0.0 --zip bundle.zip`));
  }
  return h("div", {}, h("h1", {}, "Releases"), h("div", { class: "panel table-wrap" }, h("table", { id: "releases" },
    h("thead", {}, h("tr", {}, ["release", "files", "checksum", "encrypted", "channels", "failure rate (30 d)"].map((t) => h("th", {}, t)))),
    h("tbody", {}, list.map((r) => h("tr", { dataset: { release: r.name } },
      h("td", {}, h("a", { href: appLink("releases", r.name) }, r.name)),
      h("td", {}, r.zip ? "zip" : "", r.zip && r.manifest.length ? " + " : "", r.manifest.length ? r.manifest.length + " manifest files" : "",
        !r.zip && !r.manifest.length ? badge("version row (no files)") : null),
      h("td", { class: "mono" }, short(r.checksum)),
      h("td", {}, r.session_key ? badge("encrypted", "ok") : "no"),
      h("td", {}, usedBy(r.name).join(", ") || h("span", { class: "muted" }, "-")),
      h("td", { class: "num" }, rates.has(r.name) ? fmtPct(rates.get(r.name).failure_rate_bps) : "-")))))));
}

function cmpVersion(a, b) {
  const pa = a.split(/[.+-]/).map((x) => (/^\d+$/.test(x) ? Number(x) : x));
  const pb = b.split(/[.+-]/).map((x) => (/^\d+$/.test(x) ? Number(x) : x));
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    if (pa[i] === undefined) return -1;
    if (pb[i] === undefined) return 1;
    if (pa[i] === pb[i]) continue;
    if (typeof pa[i] === typeof pb[i]) return pa[i] < pb[i] ? -1 : 1;
    return typeof pa[i] === "number" ? -1 : 1;
  }
  return 0;
}

async function releaseView(name) {
  const base = `/v1/admin/apps/${enc(state.app)}`;
  const q = route().query;
  const baseParam = q.has("base") ? "?base=" + enc(q.get("base")) : "";
  const [rel, files, stats, all] = await Promise.all([
    api("GET", `${base}/releases/${enc(name)}`),
    api("GET", `${base}/releases/${enc(name)}/files${baseParam}`),
    api("GET", base + "/stats").catch(() => ({ releases: [] })),
    api("GET", base + "/releases"),
  ]);
  const rate = stats.releases.find((r) => r.release === name);
  const baseSelect = h("select", { id: "delta-base", "aria-label": "Compare with", onchange: (ev) => go(appLink("releases", name) + "?base=" + enc(ev.target.value)) },
    h("option", { value: "" }, "(nothing)"),
    all.releases.filter((r) => r.name !== name && !r.deleted).sort((a, b) => cmpVersion(b.name, a.name))
      .map((r) => h("option", { value: r.name, selected: r.name === files.base }, r.name)));
  const del = state.me.can_delete ? h("button", { class: "danger", id: "delete-release", onclick: (ev) => {
    if (!confirm(`Delete release ${name}? Channels that point at it must be moved first.`)) return;
    act(ev.target, "Deleting…", () => api("DELETE", `${base}/releases/${enc(name)}`), `Release ${name} deleted.`).then(() => go(appLink("releases")));
  } }, "Delete release") : null;
  const pct = files.chunks ? ((files.shared_chunks / files.chunks) * 100).toFixed(1) : "0.0";
  return h("div", {},
    h("p", {}, h("a", { href: appLink("releases") }, "← Releases")),
    h("h1", {}, "Release ", name),
    h("div", { class: "grid" },
      h("section", { class: "panel" }, h("h2", {}, "Details"), h("dl", { class: "kv", id: "release-details" },
        h("dt", {}, "size"), h("dd", { id: "release-size" }, fmtBytes(files.size), " (", fmtInt(files.size), " bytes)"),
        h("dt", {}, "checksum"), h("dd", { class: "mono" }, rel.checksum || "-"),
        h("dt", {}, "encrypted"), h("dd", {}, rel.session_key ? "yes (session key set" + (rel.key_id ? ", key id " + rel.key_id : "") + ")" : "no"),
        h("dt", {}, "zip blob"), h("dd", { class: "mono" }, rel.zip || "none"),
        h("dt", {}, "manifest files"), h("dd", {}, fmtInt(rel.manifest.length)),
        h("dt", {}, "min update version"), h("dd", {}, rel.min_update_version || "-"),
        h("dt", {}, "comment"), h("dd", {}, rel.comment || "-"),
        h("dt", {}, "link"), h("dd", {}, rel.link || "-"),
        h("dt", {}, "failure rate (30 d)"), h("dd", { id: "release-failure-rate" }, rate ? `${fmtPct(rate.failure_rate_bps)} (${fmtInt(rate.failures)} failed, ${fmtInt(rate.installs)} installed)` : "no reports"),
      ), del),
      h("section", { class: "panel" }, h("h2", {}, "Delta: what an edge moves"),
        h("div", { class: "row" }, h("label", {}, "Compare with", baseSelect)),
        files.base
          ? h("p", { id: "release-delta" }, `Shares ${fmtInt(files.shared_chunks)} of ${fmtInt(files.chunks)} chunks (${pct}%, ${fmtBytes(files.shared_bytes)}) with ${files.base}; an edge that has ${files.base} moves ${fmtInt(files.new_chunks)} chunks, ${fmtBytes(files.new_bytes)}.`)
          : h("p", { id: "release-delta" }, `Nothing to compare with: an edge moves all ${fmtInt(files.chunks)} chunks, ${fmtBytes(files.chunk_bytes)}.`)),
      reachPanel({ release: name })),
    h("section", { class: "panel" }, h("h2", {}, "Files"), files.files.length ? h("div", { class: "table-wrap" }, h("table", { id: "release-files" },
      h("thead", {}, h("tr", {}, ["kind", "file", "blob", "size", "chunks"].map((t) => h("th", {}, t)))),
      h("tbody", {}, files.files.map((f) => h("tr", {}, h("td", {}, f.kind), h("td", {}, f.file_name || "-"),
        h("td", { class: "mono" }, short(f.blob)), h("td", { class: "num" }, f.stored ? fmtBytes(f.size) : badge("not on this node", "warn")),
        h("td", { class: "num" }, f.stored ? fmtInt(f.chunks) : "-")))))) : emptyState("A version row: no files yet. Devices told to go to it get no_bundle.")));
}

// ---------------------------------------------------------------------------------------
// Channels

function channelSummary(c) {
  if (!c.rollout) return "-";
  return `${c.rollout.release} to ${(c.rollout.bps / 100).toFixed(2)}%` + (c.rollout.paused ? " (paused)" : "") + (c.rollout.enabled ? "" : " (off)");
}

async function channelsView() {
  const base = `/v1/admin/apps/${enc(state.app)}`;
  const [ch, rel] = await Promise.all([api("GET", base + "/channels"), api("GET", base + "/releases")]);
  const releases = rel.releases.filter((r) => !r.deleted).map((r) => r.name).sort((a, b) => cmpVersion(b, a));
  let create = null;
  if (state.me.can_write) {
    const name = h("input", { id: "new-channel-name", placeholder: "production", "aria-label": "Channel name" });
    const release = h("select", { id: "new-channel-release" }, h("option", { value: "" }, "builtin"), releases.map((r) => h("option", { value: r }, r)));
    const pub = h("input", { type: "checkbox", id: "new-channel-public" });
    create = h("section", { class: "panel" }, h("h2", {}, "New channel"), h("div", { class: "row" },
      h("label", {}, "Name", name), h("label", {}, "Release", release), h("label", {}, "Public", pub),
      h("button", { class: "primary", onclick: (ev) => {
        if (!name.value.trim()) { notice("Give the channel a name."); return; }
        act(ev.target, "Creating…", () => api("PUT", `${base}/channels/${enc(name.value.trim())}`, { release: release.value || null, public: pub.checked }),
          `Channel ${name.value.trim()} created.`);
      } }, "Create")));
  }
  const table = ch.channels.length ? h("div", { class: "panel table-wrap" }, h("table", { id: "channels" },
    h("thead", {}, h("tr", {}, ["channel", "release", "public", "download format", "rollout"].map((t) => h("th", {}, t)))),
    h("tbody", {}, ch.channels.map((c) => h("tr", { dataset: { channel: c.name } },
      h("td", {}, h("a", { href: appLink("channels", c.name) }, c.name)),
      h("td", {}, c.release || badge("builtin")), h("td", {}, c.public ? badge("public", "ok") : "no"),
      h("td", {}, c.update_package || "all"), h("td", {}, channelSummary(c)))))))
    : emptyState("No channels yet: devices get no_channel until a public one exists.", `bundle-edge-ctl channel set ${state.app} production --release 1.0.0 --public`);
  return h("div", {}, h("h1", {}, "Channels"), table, create);
}

const FLAGS = [["public", "public (the default channel)"], ["ios", "iOS"], ["android", "Android"], ["electron", "Electron"],
  ["allow_device_self_set", "devices may set it themselves"], ["allow_emulator", "emulators"], ["allow_device", "physical devices"],
  ["allow_dev", "dev builds"], ["allow_prod", "prod builds"], ["disable_auto_update_under_native", "no update below the native version"]];
const FORMATS = ["all", "zip", "delta", "zip_from_builtin", "delta_from_builtin"];
const AUTO_UPDATE = ["none", "major", "minor", "patch", "version_number"];

async function channelView(name) {
  const base = `/v1/admin/apps/${enc(state.app)}`;
  const path = `${base}/channels/${enc(name)}`;
  const [c, rel, hist] = await Promise.all([api("GET", path), api("GET", base + "/releases"), api("GET", path + "/history")]);
  const releases = rel.releases.filter((r) => !r.deleted).map((r) => r.name).sort((a, b) => cmpVersion(b, a));
  const w = state.me.can_write;
  const doc = () => { const d = Object.assign({}, c); delete d.name; return d; };
  const put = (button, label, change, done) => act(button, label, () => { const d = doc(); change(d); return api("PUT", path, d); }, done);

  // Release and format
  const relSelect = h("select", { id: "channel-release", disabled: !w }, h("option", { value: "" }, "builtin"),
    releases.map((r) => h("option", { value: r, selected: r === c.release }, r)));
  const fmtSelect = h("select", { id: "channel-format", disabled: !w }, FORMATS.map((f) => h("option", { value: f, selected: f === (c.update_package || "all") }, f)));
  const auSelect = h("select", { id: "channel-auto-update", disabled: !w }, AUTO_UPDATE.map((f) => h("option", { value: f, selected: f === c.disable_auto_update }, f)));
  const checks = FLAGS.map(([k, label]) => h("label", {}, h("input", { type: "checkbox", id: "flag-" + k, checked: !!c[k], disabled: !w }), label));
  const settings = h("section", { class: "panel" }, h("h2", {}, "Release and policy"),
    h("dl", { class: "kv" }, h("dt", {}, "current release"), h("dd", { id: "channel-current" }, c.release || "builtin (the app's own bundle)")),
    h("div", { class: "row" }, h("label", {}, "Release", relSelect), h("label", {}, "Download format", fmtSelect),
      h("label", {}, "Block auto-update across", auSelect)),
    h("h3", {}, "Policy"), h("div", { class: "checks" }, checks),
    w ? h("div", { class: "row" }, h("button", { class: "primary", id: "save-channel", onclick: (ev) => put(ev.target, "Saving…", (d) => {
      d.release = relSelect.value || null;
      d.update_package = fmtSelect.value;
      d.disable_auto_update = auSelect.value;
      for (const [k] of FLAGS) d[k] = $("#flag-" + k).checked;
    }, "Channel saved.") }, "Save"),
    c.release ? h("button", { class: "danger", id: "revert-builtin", onclick: (ev) => {
      if (!confirm(`Send every device on ${name} back to the bundle built into its app? Devices on an OTA bundle reset to builtin at their next check.`)) return;
      put(ev.target, "Reverting…", (d) => { d.release = null; delete d.rollout; }, `Channel ${name} now points at builtin.`);
    } }, "Revert to builtin…") : null) : null);

  // Rollout
  const ro = c.rollout;
  let rollout;
  if (ro) {
    const pct = h("input", { id: "rollout-percent", type: "number", min: 0, max: 100, step: "0.01", value: (ro.bps / 100).toString(), disabled: !w });
    const bar = h("div");
    bar.style.width = Math.min(100, ro.bps / 100) + "%";
    const set = (b, label, fn, msg) => put(b, label, (d) => fn(d.rollout, d), msg);
    rollout = h("section", { class: "panel", id: "rollout" }, h("h2", {}, "Rollout"),
      h("p", { id: "rollout-state" }, `${ro.release} to ${(ro.bps / 100).toFixed(2)}% of devices `,
        ro.paused ? badge("paused", "warn") : ro.enabled ? badge("running", "ok") : badge("off")),
      ro.paused && ro.pause_reason ? h("p", { class: "muted", id: "pause-reason" }, "Last pause: ", ro.pause_reason) : null,
      h("div", { class: "progress" + (ro.paused ? " paused" : "") }, bar),
      w ? h("div", { class: "row" }, h("label", {}, "Percent", pct),
        h("button", { id: "rollout-set", onclick: (ev) => set(ev.target, "Saving…", (r) => { r.bps = Math.round(Number(pct.value) * 100); }, "Rollout percentage set.") }, "Set"),
        ro.paused
          ? h("button", { id: "rollout-resume", onclick: (ev) => set(ev.target, "Resuming…", (r) => { r.paused = false; delete r.pause_reason; }, "Rollout resumed.") }, "Resume")
          : h("button", { id: "rollout-pause", onclick: (ev) => set(ev.target, "Pausing…", (r) => { r.paused = true; delete r.pause_reason; }, "Rollout paused.") }, "Pause"),
        h("button", { id: "rollout-promote", onclick: (ev) => {
          if (!confirm(`Give ${ro.release} to every device of ${name}?`)) return;
          put(ev.target, "Promoting…", (d) => { d.release = ro.release; delete d.rollout; }, `${ro.release} promoted.`);
        } }, "Promote"),
        h("button", { class: "danger", id: "rollout-abort", onclick: (ev) => {
          if (!confirm("Abort the rollout? Its devices go back to the channel's release.")) return;
          put(ev.target, "Aborting…", (d) => { delete d.rollout; }, "Rollout aborted.");
        } }, "Abort")) : null);
  } else {
    const rr = h("select", { id: "rollout-release" }, releases.filter((r) => r !== c.release).map((r) => h("option", { value: r }, r)));
    const pct = h("input", { id: "rollout-start-percent", type: "number", min: 0, max: 100, step: "0.01", value: "10" });
    rollout = h("section", { class: "panel", id: "rollout" }, h("h2", {}, "Rollout"),
      h("p", { class: "muted" }, "No rollout. A rollout gives another release to a share of this channel's devices (sticky per device)."),
      w ? h("div", { class: "row" }, h("label", {}, "Release", rr), h("label", {}, "Percent", pct),
        h("button", { class: "primary", id: "rollout-start", onclick: (ev) => {
          if (!rr.value) { notice("Publish another release first: a rollout needs a release other than the channel's."); return; }
          put(ev.target, "Starting…", (d) => { d.rollout = { release: rr.value, bps: Math.round(Number(pct.value) * 100), enabled: true, paused: false }; }, "Rollout started.");
        } }, "Start rollout")) : null);
  }

  // Auto-pause
  const ap = c.auto_pause;
  const apRate = h("input", { id: "ap-rate", type: "number", min: 0.01, max: 100, step: "0.01", value: ap ? ap.failure_rate_bps / 100 : 5 });
  const apWin = h("input", { id: "ap-window", type: "number", min: 1, max: 1440, value: ap ? ap.window_minutes : 30 });
  const apMin = h("input", { id: "ap-min", type: "number", min: 1, value: ap ? ap.min_attempts : 200 });
  const autoPause = h("section", { class: "panel" }, h("h2", {}, "Auto-pause"),
    h("p", { class: "muted small", id: "auto-pause-state" }, ap
      ? `On: pause the rollout when ${(ap.failure_rate_bps / 100).toFixed(2)}% of at least ${ap.min_attempts} devices trying it fail within ${ap.window_minutes} min.`
      : "Off."),
    // A reader sees the rule (or "Off."), not a form it cannot use.
    !w ? null : h("div", { class: "row" }, h("label", {}, "Failure rate %", apRate), h("label", {}, "Window (min)", apWin), h("label", {}, "Min. devices", apMin),
      h("button", { id: "ap-save", onclick: (ev) => put(ev.target, "Saving…", (d) => {
        d.auto_pause = { failure_rate_bps: Math.round(Number(apRate.value) * 100), window_minutes: Number(apWin.value), min_attempts: Number(apMin.value) };
      }, "Auto-pause saved.") }, "Save"),
      ap ? h("button", { id: "ap-off", onclick: (ev) => put(ev.target, "Saving…", (d) => { d.auto_pause = null; }, "Auto-pause off.") }, "Turn off") : null));

  // History with rollback
  const history = h("section", { class: "panel" }, h("h2", {}, "History"),
    w ? h("div", { class: "row" }, h("button", { id: "rollback", onclick: (ev) => {
      if (!confirm(`Point ${name} back at its previous release? Its rollout ends.`)) return;
      act(ev.target, "Rolling back…", () => api("POST", path + "/rollback"), (d) => `Rolled back ${name}: ${d.rolled_back_from || "builtin"} → ${d.rolled_back_to || "builtin"}.`);
    } }, "Roll back to the previous release")) : null,
    hist.history.length ? h("div", { class: "table-wrap" }, h("table", { id: "history" },
      h("thead", {}, h("tr", {}, ["seq", "when", "by", "release", "rollout"].map((t) => h("th", {}, t)))),
      h("tbody", {}, hist.history.map((e) => h("tr", {}, h("td", { class: "num" }, e.seq), h("td", {}, fmtTime(e.time_ms)), h("td", {}, e.by ? (e.by_kind === "system" ? `${e.by} (system)` : e.by) : "-"),
        h("td", {}, e.deleted ? "deleted" : e.release || "builtin"), h("td", {}, e.rollout ? channelSummary({ rollout: e.rollout }) : "-"))))))
      : emptyState("No history retained for this channel."));

  const del = state.me.can_delete ? h("button", { class: "danger", id: "delete-channel", onclick: (ev) => {
    if (!confirm(`Delete channel ${name}? Devices on it fall back to the public channel.`)) return;
    act(ev.target, "Deleting…", () => api("DELETE", path), `Channel ${name} deleted.`).then(() => go(appLink("channels")));
  } }, "Delete channel") : null;

  return h("div", {}, h("p", {}, h("a", { href: appLink("channels") }, "← Channels")),
    h("div", { class: "row" }, h("h1", {}, "Channel ", name), del),
    w ? null : h("p", { class: "muted", id: "read-only-note" }, state.me.read_only ? "This node is an edge: change channels on the origin." : "This token may only read."),
    h("div", { class: "grid" }, settings, reachPanel({ channel: name }), rollout, autoPause, testDevicePanel()), history);
}

// ---------------------------------------------------------------------------------------
// App settings: privacy (what the nodes store of the devices' events) and the key id

const STATS_MODES = [
  ["all", "every event"],
  ["updatesOnly", "update events only: no app_*, webview_* or ping events"],
  ["billingOnly", "set, download_complete, set_fail, update_fail, download_fail and update checks, without custom id and default channel"],
];
const DEVICE_FIELDS = ["platform", "os_version", "plugin_version", "version_build", "is_emulator", "is_prod",
                       "install_source", "custom_id"];

async function settingsView() {
  const path = `/v1/admin/apps/${enc(state.app)}`;
  const doc = await api("GET", path);
  const admin = state.me.role === "admin";
  const mode = h("select", { id: "privacy-mode", disabled: !admin },
    STATS_MODES.map(([m, what]) => h("option", { value: m }, m + ": " + what)));
  mode.value = doc.stats_mode || "all";
  const collect = doc.device_data_collection || {};
  const boxes = DEVICE_FIELDS.map((f) => {
    const box = h("input", { type: "checkbox", id: "collect-" + f, disabled: !admin });
    box.checked = collect[f] !== false;
    return [f, box];
  });
  const save = h("button", { id: "privacy-save", disabled: !admin, onclick: (ev) => act(ev.target, "Saving…", () => {
    const body = Object.fromEntries(Object.entries(doc).filter(([k]) => k !== "app_id"));
    body.stats_mode = mode.value;
    body.device_data_collection = Object.fromEntries(boxes.map(([f, box]) => [f, box.checked]));
    return api("PUT", path, body);
  }, "Privacy settings saved: edges apply them within one sync.") }, "Save");
  return h("div", {},
    h("h1", {}, "Settings"),
    h("section", { class: "panel", id: "privacy" }, h("h2", {}, "Privacy"),
      h("p", { class: "muted small" }, "What the nodes store of this app's device events. Applied where a check-in is " +
        "first recorded (edges included, so dropped data never travels); devices are answered as before and " +
        "update decisions do not change."),
      h("label", {}, "Events kept ", mode),
      h("p", { class: "small" }, "Device fields stored:"),
      h("div", { class: "row" }, boxes.map(([f, box]) => h("label", {}, box, " " + f))),
      h("p", { class: "muted small" }, "os_version, is_emulator, is_prod and install_source are never stored by this node."),
      admin ? h("div", { class: "row" }, save) : h("p", { class: "muted small" }, "Only admin tokens change settings.")),
    h("section", { class: "panel" }, h("h2", {}, "Encryption"),
      h("dl", { class: "kv" }, h("dt", {}, "key id"), h("dd", { id: "key-id" }, doc.key_id || "none registered")),
      h("p", { class: "muted small" }, "bundle-edge-ctl key create and app set-key register the public key's id; " +
        "encrypted releases under another key are refused.")));
}

function testDevicePanel() {
  const f = {
    device_id: h("input", { id: "test-device-id", placeholder: "UUID", value: "" }),
    version_name: h("input", { id: "test-version-name", value: "builtin" }),
    version_build: h("input", { id: "test-version-build", value: "1.0.0" }),
    plugin_version: h("input", { id: "test-plugin", value: "8.51.23" }),
    platform: h("select", { id: "test-platform" }, ["android", "ios", "electron"].map((p) => h("option", { value: p }, p))),
    defaultChannel: h("input", { id: "test-default-channel", value: "", placeholder: "(none)" }),
  };
  const emu = h("input", { type: "checkbox", id: "test-emulator" });
  const dev = h("input", { type: "checkbox", id: "test-dev" });
  const out = h("div", { id: "test-result" });
  return h("section", { class: "panel" }, h("h2", {}, "Test as a device"),
    h("p", { class: "muted small" }, "What /updates would tell this device, and why. Records nothing."),
    h("div", { class: "row" }, Object.entries(f).map(([k, el]) => h("label", {}, k, el)),
      h("label", {}, "emulator", emu), h("label", {}, "dev build", dev)),
    h("div", { class: "row" }, h("button", { id: "test-run", onclick: async (ev) => {
      const body = { device_id: f.device_id.value.trim().toLowerCase(), version_name: f.version_name.value, version_build: f.version_build.value,
        plugin_version: f.plugin_version.value, platform: f.platform.value, is_emulator: emu.checked, is_prod: !dev.checked,
        defaultChannel: f.defaultChannel.value.trim() };
      ev.target.disabled = true;
      try {
        const r = await api("POST", `/v1/admin/apps/${enc(state.app)}/decide`, body);
        out.replaceChildren(decisionView(r));
        notice("");
      } catch (e) {
        out.replaceChildren(h("p", { class: "notice error" }, e.message));
      } finally {
        ev.target.disabled = false;
      }
    } }, "Ask")), out);
}

function decisionView(r) {
  const why = r.why || {};
  const ro = why.rollout;
  return h("div", {}, h("dl", { class: "kv" },
    h("dt", {}, "outcome"), h("dd", { id: "test-kind" }, why.kind || "-", why.error ? " (" + why.error + ")" : ""),
    h("dt", {}, "release"), h("dd", { id: "test-release" }, why.release || "-"),
    h("dt", {}, "channel"), h("dd", { id: "test-channel" }, why.channel || "none", why.channel_reason ? " (" + why.channel_reason + ")" : ""),
    h("dt", {}, "rollout"), h("dd", {}, ro ? `${ro.release} at ${ro.percent}%, ${ro.selected ? "this device is in it" : "this device is not in it"}${ro.paused ? " (paused)" : ""}` : "-")),
    h("details", {}, h("summary", {}, "The answer /updates would send"), h("pre", { class: "mono" }, JSON.stringify(r.answer, null, 2))));
}

// ---------------------------------------------------------------------------------------
// Devices

async function devicesView(query) {
  const base = `/v1/admin/apps/${enc(state.app)}`;
  const params = new URLSearchParams();
  for (const k of ["custom_id", "release", "platform", "channel", "cursor"]) if (query.get(k)) params.set(k, query.get(k));
  if (query.get("since")) params.set("seen_since", String(Date.parse(query.get("since") + "T00:00:00Z")));
  params.set("limit", "50");
  const [page, ch, rel] = await Promise.all([api("GET", `${base}/device_index?${params}`), api("GET", base + "/channels"), api("GET", base + "/releases")]);
  const input = (k, extra) => h("input", Object.assign({ id: "filter-" + k, value: query.get(k) || "" }, extra || {}));
  const sel = (k, values) => h("select", { id: "filter-" + k }, h("option", { value: "" }, "any"),
    values.map((v) => h("option", { value: v, selected: v === query.get(k) }, v)));
  const f = { custom_id: input("custom_id", { placeholder: "prefix" }), release: sel("release", rel.releases.map((r) => r.name).sort((a, b) => cmpVersion(b, a))),
    platform: sel("platform", ["android", "ios", "electron"]), channel: sel("channel", ch.channels.map((c) => c.name)),
    since: input("since", { type: "date" }) };
  const search = (cursor) => {
    const p = new URLSearchParams();
    for (const [k, el] of Object.entries(f)) if (el.value) p.set(k, el.value);
    if (cursor) p.set("cursor", cursor);
    go(appLink("devices") + "?" + p);
  };
  const form = h("form", { class: "panel row", onsubmit: (ev) => { ev.preventDefault(); search(); } },
    h("label", {}, "custom id", f.custom_id), h("label", {}, "release", f.release), h("label", {}, "platform", f.platform),
    h("label", {}, "channel", f.channel), h("label", {}, "seen since", f.since), h("button", { class: "primary", type: "submit", id: "device-search" }, "Search"));
  const rows = page.devices.map((d) => h("tr", { dataset: { device: d.device_id } },
    h("td", { class: "mono" }, h("a", { href: appLink("devices", d.device_id) }, d.device_id)),
    h("td", {}, d.custom_id || "-"), h("td", {}, d.release || "-"), h("td", {}, d.platform || "-"),
    h("td", {}, d.native_version || "-"), h("td", {}, d.channel || "none", " ", badge(d.channel_reason || "none", d.channel_reason === "override" ? "warn" : "")),
    h("td", {}, fmtTime(d.last_checkin_ms)), h("td", {}, d.last_action || "-")));
  const pager = h("div", { class: "row" },
    query.get("cursor") ? h("button", { id: "first-page", onclick: () => search() }, "First page") : null,
    page.next ? h("button", { id: "next-page", onclick: () => search(page.next) }, "Next page") : h("span", { class: "muted" }, "End of the list."));
  return h("div", {}, h("h1", {}, "Devices"), form,
    page.devices.length ? h("div", { class: "panel" }, h("div", { class: "table-wrap" }, h("table", { id: "devices" },
      h("thead", {}, h("tr", {}, ["device", "custom id", "release", "platform", "native", "channel (why)", "last check-in", "last action"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows))), pager)
      : emptyState(params.toString() === "limit=50" ? "No device has checked in yet." : "No device matches these filters.", null));
}

async function deviceView(id) {
  const base = `/v1/admin/apps/${enc(state.app)}`;
  const path = `${base}/devices/${enc(id)}`;
  const [d, ch] = await Promise.all([api("GET", path), api("GET", base + "/channels")]);
  const last = d.last_checkin;
  let why = null;
  if (last) {
    try {
      why = await api("POST", `${base}/decide`, { device_id: d.device_id, version_name: last.version_name || "builtin",
        version_build: last.version_build || "0.0.0", platform: last.platform || "android", plugin_version: last.plugin_version || "8.51.23",
        is_emulator: false, is_prod: true, defaultChannel: last.default_channel || "", custom_id: last.custom_id || undefined });
    } catch (e) {
      why = { error: e.message };
    }
  }
  const w = state.me.can_write;
  const chSel = h("select", { id: "override-channel" }, ch.channels.map((c) => h("option", { value: c.name, selected: c.name === d.channel }, c.name)));
  const override = h("section", { class: "panel" }, h("h2", {}, "Channel override"),
    h("p", { id: "override-state" }, d.channel ? ["Pinned to ", h("b", {}, d.channel), "."] : "No override: the device follows its defaultChannel or the public channel."),
    w && ch.channels.length ? h("div", { class: "row" }, h("label", {}, "Channel", chSel),
      h("button", { class: "primary", id: "override-set", onclick: (ev) => act(ev.target, "Saving…", () => api("PUT", path, { channel: chSel.value }), "Override set.") }, "Set override"),
      d.channel && state.me.can_delete ? h("button", { class: "danger", id: "override-remove", onclick: (ev) => act(ev.target, "Removing…", () => api("DELETE", path), "Override removed.") }, "Remove override") : null)
      : null);
  const resolved = h("section", { class: "panel" }, h("h2", {}, "What it would be told now"),
    !last ? emptyState("No check-in from this device yet.")
      : why.error ? h("p", { class: "notice error" }, why.error) : decisionView(why));
  const event = (e) => h("tr", {}, h("td", {}, fmtTime(e.time_ms)), h("td", {}, e.action), h("td", {}, e.version_name), h("td", {}, e.version_build),
    h("td", {}, e.platform), h("td", {}, e.decision || "-"));
  return h("div", {}, h("p", {}, h("a", { href: appLink("devices") }, "← Devices")), h("h1", { class: "mono" }, d.device_id),
    h("div", { class: "grid" },
      h("section", { class: "panel" }, h("h2", {}, "Last check-in"), last ? h("dl", { class: "kv", id: "device-last" },
        h("dt", {}, "when"), h("dd", {}, fmtTime(last.time_ms)), h("dt", {}, "release"), h("dd", {}, last.version_name),
        h("dt", {}, "native"), h("dd", {}, last.version_build), h("dt", {}, "platform"), h("dd", {}, last.platform),
        h("dt", {}, "plugin"), h("dd", {}, last.plugin_version || "-"), h("dt", {}, "custom id"), h("dd", {}, last.custom_id || "-"),
        h("dt", {}, "defaultChannel"), h("dd", {}, last.default_channel || "-"), h("dt", {}, "action"), h("dd", {}, last.action))
        : emptyState("No check-in yet.")),
      resolved, override),
    h("section", { class: "panel" }, h("h2", {}, "Timeline"), (d.timeline || []).length ? h("div", { class: "table-wrap" }, h("table", { id: "timeline" },
      h("thead", {}, h("tr", {}, ["when", "action", "release", "native", "platform", "answer"].map((t) => h("th", {}, t)))),
      h("tbody", {}, d.timeline.map(event)))) : emptyState("No events kept for this device.")));
}

// ---------------------------------------------------------------------------------------
// Fleet

// The node answers one page of the fleet (FLEET_PAGE nodes) and a summary of all of it, so
// the page costs the same with 10 nodes or 10,000; the refresh replaces the summary and the
// rows of the page shown, not the view.
const FLEET_PAGE = 100;

function fleetPath(cursor) {
  return "/v1/admin/fleet?limit=" + FLEET_PAGE + (cursor ? "&cursor=" + enc(cursor) : "");
}

function fleetSummary(doc) {
  const s = doc.summary || {};
  return h("div", { class: "stats", id: "fleet-summary" },
    stat("Nodes below", fmtInt(s.nodes), "fleet-nodes"),
    stat("Stale", fmtInt(s.stale), "fleet-stale"),
    stat("Max sync lag", fmtInt(s.max_lag_seq) + (s.max_lag_node ? " (" + s.max_lag_node + ")" : ""), "fleet-max-lag"),
    stat("Outbox, all nodes", fmtInt(s.outbox_depth) + " (" + fmtBytes(s.outbox_bytes) + ")", "fleet-outbox"));
}

function fleetRow(n, self) {
  const age = self ? null : n.age_s;
  return h("tr", { class: n.stale ? "stale" : "", dataset: { node: n.node_id || "" } },
    h("td", { class: "mono" }, n.node_id || "-"), h("td", {}, n.role || "-"), h("td", { class: "mono" }, n.upstream || "-"),
    h("td", { class: "num" }, n.lag_seq === undefined ? "-" : fmtInt(n.lag_seq) + (n.lag_seq === 1 ? " change" : " changes")),
    h("td", { class: "num" }, fmtInt(n.outbox_depth), n.outbox_bytes ? " (" + fmtBytes(n.outbox_bytes) + ")" : ""),
    h("td", { class: "num" }, fmtBytes(n.cache_bytes)),
    h("td", { class: "num" }, n.hit_ratio === undefined || n.hit_ratio === null ? "-" : (n.hit_ratio * 100).toFixed(1) + "%"),
    h("td", { class: "num" }, fmtBytes(n.bytes_served)),
    h("td", {}, self ? "now" : n.received_ms ? fmtTime(n.received_ms) + " (" + fmtInt(age) + " s ago)" : "-"),
    h("td", {}, self ? badge("this node") : n.stale ? badge("stale", "bad") : badge("ok", "ok")));
}

function fleetRows(doc, cursor) {
  // This node first, on the first page only.
  return [cursor ? null : fleetRow(Object.assign({ via: "this node" }, doc.self), true),
          ...doc.nodes.map((n) => fleetRow(n, false))];
}

async function fleetView() {
  const query = route().query;
  const cursor = query.get("cursor") || "";
  const doc = await api("GET", fleetPath(cursor));
  const summary = h("div", {}, fleetSummary(doc));
  const tbody = h("tbody");
  const pager = h("div", { class: "row" });
  const fill = (d) => {
    summary.replaceChildren(fleetSummary(d));
    tbody.replaceChildren(...fleetRows(d, cursor).filter(Boolean));
    pager.replaceChildren(
      cursor ? h("button", { id: "fleet-first-page", onclick: () => go("#/fleet") }, "First page") : null,
      d.next ? h("button", { id: "fleet-next-page", onclick: () => go("#/fleet?cursor=" + enc(d.next)) }, "Next page")
             : h("span", { class: "muted" }, "End of the list."));
  };
  fill(doc);
  state.timer = setInterval(async () => {
    if (route().parts[0] !== "fleet" || state.pending !== 0 || !tbody.isConnected) return;
    try {
      fill(await api("GET", fleetPath(cursor)));
    } catch (e) {
      handleError(e);
    }
  }, 10000);
  return h("div", {}, h("h1", {}, "Fleet"),
    h("p", { class: "muted" }, "This node and every edge below it, as they last reported (edges report every upstream.status_interval_ms), " +
      FLEET_PAGE + " a page in node-id order. A node not heard from for half of sync.fleet_expire_ms is marked stale, and dropped at its end. Refreshes every 10 s."),
    summary,
    h("div", { class: "panel table-wrap" }, h("table", { id: "fleet" },
      h("thead", {}, h("tr", {}, ["node", "role", "upstream", "sync lag", "outbox", "cache", "hit ratio", "bytes served", "last contact", ""].map((t) => h("th", {}, t)))),
      tbody), pager),
    doc.summary && doc.summary.nodes ? null : emptyState("No edge reports to this node yet. Start one with --role edge --upstream <this node's public URL> and the same sync token."));
}

// ---------------------------------------------------------------------------------------

window.addEventListener("hashchange", () => { notice(""); render(); });
document.addEventListener("DOMContentLoaded", () => {
  $("#sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.me = null;
    notice("Signed out.", "ok");
    go("#/login");
  });
  $("#app-select").addEventListener("change", (ev) => {
    state.app = ev.target.value;
    go(appLink(route().parts[2] && route().parts[0] === "app" ? route().parts[2] : "dashboard"));
  });
  render();
});
