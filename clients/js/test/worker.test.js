import { test } from "node:test";
import assert from "node:assert/strict";
import { WorkerCore } from "../src/worker.js";

const JOB = "00000000-0000-4000-8000-000000000001";
const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

/** A link's reply side that keeps what is sent. */
function link(grant = null) {
  const sent = [];
  return { sent, send: (m) => sent.push(m), sendBytes: () => {}, drained: async () => {}, maxMessage: 65536, closed: false, grant };
}

function worker(handler, slots = 1) {
  return new WorkerCore({ capabilities: ["echo"], slots, handler, onStats: () => {} });
}

const submit = (attempt = 1, extra = {}) => ({ type: "submit", job_id: JOB, attempt, capability: "echo", input: { x: 1 }, timeout_ms: 5000, ...extra });

test("a job is accepted, run and answered once; its result is kept until received", async () => {
  const w = worker(async (input) => input);
  const l = link();
  w.handle("sub", submit(), l);
  await tick();
  assert.deepEqual(l.sent.map((m) => m.type), ["accepted", "result"]);
  assert.deepEqual(l.sent[1].outcome, { status: "ok", value: { x: 1 } });
  assert.equal(w.kept.size, 1);
  w.handle("other", { type: "received", receipts: [{ job_id: JOB, attempt: 1 }] }, link());
  assert.equal(w.kept.size, 1, "only its submitter's receipt counts");
  w.handle("sub", { type: "received", receipts: [{ job_id: JOB, attempt: 1 }] }, l);
  assert.equal(w.kept.size, 0);
  w.close();
});

test("refusals: unknown capability, busy, over the input limit, a submitter without the role, draining", async () => {
  let release;
  const w = worker(() => new Promise((resolve) => (release = resolve)));
  const l = link();
  w.handle("sub", { ...submit(), capability: "ocr" }, l);
  w.handle("sub", submit(), l);
  w.handle("sub", { ...submit(), job_id: "00000000-0000-4000-8000-000000000002" }, l);
  w.handle("sub", { type: "blobs", job_id: "00000000-0000-4000-8000-000000000003", attempt: 1, direction: "input", blobs: [{ index: 0, size: 2 ** 31, blake3: "0".repeat(64) }] }, l);
  w.handle("sub", { ...submit(), job_id: "00000000-0000-4000-8000-000000000003" }, l);
  const reasons = l.sent.filter((m) => m.type === "rejected").map((m) => m.reason);
  assert.deepEqual(reasons, ["unknown_capability", "busy", "busy"]);
  w.slots = 4;
  w.handle("sub", { type: "blobs", job_id: "00000000-0000-4000-8000-000000000003", attempt: 1, direction: "input", blobs: [{ index: 0, size: 2 ** 31, blake3: "0".repeat(64) }] }, l);
  w.handle("sub", { ...submit(), job_id: "00000000-0000-4000-8000-000000000003" }, l);
  assert.equal(l.sent.at(-1).reason, "bad_input");
  const observer = link({ roles: ["observer"] });
  w.handle("peeker", { ...submit(), job_id: "00000000-0000-4000-8000-000000000004" }, observer);
  assert.equal(observer.sent[0].reason, "forbidden");
  const drained = w.drain();
  w.handle("sub", { ...submit(), job_id: "00000000-0000-4000-8000-000000000005" }, l);
  assert.equal(l.sent.at(-1).reason, "draining");
  await tick(); // the handler starts after admission, asynchronously
  release("done");
  await drained;
  w.close();
});

test("a cancel from the submitter stops the handler and sends no error", async () => {
  const w = worker((_input, ctx) => new Promise((_resolve, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason))));
  const l = link();
  w.handle("sub", submit(), l);
  w.handle("stranger", { type: "cancel", job_id: JOB, attempt: 1 }, link());
  assert.equal(w.running.size, 1, "only its submitter may cancel it");
  w.handle("sub", { type: "cancel", job_id: JOB, attempt: 1 }, l);
  await tick();
  assert.equal(w.running.size, 0);
  assert.deepEqual(l.sent.map((m) => m.type), ["accepted"]);
  w.close();
});

test("held on a new link, and a re-submit re-attaches to the kept result under its new attempt", async () => {
  const w = worker(async () => "value");
  const old = link();
  w.handle("sub", submit(1), old);
  await tick();
  const fresh = link();
  w.linked("sub", fresh);
  assert.deepEqual(fresh.sent, [{ type: "held", job_id: JOB, attempt: 1 }]);
  w.handle("sub", submit(2), fresh);
  await tick();
  assert.deepEqual(fresh.sent.slice(1).map((m) => [m.type, m.attempt]), [["accepted", 2], ["result", 2]]);
  assert.equal(w.completed, 1, "it ran once");
  w.handle("someone-else", submit(3), link());
  w.close();
});
