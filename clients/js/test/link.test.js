import { test } from "node:test";
import assert from "node:assert/strict";
import { Link, bindingMessage, dialTag, fingerprintOf } from "../src/link.js";
import { Identity, PURPOSE, base64url } from "../src/identity.js";

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

test("a link_proof that comes before its link_hello waits for the hello; a second one is refused", async () => {
  const [me, them] = [await Identity.generate(), await Identity.generate()];
  const sdp = (n) => `v=0\r\na=fingerprint:sha-256 ${FP.replace(/^00/, String(n).padStart(2, "0"))}\r\n`;
  const [mine, theirs] = [sdp(1), sdp(2)];
  const [myNonce, theirNonce] = [new Uint8Array(32).fill(7), new Uint8Array(32).fill(9)];
  const sent = [];
  let trusted = 0;
  const link = {
    remote: them.peerId,
    identity: me,
    trustIn: null,
    nonce: myNonce,
    remoteHello: null,
    earlyProof: null,
    trusted: false,
    pc: { localDescription: { sdp: mine }, remoteDescription: { sdp: theirs }, signalingState: "stable" },
    sayHello() {},
    send: (m) => sent.push(m),
    trust: () => trusted++,
    receiveMessage: Link.prototype.receiveMessage,
  };
  // Their proof, over the connection as they see it.
  const sig = await them.sign(PURPOSE.binding, bindingMessage(fingerprintOf(theirs), fingerprintOf(mine), theirNonce, myNonce, me.peerId));
  const proof = { type: "link_proof", sig: base64url(sig) };
  await link.receiveMessage(proof);
  assert.equal(link.trusted, false, "held, not yet checked");
  await link.receiveMessage({ type: "link_hello", key: them.key, nonce: base64url(theirNonce) });
  assert.deepEqual(sent.map((m) => m.type), ["link_proof"], "our proof answers the hello");
  assert.equal(link.trusted, true, "the held proof verified once the hello came");
  assert.equal(trusted, 1);

  const again = { ...link, remoteHello: null, earlyProof: null, trusted: false };
  await again.receiveMessage(proof);
  await assert.rejects(again.receiveMessage(proof), /link_proof before the link handshake/);
});
