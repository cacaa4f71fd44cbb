// Who a peer is: an Ed25519 key (WebCrypto) and the peer id derived from it
// (docs/protocol.md, "Identity and admission"), and the signatures of the
// protocol, each over a purpose label, a zero byte and the message.

import { blake3 } from "@noble/hashes/blake3";

/** The context of the peer id's BLAKE3 key derivation. */
const PEER_ID_CONTEXT = "jobmesh 2026-12 peer id v1";

/** Purpose labels of the protocol's signatures. */
export const PURPOSE = Object.freeze({
  admission: "jobmesh signal admission v1",
  binding: "jobmesh channel binding v1",
  invitation: "jobmesh pool invitation v1",
  membership: "jobmesh pool membership v1",
  revocations: "jobmesh pool revocations v1",
});

const utf8 = new TextEncoder();

/** @param {...Uint8Array} parts @returns {Uint8Array} */
export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Unpadded base64url of `bytes`. @param {Uint8Array} bytes */
export function base64url(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** The bytes of unpadded base64url `text`; throws on anything else. @param {string} text */
export function fromBase64url(text) {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new Error(`not base64url: ${JSON.stringify(text.slice(0, 40))}`);
  const b64 = text.replaceAll("-", "+").replaceAll("_", "/") + "=".repeat((4 - (text.length % 4)) % 4);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

/** Lowercase hex of `bytes`. @param {Uint8Array} bytes */
export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The hyphenated UUID of 16 bytes. @param {Uint8Array} b */
export function uuidOf(b) {
  const h = hex(b);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The 16 bytes of a hyphenated UUID. @param {string} id */
export function uuidBytes(id) {
  const hex = id.replaceAll("-", "");
  if (!/^[0-9a-f]{32}$/i.test(hex)) throw new Error(`not a peer id: ${JSON.stringify(id)}`);
  return Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
}

/**
 * The peer id a 32-byte Ed25519 public key stands for: the first 16 bytes
 * of BLAKE3's derive_key, as a version-8 UUID.
 * @param {Uint8Array} publicKey
 */
export function peerIdOf(publicKey) {
  const b = blake3(publicKey, { context: PEER_ID_CONTEXT }).slice(0, 16);
  b[6] = (b[6] & 0x0f) | 0x80;
  b[8] = (b[8] & 0x3f) | 0x80;
  return uuidOf(b);
}

/** `purpose` 0x00 `msg`: what is signed. */
function framed(purpose, msg) {
  return concat(utf8.encode(purpose), new Uint8Array([0]), msg);
}

/** The DER prefix of an Ed25519 PKCS#8 private key, before its 32-byte seed. */
const PKCS8_PREFIX = Uint8Array.from([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]);

/** A peer's Ed25519 key pair, its public key and its peer id. */
export class Identity {
  /** @param {CryptoKey} privateKey @param {Uint8Array} publicKey */
  constructor(privateKey, publicKey) {
    /** @private */ this.privateKey = privateKey;
    /** The 32-byte public key. */ this.publicKey = publicKey;
    /** Its text form (43 characters). */ this.key = base64url(publicKey);
    /** The peer id it stands for. */ this.peerId = peerIdOf(publicKey);
  }

  /** A new random identity (not extractable). */
  static async generate() {
    const pair = /** @type {CryptoKeyPair} */ (await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]));
    const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
    return new Identity(pair.privateKey, raw);
  }

  /** The identity of a 32-byte secret seed (as a daemon's key file holds). @param {Uint8Array} seed */
  static async fromSeed(seed) {
    if (seed.length !== 32) throw new Error("an Ed25519 seed is 32 bytes");
    const privateKey = await crypto.subtle.importKey("pkcs8", concat(PKCS8_PREFIX, seed), { name: "Ed25519" }, true, ["sign"]);
    const jwk = await crypto.subtle.exportKey("jwk", privateKey);
    return new Identity(privateKey, fromBase64url(/** @type {string} */ (jwk.x)));
  }

  /** The signature of `msg` for `purpose`. @param {string} purpose @param {Uint8Array} msg */
  async sign(purpose, msg) {
    return new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, this.privateKey, framed(purpose, msg)));
  }
}

/** Whether `sig` is `key`'s signature of `msg` for `purpose`. */
export async function verify(key, purpose, msg, sig) {
  const publicKey = await crypto.subtle.importKey("raw", key, { name: "Ed25519" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, publicKey, sig, framed(purpose, msg));
}

/** What a hello's proof signs: nonce, pool and peer id, each and a zero byte. */
export function admissionMessage(nonce, pool, peerId) {
  const zero = new Uint8Array([0]);
  return concat(utf8.encode(nonce), zero, utf8.encode(pool), zero, utf8.encode(peerId), zero);
}
