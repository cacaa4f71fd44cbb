// jobmesh in the browser: a tab joins a jobmesh pool as a peer.
//
//   import { joinPool } from "/js/jobmesh.js";
//   const pool = await joinPool({
//     signal: "ws://127.0.0.1:7070/ws", pool: "lab",
//     capabilities: ["echo"], concurrency: 2,          // a worker (optional)
//     handler: async (input, ctx) => input,
//   });
//   pool.onWorkerJoin = (w) => console.log("worker", w.name, w.capabilities);
//   console.log(pool.workers);
//   await pool.close();
//
// This module speaks docs/protocol.md; its pure parts are tested with
// node's test runner (clients/js/test), the whole in headless Chromium
// against the Rust daemons (tests/browser).

import { Identity } from "./identity.js";
import { Link } from "./link.js";
import { SignalClient } from "./signal.js";
import { WorkerCore } from "./worker.js";

export { Identity } from "./identity.js";
export { SignalError } from "./signal.js";

/**
 * @typedef {import("./view.js").PeerInfo} PeerInfo
 * @typedef {{signal: string, pool: string, name?: string, identity?: Identity, credential?: object,
 *   capabilities?: string[], concurrency?: number, handler?: import("./worker.js").Handler}} JoinOptions
 */

/** A pool this tab is a member of. */
export class Pool extends EventTarget {
  /** @param {SignalClient} signal @private */
  constructor(signal, worker) {
    super();
    this.signal = signal;
    /** @type {WorkerCore | null} */
    this.worker = worker;
    /** @type {Map<string, Link>} links by remote peer id */
    this.links = new Map();
    signal.addEventListener("relayed", (ev) => this.onRelayed(/** @type {CustomEvent} */ (ev).detail));
    /** @type {((worker: PeerInfo) => void) | null} */
    this.onWorkerJoin = null;
    /** @type {((id: string) => void) | null} */
    this.onWorkerLeave = null;
    signal.addEventListener("view", (ev) => {
      const change = /** @type {CustomEvent} */ (ev).detail;
      for (const p of change.joined) if (p.stats.slots > 0) this.onWorkerJoin?.(p);
      for (const id of change.left) this.onWorkerLeave?.(id);
      this.dispatchEvent(new CustomEvent("view", { detail: change }));
    });
  }

  /** A handshake message relayed from another peer: an offer opens a link. */
  onRelayed({ from, signal }) {
    if (signal?.kind !== "offer") return; // candidates travel in the SDP (non-trickle)
    this.links.get(from)?.close();
    const link = new Link({
      identity: this.signal.identity,
      remote: from,
      relay: (answer) => this.signal.send({ type: "relay", to: from, signal: answer }),
      onMessage: (msg) => this.worker?.handle(from, msg, (m) => link.send(m)),
      onClose: () => {
        if (this.links.get(from) === link) this.links.delete(from);
      },
    });
    this.links.set(from, link);
    link.answer(String(signal.sdp), signal.dial ?? 0).catch((e) => link.close(`could not answer ${from}: ${e}`));
  }

  /** This tab's peer id. */
  get id() {
    return this.signal.identity.peerId;
  }

  /** Whether the view is the whole pool. */
  get synced() {
    return this.signal.view.synced;
  }

  /** The pool's workers now, by name. @returns {PeerInfo[]} */
  get workers() {
    return this.signal.view.workers();
  }

  /** Resolves once the view is the whole pool. */
  ready() {
    if (this.synced) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (this.synced) {
          this.removeEventListener("view", check);
          resolve(undefined);
        }
      };
      this.addEventListener("view", check);
    });
  }

  /** Leaves the pool. */
  async close() {
    this.worker?.close();
    for (const link of this.links.values()) link.close();
    this.signal.close();
  }
}

/**
 * Joins a pool: a fresh identity unless one is given (a closed pool needs
 * the credential of that identity). Resolves once the pool's view is in.
 * @param {JoinOptions} options
 */
export async function joinPool(options) {
  const identity = options.identity ?? (await Identity.generate());
  const name = options.name ?? `tab-${identity.peerId.slice(0, 8)}`;
  const capabilities = options.handler ? options.capabilities ?? [] : [];
  const slots = options.handler ? options.concurrency ?? 1 : 0;
  const signal = new SignalClient(options.signal, identity, {
    name,
    pool: options.pool,
    capabilities,
    slots,
    credential: options.credential,
  });
  const worker = options.handler
    ? new WorkerCore({
        capabilities,
        slots,
        handler: options.handler,
        onStats: (stats) => signal.send({ type: "stats", stats }),
      })
    : null;
  const pool = new Pool(signal, worker);
  await signal.connect();
  await pool.ready();
  return pool;
}
