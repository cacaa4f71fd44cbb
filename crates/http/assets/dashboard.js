// <jobmesh-dashboard>: a live view of a jobmesh pool, fed by the
// server-sent events of a daemon started with `peer --http ADDR`.
//
//   <script type="module" src="/dashboard.js"></script>
//   <jobmesh-dashboard></jobmesh-dashboard>
//
// Attributes: `src`, the daemon's HTTP base (default: this page's origin;
// another origin needs a reverse proxy that serves both under one, since
// the daemon allows no cross-origin reads). The element's `snapshot`
// property holds the last snapshot; its `state` attribute is `connecting`,
// `live` or `reconnecting`. Every figure shown carries a `data-k` name.
// No framework, no build step: plain DOM and SVG.

const PALETTE = ["#3b6fd8", "#2a9d8f", "#e9a23b", "#8e5cc4", "#d0587e", "#5a8f29", "#c76b2a", "#4aa3c7"];
const FAILED = "#d1382f";
const HISTORY = 60;

const STYLE = `
  :host { display: block; color: #1d2330; font: 14px/1.4 system-ui, sans-serif; }
  header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 6px 18px; margin: 4px 0 12px; }
  header h1 { font-size: 18px; margin: 0; }
  .pill { font-size: 12px; padding: 1px 8px; border-radius: 10px; background: #e3e6ec; }
  .pill.live { background: #d6f0dd; color: #1c6b35; }
  .pill.down { background: #f9dcdc; color: #8a1f1a; }
  .grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 12px; }
  section { background: #fff; border-radius: 8px; padding: 10px 14px 12px; box-shadow: 0 1px 2px #0001; min-width: 0; }
  section.wide { grid-column: 1 / -1; }
  section.two { grid-column: span 2; }
  @media (max-width: 900px) { section.two { grid-column: auto; } }
  h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: #5b6475; margin: 0 0 8px; font-weight: 600; }
  table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: 3px 8px 3px 0; border-bottom: 1px solid #eef0f3; vertical-align: top; }
  th { font-weight: 600; color: #5b6475; font-size: 12px; }
  td.n, th.n { text-align: right; white-space: nowrap; }
  .tiles { display: grid; grid-template-columns: repeat(3, 1fr); gap: 8px; }
  .tile { background: #f6f7f9; border-radius: 6px; padding: 6px 10px; }
  .tile b { display: block; font-size: 22px; font-variant-numeric: tabular-nums; }
  .tile small { color: #5b6475; }
  .tile.bad b { color: ${FAILED}; }
  .dot { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 5px; vertical-align: -1px; }
  .bar { display: inline-block; width: 80px; height: 8px; background: #e3e6ec; border-radius: 4px; overflow: hidden; vertical-align: 0; margin-right: 6px; }
  .bar i { display: block; height: 100%; background: #3b6fd8; }
  .muted { color: #7a8394; }
  .err { color: ${FAILED}; word-break: break-word; }
  svg { display: block; width: 100%; }
  svg text { font: 11px system-ui, sans-serif; fill: #5b6475; }
  .legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; margin-top: 6px; }
  ul { list-style: none; margin: 0; padding: 0; max-height: 260px; overflow: auto; }
  li { padding: 3px 0; border-bottom: 1px solid #eef0f3; }
  .kind { font-size: 11px; padding: 0 6px; border-radius: 8px; background: #e3e6ec; margin-right: 6px; }
  .kind.lost, .kind.left { background: #f9dcdc; }
  .kind.joined { background: #d6f0dd; }
`;

const num = (n) => (n == null ? "–" : Number(n).toLocaleString("en-US"));
const rate = (r) => (r == null ? "–" : r < 10 ? r.toFixed(1) : Math.round(r).toLocaleString("en-US"));
const ms = (v) => (v == null ? "–" : v < 1000 ? `${v} ms` : `${(v / 1000).toFixed(v < 10000 ? 2 : 1)} s`);
const clock = (t) => new Date(t).toLocaleTimeString("en-GB", { hour12: false });
function bytes(b) {
  if (b == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return `${i === 0 ? b : b.toFixed(1)} ${units[i]}`;
}
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null) continue;
    if (k === "class") el.className = v; else el.setAttribute(k, v);
  }
  for (const c of children.flat()) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) el.setAttribute(k, v);
  for (const c of children.flat()) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

export class JobmeshDashboard extends HTMLElement {
  constructor() {
    super();
    this.attachShadow({ mode: "open" });
    this.snapshot = null;
    this.completedHistory = [];
    this.colours = new Map();
  }

  connectedCallback() {
    this.shadowRoot.replaceChildren(h("style", {}, STYLE), h("div", { class: "root" }, h("p", { class: "muted" }, "connecting…")));
    this.setAttribute("state", "connecting");
    const base = (this.getAttribute("src") || "").replace(/\/$/, "");
    this.source = new EventSource(`${base}/api/dashboard`);
    this.source.addEventListener("snapshot", (e) => {
      this.setAttribute("state", "live");
      this.update(JSON.parse(e.data));
    });
    this.source.onerror = () => this.setAttribute("state", "reconnecting");
  }

  disconnectedCallback() {
    this.source?.close();
  }

  colour(cap) {
    if (!this.colours.has(cap)) this.colours.set(cap, PALETTE[this.colours.size % PALETTE.length]);
    return this.colours.get(cap);
  }

  update(snap) {
    this.snapshot = snap;
    this.completedHistory.push([snap.at_ms, snap.jobs.completed + snap.jobs.failed]);
    if (this.completedHistory.length > HISTORY + 1) this.completedHistory.shift();
    for (const c of snap.capabilities) this.colour(c.capability);
    const root = h("div", { class: "root" },
      this.header(snap),
      h("div", { class: "grid" },
        this.peers(snap), this.jobs(snap), this.stream(snap), this.timings(snap), this.data(snap), this.recent(snap)));
    this.shadowRoot.querySelector(".root").replaceWith(root);
    this.dispatchEvent(new CustomEvent("snapshot", { detail: snap }));
  }

  header(snap) {
    const state = snap.connected ? (snap.synced ? ["live", "connected"] : ["", "syncing"]) : ["down", "signal-server unreachable"];
    return h("header", {},
      h("h1", {}, "jobmesh pool"),
      h("span", { class: `pill ${state[0]}`, "data-k": "signal" }, state[1]),
      h("span", {}, h("b", { "data-k": "workers" }, num(snap.workers)), " workers"),
      h("span", {}, h("b", { "data-k": "submitters" }, num(snap.submitters)), " submitters"),
      h("span", {}, h("b", { "data-k": "busy" }, num(snap.busy)), " of ", h("b", { "data-k": "slots" }, num(snap.slots)), " slots busy"),
      snap.draining ? h("span", {}, h("b", { "data-k": "draining" }, num(snap.draining)), " draining") : "",
      h("span", { class: "muted" }, `seen from ${snap.me} · ${clock(snap.at_ms)}`));
  }

  // 1. Peers online by capability, with their slots.
  peers(snap) {
    const caps = h("table", {},
      h("tr", {}, h("th", {}, "capability"), h("th", { class: "n" }, "workers"), h("th", {}, "slots used / free")),
      snap.capabilities.map((c) => h("tr", { "data-cap": c.capability },
        h("td", {}, h("span", { class: "dot", style: `background:${this.colour(c.capability)}` }), c.capability),
        h("td", { class: "n", "data-k": `cap-workers:${c.capability}` }, num(c.workers)),
        h("td", {}, this.bar(c.busy, c.slots), h("span", { "data-k": `cap-busy:${c.capability}` }, num(c.busy)), " / ",
          h("span", { "data-k": `cap-free:${c.capability}` }, num(Math.max(0, c.slots - c.busy)))))));
    const workers = h("table", {},
      h("tr", {}, h("th", {}, "worker"), h("th", {}, "capabilities"), h("th", {}, "slots")),
      snap.worker_list.map((w) => h("tr", { "data-worker": w.name },
        h("td", {}, w.name, w.draining ? h("span", { class: "muted" }, " (draining)") : ""),
        h("td", {}, w.capabilities.join(", ")),
        h("td", {}, this.bar(w.busy, w.slots), `${w.busy} / ${w.slots}`))),
      snap.more_workers ? h("tr", {}, h("td", { class: "muted", colspan: 3 }, `and ${num(snap.more_workers)} more`)) : "");
    return h("section", {}, h("h2", {}, "Peers by capability"), caps, h("div", { style: "height:8px" }), workers);
  }

  bar(used, total) {
    const pct = total ? Math.min(100, (100 * used) / total) : 0;
    return h("span", { class: "bar" }, h("i", { style: `width:${pct}%` }));
  }

  // 2. Jobs by state, with rates over the last minute.
  jobs(snap) {
    const j = snap.jobs;
    const tile = (k, label, value, sub, bad) =>
      h("div", { class: `tile${bad && value ? " bad" : ""}` }, h("b", { "data-k": k }, num(value)), h("small", {}, label, sub ? h("span", {}, " · ", sub) : ""));
    const perMin = (k, r) => h("span", { "data-k": k }, rate(r), "/min");
    return h("section", {}, h("h2", {}, "Jobs by state"),
      h("div", { class: "tiles" },
        tile("running", "running", j.running),
        tile("queued", "queued", j.queued),
        tile("completed", "completed", j.completed, perMin("completed-rate", j.completed_per_min)),
        tile("failed", "failed", j.failed, perMin("failed-rate", j.failed_per_min), true),
        tile("lost", "lost with a worker", j.lost, null, true),
        tile("cancelled", "cancelled or timed out", j.cancelled)),
      this.throughput());
  }

  // Jobs finished per second over the last minute, from successive snapshots.
  throughput() {
    const pts = this.completedHistory;
    const bars = [];
    for (let i = 1; i < pts.length; i++) {
      const secs = Math.max(0.001, (pts[i][0] - pts[i - 1][0]) / 1000);
      bars.push(Math.max(0, (pts[i][1] - pts[i - 1][1]) / secs));
    }
    const max = Math.max(1, ...bars);
    const w = 1000 / HISTORY;
    return h("div", {},
      s("svg", { viewBox: "0 0 1000 60", preserveAspectRatio: "none", height: "60", role: "img", "aria-label": "jobs finished per second" },
        bars.map((b, i) => s("rect", { x: (HISTORY - bars.length + i) * w, y: 60 - (58 * b) / max, width: w - 2, height: (58 * b) / max, fill: "#3b6fd8" }))),
      h("small", { class: "muted" }, `finished per second, last minute (peak ${rate(max)}/s)`));
  }

  // 3. The task stream: each worker's jobs over the last minute.
  stream(snap) {
    const t = snap.tasks;
    const rowH = 22, label = 150, width = 1000, pad = 18;
    const span = Math.max(1, t.to_ms - t.from_ms);
    const x = (ms) => label + ((Math.max(t.from_ms, Math.min(t.to_ms, ms)) - t.from_ms) / span) * (width - label);
    const height = pad + Math.max(1, t.workers.length) * rowH;
    const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "task stream", "data-k": "spans", "data-count": t.spans.length });
    for (let sec = 0; sec <= 60; sec += 10) {
      const gx = label + (sec / 60) * (width - label);
      svg.append(s("line", { x1: gx, x2: gx, y1: 12, y2: height, stroke: "#eef0f3" }),
        s("text", { x: gx, y: 10, "text-anchor": sec === 60 ? "end" : "middle" }, sec === 60 ? "now" : `-${60 - sec}s`));
    }
    t.workers.forEach(([name], i) => svg.append(s("text", { x: 0, y: pad + i * rowH + 15 }, name.length > 22 ? `${name.slice(0, 21)}…` : name)));
    for (const sp of t.spans) {
      const x0 = x(sp.start_ms), x1 = Math.max(x0 + 2, x(sp.end_ms ?? t.to_ms));
      const y = pad + sp.worker * rowH + 3;
      const failed = sp.state === "failed" || sp.state === "lost";
      svg.append(s("rect", {
        x: x0, y, width: x1 - x0, height: rowH - 6, rx: 2,
        fill: this.colour(sp.capability), "fill-opacity": sp.state === "running" ? 0.5 : 0.9,
        stroke: failed ? FAILED : null, "stroke-width": failed ? 2 : null,
        "data-state": sp.state, "data-worker": t.workers[sp.worker]?.[0],
      }, s("title", {}, `${sp.capability} ${sp.job} · ${sp.state}${sp.end_ms ? ` · ${ms(sp.end_ms - sp.start_ms)}` : ""}`)));
      if (failed) svg.append(s("text", { x: x1 + 1, y: y + 12, fill: FAILED, style: `fill:${FAILED}` }, "✕"));
    }
    if (!t.workers.length) svg.append(s("text", { x: label, y: pad + 15 }, "no jobs in the last minute"));
    const legend = h("div", { class: "legend" },
      [...this.colours].map(([cap, c]) => h("span", {}, h("span", { class: "dot", style: `background:${c}` }), cap)),
      h("span", {}, h("span", { class: "dot", style: `border:2px solid ${FAILED};width:6px;height:6px` }), "failed or lost"));
    return h("section", { class: "wide" }, h("h2", {}, "Task stream (the last minute, at most its newest 600 jobs)"), svg, legend);
  }

  // 4. Run time and queue wait percentiles per capability.
  timings(snap) {
    const cell = (p, k) => h("td", { class: "n", "data-k": k }, p ? `${ms(p.p50)} / ${ms(p.p90)} / ${ms(p.p99)}` : "–");
    return h("section", { class: "two" }, h("h2", {}, "Run time and queue wait (p50 / p90 / p99)"),
      h("table", {},
        h("tr", {}, h("th", {}, "capability"), h("th", { class: "n" }, "run time"), h("th", { class: "n" }, "jobs"),
          h("th", { class: "n" }, "queue wait"), h("th", { class: "n" }, "jobs")),
        snap.capabilities.map((c) => h("tr", {},
          h("td", {}, h("span", { class: "dot", style: `background:${this.colour(c.capability)}` }), c.capability),
          cell(c.run_ms, `run:${c.capability}`), h("td", { class: "n", "data-k": `run-n:${c.capability}` }, num(c.run_ms?.n ?? 0)),
          cell(c.queue_ms, `queue:${c.capability}`), h("td", { class: "n" }, num(c.queue_ms?.n ?? 0))))),
      h("small", { class: "muted" }, "run time: every worker's jobs heard since this page opened (last 1,000 per capability); queue wait: jobs submitted through this peer (its last 1,000)."));
  }

  // 5. Data moved over this peer's data channels.
  data(snap) {
    const d = snap.data;
    const perS = (r) => (r == null ? "" : ` · ${bytes(Math.round(r))}/s`);
    return h("section", {}, h("h2", {}, "Data moved (this peer's data channels)"),
      h("div", { class: "tiles" },
        h("div", { class: "tile" }, h("b", { "data-k": "sent", "data-bytes": d.sent }, bytes(d.sent)), h("small", {}, "sent", perS(d.sent_per_s))),
        h("div", { class: "tile" }, h("b", { "data-k": "received", "data-bytes": d.received }, bytes(d.received)), h("small", {}, "received", perS(d.received_per_s)))),
      snap.dropped ? h("p", { class: "err", "data-k": "dropped" }, `${num(snap.dropped)} job events were dropped because this page fell behind`) : "");
  }

  // 6. Recent failures and pool events.
  recent(snap) {
    const failures = snap.failures.length
      ? h("ul", {}, snap.failures.map((f) => h("li", { "data-k": "failure", "data-job": f.job },
          h("span", { class: "muted" }, clock(f.at_ms), " "), h("b", {}, f.capability), ` on ${f.worker}: `,
          h("span", { class: "err" }, f.error || "(no message)"))))
      : h("p", { class: "muted" }, "no failures heard");
    const events = snap.events.length
      ? h("ul", {}, snap.events.map((e) => h("li", { "data-k": "event", "data-kind": e.kind },
          h("span", { class: "muted" }, clock(e.at_ms), " "), h("span", { class: `kind ${e.kind}` }, e.kind), h("b", {}, e.name),
          e.detail ? h("span", { class: "muted" }, ` ${e.detail}`) : "")))
      : h("p", { class: "muted" }, "no joins, leaves or lost workers since this page opened");
    return h("section", {}, h("h2", {}, "Recent failures"), failures, h("div", { style: "height:10px" }), h("h2", {}, "Pool events"), events);
  }
}

if (!customElements.get("jobmesh-dashboard")) customElements.define("jobmesh-dashboard", JobmeshDashboard);
