// One WebRTC link to another peer (docs/protocol.md, section 2): a peer
// connection with one ordered, reliable data channel labelled `jobmesh`,
// signalled non-trickle through the signal-server (the full SDP after ICE
// gathering), then the link handshake that binds the remote's key to this
// very connection, before any job message.

import { CHUNK_MAGIC, decodeChunk } from "./blobs.js";
import { PURPOSE, base64url, concat, fromBase64url, peerIdOf, uuidBytes, verify } from "./identity.js";
import { checkCredential } from "./trust.js";

/** A link's handshake must finish within this. */
const BINDING_TIMEOUT_MS = 10_000;
/** A message is at most this long (the daemons' SCTP maximum). */
export const MAX_MESSAGE = 64 * 1024;
/** Chunk senders wait while the channel holds more than this... */
const HIGH_WATER = 1024 * 1024;
/** ...until it holds at most this. */
const LOW_WATER = 256 * 1024;
const utf8 = new TextEncoder();
const text = new TextDecoder();

/**
 * The SHA-256 fingerprint an SDP gives its DTLS certificate (32 bytes).
 * @param {string} sdp
 * @param {string} [which] which SDP, for the error (`"local (stable) "`)
 */
export function fingerprintOf(sdp, which = "") {
  const m = /^a=fingerprint:sha-256 ([0-9A-Fa-f:]{95})\s*$/m.exec(sdp);
  if (!m) throw new Error(`the ${which}SDP has no sha-256 fingerprint (${sdp.length} bytes)`);
  return Uint8Array.from(m[1].split(":"), (h) => parseInt(h, 16));
}

/**
 * What a link proof signs, after its purpose label: both fingerprints, both
 * nonces (the signer's first) and the verifier's peer id.
 */
export function bindingMessage(fpSigner, fpVerifier, nonceSigner, nonceVerifier, idVerifier) {
  return concat(fpSigner, fpVerifier, nonceSigner, nonceVerifier, uuidBytes(idVerifier));
}

/** Waits until `pc` has gathered its ICE candidates (they go in the SDP). */
function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve(undefined);
    });
  });
}

/** A fresh dial tag: 1 to 2^53 − 1, exact in a double. */
export function dialTag() {
  const [hi, lo] = crypto.getRandomValues(new Uint32Array(2));
  return (hi & 0x1fffff) * 2 ** 32 + lo || 1;
}

/**
 * A link to one remote peer, dialled by this tab or answered to the
 * remote's offer. Messages go out as JSON in binary frames; `onMessage`
 * gets each decoded JSON message after the handshake, `onChunk` each blob
 * chunk frame, in the order they arrived; `ready` resolves once the
 * handshake is done.
 */
export class Link {
  /**
   * @param {{identity: import("./identity.js").Identity, remote: string,
   *   relay: (signal: object) => void, onMessage: (msg: any) => void,
   *   onChunk: (chunk: import("./blobs.js").Chunk) => void, onClose: () => void,
   *   trust: import("./index.js").Trust | null, iceServers?: RTCIceServer[]}} options
   */
  constructor({ identity, remote, relay, onMessage, onChunk, onClose, trust, iceServers = [] }) {
    this.identity = identity;
    /** In a closed pool: this tab's credential and what remotes' must be. */
    this.trustIn = trust;
    /** In a closed pool, what the remote's credential grants (null in an open pool). @type {import("./trust.js").Grant | null} */
    this.grant = null;
    /** @type {import("./trust.js").Credential | null} */
    this.remoteCredential = null;
    this.remote = remote;
    this.relay = relay;
    this.onMessage = onMessage;
    this.onChunk = onChunk;
    /** Messages are handled one after the other, in order. */
    this.inbox = Promise.resolve();
    this.onClose = onClose;
    this.pc = new RTCPeerConnection({ iceServers });
    /** @type {RTCDataChannel | null} */
    this.channel = null;
    this.nonce = crypto.getRandomValues(new Uint8Array(32));
    this.trusted = false;
    /** @type {{key: Uint8Array, nonce: Uint8Array} | null} */
    this.remoteHello = null;
    this.closed = false;
    /** Why the handshake failed, here or at the remote (then `remoteRefused`). @type {string | undefined} */
    this.refusal = undefined;
    this.remoteRefused = false;
    this.blameless = false;
    this.helloSent = false;
    /** The remote's `link_proof`, if it came before its `link_hello`. @type {object | null} */
    this.earlyProof = null;
    /** When the remote was last heard from (any message or chunk), `performance.now()`. */
    this.heard = 0;
    /** The dial tag of this tab's offer, when it dialled. */
    this.dial = 0;
    /** Resolves once the link handshake is done; rejects if the link closes first. */
    this.ready = new Promise((resolve, reject) => {
      this.trust = resolve;
      this.fail = reject;
    });
    this.ready.catch(() => {});
    this.pc.ondatachannel = (ev) => this.attach(ev.channel);
    this.pc.onconnectionstatechange = () => {
      if (["failed", "closed"].includes(this.pc.connectionState)) this.close();
    };
    setTimeout(() => {
      if (this.trusted) return;
      this.blameless = true; // slow is not dishonest
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
    // A channel the remote opened can come already open (no open event).
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
  sendBytes(bytes) {
    if (this.channel?.readyState === "open") this.channel.send(bytes);
  }

  /** Resolves once the channel holds at most HIGH_WATER bytes (or closed). */
  drained() {
    const channel = this.channel;
    if (!channel || this.closed || channel.bufferedAmount <= HIGH_WATER) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        channel.removeEventListener("bufferedamountlow", done);
        channel.removeEventListener("close", done);
        resolve(undefined);
      };
      channel.addEventListener("bufferedamountlow", done);
      channel.addEventListener("close", done);
    });
  }

  /** Sends one JSON message as a binary frame. @param {object} msg */
  send(msg) {
    if (this.channel?.readyState === "open") this.channel.send(utf8.encode(JSON.stringify(msg)));
  }

  async receive(data) {
    if (typeof data !== "string" && data.byteLength === 0) return; // empty: nothing
    if (typeof data !== "string" && new Uint8Array(data, 0, 1)[0] === CHUNK_MAGIC) {
      if (!this.trusted) throw new Error("link refused: a chunk before the link handshake");
      return this.onChunk(decodeChunk(new Uint8Array(data)));
    }
    if ((typeof data === "string" ? data.length : data.byteLength) > MAX_MESSAGE)
      throw new Error(`a message of more than ${MAX_MESSAGE} bytes`);
    const raw = typeof data === "string" ? data : text.decode(data);
    // Messages a sender queued together come joined by "\n" (JSON text holds no raw newline).
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
        bindingMessage(mine, theirs, this.nonce, this.remoteHello.nonce, this.remote),
      );
      this.sayHello(); // a hello that came before this end's open event is answered in order
      this.send({ type: "link_proof", sig: base64url(sig) });
      const early = this.earlyProof;
      this.earlyProof = null;
      if (early) await this.receiveMessage(early);
      return;
    }
    if (msg.type === "link_proof" && !this.remoteHello && !this.earlyProof) {
      // It is checked against the hello's key once the hello comes (each
      // proof signs both nonces, so their order proves nothing); without a
      // hello the handshake's deadline closes the link, no one blamed.
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
        fromBase64url(String(msg.sig)),
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
}
