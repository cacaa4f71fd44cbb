// Pool-wide observers (docs/protocol.md, "Observers"). A worker streams
// the events of the jobs it runs to the peers that sent it `observe`; an
// observing tab subscribes to every worker of its view and says `lost` for
// the jobs of a worker that left the pool while they ran.

/** Most subscribers a worker serves; past it an `observe` is ignored. */
export const MAX_OBSERVERS = 32;
/** Events queued per subscriber between flushes; overflow drops the oldest. */
export const OBSERVER_QUEUE = 256;
/** Events kept for a subscriber that asks for history. */
export const OBSERVED_HISTORY = 64;
/** Events per `observed` message. */
export const MAX_OBSERVED_BATCH = 32;
/** Running jobs an observer remembers, to say `lost` for them. */
const MAX_TRACKED = 4096;
const utf8 = new TextEncoder();

/**
 * @typedef {{job_id: string, attempt: number, capability: string, submitter: string, at_ms: number,
 *   event: "started" | "progress" | "completed" | "failed" | "cancelled" | "lost",
 *   percent?: number, run_ms?: number, error?: string}} ObservedEvent
 */

/** `text` cut to at most 256 bytes of UTF-8, at a character boundary. */
function cut(text) {
  let s = String(text);
  while (utf8.encode(s).length > 256) s = s.slice(0, -1);
  return s;
}

/** The worker side: subscribers, their queues, and the recent events. */
export class Observers {
  constructor() {
    /** @type {Map<string, {send: (m: object) => void, queue: ObservedEvent[], dropped: number}>} */
    this.subscribers = new Map();
    /** @type {ObservedEvent[]} */
    this.recent = [];
    /** @type {Map<string, {attempt: number, capability: string, submitter: string, started: number}>} */
    this.running = new Map();
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
    if (job) this.record(jobId, job, "progress", percent === undefined ? {} : { percent });
  }

  /** A job ended: `completed`, `failed` (with its error) or `cancelled`. */
  ended(jobId, event, error) {
    const job = this.running.get(jobId);
    if (!job) return;
    this.running.delete(jobId);
    this.record(jobId, job, event, { run_ms: Date.now() - job.started, ...(error === undefined ? {} : { error: cut(error) }) });
  }

  record(jobId, job, event, extra = {}) {
    /** @type {ObservedEvent} */
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
        sub.send({ type: "observed", events, ...(sub.dropped ? { dropped: sub.dropped } : {}) });
        sub.dropped = 0;
      }
    }
  }
}

/**
 * The observer side: which workers it subscribed to, and which of their
 * jobs run, to say `lost` for them when their worker leaves the pool.
 */
export class Watching {
  constructor() {
    /** @type {Set<string>} workers subscribed to (their link is open) */
    this.subscribed = new Set();
    /** @type {Map<string, {worker: string, event: ObservedEvent}>} running jobs, by job id */
    this.running = new Map();
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
}
