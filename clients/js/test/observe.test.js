import { test } from "node:test";
import assert from "node:assert/strict";
import { MAX_OBSERVERS, OBSERVED_HISTORY, OBSERVER_QUEUE, Observers, Watching } from "../src/observe.js";

const JOB = (i) => `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`;
const tick = () => new Promise((resolve) => queueMicrotask(resolve));

test("a worker streams its jobs' events to subscribers, batched, history first", async () => {
  const obs = new Observers();
  obs.started(JOB(1), 1, "echo", "sub");
  obs.ended(JOB(1), "completed");
  const got = [];
  assert.ok(obs.subscribe("watcher", (m) => got.push(m), true));
  await tick();
  assert.deepEqual(got[0].events.map((e) => e.event), ["started", "completed"]);
  assert.equal(typeof got[0].events[1].run_ms, "number");
  obs.started(JOB(2), 3, "ocr", "sub");
  obs.progress(JOB(2), 40);
  obs.ended(JOB(2), "failed", "é".repeat(300));
  await tick();
  assert.equal(got.length, 2, "one batch for one moment's events");
  const [started, progress, failed] = got[1].events;
  assert.deepEqual([started.event, started.attempt, started.capability, started.submitter], ["started", 3, "ocr", "sub"]);
  assert.equal(progress.percent, 40);
  assert.ok(new TextEncoder().encode(failed.error).length <= 256);
});

test("a slow subscriber loses the oldest events and is told how many", async () => {
  const obs = new Observers();
  const got = [];
  obs.subscribe("w", (m) => got.push(m), false);
  for (let i = 0; i < OBSERVER_QUEUE + 10; i++) obs.record(JOB(i), { attempt: 1, capability: "c", submitter: "s" }, "progress");
  await tick();
  assert.equal(got[0].dropped, 10);
  assert.ok(got.every((m) => m.events.length <= 32));
  assert.equal(got.reduce((n, m) => n + m.events.length, 0), OBSERVER_QUEUE);
  assert.equal(obs.recent.length, OBSERVED_HISTORY);
});

test("at most 32 subscribers", () => {
  const obs = new Observers();
  for (let i = 0; i < MAX_OBSERVERS; i++) assert.ok(obs.subscribe(`p${i}`, () => {}, false));
  assert.ok(!obs.subscribe("one too many", () => {}, false));
  assert.ok(obs.subscribe("p0", () => {}, true), "a subscriber may subscribe again");
});

test("an observer says lost for the running jobs of a worker that left", () => {
  const w = new Watching();
  const base = { attempt: 1, capability: "echo", submitter: "s", at_ms: 1 };
  w.observed("a", [{ ...base, job_id: JOB(1), event: "started" }, { ...base, job_id: JOB(2), event: "progress", percent: 5 }, "junk"]);
  w.observed("b", [{ ...base, job_id: JOB(3), event: "started" }]);
  w.observed("a", [{ ...base, job_id: JOB(1), event: "completed" }]);
  const lost = w.left("a");
  assert.deepEqual(lost.map((e) => [e.job_id, e.event, e.percent]), [[JOB(2), "lost", undefined]]);
  assert.deepEqual(w.left("a"), []);
});
