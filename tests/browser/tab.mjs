// A browser tab as a jobmesh peer, for the Rust tests: headless Debian
// chromium opens the signal-server's own origin, imports its
// /js/jobmesh.js and runs the steps the test sends, one JSON line each on
// stdin, answering one JSON line each on stdout.
//
//   node tests/browser/tab.mjs HTTP_BASE
//   stdin:  {"op":"join","pool":"lab"}          stdout: {"id":…,"workers":[names]}
//           {"op":"work","pool":"lab"}          (joins as an `echo` worker) stdout: {"id":…,"name":…}
//           {"op":"submit","type":"echo","payload":{…}}   stdout: {"result":…,"progress":[…]} or {"failed":status,"message":…}
//           {"op":"workers"}                    stdout: {"workers":[names]}
//           {"op":"close"}                      stdout: {"closed":true}
// Page errors go to stderr; the process ends when stdin ends.

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const [base] = process.argv.slice(2);
if (!base) {
  console.error("usage: node tab.mjs HTTP_BASE (the signal-server's http://host:port)");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  // Host candidates with their addresses, not mDNS names (the daemons do
  // not resolve .local names; docs/browser.md says where that matters).
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-features=WebRtcHideLocalIpsWithMdns"],
});
const page = await browser.newPage();
page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
page.on("console", (m) => m.type() === "error" && console.error(`console: ${m.text()}`));
await page.goto(`${base}/healthz`);
const ws = base.replace(/^http/, "ws") + "/ws";

const steps = {
  join: ({ pool }) =>
    page.evaluate(
      async ({ ws, pool }) => {
        const { joinPool } = await import("/js/jobmesh.js");
        window.pool = await joinPool({ signal: ws, pool });
        return { id: window.pool.id, workers: window.pool.workers.map((w) => w.name) };
      },
      { ws, pool },
    ),
  work: ({ pool }) =>
    page.evaluate(
      async ({ ws, pool }) => {
        const { joinPool } = await import("/js/jobmesh.js");
        window.pool = await joinPool({
          signal: ws,
          pool,
          capabilities: ["echo"],
          concurrency: 2,
          handler: async (input, ctx) => {
            ctx.progress({ percent: 50, stage: "echoing" });
            return input;
          },
        });
        return { id: window.pool.id, name: window.pool.signal.join.name };
      },
      { ws, pool },
    ),
  submit: ({ type, payload, timeout }) =>
    page.evaluate(
      async ({ type, payload, timeout }) => {
        const ticket = window.pool.submit({ type, payload, timeout });
        const progress = [];
        ticket.onProgress = (p) => progress.push(p);
        try {
          return { result: await ticket.result, progress };
        } catch (e) {
          return { failed: e.status, message: e.message };
        }
      },
      { type, payload, timeout },
    ),
  workers: () => page.evaluate(() => ({ workers: window.pool.workers.map((w) => w.name) })),
  close: () => page.evaluate(async () => (await window.pool.close(), { closed: true })),
};

for await (const line of createInterface({ input: process.stdin })) {
  let answer;
  try {
    const step = JSON.parse(line);
    answer = await steps[step.op](step);
  } catch (e) {
    answer = { error: String(e) };
  }
  console.log(JSON.stringify(answer));
}
await browser.close();
