// The pool as a peer sees it, from the signal-server's `view` pages
// (docs/protocol.md): pure, no I/O.

/**
 * @typedef {{slots: number, running: number, queued: number, completed: number, failed: number,
 *   seq?: number, draining?: boolean, mean_run_ms?: Record<string, number>,
 *   finished?: Record<string, [number, number]>}} Stats
 * @typedef {{id: string, name: string, capabilities: string[], stats: Stats}} PeerInfo
 * @typedef {{joined: PeerInfo[], changed: PeerInfo[], left: string[]}} Change
 */

export class PoolView {
  constructor() {
    /** @type {Map<string, PeerInfo>} */
    this.peers = new Map();
    /** Whether `peers` is the whole pool (false from a welcome until its pages are in). */
    this.synced = false;
    /** @private @type {Set<string> | null} members described since a reset */
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
    /** @type {Change} */
    const change = { joined: [], changed: [], left: [] };
    if (page.reset) this.confirming = new Set();
    for (const id of page.left ?? []) {
      if (this.peers.delete(id)) change.left.push(id);
    }
    for (const peer of page.peers ?? []) {
      this.confirming?.add(peer.id);
      const old = this.peers.get(peer.id);
      if (old === undefined) {
        this.peers.set(peer.id, peer);
        change.joined.push(peer);
      } else {
        // Stats older than the ones held (a result carried newer) stay.
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
}
