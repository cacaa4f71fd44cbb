// The working side (docs/protocol.md, "The claim protocol"): admission
// against capabilities, slots and input size, `accepted`, the input blobs,
// progress and a heartbeat every second, the output blobs then one `result`
// per accepted attempt, kept until the submitter's `received`, and `cancel`.

import { Incoming, TransferError, asBlobs, describe, problemWith, sendBlobs } from "./blobs.js";
import { Observers } from "./observe.js";
import { every } from "./ticker.js";
import { allows } from "./trust.js";

/** A worker says something about each job at least this often. */
const HEARTBEAT_INTERVAL_MS = 1000;
/** Results kept for a submitter that has not said `received`, at most. */
const MAX_KEPT_RESULTS = 1024;
/** Error texts are cut to this many characters. */
const MAX_ERROR_LEN = 4096;
/** A job's input blobs are at most this many bytes in all, by default. */
export const DEFAULT_MAX_INPUT_BYTES = 1024 ** 3;
/** Progress while input arrives, at most this often. */
const RECEIVING_PROGRESS_MS = 250;

/**
 * @typedef {{jobId: string, attempt: number, capability: string, signal: AbortSignal,
 *   files: File[], output: (file: Blob | ArrayBuffer | ArrayBufferView) => void,
 *   progress: (p: {percent?: number, stage?: string, message?: string}) => void}} JobContext
 * @typedef {(input: any, ctx: JobContext) => any | Promise<any>} Handler
 * @typedef {{send: (m: object) => void} & Pick<import("./link.js").Link, "sendBytes" | "drained" | "maxMessage" | "closed" | "grant">} Reply
 * @typedef {{attempt: number, from: string, abort: AbortController, reply: Reply, lastSent: number,
 *   incoming: Incoming | null, start: (() => void) | null}} Running
 */

/** Why a handler was stopped by its submitter or the tab leaving: its error is not sent. */
class Stopped extends Error {}
/** Why a handler was stopped by the job's timeout: the job may be retried. */
class TimedOut extends Error {}

export class WorkerCore {
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
    /** @type {Map<string, Running>} */
    this.running = new Map();
    /** @type {Map<string, {jobId: string, attempt: number, blobs: any}>} by link: the `blobs` message just before its `submit` */
    this.announced = new Map();
    /** @type {Map<string, {attempt: number, msg: object}>} results not yet `received`, by job */
    this.kept = new Map();
    this.draining = false;
    /** The peers that watch this worker's jobs. */
    this.observers = new Observers();
    /** Called whenever a job ends. */
    this.idle = () => {};
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
      this.idle = () => this.running.size === 0 && resolve(undefined);
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
        // It counts only right before its submit: one per link is kept.
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
        // In a closed pool, only a member with the observer role.
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
    if (!job?.incoming || job.from !== from || job.attempt !== chunk.attempt || !job.start) return; // stale
    try {
      job.incoming.accept(chunk);
    } catch (e) {
      return job.abort.abort(e);
    }
    const now = Date.now();
    if (now - job.lastSent >= RECEIVING_PROGRESS_MS) {
      job.lastSent = now;
      const percent = Math.floor((100 * job.incoming.bytes) / Math.max(1, job.incoming.total));
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
    if (held && held.from === from) return this.reattach(jobId, attempt, reply); // no new slot, even draining
    if (held) return reject("busy", `job ${jobId} is held here for another submitter`);
    if (this.draining) return reject("draining", "this tab is leaving the pool");
    if (this.running.size >= this.slots) return reject("busy", `all ${this.slots} slots are busy`);
    const problem = problemWith(blobs, this.maxInputBytes);
    if (problem) return reject("bad_input", `input blobs refused: ${problem}`);
    const abort = new AbortController();
    /** @type {Running} */
    const job = { attempt, from, abort, reply, lastSent: Date.now(), incoming: new Incoming(blobs), start: null };
    this.running.set(jobId, job);
    reply.send({ type: "accepted", job_id: jobId, attempt });
    this.observers.started(jobId, attempt, capability, from);
    this.changed();
    const timeout = setTimeout(() => abort.abort(new TimedOut(`timed out after ${msg.timeout_ms} ms on this tab`)), msg.timeout_ms);
    const ready = new Promise((resolve, reject) => {
      job.start = () => {
        job.start = null;
        resolve(undefined);
      };
      abort.signal.addEventListener("abort", () => reject(abort.signal.reason));
      if (job.incoming?.complete) job.start();
    });
    ready.catch(() => {});
    this.run(jobId, job, capability, input, ready).then(({ outcome, outputs }) => {
      clearTimeout(timeout);
      return this.finish(jobId, job, outcome, outputs);
    });
  }

  /** Waits for the input, then runs the handler; never throws. */
  async run(jobId, job, capability, input, ready) {
    /** @type {Blob[]} */
    const outputs = [];
    try {
      await ready;
      job.abort.signal.throwIfAborted(); // stopped before it started: the handler never runs
      const files = job.incoming.files();
      job.incoming = null;
      const progress = (p) => {
        const percent = p.percent === undefined ? undefined : Math.max(0, Math.min(100, Math.round(p.percent)));
        job.lastSent = Date.now();
        job.reply.send({ type: "progress", job_id: jobId, attempt: job.attempt, progress: { ...p, ...(percent === undefined ? {} : { percent }) } });
        this.observers.progress(jobId, percent);
      };
      const output = (file) => outputs.push(...asBlobs([file]));
      const ctx = { jobId, attempt: job.attempt, capability, signal: job.abort.signal, files, output, progress };
      let value = await this.handler(input, ctx);
      if (value instanceof Blob || value instanceof ArrayBuffer || ArrayBuffer.isView(value)) {
        output(value); // a handler returning bytes returns one output blob
        value = null;
      }
      return { outcome: { status: "ok", value: value ?? null }, outputs };
    } catch (e) {
      // The next attempt sends the input again, or has time again.
      const why = job.abort.signal.reason ?? e;
      const retryable = why instanceof TransferError || why instanceof TimedOut;
      return { outcome: { status: "err", message: String(why?.message ?? why).slice(0, MAX_ERROR_LEN), retryable }, outputs: [] };
    }
  }

  /** A job's handler ended: its result is kept, then delivered. */
  async finish(jobId, job, outcome, outputs) {
    /** @type {import("./blobs.js").BlobMeta[]} */
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
    // A stopped handler's error is not kept (its submitter gave up).
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
      if (!(await sendBlobs(reply, { direction: 1, jobId, attempt }, kept.outputs, current))) return;
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
}
