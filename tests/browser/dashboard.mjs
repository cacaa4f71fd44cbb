// Opens a jobmesh dashboard in Debian's chromium (headless) and reports
// what the page shows, for tests/the_dashboard_shows_the_pool_in_a_browser.rs.
//
//   node tests/browser/dashboard.mjs URL EXPECT SCREENSHOT
//
// URL: the page (`peer --http`'s address; with ?token=… for a guarded one).
// EXPECT: JSON {data-k name: text shown} to wait for (thousands separators
// ignored). Prints `live` once the page streams, then — when every
// expectation holds, or after 60 s — one JSON line of what is shown, and
// writes a screenshot (HOLD_MS=N: N ms later). Exit code 0 only if every expectation held and the
// page logged no error.

import { launch } from "./chromium.mjs";

const [url, expectJson, screenshot] = process.argv.slice(2);
if (!url || !expectJson || !screenshot) {
  console.error("usage: node dashboard.mjs URL EXPECT_JSON SCREENSHOT");
  process.exit(2);
}
const expected = JSON.parse(expectJson);
const DEADLINE_MS = 60_000;

const browser = await launch();
let code = 1;
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && errors.push(`console: ${m.text()} (${m.location().url})`));
  await page.goto(url);
  // Polled with page.evaluate (waitForFunction evaluates strings, which the
  // page's Content-Security-Policy rightly forbids).
  const poll = async (read, done) => {
    const until = Date.now() + DEADLINE_MS;
    let value = await read();
    while (!done(value) && Date.now() < until) {
      await page.waitForTimeout(100);
      value = await read();
    }
    return value;
  };
  const state = () => page.evaluate(() => document.querySelector("jobmesh-dashboard")?.getAttribute("state"));
  if ((await poll(state, (s) => s === "live")) !== "live") throw new Error(`the page never went live: ${errors.join("; ")}`);
  console.log("live");

  // What the page shows: every data-k figure, the failures, events and spans.
  const shown = () =>
    page.evaluate(() => {
      const root = document.querySelector("jobmesh-dashboard").shadowRoot;
      const figures = {};
      for (const el of root.querySelectorAll("[data-k]")) {
        const k = el.getAttribute("data-k");
        if (k === "failure" || k === "event" || k === "spans") continue;
        figures[k] = el.textContent.trim();
      }
      const spans = {};
      for (const r of root.querySelectorAll("rect[data-state]")) {
        const s = r.getAttribute("data-state");
        spans[s] = (spans[s] ?? 0) + 1;
      }
      return {
        figures,
        failures: [...root.querySelectorAll("[data-k=failure]")].map((e) => e.textContent),
        events: [...root.querySelectorAll("[data-k=event]")].map((e) => e.getAttribute("data-kind") + " " + e.textContent),
        spans,
        workers: [...root.querySelectorAll("tr[data-worker]")].map((e) => e.getAttribute("data-worker")),
        state: document.querySelector("jobmesh-dashboard").getAttribute("state"),
      };
    });
  const holds = (s) =>
    Object.entries(expected).every(([k, v]) => (s.figures[k] ?? "").replaceAll(",", "") === String(v));

  let now = await poll(shown, holds);
  // HOLD_MS=N keeps watching N ms more (for a screenshot of a busy pool).
  if (process.env.HOLD_MS) {
    await page.waitForTimeout(Number(process.env.HOLD_MS));
    now = await shown();
  }
  await page.screenshot({ path: screenshot, fullPage: true });
  const ok = holds(now) && errors.length === 0;
  console.log(JSON.stringify({ ok, ...now, errors }));
  code = ok ? 0 : 1;
} catch (e) {
  console.log(JSON.stringify({ ok: false, errors: [String(e)] }));
} finally {
  await browser.close();
}
process.exit(code);
