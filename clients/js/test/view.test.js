import { test } from "node:test";
import assert from "node:assert/strict";
import { PoolView } from "../src/view.js";

const peer = (id, slots = 2, seq = 0) => ({ id, name: `p${id}`, capabilities: ["echo"], stats: { slots, running: 0, queued: 0, completed: 0, failed: 0, seq } });

test("pages add, change and remove members; a reset forgets whom its pages do not describe", () => {
  const v = new PoolView();
  let c = v.apply({ reset: true, peers: [peer("a"), peer("b")], synced: true });
  assert.deepEqual(c.joined.map((p) => p.id), ["a", "b"]);
  assert.ok(v.synced);
  c = v.apply({ left: ["a"], peers: [peer("c")], synced: true });
  assert.deepEqual([c.left, c.joined.map((p) => p.id)], [["a"], ["c"]]);
  // A reset over two pages: b is gone once the view syncs without it.
  c = v.apply({ reset: true, peers: [peer("c", 4)], synced: false });
  assert.ok(!v.synced);
  assert.ok(v.peers.has("b"), "not gone before the view syncs");
  c = v.apply({ peers: [peer("d")], synced: true });
  assert.deepEqual(c.left, ["b"]);
  assert.deepEqual([...v.peers.keys()].sort(), ["c", "d"]);
  assert.equal(v.peers.get("c").stats.slots, 4);
});

test("older stats do not replace newer ones", () => {
  const v = new PoolView();
  v.apply({ peers: [peer("a", 2, 9)], synced: true });
  v.apply({ peers: [peer("a", 8, 3)], synced: true });
  assert.equal(v.peers.get("a").stats.seq, 9);
});

test("workers are the members with slots, by name", () => {
  const v = new PoolView();
  v.apply({ peers: [peer("b"), peer("s", 0), peer("a")], synced: true });
  assert.deepEqual(v.workers().map((p) => p.id), ["a", "b"]);
});
