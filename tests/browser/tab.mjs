// A browser tab as a jobmesh peer, for the Rust tests: headless Debian
// chromium opens the signal-server's own origin, imports its
// /js/jobmesh.js and runs the steps the test sends, one JSON line each on
// stdin, answering one JSON line each on stdout.
//
//   node tests/browser/tab.mjs HTTP_BASE
//   stdin:  {"op":"join","pool":"lab","invitation"?,"credential"?}
//                 (with an invitation token, redeemed, or a credential: the pool is closed)
//                                                stdout: {"id":…,"workers":[names],"credential"?}
//           {"op":"work","pool":"lab","name"?,"slots"?,"invitation"?,"caps"?}   joins as a worker
//                 of `caps` (default: all of these): `mirror` (its first file back, else its input), `echo`
//                 (progress, then its input), `blob-echo` (its first file back) and
//                 `sleep` ({"ms"}, progress every 100 ms, stops when cancelled) and
//                 `delay-copy` (sleeps {"ms"}, then returns its first file)
//                                                stdout: {"id":…,"name":…}
//           {"op":"submit","type":"echo","payload":{…},"bytes"?:N,"cancel_after_progress"?:true,"strategy"?}
//                 with `bytes`, N random bytes go as file `in.bin`
//                                                stdout: {"result":…,"progress":[…],"ms":…,
//                                                         "sent":sha256,"got":sha256,"got_size":…,"got_name":…}
//                                                or {"failed":status,"message":…}
//           {"op":"submit_many","type":"echo","count":N,"strategy"?}   N jobs at once
//                                                stdout: {"workers":[the name of each job's worker]}
//           {"op":"bench","type":"echo","n":N,"bytes"?:B}   N jobs one after the other (B random
//                 bytes each way as a file): stdout: {"ms":[each job's round trip]}
//           {"op":"observe"}                    sets pool.onJobEvent, keeping the events: {"observing":true}
//           {"op":"events"}                     the events kept since: {"events":[…]}
//           {"op":"sdp"}                        {"sdp":[the local SDP of each link]}
//           {"op":"runs"}                       {"started":{job id: handler runs},"ended":[job ids]}
//           {"op":"workers"}                    stdout: {"workers":[names],"stats":{name: stats}}
//           {"op":"close"}                      stdout: {"closed":true}
//           {"op":"crash"}                      closes the page at once, no goodbye: {"crashed":true}
// Page errors go to stderr; the process ends when stdin ends.

import { launch, reportErrors, serveSteps } from "./chromium.mjs";

const [base] = process.argv.slice(2);
if (!base) {
  console.error("usage: node tab.mjs HTTP_BASE (the signal-server's http://host:port)");
  process.exit(2);
}
const browser = await launch();
const page = reportErrors(await browser.newPage());
await page.goto(`${base}/healthz`);
const ws = base.replace(/^http/, "ws") + "/ws";

const steps = {
  join: ({ pool, invitation, credential }) =>
    page.evaluate(
      async ({ ws, pool, invitation, credential }) => {
        const { joinPool } = await import("/js/jobmesh.js");
        window.pool = await joinPool({ signal: ws, pool, invitation, credential });
        const mine = window.pool.trust?.credential;
        return { id: window.pool.id, workers: window.pool.workers.map((w) => w.name), credential: mine };
      },
      { ws, pool, invitation, credential },
    ),
  work: ({ pool, name, slots, invitation, caps }) =>
    page.evaluate(
      async ({ ws, pool, name, slots, invitation, caps }) => {
        const { joinPool } = await import("/js/jobmesh.js");
        window.started = {};
        window.ended = [];
        const handlers = {
          echo: async (input, ctx) => {
            ctx.progress({ percent: 50, stage: "echoing" });
            return input;
          },
          "blob-echo": async (_input, ctx) => ctx.files[0] ?? new Blob([]),
          mirror: async (input, ctx) => ctx.files[0] ?? input,
          "delay-copy": async (input, ctx) => {
            await handlers.sleep(input, ctx);
            return ctx.files[0];
          },
          sleep: (input, ctx) =>
            new Promise((resolve, reject) => {
              const started = Date.now();
              const tick = setInterval(() => {
                const percent = Math.min(100, (100 * (Date.now() - started)) / input.ms);
                ctx.progress({ percent, stage: "sleeping" });
                if (percent >= 100) {
                  clearInterval(tick);
                  resolve({ slept_ms: input.ms, by: name });
                }
              }, 100);
              ctx.signal.addEventListener("abort", () => {
                clearInterval(tick);
                reject(ctx.signal.reason);
              });
            }),
        };
        window.pool = await joinPool({
          signal: ws,
          pool,
          name,
          invitation,
          capabilities: caps ?? Object.keys(handlers),
          concurrency: slots ?? 2,
          handler: async (input, ctx) => {
            window.started[ctx.jobId] = (window.started[ctx.jobId] ?? 0) + 1;
            try {
              return await handlers[ctx.capability](input, ctx);
            } finally {
              window.ended.push(ctx.jobId);
            }
          },
        });
        return { id: window.pool.id, name: window.pool.signal.join.name };
      },
      { ws, pool, name, slots, invitation, caps },
    ),
  submit: (step) =>
    page.evaluate(async ({ type, payload, timeout, bytes, cancel_after_progress, strategy }) => {
      const hex = async (blob) =>
        Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", await blob.arrayBuffer())), (b) =>
          b.toString(16).padStart(2, "0"),
        ).join("");
      const files = [];
      if (bytes !== undefined) {
        const data = new Uint8Array(bytes);
        for (let at = 0; at < bytes; at += 65536) crypto.getRandomValues(data.subarray(at, at + 65536));
        files.push(new File([data], "in.bin"));
      }
      const started = performance.now();
      const ticket = window.pool.submit({ type, payload, timeout, files, strategy });
      const progress = [];
      ticket.onProgress = (p) => {
        progress.push(p);
        if (cancel_after_progress) ticket.cancel();
      };
      try {
        const result = await ticket.result;
        const ms = performance.now() - started;
        const answer = { result, progress, ms, worker: ticket.worker?.name };
        if (files.length) answer.sent = await hex(files[0]);
        if (ticket.files.length) {
          answer.got = await hex(ticket.files[0]);
          answer.got_size = ticket.files[0].size;
          answer.got_name = ticket.files[0].name;
        }
        return answer;
      } catch (e) {
        return { failed: e.status, message: e.message };
      }
    }, step),
  submit_many: (step) =>
    page.evaluate(async ({ type, count, strategy }) => {
      const tickets = Array.from({ length: count }, (_, i) => window.pool.submit({ type, payload: { i }, strategy }));
      await Promise.all(tickets.map((t) => t.result));
      return { workers: tickets.map((t) => t.worker.name) };
    }, step),
  bench: (step) =>
    page.evaluate(async ({ type, n, bytes }) => {
      const data = new Uint8Array(bytes ?? 0);
      for (let at = 0; at < data.length; at += 65536) crypto.getRandomValues(data.subarray(at, at + 65536));
      const ms = [];
      for (let i = 0; i < n; i++) {
        const files = bytes ? [new Blob([data])] : [];
        const started = performance.now();
        const ticket = window.pool.submit({ type, payload: { i }, files });
        await ticket.result;
        if (bytes && ticket.files[0]?.size !== bytes) throw new Error(`job ${i}: ${ticket.files[0]?.size} bytes came back`);
        ms.push(performance.now() - started);
      }
      return { ms };
    }, step),
  observe: () =>
    page.evaluate(() => {
      window.events = [];
      window.pool.onJobEvent = (e) => window.events.push(e);
      return { observing: true };
    }),
  events: () => page.evaluate(() => ({ events: window.events.splice(0) })),
  sdp: () => page.evaluate(() => ({ sdp: [...window.pool.links.values()].map((l) => l.pc.localDescription?.sdp ?? "") })),
  runs: () => page.evaluate(() => ({ started: window.started, ended: window.ended })),
  workers: () =>
    page.evaluate(() => ({
      workers: window.pool.workers.map((w) => w.name),
      stats: Object.fromEntries(window.pool.workers.map((w) => [w.name, w.stats])),
    })),
  close: () => page.evaluate(async () => (await window.pool.close(), { closed: true })),
  crash: async () => (await page.close(), { crashed: true }),
};

await serveSteps(steps);
await browser.close();
