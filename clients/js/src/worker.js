// The working side (docs/protocol.md, "The claim protocol"): admission
// against capabilities and slots, `accepted`, progress and a heartbeat
// every second, one `result` per accepted attempt, kept until the
// submitter's `received`, and `cancel`.

/** A worker says something about each job at least this often. */
const HEARTBEAT_INTERVAL_MS = 1000;
/** Results kept for a submitter that has not said `received`, at most. */
const MAX_KEPT_RESULTS = 1024;
/** Error texts are cut to this many characters. */
const MAX_ERROR_LEN = 4096;

/**
 * @typedef {{jobId: string, attempt: number, capability: string, signal: AbortSignal,
 *   progress: (p: {percent?: number, stage?: string, message?: string}) => void}} JobContext
 * @typedef {(input: any, ctx: JobContext) => any | Promise<any>} Handler
 */

export class WorkerCore {
  /**
   * @param {{capabilities: string[], slots: number, handler: Handler,
   *   onStats: (stats: object) => void}} options
   */
  constructor({ capabilities, slots, handler, onStats }) {
    this.capabilities = capabilities;
    this.slots = slots;
    this.handler = handler;
    this.onStats = onStats;
    /** @type {Map<string, {attempt: number, from: string, abort: AbortController, send: (m: object) => void, lastSent: number}>} */
    this.running = new Map();
    /** @type {Map<string, {attempt: number, msg: object}>} results not yet `received`, by job */
    this.kept = new Map();
    this.completed = 0;
    this.failed = 0;
    this.seq = 0;
    this.timer = setInterval(() => this.heartbeats(), HEARTBEAT_INTERVAL_MS / 2);
  }

  /** The stats the pool sees. */
  stats() {
    return { slots: this.slots, running: this.running.size, queued: 0, completed: this.completed, failed: this.failed, seq: this.seq };
  }

  changed() {
    this.seq += 1;
    this.onStats(this.stats());
  }

  /**
   * A message from peer `from`; `send` answers it on the same link.
   * @param {string} from @param {any} msg @param {(m: object) => void} send
   */
  handle(from, msg, send) {
    switch (msg.type) {
      case "submit":
        return this.submit(from, msg, send);
      case "cancel": {
        const job = this.running.get(msg.job_id);
        if (job && job.attempt === msg.attempt && job.from === from) job.abort.abort();
        return;
      }
      case "received":
        for (const r of msg.receipts ?? []) {
          if (this.kept.get(r.job_id)?.attempt === r.attempt) this.kept.delete(r.job_id);
        }
        return;
      default:
        return; // observers, blobs: not served by this client yet
    }
  }

  submit(from, msg, send) {
    const { job_id: jobId, attempt, capability, input } = msg;
    const reject = (reason, message) => send({ type: "rejected", job_id: jobId, attempt, reason, message });
    if (!this.capabilities.includes(capability)) return reject("unknown_capability", `this tab does not run "${capability}"`);
    if (this.running.has(jobId)) return reject("busy", `job ${jobId} is already running here`);
    if (this.running.size >= this.slots) return reject("busy", `all ${this.slots} slots are busy`);
    const abort = new AbortController();
    const job = { attempt, from, abort, send, lastSent: Date.now() };
    this.running.set(jobId, job);
    send({ type: "accepted", job_id: jobId, attempt });
    this.changed();
    const timeout = setTimeout(() => abort.abort(new Error(`timed out after ${msg.timeout_ms} ms`)), msg.timeout_ms);
    const progress = (p) => {
      const percent = p.percent === undefined ? undefined : Math.max(0, Math.min(100, Math.round(p.percent)));
      job.lastSent = Date.now();
      send({ type: "progress", job_id: jobId, attempt, progress: { ...p, ...(percent === undefined ? {} : { percent }) } });
    };
    Promise.resolve()
      .then(() => this.handler(input, { jobId, attempt, capability, signal: abort.signal, progress }))
      .then(
        (value) => ({ status: "ok", value: value ?? null }),
        (e) => ({ status: "err", message: String(e?.message ?? e).slice(0, MAX_ERROR_LEN), retryable: false }),
      )
      .then((outcome) => {
        clearTimeout(timeout);
        this.running.delete(jobId);
        if (outcome.status === "ok") this.completed += 1;
        else this.failed += 1;
        this.seq += 1;
        const result = { type: "result", job_id: jobId, attempt, outcome, load: { running: this.running.size, slots: this.slots, seq: this.seq } };
        // A stopped handler's error is not kept (its submitter gave up).
        if (!(abort.signal.aborted && outcome.status === "err")) {
          if (this.kept.size >= MAX_KEPT_RESULTS) this.kept.delete(this.kept.keys().next().value);
          this.kept.set(jobId, { attempt, msg: result });
          send(result);
        }
        this.onStats(this.stats());
      });
  }

  /** An empty progress for each job not spoken of for a second. */
  heartbeats() {
    const now = Date.now();
    for (const [jobId, job] of this.running) {
      if (now - job.lastSent >= HEARTBEAT_INTERVAL_MS - 100) {
        job.lastSent = now;
        job.send({ type: "progress", job_id: jobId, attempt: job.attempt, progress: {} });
      }
    }
  }

  close() {
    clearInterval(this.timer);
    for (const job of this.running.values()) job.abort.abort(new Error("the tab is leaving"));
  }
}
