import { test } from "node:test";
import assert from "node:assert/strict";
import { Incoming, TransferError, decodeChunk, describe, encodeChunk, problemWith } from "../src/blobs.js";

const JOB = "06bfb095-729e-8add-a58b-be266e75c5c7";
const ABC = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"; // BLAKE3("abc")
const utf8 = new TextEncoder();

test("a chunk frame is the 32-byte header of docs/protocol.md, then the payload", () => {
  const frame = encodeChunk({ direction: 1, jobId: JOB, attempt: 3, index: 2, offset: 0x01020304 }, utf8.encode("hi"));
  assert.equal(frame.length, 34);
  assert.deepEqual(
    [...frame.slice(0, 2), ...frame.slice(18)],
    [0xb1, 1, 0, 0, 0, 3, 0, 2, 0, 0, 0, 0, 1, 2, 3, 4, 0x68, 0x69],
  );
  assert.deepEqual([...frame.slice(2, 6)], [0x06, 0xbf, 0xb0, 0x95]);
  const back = decodeChunk(frame);
  assert.deepEqual({ ...back, payload: [...back.payload] }, { direction: 1, jobId: JOB, attempt: 3, index: 2, offset: 0x01020304, payload: [0x68, 0x69] });
});

test("a frame that is not a chunk is refused, not misread", () => {
  assert.throws(() => decodeChunk(new Uint8Array(31).fill(0xb1)), TransferError);
  const frame = encodeChunk({ direction: 0, jobId: JOB, attempt: 1, index: 0, offset: 0 }, new Uint8Array(0));
  frame[1] = 7;
  assert.throws(() => decodeChunk(frame), /direction/);
  frame[1] = 0;
  frame[24] = 0xff; // an offset past any blob
  assert.throws(() => decodeChunk(frame), /offset/);
});

test("blobs are described with their size, BLAKE3 digest and name", async () => {
  const metas = await describe([new File(["abc"], "a.txt"), new Blob([])]);
  assert.deepEqual(metas[0], { index: 0, size: 3, blake3: ABC, name: "a.txt" });
  assert.equal(metas[1].size, 0);
  assert.equal(metas[1].name, undefined);
});

test("an announcement is checked against the limits", () => {
  const ok = [{ index: 0, size: 3, blake3: ABC, name: "a.txt" }];
  assert.equal(problemWith(ok, 3), null);
  assert.match(problemWith(ok, 2), /over this peer's limit/);
  assert.match(problemWith([{ ...ok[0], index: 1 }], 10), /index/);
  assert.match(problemWith([{ ...ok[0], name: "../x" }], 10), /name/);
  assert.match(problemWith([{ ...ok[0], blake3: ABC.toUpperCase() }], 10), /hex/);
  assert.match(problemWith(Array.from({ length: 17 }, (_, i) => ({ ...ok[0], index: i })), 100), /at most 16/);
  assert.match(problemWith("no", 100), /not a list/);
});

test("chunks are taken in order, within the size, and the digest is checked", async () => {
  const chunk = (offset, text) => ({ direction: 0, jobId: JOB, attempt: 1, index: 0, offset, payload: utf8.encode(text) });
  const good = new Incoming([{ index: 0, size: 3, blake3: ABC, name: "a.txt" }]);
  assert.throws(() => good.accept(chunk(1, "bc")), /expected 0/);
  good.accept(chunk(0, "a"));
  assert.equal(good.complete, false);
  assert.throws(() => good.accept(chunk(1, "bcd")), /past its announced size/);
  good.accept(chunk(1, "bc"));
  assert.equal(good.complete, true);
  const [file] = good.files();
  assert.equal(file.name, "a.txt");
  assert.equal(await file.text(), "abc");

  const damaged = new Incoming([{ index: 0, size: 3, blake3: ABC }]);
  assert.throws(() => damaged.accept(chunk(0, "abd")), /digest mismatch/);
  assert.throws(() => damaged.accept({ ...chunk(0, "a"), index: 1 }), /only 1 were announced/);
  assert.equal(new Incoming([]).complete, true);
});
