// The identity functions against the vectors the Rust implementation pins
// (crates/wire/tests/roundtrip.rs, vectors_for_other_implementations).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Identity, admissionMessage, base64url, fromBase64url, peerIdOf, PURPOSE, verify } from "../src/identity.js";

const SEED = new Uint8Array(32).fill(7);
const KEY = "6kpsY-KcUgq-9VB7Ey7F-ZVHdq6-vnuSQh7qaRRG0iw";
const PEER = "06bfb095-729e-8add-a58b-be266e75c5c7";
const PROOF = "ZPXYUR1BTkqnpSgEV3JdCqYDDs7JyQaguBKUBbaI07zEuB3GPJh-MKwc2C5aefbcM--pvBI4egPH7F-UH8sKAw";

test("a seed's key and peer id are the Rust implementation's", async () => {
  const id = await Identity.fromSeed(SEED);
  assert.equal(id.key, KEY);
  assert.equal(id.peerId, PEER);
  assert.equal(peerIdOf(fromBase64url(KEY)), PEER);
});

test("the hello's proof is the Rust implementation's, and verifies", async () => {
  const id = await Identity.fromSeed(SEED);
  const msg = admissionMessage("bm9uY2U", "lab", id.peerId);
  const sig = await id.sign(PURPOSE.admission, msg);
  assert.equal(base64url(sig), PROOF);
  assert.ok(await verify(id.publicKey, PURPOSE.admission, msg, sig));
  assert.ok(!(await verify(id.publicKey, PURPOSE.binding, msg, sig)), "a signature serves one purpose");
});

test("base64url round-trips and refuses other alphabets", () => {
  const bytes = Uint8Array.from({ length: 64 }, (_, i) => i * 4);
  assert.deepEqual(fromBase64url(base64url(bytes)), bytes);
  assert.throws(() => fromBase64url("a+b/"));
});

test("a generated identity's id is its key's", async () => {
  const id = await Identity.generate();
  assert.equal(id.peerId, peerIdOf(id.publicKey));
  assert.equal(id.key.length, 43);
});

test("a hello asks for a filtered view only when told to", async () => {
  const { SignalClient } = await import("../src/signal.js");
  const id = await Identity.fromSeed(SEED);
  const join = { name: "t", pool: "lab", capabilities: [], slots: 0 };
  const all = await new SignalClient("ws://x/ws", id, join).hello("bm9uY2U");
  assert.equal("view" in all, false, "absent: every member");
  const some = await new SignalClient("ws://x/ws", id, { ...join, view: ["echo"] }).hello("bm9uY2U");
  assert.deepEqual(some.view, ["echo"]);
  assert.equal(some.proof, PROOF, "the proof does not cover the view");
});
