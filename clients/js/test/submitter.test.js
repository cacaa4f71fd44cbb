import { test } from "node:test";
import assert from "node:assert/strict";
import { pick, submit } from "../src/submitter.js";

const w = (id, running, slots, caps = ["echo"], draining = false) => ({ id, name: id, capabilities: caps, stats: { slots, running, queued: 0, completed: 0, failed: 0, draining } });

test("least-loaded picks the emptiest capable worker with room", () => {
  const workers = [w("a", 2, 2), w("b", 1, 4), w("c", 0, 1, ["ocr"]), w("d", 0, 2, ["echo"], true)];
  assert.equal(pick(workers, "echo", new Set(), undefined, { next: 0 }).id, "b");
  assert.equal(pick(workers, "echo", new Set(["b"]), undefined, { next: 0 }).id, "a", "full, but the only one left");
  assert.equal(pick(workers, "thumbnail", new Set(), undefined, { next: 0 }), undefined);
});

test("round-robin turns; a custom strategy chooses among the capable", () => {
  const workers = [w("a", 0, 2), w("b", 0, 2)];
  const turn = { next: 0 };
  assert.deepEqual([0, 1, 2].map(() => pick(workers, "echo", new Set(), "round-robin", turn).id), ["a", "b", "a"]);
  const last = (ws) => ws[ws.length - 1];
  assert.equal(pick(workers, "echo", new Set(), last, turn).id, "b");
});

test("a worker heard from at all keeps its attempt; one silent for the lease loses it", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  let clock = 0;
  t.mock.method(performance, "now", () => clock);
  const advance = async (ms) => {
    clock += ms;
    t.mock.timers.tick(ms);
    await new Promise(setImmediate);
  };
  const sent = [];
  const closed = [];
  const link = { heard: 0, send: (m) => sent.push(m), closeSilent: (why) => closed.push(why) };
  const ticket = submit({ type: "echo", retries: 0, timeout: 60 }, {
    workers: () => [w("w1", 0, 1)],
    linkTo: async () => link,
    listen: () => {},
    turn: { next: 0 },
  });
  ticket.result.catch(() => {});
  await new Promise(setImmediate);
  assert.deepEqual(sent.map((m) => m.type), ["submit"]);
  // Four seconds in, only an earlier attempt's chunk arrives: still alive.
  await advance(4000);
  link.heard = clock;
  await advance(1000);
  assert.deepEqual(sent.map((m) => m.type), ["submit"], "heard 1 s ago: the lease holds");
  assert.equal(closed.length, 0);
  await advance(3900);
  assert.deepEqual(sent.map((m) => m.type), ["submit"]);
  await advance(200);
  assert.deepEqual(sent.map((m) => m.type), ["submit", "cancel"], "silent for 5 s: the attempt is lost");
  assert.equal(closed.length, 1, "and its link is closed, to be dialled afresh");
  await assert.rejects(ticket.result, /worker w1 went silent/);
});
