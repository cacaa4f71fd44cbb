// jobmesh in the browser: a tab joins a jobmesh pool as a peer.
//
//   import { joinPool } from "/js/jobmesh.js";
//   const pool = await joinPool({ signal: "ws://127.0.0.1:7070/ws", pool: "lab" });
//   pool.onWorkerJoin = (w) => console.log("worker", w.name, w.capabilities);
//   console.log(pool.workers);
//   await pool.close();
//
// This module speaks docs/protocol.md; its pure parts are tested with
// node's test runner (clients/js/test), the whole in headless Chromium
// against the Rust daemons (tests/browser).

import { Identity } from "./identity.js";
import { SignalClient } from "./signal.js";

export { Identity } from "./identity.js";
export { SignalError } from "./signal.js";

/**
 * @typedef {import("./view.js").PeerInfo} PeerInfo
 * @typedef {{signal: string, pool: string, name?: string, identity?: Identity, credential?: object}} JoinOptions
 */

/** A pool this tab is a member of. */
export class Pool extends EventTarget {
  /** @param {SignalClient} signal @private */
  constructor(signal) {
    super();
    this.signal = signal;
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
  const signal = new SignalClient(options.signal, identity, {
    name,
    pool: options.pool,
    capabilities: [],
    slots: 0,
    credential: options.credential,
  });
  const pool = new Pool(signal);
  await signal.connect();
  await pool.ready();
  return pool;
}
