import { test } from "node:test";
import assert from "node:assert/strict";
import { pick } from "../src/submitter.js";

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
