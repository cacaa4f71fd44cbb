// The signal-server connection (docs/protocol.md, section 1): challenge,
// signed hello, welcome, then the pool view as pages; stats and relayed
// handshakes both ways. One WebSocket; JSON text frames.

import { PoolView } from "./view.js";
import { PURPOSE, admissionMessage, base64url } from "./identity.js";

/** The protocol version this client speaks. */
export const PROTOCOL_VERSION = 7;
/** Largest server frame read (a view page), in bytes. */
const MAX_SERVER_MESSAGE = 1024 * 1024;
/** Reconnecting waits this long at first, doubling to RECONNECT_MAX_MS. */
const RECONNECT_MIN_MS = 250;
const RECONNECT_MAX_MS = 10_000;
/** Refusals that reconnecting would only repeat. */
const FATAL = new Set(["not_admitted", "bad_proof", "wrong_version", "name_taken"]);

/**
 * @typedef {{name: string, pool: string, capabilities: string[], slots: number, credential?: object, view?: string[]}} Join
 */

/** Why the server refused this peer (its error code and message). */
export class SignalError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

export class SignalClient extends EventTarget {
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
    /** @type {WebSocket | null} */
    this.ws = null;
    /** The STUN and TURN servers of the last welcome or renewal. @type {{urls: string[], username?: string, credential?: string}[]} */
    this.iceServers = [];
    /** Set by close(): no reconnecting. */
    this.leaving = false;
    this.backoff = RECONNECT_MIN_MS;
    /** Why the last connection ended, when the server said. @type {SignalError | null} */
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
            // STUN and TURN (a credential minted for this peer) for the links to come.
            this.iceServers = Array.isArray(msg.ice_servers) ? msg.ice_servers.slice(0, 8) : [];
            this.backoff = RECONNECT_MIN_MS;
            this.view.welcome();
            this.dispatchEvent(new CustomEvent("welcome", { detail: msg }));
            return resolve(msg);
          case "ice_servers":
            // Renewed TURN credentials, before the welcome's expire.
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
        // A member that was in stays in: the links between peers do not
        // need the server, and the view comes back whole on the next welcome.
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
      ...(credential ? { credential } : {}),
      // Only the workers of these capabilities (docs/protocol.md, "Filtered views").
      ...(view ? { view } : {}),
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
    this.ws?.close(1000, "leaving");
  }
}
