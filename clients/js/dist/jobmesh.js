// node_modules/@noble/hashes/esm/utils.js
/*! noble-hashes - MIT License (c) 2022 Paul Miller (paulmillr.com) */
function isBytes(a) {
  return a instanceof Uint8Array || ArrayBuffer.isView(a) && a.constructor.name === "Uint8Array";
}
function anumber(n) {
  if (!Number.isSafeInteger(n) || n < 0)
    throw new Error("positive integer expected, got " + n);
}
function abytes(b, ...lengths) {
  if (!isBytes(b))
    throw new Error("Uint8Array expected");
  if (lengths.length > 0 && !lengths.includes(b.length))
    throw new Error("Uint8Array expected of length " + lengths + ", got length=" + b.length);
}
function aexists(instance, checkFinished = true) {
  if (instance.destroyed)
    throw new Error("Hash instance has been destroyed");
  if (checkFinished && instance.finished)
    throw new Error("Hash#digest() has already been called");
}
function aoutput(out, instance) {
  abytes(out);
  const min = instance.outputLen;
  if (out.length < min) {
    throw new Error("digestInto() expects output buffer of length at least " + min);
  }
}
function u8(arr) {
  return new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
}
function u32(arr) {
  return new Uint32Array(arr.buffer, arr.byteOffset, Math.floor(arr.byteLength / 4));
}
function clean(...arrays) {
  for (let i = 0; i < arrays.length; i++) {
    arrays[i].fill(0);
  }
}
function rotr(word, shift) {
  return word << 32 - shift | word >>> shift;
}
var isLE = /* @__PURE__ */ (() => new Uint8Array(new Uint32Array([287454020]).buffer)[0] === 68)();
function byteSwap(word) {
  return word << 24 & 4278190080 | word << 8 & 16711680 | word >>> 8 & 65280 | word >>> 24 & 255;
}
var swap8IfBE = isLE ? (n) => n : (n) => byteSwap(n);
function byteSwap32(arr) {
  for (let i = 0; i < arr.length; i++) {
    arr[i] = byteSwap(arr[i]);
  }
  return arr;
}
var swap32IfBE = isLE ? (u) => u : byteSwap32;
function utf8ToBytes(str2) {
  if (typeof str2 !== "string")
    throw new Error("string expected");
  return new Uint8Array(new TextEncoder().encode(str2));
}
function toBytes(data) {
  if (typeof data === "string")
    data = utf8ToBytes(data);
  abytes(data);
  return data;
}
var Hash = class {
};
function createXOFer(hashCons) {
  const hashC = (msg, opts) => hashCons(opts).update(toBytes(msg)).digest();
  const tmp = hashCons({});
  hashC.outputLen = tmp.outputLen;
  hashC.blockLen = tmp.blockLen;
  hashC.create = (opts) => hashCons(opts);
  return hashC;
}

// node_modules/@noble/hashes/esm/_md.js
var SHA256_IV = /* @__PURE__ */ Uint32Array.from([
  1779033703,
  3144134277,
  1013904242,
  2773480762,
  1359893119,
  2600822924,
  528734635,
  1541459225
]);

// node_modules/@noble/hashes/esm/_u64.js
var U32_MASK64 = /* @__PURE__ */ BigInt(2 ** 32 - 1);
var _32n = /* @__PURE__ */ BigInt(32);
function fromBig(n, le = false) {
  if (le)
    return { h: Number(n & U32_MASK64), l: Number(n >> _32n & U32_MASK64) };
  return { h: Number(n >> _32n & U32_MASK64) | 0, l: Number(n & U32_MASK64) | 0 };
}

// node_modules/@noble/hashes/esm/_blake.js
function G1s(a, b, c, d, x) {
  a = a + b + x | 0;
  d = rotr(d ^ a, 16);
  c = c + d | 0;
  b = rotr(b ^ c, 12);
  return { a, b, c, d };
}
function G2s(a, b, c, d, x) {
  a = a + b + x | 0;
  d = rotr(d ^ a, 8);
  c = c + d | 0;
  b = rotr(b ^ c, 7);
  return { a, b, c, d };
}

// node_modules/@noble/hashes/esm/blake2.js
var BLAKE2 = class extends Hash {
  constructor(blockLen, outputLen) {
    super();
    this.finished = false;
    this.destroyed = false;
    this.length = 0;
    this.pos = 0;
    anumber(blockLen);
    anumber(outputLen);
    this.blockLen = blockLen;
    this.outputLen = outputLen;
    this.buffer = new Uint8Array(blockLen);
    this.buffer32 = u32(this.buffer);
  }
  update(data) {
    aexists(this);
    data = toBytes(data);
    abytes(data);
    const { blockLen, buffer, buffer32 } = this;
    const len = data.length;
    const offset = data.byteOffset;
    const buf = data.buffer;
    for (let pos = 0; pos < len; ) {
      if (this.pos === blockLen) {
        swap32IfBE(buffer32);
        this.compress(buffer32, 0, false);
        swap32IfBE(buffer32);
        this.pos = 0;
      }
      const take = Math.min(blockLen - this.pos, len - pos);
      const dataOffset = offset + pos;
      if (take === blockLen && !(dataOffset % 4) && pos + take < len) {
        const data32 = new Uint32Array(buf, dataOffset, Math.floor((len - pos) / 4));
        swap32IfBE(data32);
        for (let pos32 = 0; pos + blockLen < len; pos32 += buffer32.length, pos += blockLen) {
          this.length += blockLen;
          this.compress(data32, pos32, false);
        }
        swap32IfBE(data32);
        continue;
      }
      buffer.set(data.subarray(pos, pos + take), this.pos);
      this.pos += take;
      this.length += take;
      pos += take;
    }
    return this;
  }
  digestInto(out) {
    aexists(this);
    aoutput(out, this);
    const { pos, buffer32 } = this;
    this.finished = true;
    clean(this.buffer.subarray(pos));
    swap32IfBE(buffer32);
    this.compress(buffer32, 0, true);
    swap32IfBE(buffer32);
    const out32 = u32(out);
    this.get().forEach((v, i) => out32[i] = swap8IfBE(v));
  }
  digest() {
    const { buffer, outputLen } = this;
    this.digestInto(buffer);
    const res = buffer.slice(0, outputLen);
    this.destroy();
    return res;
  }
  _cloneInto(to) {
    const { buffer, length, finished, destroyed, outputLen, pos } = this;
    to || (to = new this.constructor({ dkLen: outputLen }));
    to.set(...this.get());
    to.buffer.set(buffer);
    to.destroyed = destroyed;
    to.finished = finished;
    to.length = length;
    to.pos = pos;
    to.outputLen = outputLen;
    return to;
  }
  clone() {
    return this._cloneInto();
  }
};
function compress(s, offset, msg, rounds, v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15) {
  let j = 0;
  for (let i = 0; i < rounds; i++) {
    ({ a: v0, b: v4, c: v8, d: v12 } = G1s(v0, v4, v8, v12, msg[offset + s[j++]]));
    ({ a: v0, b: v4, c: v8, d: v12 } = G2s(v0, v4, v8, v12, msg[offset + s[j++]]));
    ({ a: v1, b: v5, c: v9, d: v13 } = G1s(v1, v5, v9, v13, msg[offset + s[j++]]));
    ({ a: v1, b: v5, c: v9, d: v13 } = G2s(v1, v5, v9, v13, msg[offset + s[j++]]));
    ({ a: v2, b: v6, c: v10, d: v14 } = G1s(v2, v6, v10, v14, msg[offset + s[j++]]));
    ({ a: v2, b: v6, c: v10, d: v14 } = G2s(v2, v6, v10, v14, msg[offset + s[j++]]));
    ({ a: v3, b: v7, c: v11, d: v15 } = G1s(v3, v7, v11, v15, msg[offset + s[j++]]));
    ({ a: v3, b: v7, c: v11, d: v15 } = G2s(v3, v7, v11, v15, msg[offset + s[j++]]));
    ({ a: v0, b: v5, c: v10, d: v15 } = G1s(v0, v5, v10, v15, msg[offset + s[j++]]));
    ({ a: v0, b: v5, c: v10, d: v15 } = G2s(v0, v5, v10, v15, msg[offset + s[j++]]));
    ({ a: v1, b: v6, c: v11, d: v12 } = G1s(v1, v6, v11, v12, msg[offset + s[j++]]));
    ({ a: v1, b: v6, c: v11, d: v12 } = G2s(v1, v6, v11, v12, msg[offset + s[j++]]));
    ({ a: v2, b: v7, c: v8, d: v13 } = G1s(v2, v7, v8, v13, msg[offset + s[j++]]));
    ({ a: v2, b: v7, c: v8, d: v13 } = G2s(v2, v7, v8, v13, msg[offset + s[j++]]));
    ({ a: v3, b: v4, c: v9, d: v14 } = G1s(v3, v4, v9, v14, msg[offset + s[j++]]));
    ({ a: v3, b: v4, c: v9, d: v14 } = G2s(v3, v4, v9, v14, msg[offset + s[j++]]));
  }
  return { v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15 };
}

// node_modules/@noble/hashes/esm/blake3.js
var B3_Flags = {
  CHUNK_START: 1,
  CHUNK_END: 2,
  PARENT: 4,
  ROOT: 8,
  KEYED_HASH: 16,
  DERIVE_KEY_CONTEXT: 32,
  DERIVE_KEY_MATERIAL: 64
};
var B3_IV = SHA256_IV.slice();
var B3_SIGMA = /* @__PURE__ */ (() => {
  const Id = Array.from({ length: 16 }, (_, i) => i);
  const permute = (arr) => [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8].map((i) => arr[i]);
  const res = [];
  for (let i = 0, v = Id; i < 7; i++, v = permute(v))
    res.push(...v);
  return Uint8Array.from(res);
})();
var BLAKE3 = class _BLAKE3 extends BLAKE2 {
  constructor(opts = {}, flags = 0) {
    super(64, opts.dkLen === void 0 ? 32 : opts.dkLen);
    this.chunkPos = 0;
    this.chunksDone = 0;
    this.flags = 0 | 0;
    this.stack = [];
    this.posOut = 0;
    this.bufferOut32 = new Uint32Array(16);
    this.chunkOut = 0;
    this.enableXOF = true;
    const { key, context } = opts;
    const hasContext = context !== void 0;
    if (key !== void 0) {
      if (hasContext)
        throw new Error('Only "key" or "context" can be specified at same time');
      const k = toBytes(key).slice();
      abytes(k, 32);
      this.IV = u32(k);
      swap32IfBE(this.IV);
      this.flags = flags | B3_Flags.KEYED_HASH;
    } else if (hasContext) {
      const ctx = toBytes(context);
      const contextKey = new _BLAKE3({ dkLen: 32 }, B3_Flags.DERIVE_KEY_CONTEXT).update(ctx).digest();
      this.IV = u32(contextKey);
      swap32IfBE(this.IV);
      this.flags = flags | B3_Flags.DERIVE_KEY_MATERIAL;
    } else {
      this.IV = B3_IV.slice();
      this.flags = flags;
    }
    this.state = this.IV.slice();
    this.bufferOut = u8(this.bufferOut32);
  }
  // Unused
  get() {
    return [];
  }
  set() {
  }
  b2Compress(counter, flags, buf, bufPos = 0) {
    const { state: s, pos } = this;
    const { h, l } = fromBig(BigInt(counter), true);
    const { v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15 } = compress(B3_SIGMA, bufPos, buf, 7, s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], B3_IV[0], B3_IV[1], B3_IV[2], B3_IV[3], h, l, pos, flags);
    s[0] = v0 ^ v8;
    s[1] = v1 ^ v9;
    s[2] = v2 ^ v10;
    s[3] = v3 ^ v11;
    s[4] = v4 ^ v12;
    s[5] = v5 ^ v13;
    s[6] = v6 ^ v14;
    s[7] = v7 ^ v15;
  }
  compress(buf, bufPos = 0, isLast = false) {
    let flags = this.flags;
    if (!this.chunkPos)
      flags |= B3_Flags.CHUNK_START;
    if (this.chunkPos === 15 || isLast)
      flags |= B3_Flags.CHUNK_END;
    if (!isLast)
      this.pos = this.blockLen;
    this.b2Compress(this.chunksDone, flags, buf, bufPos);
    this.chunkPos += 1;
    if (this.chunkPos === 16 || isLast) {
      let chunk = this.state;
      this.state = this.IV.slice();
      for (let last, chunks = this.chunksDone + 1; isLast || !(chunks & 1); chunks >>= 1) {
        if (!(last = this.stack.pop()))
          break;
        this.buffer32.set(last, 0);
        this.buffer32.set(chunk, 8);
        this.pos = this.blockLen;
        this.b2Compress(0, this.flags | B3_Flags.PARENT, this.buffer32, 0);
        chunk = this.state;
        this.state = this.IV.slice();
      }
      this.chunksDone++;
      this.chunkPos = 0;
      this.stack.push(chunk);
    }
    this.pos = 0;
  }
  _cloneInto(to) {
    to = super._cloneInto(to);
    const { IV, flags, state, chunkPos, posOut, chunkOut, stack, chunksDone } = this;
    to.state.set(state.slice());
    to.stack = stack.map((i) => Uint32Array.from(i));
    to.IV.set(IV);
    to.flags = flags;
    to.chunkPos = chunkPos;
    to.chunksDone = chunksDone;
    to.posOut = posOut;
    to.chunkOut = chunkOut;
    to.enableXOF = this.enableXOF;
    to.bufferOut32.set(this.bufferOut32);
    return to;
  }
  destroy() {
    this.destroyed = true;
    clean(this.state, this.buffer32, this.IV, this.bufferOut32);
    clean(...this.stack);
  }
  // Same as b2Compress, but doesn't modify state and returns 16 u32 array (instead of 8)
  b2CompressOut() {
    const { state: s, pos, flags, buffer32, bufferOut32: out32 } = this;
    const { h, l } = fromBig(BigInt(this.chunkOut++));
    swap32IfBE(buffer32);
    const { v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15 } = compress(B3_SIGMA, 0, buffer32, 7, s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], B3_IV[0], B3_IV[1], B3_IV[2], B3_IV[3], l, h, pos, flags);
    out32[0] = v0 ^ v8;
    out32[1] = v1 ^ v9;
    out32[2] = v2 ^ v10;
    out32[3] = v3 ^ v11;
    out32[4] = v4 ^ v12;
    out32[5] = v5 ^ v13;
    out32[6] = v6 ^ v14;
    out32[7] = v7 ^ v15;
    out32[8] = s[0] ^ v8;
    out32[9] = s[1] ^ v9;
    out32[10] = s[2] ^ v10;
    out32[11] = s[3] ^ v11;
    out32[12] = s[4] ^ v12;
    out32[13] = s[5] ^ v13;
    out32[14] = s[6] ^ v14;
    out32[15] = s[7] ^ v15;
    swap32IfBE(buffer32);
    swap32IfBE(out32);
    this.posOut = 0;
  }
  finish() {
    if (this.finished)
      return;
    this.finished = true;
    clean(this.buffer.subarray(this.pos));
    let flags = this.flags | B3_Flags.ROOT;
    if (this.stack.length) {
      flags |= B3_Flags.PARENT;
      swap32IfBE(this.buffer32);
      this.compress(this.buffer32, 0, true);
      swap32IfBE(this.buffer32);
      this.chunksDone = 0;
      this.pos = this.blockLen;
    } else {
      flags |= (!this.chunkPos ? B3_Flags.CHUNK_START : 0) | B3_Flags.CHUNK_END;
    }
    this.flags = flags;
    this.b2CompressOut();
  }
  writeInto(out) {
    aexists(this, false);
    abytes(out);
    this.finish();
    const { blockLen, bufferOut } = this;
    for (let pos = 0, len = out.length; pos < len; ) {
      if (this.posOut >= blockLen)
        this.b2CompressOut();
      const take = Math.min(blockLen - this.posOut, len - pos);
      out.set(bufferOut.subarray(this.posOut, this.posOut + take), pos);
      this.posOut += take;
      pos += take;
    }
    return out;
  }
  xofInto(out) {
    if (!this.enableXOF)
      throw new Error("XOF is not possible after digest call");
    return this.writeInto(out);
  }
  xof(bytes2) {
    anumber(bytes2);
    return this.xofInto(new Uint8Array(bytes2));
  }
  digestInto(out) {
    aoutput(out, this);
    if (this.finished)
      throw new Error("digest() was already called");
    this.enableXOF = false;
    this.writeInto(out);
    this.destroy();
    return out;
  }
  digest() {
    return this.digestInto(new Uint8Array(this.outputLen));
  }
};
var blake3 = /* @__PURE__ */ createXOFer((opts) => new BLAKE3(opts));

// src/identity.js
var PEER_ID_CONTEXT = "jobmesh 2026-12 peer id v1";
var PURPOSE = Object.freeze({
  admission: "jobmesh signal admission v1",
  binding: "jobmesh channel binding v1",
  invitation: "jobmesh pool invitation v1",
  membership: "jobmesh pool membership v1",
  revocations: "jobmesh pool revocations v1"
});
var utf8 = new TextEncoder();
function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
function base64url(bytes2) {
  let text3 = "";
  for (const b of bytes2) text3 += String.fromCharCode(b);
  return btoa(text3).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}
function fromBase64url(text3) {
  if (!/^[A-Za-z0-9_-]*$/.test(text3)) throw new Error(`not base64url: ${JSON.stringify(text3.slice(0, 40))}`);
  const b64 = text3.replaceAll("-", "+").replaceAll("_", "/") + "=".repeat((4 - text3.length % 4) % 4);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}
function hex(bytes2) {
  return Array.from(bytes2, (b) => b.toString(16).padStart(2, "0")).join("");
}
function uuidOf(b) {
  const h = hex(b);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
function uuidBytes(id) {
  const hex2 = id.replaceAll("-", "");
  if (!/^[0-9a-f]{32}$/i.test(hex2)) throw new Error(`not a peer id: ${JSON.stringify(id)}`);
  return Uint8Array.from(hex2.match(/../g) ?? [], (h) => parseInt(h, 16));
}
function peerIdOf(publicKey) {
  const b = blake3(publicKey, { context: PEER_ID_CONTEXT }).slice(0, 16);
  b[6] = b[6] & 15 | 128;
  b[8] = b[8] & 63 | 128;
  return uuidOf(b);
}
function framed(purpose, msg) {
  return concat(utf8.encode(purpose), new Uint8Array([0]), msg);
}
var PKCS8_PREFIX = Uint8Array.from([48, 46, 2, 1, 0, 48, 5, 6, 3, 43, 101, 112, 4, 34, 4, 32]);
var Identity = class _Identity {
  /** @param {CryptoKey} privateKey @param {Uint8Array} publicKey */
  constructor(privateKey, publicKey) {
    this.privateKey = privateKey;
    this.publicKey = publicKey;
    this.key = base64url(publicKey);
    this.peerId = peerIdOf(publicKey);
  }
  /** A new random identity (not extractable). */
  static async generate() {
    const pair = (
      /** @type {CryptoKeyPair} */
      await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"])
    );
    const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
    return new _Identity(pair.privateKey, raw);
  }
  /** The identity of a 32-byte secret seed (as a daemon's key file holds). @param {Uint8Array} seed */
  static async fromSeed(seed) {
    if (seed.length !== 32) throw new Error("an Ed25519 seed is 32 bytes");
    const privateKey = await crypto.subtle.importKey("pkcs8", concat(PKCS8_PREFIX, seed), { name: "Ed25519" }, true, ["sign"]);
    const jwk = await crypto.subtle.exportKey("jwk", privateKey);
    return new _Identity(privateKey, fromBase64url(
      /** @type {string} */
      jwk.x
    ));
  }
  /** The signature of `msg` for `purpose`. @param {string} purpose @param {Uint8Array} msg */
  async sign(purpose, msg) {
    return new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, this.privateKey, framed(purpose, msg)));
  }
};
async function verify(key, purpose, msg, sig) {
  const publicKey = await crypto.subtle.importKey("raw", key, { name: "Ed25519" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, publicKey, sig, framed(purpose, msg));
}
function admissionMessage(nonce, pool, peerId) {
  const zero = new Uint8Array([0]);
  return concat(utf8.encode(nonce), zero, utf8.encode(pool), zero, utf8.encode(peerId), zero);
}

// src/blobs.js
var CHUNK_MAGIC = 177;
var CHUNK_HEADER_LEN = 32;
var MAX_BLOBS = 16;
var MAX_BLOB_SIZE = 2 * 1024 ** 3;
var NAME = /^[^/\\\u0000-\u001f\u007f]{1,255}$/;
var READ_BYTES = 1024 * 1024;
var FOLD_BYTES = 8 * 1024 * 1024;
var utf82 = new TextEncoder();
var TransferError = class extends Error {
};
function encodeChunk(h, payload) {
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
function decodeChunk(bytes2) {
  if (bytes2.length < CHUNK_HEADER_LEN || bytes2[0] !== CHUNK_MAGIC) throw new TransferError("not a chunk frame");
  if (bytes2[1] > 1) throw new TransferError(`chunk direction ${bytes2[1]} is neither 0 nor 1`);
  const view = new DataView(bytes2.buffer, bytes2.byteOffset, bytes2.byteLength);
  const offset = view.getBigUint64(24);
  if (offset > BigInt(MAX_BLOB_SIZE)) throw new TransferError(`chunk offset ${offset} is past any blob`);
  return {
    direction: bytes2[1],
    jobId: uuidOf(bytes2.subarray(2, 18)),
    attempt: view.getUint32(18),
    index: view.getUint16(22),
    offset: Number(offset),
    payload: bytes2.subarray(CHUNK_HEADER_LEN)
  };
}
function asBlobs(files) {
  if (files.length > MAX_BLOBS) throw new TypeError(`${files.length} files, at most ${MAX_BLOBS}`);
  return files.map((f) => {
    if (f instanceof Blob) return f;
    if (f instanceof ArrayBuffer || ArrayBuffer.isView(f)) return new Blob([f]);
    throw new TypeError("a file must be a Blob, a File, an ArrayBuffer or a typed array");
  });
}
async function describe(blobs) {
  const metas = [];
  for (const [index, blob] of blobs.entries()) {
    if (blob.size > MAX_BLOB_SIZE) throw new TypeError(`file ${index} is ${blob.size} bytes, at most 2 GiB`);
    const hasher = blake3.create({});
    for (let at = 0; at < blob.size; at += READ_BYTES) {
      hasher.update(new Uint8Array(await blob.slice(at, at + READ_BYTES).arrayBuffer()));
    }
    const name = blob instanceof File && NAME.test(blob.name) ? blob.name : void 0;
    metas.push({ index, size: blob.size, blake3: hex(hasher.digest()), ...name ? { name } : {} });
  }
  return metas;
}
function problemWith(metas, maxTotal) {
  if (!Array.isArray(metas)) return "blobs is not a list";
  if (metas.length > MAX_BLOBS) return `${metas.length} blobs, at most ${MAX_BLOBS}`;
  let total = 0;
  for (const [i, m] of metas.entries()) {
    if (m?.index !== i) return `blob ${i}: index ${m?.index}, expected ${i}`;
    if (!Number.isSafeInteger(m.size) || m.size < 0 || m.size > MAX_BLOB_SIZE) return `blob ${i}: size must be 0 to 2 GiB`;
    if (typeof m.blake3 !== "string" || !/^[0-9a-f]{64}$/.test(m.blake3)) return `blob ${i}: blake3 must be 64 lowercase hex digits`;
    if (m.name !== void 0 && m.name !== null && (typeof m.name !== "string" || !NAME.test(m.name) || utf82.encode(m.name).length > 255))
      return `blob ${i}: name must be 1-255 bytes without path separators or control characters`;
    total += m.size;
  }
  if (total > maxTotal) return `the blobs are ${total} bytes in all, over this peer's limit of ${maxTotal}`;
  return null;
}
var Incoming = class {
  /** @param {BlobMeta[]} metas (checked with {@link problemWith}) */
  constructor(metas) {
    this.metas = metas;
    this.blobs = metas.map(() => ({ received: 0, hasher: blake3.create({}), parts: (
      /** @type {BlobPart[]} */
      []
    ), pending: 0 }));
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
};
async function sendBlobs(link, h, blobs, current) {
  const room = link.maxMessage - CHUNK_HEADER_LEN;
  for (const [index, blob] of blobs.entries()) {
    for (let at = 0; at < blob.size; at += READ_BYTES) {
      const bytes2 = new Uint8Array(await blob.slice(at, at + READ_BYTES).arrayBuffer());
      for (let i = 0; i < bytes2.length; i += room) {
        await link.drained();
        if (!current() || link.closed) return false;
        link.sendBytes(encodeChunk({ ...h, index, offset: at + i }, bytes2.subarray(i, i + room)));
      }
    }
  }
  return true;
}

// src/trust.js
var TOKEN_PREFIX = "jobmesh-invite-v1.";
var ROLE_BITS = { worker: 1, submitter: 2, observer: 4 };
var utf83 = new TextEncoder();
var text = new TextDecoder();
var TrustError = class extends Error {
};
function str(s) {
  const b = utf83.encode(s);
  if (b.length > 65535) throw new TrustError("a text field is too long");
  return concat(u16(b.length), b);
}
var u16 = (n) => Uint8Array.of(n >> 8, n & 255);
var u322 = (n) => Uint8Array.of(n >>> 24, n >> 16 & 255, n >> 8 & 255, n & 255);
function u64(n) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}
function bytes(field, value, length) {
  const b = typeof value === "string" ? fromBase64url(value) : new Uint8Array();
  if (b.length !== length) throw new TrustError(`${field} is not ${length} bytes of base64url`);
  return b;
}
function grantBytes(g, inviteKey) {
  if (!Array.isArray(g?.roles) || !g.roles.every((r) => r in ROLE_BITS)) throw new TrustError("the grant's roles are not worker, submitter or observer");
  const caps = g.capabilities ?? [];
  if (!Number.isSafeInteger(g.expires) || g.expires < 0) throw new TrustError("the grant's expiry is not a time");
  return concat(
    str(String(g.pool)),
    bytes("pool_key", g.pool_key, 32),
    inviteKey,
    Uint8Array.of(g.roles.reduce((bits, r) => bits | ROLE_BITS[r], 0)),
    u16(caps.length),
    ...caps.map((c) => str(String(c))),
    u64(g.expires)
  );
}
function membershipBytes(c, member) {
  return concat(grantBytes(c.grant, bytes("invite_key", c.invite_key, 32)), bytes("sig", c.sig, 64), member);
}
async function redeem(token, identity) {
  const body = token.trim();
  if (!body.startsWith(TOKEN_PREFIX)) throw new TrustError(`not a jobmesh invitation: it does not start with ${TOKEN_PREFIX}`);
  let t;
  try {
    t = JSON.parse(text.decode(fromBase64url(body.slice(TOKEN_PREFIX.length))));
  } catch (e) {
    throw new TrustError(`not a jobmesh invitation: ${e?.message ?? e}`);
  }
  const inviteKey = bytes("invite_key", t.invite_key, 32);
  const secret = await Identity.fromSeed(bytes("secret", t.secret, 32));
  if (secret.key !== t.invite_key) throw new TrustError("not a jobmesh invitation: its secret does not match its key");
  if (!await verify(bytes("pool_key", t.grant?.pool_key, 32), PURPOSE.invitation, grantBytes(t.grant, inviteKey), bytes("sig", t.sig, 64)))
    throw new TrustError("the invitation is forged: the owner's signature does not verify");
  const endorsement = { grant: t.grant, invite_key: t.invite_key, sig: t.sig };
  const memberSig = await secret.sign(PURPOSE.membership, membershipBytes(endorsement, identity.publicKey));
  return { ...endorsement, member: identity.key, member_sig: base64url(memberSig) };
}
async function checkCredential(credential, { pool, poolKey, key, revoked }) {
  if (!credential || typeof credential !== "object") throw new TrustError("it has no credential");
  const g = credential.grant;
  if (g?.pool !== pool) throw new TrustError(`its credential is for pool ${JSON.stringify(g?.pool)}, not ${JSON.stringify(pool)}`);
  if (g.pool_key !== poolKey) throw new TrustError("its credential was issued by another owner");
  const inviteKey = bytes("invite_key", credential.invite_key, 32);
  if (!await verify(bytes("pool_key", g.pool_key, 32), PURPOSE.invitation, grantBytes(g, inviteKey), bytes("sig", credential.sig, 64)))
    throw new TrustError("its credential is forged: the owner's signature does not verify");
  if (credential.member !== key) throw new TrustError("its credential is another member's");
  if (!await verify(inviteKey, PURPOSE.membership, membershipBytes(credential, bytes("member", key, 32)), bytes("member_sig", credential.member_sig, 64)))
    throw new TrustError("its credential is forged: the invitation's signature does not verify");
  if (Date.now() / 1e3 >= g.expires) throw new TrustError(`its credential expired at ${new Date(g.expires * 1e3).toISOString()}`);
  if (revoked && revokes(revoked, credential)) throw new TrustError("its credential was revoked by the pool's owner");
  return g;
}
function allows(grant, role, capability) {
  const caps = grant.capabilities ?? [];
  return grant.roles.includes(role) && (capability === void 0 || caps.length === 0 || caps.includes(capability));
}
async function verifyRevocations(list, pool, poolKey) {
  if (list?.pool !== pool || list.pool_key !== poolKey) throw new TrustError("the revocation list is another pool's");
  const invites = list.invites ?? [];
  const members = list.members ?? [];
  const signed = concat(
    str(pool),
    bytes("pool_key", poolKey, 32),
    u64(list.seq),
    u322(invites.length),
    ...invites.map((k) => bytes("invites", k, 32)),
    u322(members.length),
    ...members.map((k) => bytes("members", k, 32))
  );
  if (!await verify(bytes("pool_key", poolKey, 32), PURPOSE.revocations, signed, bytes("sig", list.sig, 64)))
    throw new TrustError("the revocation list is forged: the owner's signature does not verify");
}
function revokes(list, credential) {
  return (list.invites ?? []).includes(credential.invite_key) || (list.members ?? []).includes(credential.member);
}

// src/link.js
var BINDING_TIMEOUT_MS = 1e4;
var MAX_MESSAGE = 64 * 1024;
var HIGH_WATER = 1024 * 1024;
var LOW_WATER = 256 * 1024;
var utf84 = new TextEncoder();
var text2 = new TextDecoder();
function fingerprintOf(sdp, which = "") {
  const m = /^a=fingerprint:sha-256 ([0-9A-Fa-f:]{95})\s*$/m.exec(sdp);
  if (!m) throw new Error(`the ${which}SDP has no sha-256 fingerprint (${sdp.length} bytes)`);
  return Uint8Array.from(m[1].split(":"), (h) => parseInt(h, 16));
}
function bindingMessage(fpSigner, fpVerifier, nonceSigner, nonceVerifier, idVerifier) {
  return concat(fpSigner, fpVerifier, nonceSigner, nonceVerifier, uuidBytes(idVerifier));
}
function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve(void 0);
    });
  });
}
function dialTag() {
  const [hi, lo] = crypto.getRandomValues(new Uint32Array(2));
  return (hi & 2097151) * 2 ** 32 + lo || 1;
}
var Link = class {
  /**
   * @param {{identity: import("./identity.js").Identity, remote: string,
   *   relay: (signal: object) => void, onMessage: (msg: any) => void,
   *   onChunk: (chunk: import("./blobs.js").Chunk) => void, onClose: () => void,
   *   trust: import("./index.js").Trust | null, iceServers?: RTCIceServer[]}} options
   */
  constructor({ identity, remote, relay, onMessage, onChunk, onClose, trust, iceServers = [] }) {
    this.identity = identity;
    this.trustIn = trust;
    this.grant = null;
    this.remoteCredential = null;
    this.remote = remote;
    this.relay = relay;
    this.onMessage = onMessage;
    this.onChunk = onChunk;
    this.inbox = Promise.resolve();
    this.onClose = onClose;
    this.pc = new RTCPeerConnection({ iceServers });
    this.channel = null;
    this.nonce = crypto.getRandomValues(new Uint8Array(32));
    this.trusted = false;
    this.remoteHello = null;
    this.closed = false;
    this.refusal = void 0;
    this.remoteRefused = false;
    this.blameless = false;
    this.helloSent = false;
    this.earlyProof = null;
    this.heard = 0;
    this.dial = 0;
    this.ready = new Promise((resolve, reject) => {
      this.trust = resolve;
      this.fail = reject;
    });
    this.ready.catch(() => {
    });
    this.pc.ondatachannel = (ev) => this.attach(ev.channel);
    this.pc.onconnectionstatechange = () => {
      if (["failed", "closed"].includes(this.pc.connectionState)) this.close();
    };
    setTimeout(() => {
      if (this.trusted) return;
      this.blameless = true;
      this.close(`the link handshake with ${remote} did not finish in 10 s`);
    }, BINDING_TIMEOUT_MS);
  }
  /** Dials the remote: the channel, then the offer with a fresh tag. */
  async dialRemote() {
    this.attach(this.pc.createDataChannel("jobmesh", { ordered: true }));
    this.dial = dialTag();
    await this.pc.setLocalDescription(await this.pc.createOffer());
    await gathered(this.pc);
    this.relay({ kind: "offer", sdp: this.pc.localDescription?.sdp ?? "", dial: this.dial });
  }
  /** The remote's answer to this tab's offer; another dial's is ignored. */
  async answered(sdp, dial) {
    if (dial !== this.dial || this.pc.signalingState !== "have-local-offer") return;
    await this.pc.setRemoteDescription({ type: "answer", sdp });
  }
  /** Answers the remote's offer (its `dial` tag echoed). */
  async answer(sdp, dial) {
    await this.pc.setRemoteDescription({ type: "offer", sdp });
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    await gathered(this.pc);
    this.relay({ kind: "answer", sdp: this.pc.localDescription?.sdp ?? "", dial });
  }
  /** @param {RTCDataChannel} channel */
  attach(channel) {
    if (channel.label !== "jobmesh") return;
    this.channel = channel;
    channel.binaryType = "arraybuffer";
    channel.bufferedAmountLowThreshold = LOW_WATER;
    channel.onopen = () => this.sayHello();
    channel.onmessage = (ev) => {
      this.heard = performance.now();
      this.inbox = this.inbox.then(() => this.receive(ev.data)).catch((e) => this.close(String(e?.message ?? e)));
    };
    channel.onclose = () => this.close();
    this.sayHello();
  }
  /** This end's link_hello, once, as soon as the channel is open. */
  sayHello() {
    if (this.helloSent || this.channel?.readyState !== "open") return;
    this.helloSent = true;
    const credential = this.trustIn ? { credential: this.trustIn.credential } : {};
    this.send({ type: "link_hello", key: this.identity.key, nonce: base64url(this.nonce), ...credential });
  }
  /** The largest message this link may send: what the remote takes, at most 64 KiB. */
  get maxMessage() {
    const remote = this.pc.sctp?.maxMessageSize;
    return remote ? Math.min(remote, MAX_MESSAGE) : MAX_MESSAGE;
  }
  /** Sends one binary frame as it is. @param {Uint8Array} bytes */
  sendBytes(bytes2) {
    if (this.channel?.readyState === "open") this.channel.send(bytes2);
  }
  /** Resolves once the channel holds at most HIGH_WATER bytes (or closed). */
  drained() {
    const channel = this.channel;
    if (!channel || this.closed || channel.bufferedAmount <= HIGH_WATER) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        channel.removeEventListener("bufferedamountlow", done);
        channel.removeEventListener("close", done);
        resolve(void 0);
      };
      channel.addEventListener("bufferedamountlow", done);
      channel.addEventListener("close", done);
    });
  }
  /** Sends one JSON message as a binary frame. @param {object} msg */
  send(msg) {
    if (this.channel?.readyState === "open") this.channel.send(utf84.encode(JSON.stringify(msg)));
  }
  async receive(data) {
    if (typeof data !== "string" && data.byteLength === 0) return;
    if (typeof data !== "string" && new Uint8Array(data, 0, 1)[0] === CHUNK_MAGIC) {
      if (!this.trusted) throw new Error("link refused: a chunk before the link handshake");
      return this.onChunk(decodeChunk(new Uint8Array(data)));
    }
    if ((typeof data === "string" ? data.length : data.byteLength) > MAX_MESSAGE)
      throw new Error(`a message of more than ${MAX_MESSAGE} bytes`);
    const raw = typeof data === "string" ? data : text2.decode(data);
    for (const line of raw.split("\n")) await this.receiveMessage(JSON.parse(line));
  }
  /** One JSON message: the link handshake's, or, once trusted, the tab's. */
  async receiveMessage(msg) {
    if (msg.type === "link_hello" && !this.remoteHello) {
      const key = fromBase64url(String(msg.key));
      if (peerIdOf(key) !== this.remote) throw new Error(`link refused: the key is not ${this.remote}'s`);
      if (this.trustIn) {
        const { pool, poolKey, revoked } = this.trustIn;
        try {
          this.grant = await checkCredential(msg.credential, { pool, poolKey, key: String(msg.key), revoked });
          this.remoteCredential = msg.credential;
        } catch (e) {
          throw new Error(`link refused: ${this.remote}: ${e?.message ?? e}`);
        }
      }
      this.remoteHello = { key, nonce: fromBase64url(String(msg.nonce)) };
      const mine = fingerprintOf(this.pc.localDescription?.sdp ?? "", `local (${this.pc.signalingState}) `);
      const theirs = fingerprintOf(this.pc.remoteDescription?.sdp ?? "", `remote (${this.pc.signalingState}) `);
      const sig = await this.identity.sign(
        PURPOSE.binding,
        bindingMessage(mine, theirs, this.nonce, this.remoteHello.nonce, this.remote)
      );
      this.sayHello();
      this.send({ type: "link_proof", sig: base64url(sig) });
      const early = this.earlyProof;
      this.earlyProof = null;
      if (early) await this.receiveMessage(early);
      return;
    }
    if (msg.type === "link_proof" && !this.remoteHello && !this.earlyProof) {
      this.earlyProof = msg;
      return;
    }
    if (msg.type === "link_proof" && this.remoteHello && !this.trusted) {
      const mine = fingerprintOf(this.pc.localDescription?.sdp ?? "", `local (${this.pc.signalingState}) `);
      const theirs = fingerprintOf(this.pc.remoteDescription?.sdp ?? "", `remote (${this.pc.signalingState}) `);
      const ok = await verify(
        this.remoteHello.key,
        PURPOSE.binding,
        bindingMessage(theirs, mine, this.remoteHello.nonce, this.nonce, this.identity.peerId),
        fromBase64url(String(msg.sig))
      );
      if (!ok) throw new Error(`link refused: ${this.remote}'s proof does not verify over this connection`);
      this.trusted = true;
      this.trust();
      return;
    }
    if (!this.trusted && msg.type === "error") {
      this.remoteRefused = true;
      throw new Error(String(msg.message).slice(0, 512));
    }
    if (!this.trusted) throw new Error(`link refused: ${msg.type} before the link handshake`);
    this.onMessage(msg);
  }
  /** Closes a link the remote went silent on: no one is blamed, it may be dialled again at once. @param {string} why */
  closeSilent(why) {
    this.blameless = true;
    this.close(why);
  }
  /**
   * Closes the link; with `why`, tells the remote (unless the remote's
   * own refusal is the reason). A failed handshake is kept as `refusal`.
   * @param {string} [why]
   */
  close(why) {
    if (this.closed) return;
    this.closed = true;
    if (why) {
      console.warn(`jobmesh: ${why}`);
      if (!this.trusted && !this.blameless) this.refusal = why;
      if (!this.remoteRefused) this.send({ type: "error", job_id: null, message: why.replace(/^link refused:/, `link refused by ${this.identity.peerId}:`) });
    }
    this.fail(new Error(why ?? `the link to ${this.remote} closed`));
    this.channel?.close();
    this.pc.close();
    this.onClose();
  }
};

// src/view.js
var PoolView = class {
  constructor() {
    this.peers = /* @__PURE__ */ new Map();
    this.synced = false;
    this.confirming = null;
  }
  /** A new session (a welcome): the view is stale until its pages sync. */
  welcome() {
    this.synced = false;
  }
  /**
   * Applies one `view` page.
   * @param {{reset?: boolean, left?: string[], peers?: PeerInfo[], synced?: boolean}} page
   * @returns {Change}
   */
  apply(page) {
    const change = { joined: [], changed: [], left: [] };
    if (page.reset) this.confirming = /* @__PURE__ */ new Set();
    for (const id of page.left ?? []) {
      if (this.peers.delete(id)) change.left.push(id);
    }
    for (const peer of page.peers ?? []) {
      this.confirming?.add(peer.id);
      const old = this.peers.get(peer.id);
      if (old === void 0) {
        this.peers.set(peer.id, peer);
        change.joined.push(peer);
      } else {
        const stats = (peer.stats.seq ?? 0) < (old.stats.seq ?? 0) ? old.stats : peer.stats;
        const now = { ...peer, stats };
        this.peers.set(peer.id, now);
        change.changed.push(now);
      }
    }
    this.synced = Boolean(page.synced);
    if (this.synced && this.confirming) {
      for (const id of [...this.peers.keys()]) {
        if (!this.confirming.has(id)) {
          this.peers.delete(id);
          change.left.push(id);
        }
      }
      this.confirming = null;
    }
    return change;
  }
  /** The members that run jobs (slots > 0), by name. */
  workers() {
    return [...this.peers.values()].filter((p) => p.stats.slots > 0).sort((a, b) => a.name.localeCompare(b.name));
  }
};

// src/signal.js
var PROTOCOL_VERSION = 7;
var MAX_SERVER_MESSAGE = 1024 * 1024;
var RECONNECT_MIN_MS = 250;
var RECONNECT_MAX_MS = 1e4;
var FATAL = /* @__PURE__ */ new Set(["not_admitted", "bad_proof", "wrong_version", "name_taken"]);
var SignalError = class extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
};
var SignalClient = class extends EventTarget {
  /**
   * @param {string} url `ws://host:port/ws` or `wss://…`
   * @param {import("./identity.js").Identity} identity
   * @param {Join} join
   */
  constructor(url, identity, join) {
    super();
    this.url = url;
    this.identity = identity;
    this.join = join;
    this.view = new PoolView();
    this.ws = null;
    this.iceServers = [];
    this.leaving = false;
    this.backoff = RECONNECT_MIN_MS;
    this.refused = null;
  }
  /** Connects and joins; resolves on the welcome, rejects with why not. */
  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      let joined = false;
      const fail = (e) => {
        if (!joined) reject(e);
        else this.dispatchEvent(new CustomEvent("error", { detail: e }));
      };
      ws.onmessage = async (ev) => {
        if (typeof ev.data !== "string" || ev.data.length > MAX_SERVER_MESSAGE) {
          return fail(new Error("the signal-server sent a frame that is not a JSON text frame within 1 MiB"));
        }
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch (e) {
          return fail(new Error(`the signal-server sent bad JSON: ${e}`));
        }
        switch (msg.type) {
          case "challenge":
            return this.send(await this.hello(String(msg.nonce)));
          case "welcome":
            joined = true;
            this.iceServers = Array.isArray(msg.ice_servers) ? msg.ice_servers.slice(0, 8) : [];
            this.backoff = RECONNECT_MIN_MS;
            this.view.welcome();
            this.dispatchEvent(new CustomEvent("welcome", { detail: msg }));
            return resolve(msg);
          case "ice_servers":
            if (Array.isArray(msg.ice_servers)) this.iceServers = msg.ice_servers.slice(0, 8);
            return;
          case "view": {
            const change = this.view.apply(msg);
            this.dispatchEvent(new CustomEvent("view", { detail: change }));
            return;
          }
          case "error": {
            const e = new SignalError(String(msg.code), String(msg.message));
            if (FATAL.has(e.code)) this.refused = e;
            return fail(e);
          }
          default:
            this.dispatchEvent(new CustomEvent(String(msg.type), { detail: msg }));
        }
      };
      ws.onerror = () => fail(new Error(`cannot reach the signal-server at ${this.url}`));
      ws.onclose = (ev) => {
        if (!joined) reject(this.refused ?? new Error(`the signal-server at ${this.url} closed the connection (${ev.code} ${ev.reason})`));
        this.dispatchEvent(new CustomEvent("closed", { detail: { code: ev.code, reason: ev.reason } }));
        if (joined) this.reconnect();
      };
    });
  }
  /** The hello for challenge `nonce`, its proof signed. @param {string} nonce */
  async hello(nonce) {
    const { name, pool, capabilities, slots, credential, view } = this.join;
    const proof = await this.identity.sign(PURPOSE.admission, admissionMessage(nonce, pool, this.identity.peerId));
    return {
      type: "hello",
      version: PROTOCOL_VERSION,
      peer_id: this.identity.peerId,
      name,
      pool,
      capabilities,
      slots,
      key: this.identity.key,
      proof: base64url(proof),
      ...credential ? { credential } : {},
      // Only the workers of these capabilities (docs/protocol.md, "Filtered views").
      ...view ? { view } : {}
    };
  }
  /** Sends one message, if connected. @param {object} msg */
  send(msg) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }
  /** Connects again after a pause that doubles each failure (with jitter), until joined, refused or closed. */
  reconnect() {
    if (this.leaving || this.refused) return;
    const wait = this.backoff * (0.5 + Math.random() / 2);
    this.backoff = Math.min(RECONNECT_MAX_MS, this.backoff * 2);
    setTimeout(() => {
      if (this.leaving) return;
      this.connect().catch((e) => {
        console.warn(`jobmesh: reconnecting to ${this.url}: ${e?.message ?? e}`);
        if (this.refused) this.dispatchEvent(new CustomEvent("refused", { detail: this.refused }));
        else this.reconnect();
      });
    }, wait);
  }
  close() {
    this.leaving = true;
    this.ws?.close(1e3, "leaving");
  }
};

// src/submitter.js
var LEASE_MS = 5e3;
var ELSEWHERE = /* @__PURE__ */ new Set(["busy", "unknown_capability", "draining"]);
var RETRY_ROUND_MS = 200;
var DEFAULT_MAX_OUTPUT_BYTES = 1024 ** 3;
var JobError = class extends Error {
  /** @param {string} status @param {string} message */
  constructor(status, message) {
    super(message);
    this.status = status;
  }
};
function pick(workers, capability, skip, strategy, turn) {
  const capable = workers.filter(
    (w) => w.capabilities.includes(capability) && !skip.has(w.id) && !w.stats.draining && w.stats.slots > 0
  );
  if (typeof strategy === "function") return strategy(capable, { type: capability });
  const roomy = capable.filter((w) => w.stats.running < w.stats.slots);
  const from = roomy.length ? roomy : capable;
  if (!from.length) return void 0;
  switch (strategy ?? "least-loaded") {
    case "random":
      return from[Math.floor(Math.random() * from.length)];
    case "round-robin":
      return from[turn.next++ % from.length];
    default:
      return from.reduce((a, b) => b.stats.running / b.stats.slots < a.stats.running / a.stats.slots ? b : a);
  }
}
var Ticket = class {
  constructor(id) {
    this.id = id;
    this.files = [];
    this.worker = null;
    this.onProgress = null;
    this.onComplete = null;
    this.onFailed = null;
    this.cancel = () => {
    };
    this.result = new Promise((resolve, reject) => {
      this.settle = (value, error) => {
        if (error) {
          this.onFailed?.(error);
          reject(error);
        } else {
          this.onComplete?.(value);
          resolve(value);
        }
      };
    });
    this.result.catch(() => {
    });
  }
};
function submit(spec, pool) {
  const jobId = crypto.randomUUID();
  const ticket = new Ticket(jobId);
  const timeoutMs = Math.max(1, Math.round((spec.timeout ?? 60) * 1e3));
  let retries = spec.retries ?? 2;
  let attempt = 0;
  let current = null;
  let done = false;
  const skip = /* @__PURE__ */ new Set();
  let lease = 0;
  let deadline = 0;
  let problem = null;
  const denied = /* @__PURE__ */ new Set();
  const inputs = asBlobs(spec.files ?? []);
  const described = describe(inputs);
  described.catch(() => {
  });
  const send = (m) => current?.link.send(m);
  const end = (value, error) => {
    if (done) return;
    done = true;
    clearTimeout(lease);
    clearTimeout(deadline);
    pool.listen(jobId, null);
    ticket.settle(value, error);
  };
  const renewLease = (ms = LEASE_MS) => {
    clearTimeout(lease);
    lease = setTimeout(() => {
      const quiet = performance.now() - (current?.link.heard ?? 0);
      if (current && quiet < LEASE_MS) return renewLease(LEASE_MS - quiet);
      const silent = current;
      send({ type: "cancel", job_id: jobId, attempt });
      again(`worker ${silent?.name} went silent`, true);
      silent?.link.closeSilent?.(`nothing heard from worker ${silent.name} for ${LEASE_MS / 1e3} s: its link is closed and will be dialled again`);
    }, ms);
  };
  const again = (why, spend) => {
    if (done) return;
    if (spend && retries-- <= 0) return end(void 0, new JobError("failed", why));
    if (current) skip.add(current.worker);
    current = null;
    place();
  };
  const place = async () => {
    const allowed = () => pool.workers().filter((w) => !denied.has(w.id));
    let worker = pick(allowed(), spec.type, skip, spec.strategy, pool.turn);
    if (!worker && skip.size) {
      skip.clear();
      await new Promise((resolve) => setTimeout(resolve, RETRY_ROUND_MS));
      if (done) return;
      worker = pick(allowed(), spec.type, skip, spec.strategy, pool.turn);
    }
    if (!worker)
      return end(void 0, problem ? new JobError("failed", problem) : new JobError("no_worker", `no worker in the pool runs "${spec.type}"`));
    await offer(worker);
  };
  const offer = async (worker) => {
    attempt += 1;
    const mine = attempt;
    let blobs;
    try {
      blobs = await described;
    } catch (e) {
      return end(void 0, new JobError("rejected", `the input files could not be read: ${e?.message ?? e}`));
    }
    try {
      const link = await pool.linkTo(worker.id);
      if (done || mine !== attempt) return;
      if (link.grant && !allows(link.grant, "worker", spec.type)) {
        denied.add(worker.id);
        problem = `worker ${worker.name}'s credential does not let it run "${spec.type}"`;
        return again(problem, false);
      }
      current = { worker: worker.id, name: worker.name, link, outputs: null };
      if (blobs.length) send({ type: "blobs", job_id: jobId, attempt, direction: "input", blobs });
      send({ type: "submit", job_id: jobId, attempt, capability: spec.type, input: spec.payload ?? {}, timeout_ms: timeoutMs });
      renewLease();
    } catch (e) {
      skip.add(worker.id);
      problem = `could not reach or verify the identity of worker ${worker.name}: ${e?.message ?? e}`;
      if (mine === attempt) again(problem, false);
    }
  };
  const failAttempt = (why, retryable) => {
    send({ type: "cancel", job_id: jobId, attempt });
    if (retryable) again(why, true);
    else end(void 0, new JobError("failed", why));
  };
  pool.listen(jobId, (from, msg) => {
    if (done) return;
    if (msg.type === "held") {
      if (current?.worker === from && msg.attempt === attempt) return;
      send({ type: "cancel", job_id: jobId, attempt });
      const name = pool.workers().find((w) => w.id === from)?.name ?? from;
      current = null;
      return void offer({ id: from, name });
    }
    if (msg.type === "closed") {
      if (current?.worker === from) again(`the link to worker ${current.name} closed`, true);
      return;
    }
    if (!current || from !== current.worker || msg.attempt !== attempt) return;
    renewLease();
    switch (msg.type) {
      case "accepted": {
        if (!inputs.length) return;
        const mine = current;
        const sending = () => {
          if (done || current !== mine) return false;
          renewLease();
          return true;
        };
        sendBlobs(mine.link, { direction: 0, jobId, attempt }, inputs, sending).catch((e) => {
          if (current === mine) failAttempt(`the input files could not be sent: ${e?.message ?? e}`, false);
        });
        return;
      }
      case "progress":
        if (Object.keys(msg.progress ?? {}).length) ticket.onProgress?.(msg.progress);
        return;
      case "rejected":
        if (ELSEWHERE.has(msg.reason)) return again(msg.message, false);
        return end(void 0, new JobError("rejected", String(msg.message)));
      case "blobs": {
        if (msg.direction !== "output") return;
        const problem2 = problemWith(msg.blobs, spec.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES);
        if (problem2) return failAttempt(`the result's files were refused: ${problem2}`, false);
        current.outputs = new Incoming(msg.blobs);
        return;
      }
      case "chunk":
        if (msg.chunk.direction !== 1 || !current.outputs) return;
        try {
          current.outputs.accept(msg.chunk);
        } catch (e) {
          failAttempt(String(e?.message ?? e), true);
        }
        return;
      case "result": {
        send({ type: "received", receipts: [{ job_id: jobId, attempt }] });
        const o = msg.outcome ?? {};
        if (o.status === "ok") {
          const outputs = current.outputs;
          if (outputs && !outputs.complete) return again("the result's files did not all arrive", true);
          ticket.files = outputs?.files() ?? [];
          ticket.worker = { id: current.worker, name: current.name };
          return end(o.value, null);
        }
        if (o.retryable) return again(String(o.message), true);
        return end(void 0, new JobError("failed", String(o.message)));
      }
      default:
        return;
    }
  });
  deadline = setTimeout(() => {
    send({ type: "cancel", job_id: jobId, attempt });
    end(void 0, new JobError("timed_out", `timed out after ${timeoutMs} ms`));
  }, timeoutMs * ((spec.retries ?? 2) + 1));
  ticket.cancel = () => {
    send({ type: "cancel", job_id: jobId, attempt });
    end(void 0, new JobError("cancelled", "cancelled"));
  };
  place();
  return ticket;
}

// src/observe.js
var MAX_OBSERVERS = 32;
var OBSERVER_QUEUE = 256;
var OBSERVED_HISTORY = 64;
var MAX_OBSERVED_BATCH = 32;
var MAX_TRACKED = 4096;
var utf85 = new TextEncoder();
function cut(text3) {
  let s = String(text3);
  while (utf85.encode(s).length > 256) s = s.slice(0, -1);
  return s;
}
var Observers = class {
  constructor() {
    this.subscribers = /* @__PURE__ */ new Map();
    this.recent = [];
    this.running = /* @__PURE__ */ new Map();
    this.flushing = false;
  }
  /** `peer` subscribes (false past {@link MAX_OBSERVERS}); with `history`, the recent events come first. */
  subscribe(peer, send, history) {
    const old = this.subscribers.get(peer);
    if (!old && this.subscribers.size >= MAX_OBSERVERS) return false;
    const sub = old ?? { send, queue: [], dropped: 0 };
    sub.send = send;
    if (history) sub.queue.push(...this.recent);
    this.subscribers.set(peer, sub);
    this.schedule();
    return true;
  }
  unsubscribe(peer) {
    this.subscribers.delete(peer);
  }
  started(jobId, attempt, capability, submitter) {
    const job = { attempt, capability, submitter, started: Date.now() };
    this.running.set(jobId, job);
    this.record(jobId, job, "started");
  }
  progress(jobId, percent) {
    const job = this.running.get(jobId);
    if (job) this.record(jobId, job, "progress", percent === void 0 ? {} : { percent });
  }
  /** A job ended: `completed`, `failed` (with its error) or `cancelled`. */
  ended(jobId, event, error) {
    const job = this.running.get(jobId);
    if (!job) return;
    this.running.delete(jobId);
    this.record(jobId, job, event, { run_ms: Date.now() - job.started, ...error === void 0 ? {} : { error: cut(error) } });
  }
  record(jobId, job, event, extra = {}) {
    const e = { job_id: jobId, attempt: job.attempt, capability: job.capability, submitter: job.submitter, at_ms: Date.now(), event, ...extra };
    for (const sub of this.subscribers.values()) {
      if (sub.queue.length >= OBSERVER_QUEUE) {
        sub.queue.shift();
        sub.dropped += 1;
      }
      sub.queue.push(e);
    }
    if (this.recent.length >= OBSERVED_HISTORY) this.recent.shift();
    this.recent.push(e);
    this.schedule();
  }
  /** Flushes once the current task is done: events of one moment go in one batch. */
  schedule() {
    if (this.flushing || this.subscribers.size === 0) return;
    this.flushing = true;
    queueMicrotask(() => {
      this.flushing = false;
      this.flush();
    });
  }
  flush() {
    for (const sub of this.subscribers.values()) {
      while (sub.queue.length || sub.dropped) {
        const events = sub.queue.splice(0, MAX_OBSERVED_BATCH);
        sub.send({ type: "observed", events, ...sub.dropped ? { dropped: sub.dropped } : {} });
        sub.dropped = 0;
      }
    }
  }
};
var Watching = class {
  constructor() {
    this.subscribed = /* @__PURE__ */ new Set();
    this.running = /* @__PURE__ */ new Map();
  }
  /** An `observed` batch from `worker`: the events to report, `lost` ones none. */
  observed(worker, events) {
    events = events.filter((e) => typeof e?.job_id === "string" && typeof e.event === "string");
    for (const e of events) {
      if (e.event === "started" || e.event === "progress") {
        if (this.running.size >= MAX_TRACKED && !this.running.has(e.job_id)) this.running.delete(this.running.keys().next().value);
        this.running.set(e.job_id, { worker, event: e });
      } else this.running.delete(e.job_id);
    }
    return events;
  }
  /** `worker` left the pool: `lost` events for its jobs that were running. */
  left(worker) {
    this.subscribed.delete(worker);
    const lost = [];
    for (const [jobId, r] of this.running) {
      if (r.worker !== worker) continue;
      this.running.delete(jobId);
      const e = { ...r.event, at_ms: Date.now(), event: "lost" };
      delete e.percent;
      lost.push(e);
    }
    return lost;
  }
};

// src/ticker.js
var SOURCE = "onmessage = (e) => setInterval(() => postMessage(0), e.data);";
function every(ms, fn) {
  let interval = 0;
  const fallback = () => {
    if (!interval) interval = setInterval(fn, ms);
  };
  let worker = null;
  if (typeof Worker === "function" && typeof URL.createObjectURL === "function") {
    try {
      const url = URL.createObjectURL(new Blob([SOURCE], { type: "text/javascript" }));
      worker = new Worker(url);
      URL.revokeObjectURL(url);
      worker.onmessage = () => fn();
      worker.onerror = () => {
        worker?.terminate();
        worker = null;
        fallback();
      };
      worker.postMessage(ms);
    } catch {
      worker = null;
      fallback();
    }
  } else fallback();
  return () => {
    worker?.terminate();
    clearInterval(interval);
  };
}

// src/worker.js
var HEARTBEAT_INTERVAL_MS = 1e3;
var MAX_KEPT_RESULTS = 1024;
var MAX_ERROR_LEN = 4096;
var DEFAULT_MAX_INPUT_BYTES = 1024 ** 3;
var RECEIVING_PROGRESS_MS = 250;
var Stopped = class extends Error {
};
var TimedOut = class extends Error {
};
var WorkerCore = class {
  /**
   * @param {{capabilities: string[], slots: number, handler: Handler,
   *   onStats: (stats: object) => void, maxInputBytes?: number}} options
   */
  constructor({ capabilities, slots, handler, onStats, maxInputBytes }) {
    this.capabilities = capabilities;
    this.slots = slots;
    this.handler = handler;
    this.onStats = onStats;
    this.maxInputBytes = maxInputBytes ?? DEFAULT_MAX_INPUT_BYTES;
    this.running = /* @__PURE__ */ new Map();
    this.announced = /* @__PURE__ */ new Map();
    this.kept = /* @__PURE__ */ new Map();
    this.draining = false;
    this.observers = new Observers();
    this.idle = () => {
    };
    this.completed = 0;
    this.failed = 0;
    this.seq = 0;
    this.stopTicking = every(HEARTBEAT_INTERVAL_MS / 2, () => this.heartbeats());
  }
  /** The stats the pool sees. */
  stats() {
    const draining = this.draining ? { draining: true } : {};
    return { slots: this.slots, running: this.running.size, queued: 0, completed: this.completed, failed: this.failed, seq: this.seq, ...draining };
  }
  /** Takes no new job (the pool sees it draining); resolves once none runs. */
  drain() {
    this.draining = true;
    this.changed();
    return new Promise((resolve) => {
      this.idle = () => this.running.size === 0 && resolve(void 0);
      this.idle();
    });
  }
  changed() {
    this.seq += 1;
    this.onStats(this.stats());
  }
  /**
   * A message from peer `from`; `reply` answers on the same link.
   * @param {string} from @param {any} msg @param {Reply} reply
   */
  handle(from, msg, reply) {
    switch (msg.type) {
      case "blobs":
        if (msg.direction !== "input") return;
        this.announced.set(from, { jobId: msg.job_id, attempt: msg.attempt, blobs: msg.blobs });
        return;
      case "submit": {
        const blobs = this.announced.get(from);
        this.announced.delete(from);
        return this.submit(from, msg, reply, blobs?.jobId === msg.job_id && blobs.attempt === msg.attempt ? blobs.blobs : []);
      }
      case "cancel": {
        const job = this.running.get(msg.job_id);
        if (job && job.attempt === msg.attempt && job.from === from) job.abort.abort(new Stopped("cancelled by its submitter"));
        return;
      }
      case "received":
        for (const r of Array.isArray(msg.receipts) ? msg.receipts : []) {
          const kept = this.kept.get(r?.job_id);
          if (kept?.attempt === r.attempt && kept.from === from) this.kept.delete(r.job_id);
        }
        return;
      case "observe":
        if (reply.grant && !allows(reply.grant, "observer")) return;
        if (!this.observers.subscribe(from, (m) => reply.send(m), msg.history === true))
          console.warn(`jobmesh: ${from} asked to observe, but ${this.observers.subscribers.size} already do`);
        return;
      case "unobserve":
        return this.observers.unsubscribe(from);
      default:
        return;
    }
  }
  /** An input chunk from peer `from`. @param {string} from @param {import("./blobs.js").Chunk} chunk */
  chunk(from, chunk) {
    const job = this.running.get(chunk.jobId);
    if (!job?.incoming || job.from !== from || job.attempt !== chunk.attempt || !job.start) return;
    try {
      job.incoming.accept(chunk);
    } catch (e) {
      return job.abort.abort(e);
    }
    const now = Date.now();
    if (now - job.lastSent >= RECEIVING_PROGRESS_MS) {
      job.lastSent = now;
      const percent = Math.floor(100 * job.incoming.bytes / Math.max(1, job.incoming.total));
      job.reply.send({ type: "progress", job_id: chunk.jobId, attempt: job.attempt, progress: { stage: "receiving input", percent } });
    }
    if (job.incoming.complete) job.start();
  }
  submit(from, msg, reply, blobs) {
    const { job_id: jobId, attempt, capability, input } = msg;
    const reject = (reason, message) => reply.send({ type: "rejected", job_id: jobId, attempt, reason, message });
    if (reply.grant && !allows(reply.grant, "submitter", capability))
      return reject("forbidden", `the submitter's credential does not let it submit "${capability}" jobs`);
    if (!this.capabilities.includes(capability)) return reject("unknown_capability", `this tab does not run "${capability}"`);
    const held = this.running.get(jobId) ?? this.kept.get(jobId);
    if (held && held.from === from) return this.reattach(jobId, attempt, reply);
    if (held) return reject("busy", `job ${jobId} is held here for another submitter`);
    if (this.draining) return reject("draining", "this tab is leaving the pool");
    if (this.running.size >= this.slots) return reject("busy", `all ${this.slots} slots are busy`);
    const problem = problemWith(blobs, this.maxInputBytes);
    if (problem) return reject("bad_input", `input blobs refused: ${problem}`);
    const abort = new AbortController();
    const job = { attempt, from, abort, reply, lastSent: Date.now(), incoming: new Incoming(blobs), start: null };
    this.running.set(jobId, job);
    reply.send({ type: "accepted", job_id: jobId, attempt });
    this.observers.started(jobId, attempt, capability, from);
    this.changed();
    const timeout = setTimeout(() => abort.abort(new TimedOut(`timed out after ${msg.timeout_ms} ms on this tab`)), msg.timeout_ms);
    const ready = new Promise((resolve, reject2) => {
      job.start = () => {
        job.start = null;
        resolve(void 0);
      };
      abort.signal.addEventListener("abort", () => reject2(abort.signal.reason));
      if (job.incoming?.complete) job.start();
    });
    ready.catch(() => {
    });
    this.run(jobId, job, capability, input, ready).then(({ outcome, outputs }) => {
      clearTimeout(timeout);
      return this.finish(jobId, job, outcome, outputs);
    });
  }
  /** Waits for the input, then runs the handler; never throws. */
  async run(jobId, job, capability, input, ready) {
    const outputs = [];
    try {
      await ready;
      job.abort.signal.throwIfAborted();
      const files = job.incoming.files();
      job.incoming = null;
      const progress = (p) => {
        const percent = p.percent === void 0 ? void 0 : Math.max(0, Math.min(100, Math.round(p.percent)));
        job.lastSent = Date.now();
        job.reply.send({ type: "progress", job_id: jobId, attempt: job.attempt, progress: { ...p, ...percent === void 0 ? {} : { percent } } });
        this.observers.progress(jobId, percent);
      };
      const output = (file) => outputs.push(...asBlobs([file]));
      const ctx = { jobId, attempt: job.attempt, capability, signal: job.abort.signal, files, output, progress };
      let value = await this.handler(input, ctx);
      if (value instanceof Blob || value instanceof ArrayBuffer || ArrayBuffer.isView(value)) {
        output(value);
        value = null;
      }
      return { outcome: { status: "ok", value: value ?? null }, outputs };
    } catch (e) {
      const why = job.abort.signal.reason ?? e;
      const retryable = why instanceof TransferError || why instanceof TimedOut;
      return { outcome: { status: "err", message: String(why?.message ?? why).slice(0, MAX_ERROR_LEN), retryable }, outputs: [] };
    }
  }
  /** A job's handler ended: its result is kept, then delivered. */
  async finish(jobId, job, outcome, outputs) {
    let metas = [];
    if (outcome.status === "ok" && outputs.length) {
      try {
        if (outputs.length > 16) throw new Error(`${outputs.length} output files, at most 16`);
        metas = await describe(outputs);
      } catch (e) {
        outcome = { status: "err", message: `the output files could not be read: ${e?.message ?? e}`, retryable: false };
        outputs = [];
      }
    }
    const stopped = job.abort.signal.reason instanceof Stopped;
    this.running.delete(jobId);
    if (stopped) this.observers.ended(jobId, "cancelled");
    else this.observers.ended(jobId, outcome.status === "ok" ? "completed" : "failed", outcome.message);
    if (outcome.status === "ok") this.completed += 1;
    else this.failed += 1;
    this.seq += 1;
    if (!(stopped && outcome.status === "err")) {
      if (this.kept.size >= MAX_KEPT_RESULTS) this.kept.delete(this.kept.keys().next().value);
      const kept = { from: job.from, attempt: job.attempt, outcome, outputs, metas, reply: job.reply };
      this.kept.set(jobId, kept);
      this.deliver(jobId, kept);
    }
    this.onStats(this.stats());
    this.idle();
  }
  /** Sends a kept result's output blobs, then the result, under its attempt. */
  async deliver(jobId, kept) {
    const { attempt, reply } = kept;
    if (kept.metas.length) {
      reply.send({ type: "blobs", job_id: jobId, attempt, direction: "output", blobs: kept.metas });
      const current = () => this.kept.get(jobId) === kept && kept.attempt === attempt;
      if (!await sendBlobs(reply, { direction: 1, jobId, attempt }, kept.outputs, current)) return;
    }
    const load = { running: this.running.size, slots: this.slots, seq: this.seq };
    reply.send({ type: "result", job_id: jobId, attempt, outcome: kept.outcome, load });
  }
  /**
   * A link to `from` is up: `held` for each job this worker holds for it,
   * running or finished, so that it can re-attach.
   * @param {string} from @param {Reply} reply
   */
  linked(from, reply) {
    for (const [jobId, job] of this.running) if (job.from === from) reply.send({ type: "held", job_id: jobId, attempt: job.attempt });
    for (const [jobId, kept] of this.kept) if (kept.from === from) reply.send({ type: "held", job_id: jobId, attempt: kept.attempt });
  }
  /** A submit of a job held for its submitter: it goes on, or is sent again, under the new attempt. */
  reattach(jobId, attempt, reply) {
    const job = this.running.get(jobId);
    reply.send({ type: "accepted", job_id: jobId, attempt });
    if (job) {
      job.attempt = attempt;
      job.reply = reply;
      job.lastSent = Date.now();
      return;
    }
    const kept = this.kept.get(jobId);
    if (!kept) return;
    kept.attempt = attempt;
    kept.reply = reply;
    this.deliver(jobId, kept);
  }
  /** An empty progress for each job not spoken of for a second. */
  heartbeats() {
    const now = Date.now();
    for (const [jobId, job] of this.running) {
      if (now - job.lastSent >= HEARTBEAT_INTERVAL_MS - 100) {
        job.lastSent = now;
        job.reply.send({ type: "progress", job_id: jobId, attempt: job.attempt, progress: {} });
      }
    }
  }
  close() {
    this.stopTicking();
    for (const job of this.running.values()) job.abort.abort(new Stopped("the tab is leaving"));
  }
};

// src/index.js
var REPLIES = /* @__PURE__ */ new Set(["accepted", "rejected", "progress", "blobs", "result"]);
var UNTRUSTED_FOR_MS = 6e4;
var UNREACHABLE_FOR_MS = 5e3;
var Pool = class extends EventTarget {
  /** @param {SignalClient} signal @param {WorkerCore | null} worker @param {Trust | null} trust @private */
  constructor(signal, worker, trust) {
    super();
    this.signal = signal;
    this.trust = trust;
    this.passedOver = /* @__PURE__ */ new Map();
    signal.addEventListener("welcome", () => worker && signal.send({ type: "stats", stats: worker.stats() }));
    signal.addEventListener("revocations", (ev) => this.onRevocations(
      /** @type {CustomEvent} */
      ev.detail.list
    ));
    this.worker = worker;
    this.links = /* @__PURE__ */ new Map();
    this.jobs = /* @__PURE__ */ new Map();
    this.turn = { next: 0 };
    this.loopback = new Loopback(this);
    this.tickets = /* @__PURE__ */ new Set();
    this.closing = false;
    signal.addEventListener("relayed", (ev) => this.onRelayed(
      /** @type {CustomEvent} */
      ev.detail
    ));
    this.onWorkerJoin = null;
    this.onWorkerLeave = null;
    this.watching = new Watching();
    this.jobEventHandler = null;
    signal.addEventListener("view", (ev) => {
      const change = (
        /** @type {CustomEvent} */
        ev.detail
      );
      for (const p of change.joined) if (p.stats.slots > 0) this.onWorkerJoin?.(p);
      for (const id of change.left) {
        this.onWorkerLeave?.(id);
        for (const e of this.watching.left(id)) this.jobEventHandler?.({ ...e, worker: { id, name: null } });
      }
      if (this.jobEventHandler) this.observeAll();
      this.dispatchEvent(new CustomEvent("view", { detail: change }));
    });
  }
  /** A handshake message relayed from another peer: an offer opens a
   * link, an answer completes this tab's dial. */
  onRelayed({ from, signal }) {
    if (signal?.kind === "answer") {
      this.links.get(from)?.answered(String(signal.sdp), signal.dial ?? 0).catch((e) => this.links.get(from)?.close(String(e)));
      return;
    }
    if (signal?.kind !== "offer") return;
    const mine = this.links.get(from);
    if (mine && !mine.trusted && mine.dial && this.id < from) return;
    const link = this.newLink(from);
    mine?.close();
    link.answer(String(signal.sdp), signal.dial ?? 0).catch((e) => link.close(`could not answer ${from}: ${e}`));
  }
  /** A link to `remote`, its messages routed to the worker or to jobs. @param {string} remote */
  newLink(remote) {
    const link = new Link({
      identity: this.signal.identity,
      remote,
      relay: (signal) => this.signal.send({ type: "relay", to: remote, signal }),
      onMessage: (msg) => this.route(remote, msg, link),
      onChunk: (chunk) => this.routeChunk(remote, chunk),
      onClose: () => {
        if (this.links.get(remote) === link) this.links.delete(remote);
        this.worker?.observers.unsubscribe(remote);
        for (const job of [...this.jobs.values()]) job(remote, { type: "closed" });
        this.watching.subscribed.delete(remote);
        if (link.refusal) this.passOver(remote, link.refusal, UNTRUSTED_FOR_MS);
      },
      trust: this.trust,
      iceServers: this.signal.iceServers.map(({ urls, username, credential }) => ({ urls, username, credential }))
    });
    this.links.set(remote, link);
    link.ready.then(() => this.worker?.linked(remote, link)).catch(() => {
    });
    return link;
  }
  /** A message from `remote` over `link`: a reply to one of this tab's jobs, or for its worker. */
  route(remote, msg, link) {
    if (msg.type === "observed") return this.onObserved(remote, msg);
    if (msg.type === "held") {
      const job = this.jobs.get(msg.job_id);
      if (job) return job(remote, msg);
      return link.send({ type: "received", receipts: [{ job_id: msg.job_id, attempt: msg.attempt }] });
    }
    const toSubmitter = REPLIES.has(msg.type) && (msg.type !== "blobs" || msg.direction === "output");
    if (toSubmitter) this.jobs.get(msg.job_id)?.(remote, msg);
    else this.worker?.handle(remote, msg, link);
  }
  /** A chunk from `remote`: input for the worker, or output of one of this tab's jobs. */
  routeChunk(remote, chunk) {
    if (chunk.direction === 0) return this.worker?.chunk(remote, chunk);
    this.jobs.get(chunk.jobId)?.(remote, { type: "chunk", job_id: chunk.jobId, attempt: chunk.attempt, chunk });
  }
  /** A trusted link to `remote`, dialling it if there is none; to this tab itself, the loopback. @param {string} remote */
  async linkTo(remote) {
    if (remote === this.id) return this.loopback;
    let link = this.links.get(remote);
    if (!link) {
      link = this.newLink(remote);
      await link.dialRemote();
    }
    for (; ; ) {
      try {
        await link.ready;
        return link;
      } catch (e) {
        const next = this.links.get(remote);
        if (next && next !== link && !next.closed) {
          link = next;
          continue;
        }
        if (!link.refusal) this.passOver(remote, String(e?.message ?? e), UNREACHABLE_FOR_MS);
        throw e;
      }
    }
  }
  /** Offers `peer` no new job for `ms`. */
  passOver(peer, why, ms) {
    this.passedOver.set(peer, { until: Date.now() + ms, why });
  }
  /** The workers a job may go to now: not passed over. */
  candidates() {
    const now = Date.now();
    for (const [id, p] of this.passedOver) if (p.until <= now) this.passedOver.delete(id);
    return this.workers.filter((w) => !this.passedOver.has(w.id));
  }
  /** A revocation list from the signal-server: kept if the owner signed it, and the links to withdrawn members close. */
  async onRevocations(list) {
    if (!this.trust || (list?.seq ?? -1) <= (this.trust.revoked?.seq ?? -1)) return;
    try {
      await verifyRevocations(list, this.trust.pool, this.trust.poolKey);
    } catch (e) {
      return console.warn(`jobmesh: a revocation list was ignored: ${e?.message ?? e}`);
    }
    this.trust.revoked = list;
    for (const link of this.links.values()) {
      if (link.remoteCredential && revokes(list, link.remoteCredential)) link.close(`link refused: ${link.remote}'s credential was revoked by the pool's owner`);
    }
  }
  /**
   * Submits a job to the pool: a capable worker runs it (another tab or a
   * daemon), chosen by `strategy` (`least-loaded` by default, `random`,
   * `round-robin`, or a function of the capable workers).
   * @param {import("./submitter.js").JobSpec} spec
   */
  submit(spec) {
    if (this.closing) throw new Error("the pool is closing: it takes no new jobs");
    if (this.trust && !allows(this.trust.grant, "submitter", spec.type))
      throw new Error(`this tab's credential does not let it submit "${spec.type}" jobs in pool ${this.trust.pool}`);
    const ticket = submit(spec, {
      workers: () => this.candidates(),
      linkTo: (id) => this.linkTo(id),
      listen: (jobId, on) => on ? this.jobs.set(jobId, on) : this.jobs.delete(jobId),
      turn: this.turn
    });
    this.tickets.add(ticket);
    ticket.result.finally(() => this.tickets.delete(ticket)).catch(() => {
    });
    return ticket;
  }
  /**
   * Called with every job event of every worker in the pool (observing
   * them all while set): `{job_id, attempt, capability, submitter, at_ms,
   * event, percent?, run_ms?, error?, worker: {id, name}}`, `event` one of
   * `started`, `progress`, `completed`, `failed`, `cancelled`, and `lost`
   * for the jobs of a worker that left the pool while they ran. Events a
   * slow tab missed are counted in `dropped` on the next one.
   * @param {((event: object) => void) | null} handler
   */
  set onJobEvent(handler) {
    const was = this.jobEventHandler;
    this.jobEventHandler = handler;
    if (handler && !was) this.observeAll();
    if (!handler && was) {
      for (const id of this.watching.subscribed) (id === this.id ? this.loopback : this.links.get(id))?.send({ type: "unobserve" });
      this.watching.subscribed.clear();
    }
  }
  get onJobEvent() {
    return this.jobEventHandler;
  }
  /** Subscribes to every worker of the view not subscribed to yet. */
  observeAll() {
    for (const w of this.workers) {
      if (this.watching.subscribed.has(w.id) || this.passedOver.has(w.id)) continue;
      this.watching.subscribed.add(w.id);
      this.linkTo(w.id).then(
        (link) => link.send({ type: "observe", history: true }),
        () => this.watching.subscribed.delete(w.id)
      );
    }
  }
  onObserved(remote, msg) {
    if (!this.jobEventHandler || !Array.isArray(msg.events)) return;
    const name = remote === this.id ? this.signal.join.name : this.signal.view.peers.get(remote)?.name ?? null;
    const events = this.watching.observed(remote, msg.events.slice(0, 32));
    for (const [i, e] of events.entries()) {
      const dropped = i === 0 && msg.dropped ? { dropped: msg.dropped } : {};
      this.jobEventHandler({ ...e, worker: { id: remote, name }, ...dropped });
    }
  }
  /** This tab's peer id. */
  get id() {
    return this.signal.identity.peerId;
  }
  /** Whether the view is the whole pool. */
  get synced() {
    return this.signal.view.synced;
  }
  /** The pool's workers now, by name: this tab too when it works. @returns {PeerInfo[]} */
  get workers() {
    const others = this.signal.view.workers();
    if (!this.worker) return others;
    const me = { id: this.id, name: this.signal.join.name, capabilities: this.worker.capabilities, stats: this.worker.stats() };
    return [...others, me].sort((a, b) => a.name.localeCompare(b.name));
  }
  /** Resolves once the view is the whole pool. */
  ready() {
    if (this.synced) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (this.synced) {
          this.removeEventListener("view", check);
          resolve(void 0);
        }
      };
      this.addEventListener("view", check);
    });
  }
  /**
   * Leaves the pool, draining: the worker takes no new job (the pool sees
   * it draining) and finishes those it runs, this tab's jobs run to their
   * end; whatever is left after `timeout` seconds (default 30) is stopped
   * or cancelled. Then the links and the signal connection close.
   */
  async close({ timeout = 30 } = {}) {
    if (this.closing) return;
    this.closing = true;
    const jobs = [...this.tickets].map((t) => t.result.catch(() => {
    }));
    const drained = Promise.all([this.worker?.drain(), ...jobs]);
    let timer = 0;
    const late = new Promise((resolve) => {
      timer = setTimeout(resolve, timeout * 1e3);
    });
    await Promise.race([drained, late]);
    clearTimeout(timer);
    for (const t of this.tickets) t.cancel();
    this.worker?.close();
    for (const link of this.links.values()) link.close();
    this.signal.close();
  }
};
var Loopback = class {
  /** @param {Pool} pool */
  constructor(pool) {
    this.pool = pool;
    this.closed = false;
    this.grant = pool.trust?.grant ?? null;
    this.maxMessage = MAX_MESSAGE;
  }
  /** @param {object} msg */
  send(msg) {
    queueMicrotask(() => this.pool.route(this.pool.id, msg, this));
  }
  /** @param {Uint8Array} bytes */
  sendBytes(bytes2) {
    const chunk = decodeChunk(bytes2);
    queueMicrotask(() => this.pool.routeChunk(this.pool.id, chunk));
  }
  drained() {
    return Promise.resolve();
  }
};
async function joinPool(options) {
  const identity = options.identity ?? await Identity.generate();
  const name = options.name ?? `tab-${identity.peerId.slice(0, 8)}`;
  const capabilities = options.handler ? options.capabilities ?? [] : [];
  const slots = options.handler ? options.concurrency ?? 1 : 0;
  const credential = options.credential ?? (options.invitation ? await redeem(options.invitation, identity) : void 0);
  const trust = credential ? { credential, pool: options.pool, poolKey: credential.grant.pool_key, grant: credential.grant, revoked: null } : null;
  const join = { name, pool: options.pool, capabilities, slots, credential, view: options.view };
  const signal = new SignalClient(options.signal, identity, join);
  const worker = options.handler ? new WorkerCore({
    capabilities,
    slots,
    handler: options.handler,
    maxInputBytes: options.maxInputBytes,
    onStats: (stats) => signal.send({ type: "stats", stats })
  }) : null;
  const pool = new Pool(signal, worker, trust);
  await signal.connect();
  await pool.ready();
  return pool;
}
export {
  Identity,
  JobError,
  Pool,
  SignalError,
  Ticket,
  TrustError,
  joinPool,
  redeem
};
