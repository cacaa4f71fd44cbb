// Blobs (docs/protocol.md, "Blobs"): binary payloads described by a
// `blobs` message (index, size, BLAKE3 digest, name) and moved as binary
// chunk frames, a 32-byte header then the bytes:
//
//   0xB1 | direction (0 input, 1 output) | job id (16) | attempt u32 BE | blob u16 BE | offset u64 BE | payload
//
// A sender hashes each blob once before announcing it, then reads it again
// slice by slice while it sends, waiting whenever the channel holds more
// than HIGH_WATER bytes. A receiver accepts a chunk only at the next offset
// of an announced blob, hashes as it goes, and gathers what arrived into a
// `Blob` every FOLD_BYTES (so the browser may keep it on disk, not in the
// tab's heap).

import { blake3 } from "@noble/hashes/blake3";
import { hex, uuidBytes, uuidOf } from "./identity.js";

export const CHUNK_MAGIC = 0xb1;
export const CHUNK_HEADER_LEN = 32;
/** At most this many blobs per job and direction. */
export const MAX_BLOBS = 16;
/** A blob is at most 2 GiB. */
export const MAX_BLOB_SIZE = 2 * 1024 ** 3;
/** A blob's name: 1–255 bytes, no path separators or control characters. */
const NAME = /^[^/\\\u0000-\u001f\u007f]{1,255}$/;
/** Blobs are read (to hash and to send) this much at a time. */
const READ_BYTES = 1024 * 1024;
/** Received bytes are folded into a `Blob` every this many. */
const FOLD_BYTES = 8 * 1024 * 1024;

const utf8 = new TextEncoder();

/** Why a blob transfer failed; fails the attempt, which may be retried. */
export class TransferError extends Error {}

/**
 * @typedef {{direction: number, jobId: string, attempt: number, index: number, offset: number}} ChunkHeader
 * @typedef {ChunkHeader & {payload: Uint8Array}} Chunk
 * @typedef {{index: number, size: number, blake3: string, name?: string}} BlobMeta
 */

/** One chunk frame. @param {ChunkHeader} h @param {Uint8Array} payload */
export function encodeChunk(h, payload) {
  const out = new Uint8Array(CHUNK_HEADER_LEN + payload.length);
  const view = new DataView(out.buffer);
  out[0] = CHUNK_MAGIC;
  out[1] = h.direction;
  out.set(uuidBytes(h.jobId), 2);
  view.setUint32(18, h.attempt);
  view.setUint16(22, h.index);
  view.setBigUint64(24, BigInt(h.offset));
  out.set(payload, CHUNK_HEADER_LEN);
  return out;
}

/** Reads a chunk frame; throws on anything that is not one. @param {Uint8Array} bytes @returns {Chunk} */
export function decodeChunk(bytes) {
  if (bytes.length < CHUNK_HEADER_LEN || bytes[0] !== CHUNK_MAGIC) throw new TransferError("not a chunk frame");
  if (bytes[1] > 1) throw new TransferError(`chunk direction ${bytes[1]} is neither 0 nor 1`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const offset = view.getBigUint64(24);
  if (offset > BigInt(MAX_BLOB_SIZE)) throw new TransferError(`chunk offset ${offset} is past any blob`);
  return {
    direction: bytes[1],
    jobId: uuidOf(bytes.subarray(2, 18)),
    attempt: view.getUint32(18),
    index: view.getUint16(22),
    offset: Number(offset),
    payload: bytes.subarray(CHUNK_HEADER_LEN),
  };
}

/**
 * Blobs as `Blob`s: a `File`, a `Blob`, an `ArrayBuffer` or a typed array.
 * @param {(Blob | ArrayBuffer | ArrayBufferView)[]} files @returns {Blob[]}
 */
export function asBlobs(files) {
  if (files.length > MAX_BLOBS) throw new TypeError(`${files.length} files, at most ${MAX_BLOBS}`);
  return files.map((f) => {
    if (f instanceof Blob) return f;
    if (f instanceof ArrayBuffer || ArrayBuffer.isView(f)) return new Blob([f]);
    throw new TypeError("a file must be a Blob, a File, an ArrayBuffer or a typed array");
  });
}

/** The `blobs` entries of `blobs`: each hashed, once. @param {Blob[]} blobs @returns {Promise<BlobMeta[]>} */
export async function describe(blobs) {
  const metas = [];
  for (const [index, blob] of blobs.entries()) {
    if (blob.size > MAX_BLOB_SIZE) throw new TypeError(`file ${index} is ${blob.size} bytes, at most 2 GiB`);
    const hasher = blake3.create({});
    for (let at = 0; at < blob.size; at += READ_BYTES) {
      hasher.update(new Uint8Array(await blob.slice(at, at + READ_BYTES).arrayBuffer()));
    }
    const name = blob instanceof File && NAME.test(blob.name) ? blob.name : undefined;
    metas.push({ index, size: blob.size, blake3: hex(hasher.digest()), ...(name ? { name } : {}) });
  }
  return metas;
}

/**
 * Checks announced `blobs` entries: in order, within the limits, digests in
 * hex, names without separators; the message of the first problem, or null.
 * @param {any} metas @param {number} maxTotal
 */
export function problemWith(metas, maxTotal) {
  if (!Array.isArray(metas)) return "blobs is not a list";
  if (metas.length > MAX_BLOBS) return `${metas.length} blobs, at most ${MAX_BLOBS}`;
  let total = 0;
  for (const [i, m] of metas.entries()) {
    if (m?.index !== i) return `blob ${i}: index ${m?.index}, expected ${i}`;
    if (!Number.isSafeInteger(m.size) || m.size < 0 || m.size > MAX_BLOB_SIZE) return `blob ${i}: size must be 0 to 2 GiB`;
    if (typeof m.blake3 !== "string" || !/^[0-9a-f]{64}$/.test(m.blake3)) return `blob ${i}: blake3 must be 64 lowercase hex digits`;
    if (m.name !== undefined && m.name !== null && (typeof m.name !== "string" || !NAME.test(m.name) || utf8.encode(m.name).length > 255))
      return `blob ${i}: name must be 1-255 bytes without path separators or control characters`;
    total += m.size;
  }
  if (total > maxTotal) return `the blobs are ${total} bytes in all, over this peer's limit of ${maxTotal}`;
  return null;
}

/** The receiving side of one set of blobs: a job's inputs or a result's outputs. */
export class Incoming {
  /** @param {BlobMeta[]} metas (checked with {@link problemWith}) */
  constructor(metas) {
    this.metas = metas;
    this.blobs = metas.map(() => ({ received: 0, hasher: blake3.create({}), parts: /** @type {BlobPart[]} */ ([]), pending: 0 }));
    this.bytes = 0;
    this.total = metas.reduce((n, m) => n + m.size, 0);
    this.left = metas.filter((m) => m.size > 0).length;
    for (const [i, m] of metas.entries()) if (m.size === 0) this.check(i);
  }

  /** Whether every blob has arrived intact. */
  get complete() {
    return this.left === 0;
  }

  /** Takes one chunk; throws {@link TransferError} when it is not the next expected. @param {Chunk} c */
  accept(c) {
    const meta = this.metas[c.index];
    const b = this.blobs[c.index];
    if (!meta || !b) throw new TransferError(`chunk for blob ${c.index}, but only ${this.metas.length} were announced`);
    if (c.offset !== b.received) throw new TransferError(`blob ${c.index}: chunk at offset ${c.offset}, expected ${b.received}`);
    const end = c.offset + c.payload.length;
    if (end > meta.size) throw new TransferError(`blob ${c.index}: chunk ends at byte ${end}, past its announced size ${meta.size}`);
    if (c.payload.length === 0) return;
    b.received = end;
    b.hasher.update(c.payload);
    b.parts.push(c.payload.slice());
    b.pending += c.payload.length;
    this.bytes += c.payload.length;
    if (b.pending >= FOLD_BYTES) {
      b.parts = [new Blob(b.parts)];
      b.pending = 0;
    }
    if (end === meta.size) {
      this.check(c.index);
      this.left -= 1;
    }
  }

  check(i) {
    const got = hex(this.blobs[i].hasher.digest());
    if (got !== this.metas[i].blake3)
      throw new TransferError(`blob ${i}: BLAKE3 digest mismatch (announced ${this.metas[i].blake3}, received ${got}); the bytes were damaged in transit`);
  }

  /** The blobs as `File`s, named as announced (else `blob-<i>`). */
  files() {
    return this.metas.map((m, i) => new File(this.blobs[i].parts, m.name ?? `blob-${i}`));
  }
}

/**
 * Sends `blobs` as chunk frames of at most `link.maxMessage` bytes, in
 * order, while `current()` holds; resolves when the last is queued, or
 * with false when the transfer stopped being current.
 * @param {import("./link.js").Link} link @param {Omit<ChunkHeader, "index" | "offset">} h
 * @param {Blob[]} blobs @param {() => boolean} current
 */
export async function sendBlobs(link, h, blobs, current) {
  const room = link.maxMessage - CHUNK_HEADER_LEN;
  for (const [index, blob] of blobs.entries()) {
    for (let at = 0; at < blob.size; at += READ_BYTES) {
      const bytes = new Uint8Array(await blob.slice(at, at + READ_BYTES).arrayBuffer());
      for (let i = 0; i < bytes.length; i += room) {
        await link.drained();
        if (!current() || link.closed) return false;
        link.sendBytes(encodeChunk({ ...h, index, offset: at + i }, bytes.subarray(i, i + room)));
      }
    }
  }
  return true;
}
