// The Millions dashboard: the controller's state and history, live.
// The state arrives as server-sent events (/api/dashboard/stream); after each,
// the new points of the history are fetched (/api/dashboard/series?since=...).
// Actions on nodes need the admin token, entered once and kept in sessionStorage.
"use strict";

const TOKEN_KEY = "millions-admin-token";
// The window drawn, in seconds.
const WINDOW = 30 * 60;
// What the users did, per minute (counters of the web servers).
const BUSINESS = ["signups", "posts", "photos", "likes", "follows"];
// The metrics drawn (those the history knows are asked for).
const WANTED = [
  "millions_http_requests_total", "millions_http_request_duration_seconds_sum",
  "millions_http_request_duration_seconds_count", "millions_lb_backend_requests_total",
  "millions_lb_backend_errors_total", "millions_lb_backend_latency_seconds_sum",
  "millions_lb_backend_latency_seconds_count", "millions_cache_lookups_total",
  "millions_db_queries_total", "millions_db_query_errors_total", "millions_jobs_total",
  "millions_queue_jobs", "millions_queue_oldest_ready_seconds", "millions_dns_queries_total",
  "millions_dns_app_answers_total", "millions_db_reads_total",
  "host_cpu_seconds_total", "host_memory_rss_bytes", "host_open_fds",
  "host_disk_used_bytes", "host_disk_free_bytes", "scrape_up",
  "tier_request_duration_p99_seconds", "active_users",
  ...BUSINESS.map((b) => `millions_business_${b}_total`),
];

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
};

let state = null;
// key (node, name, labels) -> {node, name, labels, points: [[ms, v], ...]}
const series = new Map();
let since = 0;
let fetching = false;
const charts = new Map();

function message(text, kind = "info") {
  const m = $("#message");
  m.textContent = text;
  m.dataset.kind = kind;
}

// ---------------------------------------------------------------- token

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function showToken() {
  $("#token-state").textContent = token() ? "kept: actions enabled" : "none: read-only";
}

$("#token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const t = $("#token").value.trim();
  if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
  $("#token").value = "";
  showToken();
});

async function act(action, node) {
  if (!token()) {
    message("enter the admin token first (secrets.json's \"admin\" field of the run directory)", "error");
    return;
  }
  if (!confirm(`${action} ${node}?`)) return;
  try {
    const r = await fetch(`/api/nodes/${encodeURIComponent(node)}/${action}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token()}` },
    });
    const body = await r.json().catch(() => ({}));
    if (r.ok) message(`${action} ${node}: done`);
    else if (r.status === 401) message("the admin token was refused", "error");
    else message(`${action} ${node}: ${body.error?.message || r.status}`, "error");
  } catch (e) {
    message(`${action} ${node}: ${e}`, "error");
  }
}

// ---------------------------------------------------------------- topology

function renderState(s) {
  state = s;
  $("#topology").textContent = `(${s.topology})`;
  $("#epoch").textContent = s.epoch;
  const h = s.history;
  $("#history-size").textContent =
    `history: ${h.series}/${h.max_series} series, ${h.points} points, every ${h.interval_ms / 1000} s`;
  // Rows are updated in place while the layout stays (a button being clicked
  // is not replaced under the pointer).
  const layout = JSON.stringify([s.dcs, s.nodes.map((n) => [n.name, n.dc, n.role, n.pg?.role])]);
  if (layout === renderState.layout) {
    for (const n of s.nodes) {
      const row = document.querySelector(`tr.node[data-node="${n.name}"]`);
      row.dataset.health = n.health;
      row.querySelector(".health").textContent = n.health;
      row.querySelector(".restarts").textContent = n.restarts;
      row.querySelector(".pid").textContent = n.pid ?? "";
    }
  } else {
    renderState.layout = layout;
    renderNodes(s);
  }
  renderShardsAndEvents(s);
  renderActive(s.active_users);
  renderAlerts(s.alerts || []);
  renderScaling(s.scaling || []);
}

function renderScaling(roles) {
  $("#scaling tbody").replaceChildren(...roles.map((r) => {
    const d = r.last_decision;
    const last = d ? `${d.at.slice(11, 19)} UTC ${d.from} → ${d.to}: ${d.reason}`
      : (r.autoscaled ? "none yet" : "fixed (no range)");
    return el("tr", { "data-dc": r.dc, "data-role": r.role }, el("td", { text: r.dc }),
      el("td", { text: r.role }), el("td", { class: "current", text: r.current }),
      el("td", { text: r.desired }), el("td", { text: `${r.min}–${r.max}` }), el("td", { text: last }));
  }));
}

function renderAlerts(alerts) {
  const list = $("#alerts");
  list.dataset.firing = alerts.length;
  if (!alerts.length) {
    list.replaceChildren(el("li", { class: "none", text: "none firing" }));
    return;
  }
  list.replaceChildren(...alerts.map((a) => el("li", { "data-rule": a.rule, "data-severity": a.severity },
    el("b", { text: `${a.rule} ` }), `${a.summary} (since ${new Date(a.since).toISOString().slice(11, 19)} UTC)`)));
}

function renderActive(a) {
  const show = (v) => (a && a.counted.length ? String(v) : "…");
  $("#dau").textContent = show(a?.day);
  $("#wau").textContent = show(a?.week);
  $("#mau").textContent = show(a?.month);
  const missing = (a?.missing || []).map(([name, why]) => `${name} (${why})`).join("; ");
  $("#active-note").textContent = a ? `counted on ${a.counted.join(", ") || "no Redis"}${missing ? `; missing: ${missing}` : ""}` : "";
}

function renderNodes(s) {
  const dcs = $("#dcs");
  dcs.replaceChildren();
  for (const dc of s.dcs) {
    const rows = s.nodes.filter((n) => n.dc === dc.name).map((n) => {
      const buttons = el("td");
      for (const a of ["kill", "restart", "stop", "start"]) {
        const b = el("button", { type: "button", "data-action": a, text: a });
        b.addEventListener("click", () => act(a, n.name));
        buttons.append(b);
      }
      const role = n.pg ? `${n.role} (${n.pg.role}, shard ${n.pg.shard})` : n.role;
      return el("tr", { class: "node", "data-node": n.name, "data-health": n.health },
        el("td", { class: "name", text: n.name }), el("td", { class: "role", text: role }),
        el("td", { class: "health", text: n.health }), el("td", { class: "restarts", text: n.restarts }),
        el("td", { class: "pid", text: n.pid ?? "" }), buttons);
    });
    const head = el("tr", {}, ...["node", "role", "health", "restarts", "pid", "actions"].map((t) => el("th", { text: t })));
    const title = `${dc.name}: ${dc.state}${dc.wan_cut ? ", WAN cut" : ""}`;
    dcs.append(el("div", { class: "dc", "data-dc": dc.name, "data-state": dc.state },
      el("h3", { text: title }), el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows))));
  }
}

function renderShardsAndEvents(s) {
  const tbody = $("#shards tbody");
  tbody.replaceChildren(...s.shards.map((sh) => {
    const reps = sh.replicas.map((r) => {
      const lag = r.lag_bytes == null ? "not streaming" : `${r.lag_bytes} B, ${Math.round(r.lag_ms ?? 0)} ms`;
      return `${r.name}${r.serves_reads ? "" : " (no reads)"}: ${lag}`;
    }).join("; ");
    return el("tr", { "data-shard": sh.shard }, el("td", { text: sh.shard }),
      el("td", { text: sh.primary ?? "none (failover under way)" }), el("td", { text: reps }),
      el("td", { text: sh.survives }), el("td", { text: sh.warnings.join("; ") }));
  }));
  $("#events").replaceChildren(...s.events.slice().reverse().slice(0, 50).map((e) =>
    el("li", { "data-kind": e.kind, text: `${e.at} ${e.kind} ${e.node}: ${e.detail}` })));
}

// ---------------------------------------------------------------- history

const keyOf = (s) => `${s.node}\u0000${s.name}\u0000${JSON.stringify(s.labels)}`;

async function refreshSeries() {
  if (fetching || !state) return;
  const names = WANTED.filter((n) => state.history.names.includes(n));
  if (!names.length) return;
  fetching = true;
  try {
    const r = await fetch(`/api/dashboard/series?names=${names.join(",")}&since=${since}`);
    if (!r.ok) throw new Error(`series: ${r.status}`);
    const body = await r.json();
    const oldest = body.at - WINDOW * 1000;
    for (const s of body.series) {
      const k = keyOf(s);
      const have = series.get(k);
      if (have) have.points.push(...s.points); else series.set(k, s);
    }
    for (const s of series.values()) {
      while (s.points.length && s.points[0][0] < oldest) s.points.shift();
    }
    for (const s of body.series) for (const p of s.points) since = Math.max(since, p[0]);
    drawAll();
  } catch (e) {
    message(String(e), "error");
  } finally {
    fetching = false;
  }
}

// The bucket (seconds) of a time (ms): the history's interval.
function bucket(ms) {
  const step = state.history.interval_ms;
  return Math.round(ms / step) * step / 1000;
}

// Per-second rates of counter series, summed per bucket (a counter that went
// down was restarted: its new value is the increase).
function rates(list) {
  const out = new Map();
  for (const s of list) {
    for (let i = 1; i < s.points.length; i++) {
      const [t0, v0] = s.points[i - 1];
      const [t1, v1] = s.points[i];
      const dt = (t1 - t0) / 1000;
      if (dt <= 0) continue;
      const inc = v1 >= v0 ? v1 - v0 : v1;
      const b = bucket(t1);
      out.set(b, (out.get(b) || 0) + inc / dt);
    }
  }
  return out;
}

// Gauge series summed per bucket.
function sums(list) {
  const out = new Map();
  for (const s of list) for (const [t, v] of s.points) { const b = bucket(t); out.set(b, (out.get(b) || 0) + v); }
  return out;
}

const ratio = (num, den, scale = 1) => {
  const out = new Map();
  for (const [t, d] of den) if (d > 0) out.set(t, ((num.get(t) || 0) / d) * scale);
  return out;
};

function pick(name, filter = () => true) {
  return [...series.values()].filter((s) => s.name === name && filter(s));
}

const nodesOf = (role) => new Set((state?.nodes || []).filter((n) => n.role === role).map((n) => n.name));

// uPlot data from named maps of bucket -> value.
function align(lines) {
  const times = [...new Set(lines.flatMap(([, m]) => [...m.keys()]))].sort((a, b) => a - b);
  return [times, ...lines.map(([, m]) => times.map((t) => (m.has(t) ? m.get(t) : null)))];
}

// Vertical marks at the events' times.
const eventMarks = {
  hooks: {
    draw: [(u) => {
      if (!state) return;
      const ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = "rgba(179, 38, 30, 0.7)";
      ctx.lineWidth = 1;
      for (const e of state.events) {
        const x = u.valToPos(Date.parse(e.at) / 1000, "x", true);
        if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
      }
      ctx.restore();
    }],
  },
};

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function chart(container, id, title, lines, unit) {
  const data = align(lines);
  const points = data.slice(1).reduce((n, col) => n + col.filter((v) => v != null).length, 0);
  let entry = charts.get(id);
  const labels = lines.map(([l]) => l).join("\u0000");
  if (entry && entry.labels !== labels) {
    entry.plot.destroy();
    entry.box.remove();
    entry = null;
  }
  if (!entry) {
    const box = el("div", { class: "chart", id: `chart-${id}` }, el("h4", { text: title }));
    container.append(box);
    const opts = {
      width: 460, height: 180,
      series: [{}, ...lines.map(([label], i) => ({ label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true }))],
      axes: [{}, { size: 60, values: (u, vals) => vals.map((v) => `${+v.toPrecision(3)}${unit}`) }],
      plugins: [eventMarks],
    };
    const plot = new uPlot(opts, data, box);
    entry = { plot, box, labels };
    charts.set(id, entry);
  } else {
    entry.plot.setData(data);
  }
  entry.box.dataset.points = points;
}

function drawAll() {
  if (!state) return;
  const red = $("#red");
  const byNodes = (set) => (s) => set.has(s.node);
  for (const role of ["lb", "web", "worker", "dns", "wan"]) {
    const nodes = nodesOf(role);
    if (!nodes.size) continue;
    const of = byNodes(nodes);
    let requests = rates(pick("millions_http_requests_total", (s) => of(s) && s.labels.route !== "/metrics"));
    let errors = rates(pick("millions_http_requests_total", (s) => of(s) && String(s.labels.status).startsWith("5")));
    let duration = ratio(rates(pick("millions_http_request_duration_seconds_sum", of)),
      rates(pick("millions_http_request_duration_seconds_count", of)), 1000);
    if (role === "lb") {
      requests = rates(pick("millions_lb_backend_requests_total", of));
      errors = rates(pick("millions_lb_backend_errors_total", of));
      duration = ratio(rates(pick("millions_lb_backend_latency_seconds_sum", of)),
        rates(pick("millions_lb_backend_latency_seconds_count", of)), 1000);
    }
    if (role === "dns") {
      requests = rates(pick("millions_dns_queries_total", of));
      if (!requests.size) requests = rates(pick("millions_dns_app_answers_total", of));
    }
    chart(red, `rate-${role}`, `${role}: requests and errors per second`, [["requests/s", requests], ["errors/s", errors]], "");
    // The p99 the controller derives from the tier's histogram buckets.
    const p99 = scale(sums(pick("tier_request_duration_p99_seconds", (s) => s.node === "system" && s.labels.role === role)), 1000);
    if (duration.size || p99.size) {
      chart(red, `duration-${role}`, `${role}: duration, mean and p99`, [["mean ms", duration], ["p99 ms", p99]], " ms");
    }
  }
  const lookups = (result) => rates(pick("millions_cache_lookups_total", (s) => s.labels.result === result));
  const total = new Map();
  for (const m of ["l1_hit", "l2_hit", "miss"].map(lookups)) for (const [t, v] of m) total.set(t, (total.get(t) || 0) + v);
  if (total.size) {
    chart(red, "cache", "cache hit ratio", [["L1", ratio(lookups("l1_hit"), total, 100)], ["L2", ratio(lookups("l2_hit"), total, 100)]], " %");
  }
  const db = pick("millions_db_queries_total");
  if (db.length) {
    const shards = [...new Set(db.map((s) => s.labels.shard))].sort();
    chart(red, "db", "database queries per second, by shard",
      shards.map((sh) => [`shard ${sh}`, rates(db.filter((s) => s.labels.shard === sh))]), "");
  }
  const reads = pick("millions_db_reads_total");
  if (reads.length) {
    const groups = [...new Set(reads.map((s) => `shard ${s.labels.shard} ${s.labels.target}`))].sort();
    chart(red, "db-reads", "database reads per second, by shard and target",
      groups.map((g) => [g, rates(reads.filter((s) => `shard ${s.labels.shard} ${s.labels.target}` === g))]), "");
  }
  // Every worker reports the whole queue of each shard: the max over workers, summed over shards.
  const depth = pick("millions_queue_jobs");
  if (depth.length) {
    const states = [...new Set(depth.map((s) => s.labels.state))].sort();
    chart(red, "queue-depth", "queue depth, by state", states.map((st) => {
      const total = new Map();
      for (const sh of new Set(depth.map((s) => s.labels.shard))) {
        for (const [t, v] of maxes(depth.filter((s) => s.labels.state === st && s.labels.shard === sh))) {
          total.set(t, (total.get(t) || 0) + v);
        }
      }
      return [st, total];
    }), "");
  }
  const jobs = pick("millions_jobs_total");
  if (jobs.length) {
    chart(red, "jobs", "jobs per second", [["done", rates(jobs.filter((s) => s.labels.outcome !== "failed"))],
      ["failed", rates(jobs.filter((s) => s.labels.outcome === "failed"))]], "");
  }
  const oldest = pick("millions_queue_oldest_ready_seconds");
  if (oldest.length) chart(red, "queue", "oldest waiting job (max over workers)", [["s", maxes(oldest)]], " s");

  const business = $("#business");
  chart(business, "business", "what users did, per minute", BUSINESS.map((b) =>
    [b, scale(rates(pick(`millions_business_${b}_total`)), 60)]), "");
  const active = (w) => sums(pick("active_users", (s) => s.node === "system" && s.labels.window === w));
  chart(business, "active-users", "active users: day, 7 days, 30 days", [["day", active("day")], ["week", active("week")], ["month", active("month")]], "");

  const use = $("#use");
  const nodes = (state.nodes || []).map((n) => n.name);
  const perNode = (name, f) => nodes.map((n) => [n, f(pick(name, (s) => s.node === n))]);
  chart(use, "cpu", "CPU (% of one core)", perNode("host_cpu_seconds_total", (l) => scale(rates(l), 100)), " %");
  chart(use, "memory", "resident memory", perNode("host_memory_rss_bytes", (l) => scale(sums(l), 1 / 1048576)), " MiB");
  chart(use, "fds", "open files", perNode("host_open_fds", sums), "");
  const disk = (name) => scale(sums(pick(name, (s) => s.node === "host")), 1 / 1073741824);
  chart(use, "disk", "run directory's disk", [["used", disk("host_disk_used_bytes")], ["free", disk("host_disk_free_bytes")]], " GiB");
}

function scale(m, k) { const out = new Map(); for (const [t, v] of m) out.set(t, v * k); return out; }
function maxes(list) {
  const out = new Map();
  for (const s of list) for (const [t, v] of s.points) { const b = bucket(t); out.set(b, Math.max(out.get(b) ?? 0, v)); }
  return out;
}

// ---------------------------------------------------------------- live

function connect() {
  const live = $("#live");
  const source = new EventSource("/api/dashboard/stream");
  source.addEventListener("open", () => { live.textContent = "live"; live.dataset.state = "live"; });
  source.addEventListener("error", () => { live.textContent = "reconnecting…"; live.dataset.state = "lost"; });
  source.addEventListener("state", (ev) => {
    const s = JSON.parse(ev.data);
    if (!s) return;
    renderState(s);
    refreshSeries();
  });
}

showToken();
fetch("/api/dashboard/state").then((r) => r.json()).then((s) => { renderState(s); refreshSeries(); })
  .catch((e) => message(`state: ${e}`, "error"))
  .finally(connect);
