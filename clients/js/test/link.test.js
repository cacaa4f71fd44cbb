import { test } from "node:test";
import assert from "node:assert/strict";
import { Link, bindingMessage, dialTag, fingerprintOf } from "../src/link.js";

const FP = Array.from({ length: 32 }, (_, i) => i.toString(16).padStart(2, "0").toUpperCase()).join(":");

test("an SDP's sha-256 fingerprint is read as 32 bytes", () => {
  const sdp = `v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\na=fingerprint:sha-256 ${FP}\r\na=setup:actpass\r\n`;
  assert.deepEqual(fingerprintOf(sdp), Uint8Array.from({ length: 32 }, (_, i) => i));
  assert.throws(() => fingerprintOf("v=0\r\na=fingerprint:sha-1 AB:CD\r\n"));
});

test("the binding message is 144 bytes: fingerprints, nonces, the verifier's id", () => {
  const b = (n) => new Uint8Array(32).fill(n);
  const msg = bindingMessage(b(1), b(2), b(3), b(4), "06bfb095-729e-8add-a58b-be266e75c5c7");
  assert.equal(msg.length, 144);
  assert.equal(msg[0], 1);
  assert.equal(msg[32], 2);
  assert.equal(msg[64], 3);
  assert.equal(msg[96], 4);
  assert.deepEqual([...msg.slice(128, 132)], [0x06, 0xbf, 0xb0, 0x95]);
});

test("dial tags are integers from 1 to 2^53 - 1, exact through JSON", () => {
  for (let i = 0; i < 1000; i++) {
    const tag = dialTag();
    assert.ok(Number.isSafeInteger(tag) && tag >= 1, `${tag}`);
    assert.equal(JSON.parse(JSON.stringify({ dial: tag })).dial, tag);
  }
});

test("messages a sender batched with newlines are handled one by one, in order", async () => {
  const seen = [];
  const link = { receiveMessage: async (m) => seen.push(m) };
  const bytes = new TextEncoder().encode('{"type":"a","n":1}\n{"type":"b","text":"x\\ny"}');
  await Link.prototype.receive.call(link, bytes.buffer);
  assert.deepEqual(seen, [{ type: "a", n: 1 }, { type: "b", text: "x\ny" }]);
  await Link.prototype.receive.call(link, '{"type":"c"}');
  assert.equal(seen.at(-1).type, "c");
});
