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
import { decodeChunk } from "./blobs.js";
import { Link, MAX_MESSAGE } from "./link.js";
import { SignalClient } from "./signal.js";
import { submit } from "./submitter.js";
import { Watching } from "./observe.js";
import { allows, redeem, revokes, verifyRevocations } from "./trust.js";
import { WorkerCore } from "./worker.js";

export { Identity } from "./identity.js";
export { SignalError } from "./signal.js";
export { JobError, Ticket } from "./submitter.js";
export { TrustError, redeem } from "./trust.js";

/** The messages a worker sends to a submitter about one of its jobs. */
const REPLIES = new Set(["accepted", "rejected", "progress", "blobs", "result"]);
/** A peer whose link handshake failed gets no job from this tab for this long. */
const UNTRUSTED_FOR_MS = 60_000;
/** A worker this tab could not connect to gets no job for this long. */
const UNREACHABLE_FOR_MS = 5_000;

/**
 * @typedef {import("./view.js").PeerInfo} PeerInfo
 * @typedef {{signal: string, pool: string, name?: string, identity?: Identity,
 *   credential?: import("./trust.js").Credential, invitation?: string,
 *   capabilities?: string[], concurrency?: number, handler?: import("./worker.js").Handler,
 *   maxInputBytes?: number, view?: string[]}} JoinOptions
 * @typedef {{credential: import("./trust.js").Credential, pool: string, poolKey: string,
 *   grant: import("./trust.js").Grant, revoked: import("./trust.js").Revocations | null}} Trust
 */

/** A pool this tab is a member of. */
export class Pool extends EventTarget {
  /** @param {SignalClient} signal @param {WorkerCore | null} worker @param {Trust | null} trust @private */
  constructor(signal, worker, trust) {
    super();
    this.signal = signal;
    /** In a closed pool: this tab's credential, and the owner's revocations. */
    this.trust = trust;
    /** @type {Map<string, {until: number, why: string}>} peers passed over for new jobs, by id */
    this.passedOver = new Map();
    // After a reconnect the server knows only the hello's slots: the stats again.
    signal.addEventListener("welcome", () => worker && signal.send({ type: "stats", stats: worker.stats() }));
    signal.addEventListener("revocations", (ev) => this.onRevocations(/** @type {CustomEvent} */ (ev).detail.list));
    /** @type {WorkerCore | null} */
    this.worker = worker;
    /** @type {Map<string, Link>} links by remote peer id */
    this.links = new Map();
    /** @type {Map<string, (from: string, msg: any) => void>} replies to this tab's jobs, by job id */
    this.jobs = new Map();
    /** The round-robin strategy's turn. */
    this.turn = { next: 0 };
    /** This tab's jobs for its own worker go through here. */
    this.loopback = new Loopback(this);
    /** @type {Set<import("./submitter.js").Ticket>} this tab's jobs not ended */
    this.tickets = new Set();
    this.closing = false;
    signal.addEventListener("relayed", (ev) => this.onRelayed(/** @type {CustomEvent} */ (ev).detail));
    /** @type {((worker: PeerInfo) => void) | null} */
    this.onWorkerJoin = null;
    /** @type {((id: string) => void) | null} */
    this.onWorkerLeave = null;
    /** The workers this tab observes, when it does. */
    this.watching = new Watching();
    /** @type {((event: object) => void) | null} */
    this.jobEventHandler = null;
    signal.addEventListener("view", (ev) => {
      const change = /** @type {CustomEvent} */ (ev).detail;
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
    if (signal?.kind !== "offer") return; // candidates travel in the SDP (non-trickle)
    const mine = this.links.get(from);
    // Both dialled at once: the lower id's offer wins (as between daemons);
    // the other end abandons its dial and answers this tab's.
    if (mine && !mine.trusted && mine.dial && this.id < from) return;
    const link = this.newLink(from); // replaces `mine`: jobs waiting for it move on to this one
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
        // This tab's jobs on that worker try elsewhere at once.
        for (const job of [...this.jobs.values()]) job(remote, { type: "closed" });
        this.watching.subscribed.delete(remote); // subscribed again at the next view change
        if (link.refusal) this.passOver(remote, link.refusal, UNTRUSTED_FOR_MS);
      },
      trust: this.trust,
      iceServers: this.signal.iceServers.map(({ urls, username, credential }) => ({ urls, username, credential })),
    });
    this.links.set(remote, link);
    link.ready.then(() => this.worker?.linked(remote, link)).catch(() => {});
    return link;
  }

  /** A message from `remote` over `link`: a reply to one of this tab's jobs, or for its worker. */
  route(remote, msg, link) {
    if (msg.type === "observed") return this.onObserved(remote, msg);
    if (msg.type === "held") {
      // A worker holds a job for this tab: the job re-attaches to it, or, ended or unknown here, is let go.
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
    for (;;) {
      try {
        await link.ready;
        return link;
      } catch (e) {
        const next = this.links.get(remote);
        if (next && next !== link && !next.closed) {
          link = next; // replaced (the remote's dial won, or it dialled again)
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
      listen: (jobId, on) => (on ? this.jobs.set(jobId, on) : this.jobs.delete(jobId)),
      turn: this.turn,
    });
    this.tickets.add(ticket);
    ticket.result.finally(() => this.tickets.delete(ticket)).catch(() => {});
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
        () => this.watching.subscribed.delete(w.id),
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
    const others = this.signal.view.workers(); // the server's view leaves the viewer out
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
          resolve(undefined);
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
    const jobs = [...this.tickets].map((t) => t.result.catch(() => {}));
    const drained = Promise.all([this.worker?.drain(), ...jobs]);
    let timer = 0;
    const late = new Promise((resolve) => {
      timer = setTimeout(resolve, timeout * 1000);
    });
    await Promise.race([drained, late]);
    clearTimeout(timer);
    for (const t of this.tickets) t.cancel();
    this.worker?.close();
    for (const link of this.links.values()) link.close();
    this.signal.close();
  }
}

/**
 * This tab's own worker seen as a link, for the jobs this tab runs itself:
 * messages and chunks go through the same routing as a remote's, one
 * microtask later (so neither side re-enters the other).
 */
class Loopback {
  /** @param {Pool} pool */
  constructor(pool) {
    this.pool = pool;
    this.closed = false;
    /** What this tab's own credential grants, as a remote's would. */
    this.grant = pool.trust?.grant ?? null;
    this.maxMessage = MAX_MESSAGE;
  }

  /** @param {object} msg */
  send(msg) {
    queueMicrotask(() => this.pool.route(this.pool.id, msg, this));
  }

  /** @param {Uint8Array} bytes */
  sendBytes(bytes) {
    const chunk = decodeChunk(bytes);
    queueMicrotask(() => this.pool.routeChunk(this.pool.id, chunk));
  }

  drained() {
    return Promise.resolve(); // the chunk's microtask runs before the sender goes on
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
  const credential = options.credential ?? (options.invitation ? await redeem(options.invitation, identity) : undefined);
  /** @type {Trust | null} */
  const trust = credential
    ? { credential, pool: options.pool, poolKey: credential.grant.pool_key, grant: credential.grant, revoked: null }
    : null;
  const join = { name, pool: options.pool, capabilities, slots, credential, view: options.view };
  const signal = new SignalClient(options.signal, identity, join);
  const worker = options.handler
    ? new WorkerCore({
        capabilities,
        slots,
        handler: options.handler,
        maxInputBytes: options.maxInputBytes,
        onStats: (stats) => signal.send({ type: "stats", stats }),
      })
    : null;
  const pool = new Pool(signal, worker, trust);
  await signal.connect();
  await pool.ready();
  return pool;
}
